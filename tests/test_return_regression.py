"""benchmarks/return_regression.py: the held-out R² tells inputs that carry the return from inputs that do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.return_regression import describe, fit, landing_contrast


def test_held_out_r2_is_high_for_the_input_the_return_depends_on_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    n = 600
    state = rng.normal(size=(n, 6)).astype(np.float32)  # unrelated to the return
    action = rng.normal(size=(n, 3)).astype(np.float32)
    ret = np.tanh(action[:, 0]).astype(np.float32)
    held_out = np.arange(n) % 5 == 0
    with_action = fit(np.c_[state, action], ret, held_out, epochs=40, seed=0)[0]
    state_only = fit(state, ret, held_out, epochs=40, seed=0)[0]
    assert with_action > 0.8
    assert state_only < 0.1


def test_describe_splits_the_returns_by_where_the_held_action_points():
    towards = np.array([[1.0, 0.0]] * 4, np.float32)
    action = np.array([[0.5, 0.0, 0.0], [0.4, 0.1, 0.0], [-0.5, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    table = {"action": action, "towards": towards, "return": np.array([0.8, 0.6, 0.2, 0.5], np.float32)}
    data = describe(table)
    assert data["share_away"] == 0.25
    assert data["return_towards"] == pytest.approx(0.7) and data["return_away"] == pytest.approx(0.2)


def test_landing_contrast_is_the_fitted_return_of_landing_on_the_centre_minus_its_reverse():
    # two states, an action's xy towards blue's centre: +x for the first, -y for the second; the fitted return
    # rewards moving +x only, so landing beats its reverse on the first state and ties on the second
    towards = np.array([[0.02, 0.0], [0.0, -0.02]], np.float32)
    x = np.array([[7.0, 0.0, 0.0, 0.5], [7.0, 0.0, 0.0, 0.5]], np.float32)  # a state column, then the action xyz
    table = {"towards": towards, "action": x[:, 1:]}

    def predict(rows):
        assert np.all(rows[:, 0] == 7.0) and np.all(rows[:, 3] == 0.5)  # the state and z are kept
        return 10.0 * rows[:, 1]

    held_out = np.array([True, True])
    assert landing_contrast(predict, x, table, held_out) == pytest.approx((0.4 + 0.0) / 2)
    assert landing_contrast(predict, x, table, np.array([False, True])) == pytest.approx(0.0)


def test_the_study_critic_network_learns_a_return_that_follows_where_the_arm_moves():
    # the return rewards moving +x, the placing direction is +x: fitted on the held actions, the critic's
    # landing contrast grows from ~0 to most of the return's 0.8 spread (not steadily: on 128 rows it swings from
    # pass to pass, hence the maximum); the state is noise
    from benchmarks.return_regression import fit_pac_critic
    from policies.spec import observation_spec, scene_objects
    from robots.spec import load_spec

    arm = load_spec("sawyer")
    spec = observation_spec(arm, cameras=(), objects=scene_objects(arm))
    rng = np.random.default_rng(0)
    n = 160
    held = rng.uniform(-0.07, 0.07, (n, 5)).astype(np.float32)
    table = {
        "proprio": rng.normal(size=(n, spec.proprio_size)).astype(np.float32),
        "objects": rng.normal(size=(n, *spec.objects_shape)).astype(np.float32),
        "instruction": np.zeros((n, spec.instruction_length), np.int64),
        "held": held,
        "towards": np.tile(np.array([[0.07, 0.0]], np.float32), (n, 1)),
        "return": (0.5 + 0.4 * np.sign(held[:, 0])).astype(np.float32),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, as the study fits: the same float order on any machine
    try:
        passes = fit_pac_critic(table, np.arange(n) % 5 == 0, {}, "sawyer", "absolute", 12, seed=0, batch=8)
    finally:
        torch.set_num_threads(threads)  # no other test inherits it
    assert [p["passes"] for p in passes] == list(range(1, 13))
    assert abs(passes[0]["towards_minus_away"]) < 0.05  # an untrained critic does not rank the direction
    assert max(p["towards_minus_away"] for p in passes) > 0.3
    assert max(p["r2"] for p in passes) > 0.3

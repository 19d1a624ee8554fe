"""benchmarks/return_regression.py: the held-out R² tells inputs that carry the return from inputs that do not."""

from __future__ import annotations

import numpy as np
import pytest

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

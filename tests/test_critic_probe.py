"""benchmarks/critic_probe.py: the coverage count (how often the data's xy velocity points away from blue), the
moments it finds, and the critic readout's attention it reports."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.critic_probe import (
    carry_coverage,
    carry_states,
    find_moments,
    landing_miss,
    landing_speed,
    readout_attention,
    release_coverage,
)
from policies.model.config import size_config
from policies.model.perceiver import build_model
from policies.spec import action_spec, observation_spec
from robots.spec import load_spec


def test_white_noise_that_points_away_one_step_averages_out_over_a_hold():
    """Blue lies along +x. Every fourth step's action points away (−x), the rest towards (+x): one step's action
    points away at a quarter of the states, the mean of the next 4 never does (it is +0.5 x everywhere it spans 4)."""
    steps = 40
    actions = np.zeros((steps, 5), np.float32)
    actions[:, 0] = 1.0
    actions[::4, 0] = -1.0
    episodes = {0: (SimpleNamespace(actions=actions), None)}
    carry = [(0, t, np.array([1.0, 0.0])) for t in range(0, 36)]  # windows of 4 that stay inside the episode
    one = carry_coverage(carry, episodes.__getitem__, horizon=1)
    held = carry_coverage(carry, episodes.__getitem__, horizon=4)
    assert one["step_share_away"] == pytest.approx(0.25) and one["held_share_away"] == pytest.approx(0.25)
    assert held["step_share_away"] == pytest.approx(0.25)
    assert held["held_share_away"] == 0.0 and held["held_cos_to_blue_median"] == pytest.approx(1.0)
    assert held["horizon"] == 4


def _resting_episode(grip: list[float], on_blue: list[bool]) -> SimpleNamespace:
    """Objects (red, green, blue) of half size 0.025: red on blue's centre at the stacked height where on_blue,
    else 10 cm away; observations one longer than the actions, as in the dataset."""
    steps = len(grip)
    obj = np.zeros((steps + 1, 3, 7), np.float32)
    obj[:, 2, :3] = (0.5, 0.1, 0.025)
    for t in range(steps + 1):
        up = on_blue[min(t, steps - 1)]
        obj[t, 0, :3] = (0.5, 0.1, 0.075) if up else (0.6, 0.1, 0.075)
    actions = np.zeros((steps, 5), np.float32)
    actions[:, -1] = grip
    return SimpleNamespace(observations={"objects": obj}, actions=actions)


def test_release_coverage_counts_the_steps_resting_on_blue_and_the_chance_of_opening_there():
    """Episode 1 rests closed on blue for 4 steps, then opens: 5 resting steps, 1 opening, after a dwell of 4.
    Episode 2 rests 1 step then opens (dwell 1): 2 resting steps. Closed steps away from blue do not count, nor
    do steps after the gripper is already open."""
    one = _resting_episode([1, 1, 1, 1, 1, 0, 0], [False, True, True, True, True, True, True])
    two = _resting_episode([1, 1, 1, 0, 0], [False, False, True, True, True])
    got = release_coverage([one, two], ("red", "green", "blue"), half=0.025)
    assert got["resting_steps"] == 5 + 2 and got["opening_steps"] == 2
    assert got["open_share"] == pytest.approx(2 / 7)
    assert got["dwell_before_opening"]["q50"] == pytest.approx(2.5) and got["dwell_before_opening"]["n"] == 2


def test_approach_moments_are_the_start_steps_before_the_first_close():
    """The gripper closes at step 30 with the TCP far from red (no grasp) and opens at 50 off blue (no release):
    the only moments are the approach steps 5 and 20; step 40 comes after the first close."""
    grip = [0.0] * 30 + [1.0] * 20 + [0.0] * 10
    episode = _resting_episode(grip, [False] * len(grip))
    episode.observations["proprio"] = np.zeros((len(grip) + 1, 3), np.float32)
    moments = find_moments(episode, ("red", "green", "blue"), tcp_at=0, half=0.025, episode=7)
    assert [(m.kind, m.step, m.episode) for m in moments] == [("approach", 5, 7), ("approach", 20, 7)]
    never = _resting_episode([0.0] * 60, [False] * 60)
    never.observations["proprio"] = np.zeros((61, 3), np.float32)
    assert [m.step for m in find_moments(never, ("red", "green", "blue"), 0, 0.025, 0)] == [5, 20, 40]


def test_readout_attention_names_every_token_and_each_head_s_weights_sum_to_one():
    arm = load_spec("sawyer")
    obs, act = observation_spec(arm, cameras=(), objects=("red", "green", "blue")), action_spec(arm)
    model = build_model(size_config("XS"), obs, act).eval()
    inputs = {
        "proprio": torch.zeros(3, obs.proprio_size),
        "objects": torch.zeros(3, 3, 7),
        "instruction": torch.full((3, obs.instruction_length), 2, dtype=torch.int64),
    }
    with torch.no_grad():
        out = readout_attention(model, model.encode(inputs), torch.zeros(3, 1, act.size))
    assert out["tokens"] == ["readout", *act.dims] and out["q_readout"] == "readout"
    weights = np.asarray(out["per_head"])
    assert weights.shape == (model.config.heads, act.size + 1)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)


def test_placing_states_are_the_held_steps_near_blue_s_centre_and_their_landing_speed_reaches_it():
    """Red held 6 cm above the stacked height, sliding from 8 cm to 0 cm off blue's centre along x: the placing
    states are the steps with red within 5 cm (and more than 0.5 cm) of the centre; the carry states those
    more than 3 cm away (every 5th step, and only while red is more than a cube above the stacked height)."""
    steps, half = 17, 0.025
    obj = np.zeros((steps, 3, 7), np.float32)
    obj[:, 2, :3] = (0.5, 0.1, half)
    obj[:, 0, 0] = 0.5 + np.linspace(0.08, 0.0, steps)
    obj[:, 0, 1], obj[:, 0, 2] = 0.1, 3 * half + 0.06
    proprio = np.ones((steps, 1), np.float32)  # gripper_grasp: held throughout
    arrays = SimpleNamespace(observations={"objects": obj, "proprio": proprio}, steps=steps)
    objects = ("red", "green", "blue")
    placing = carry_states(arrays, objects, 0, half, placing=True)
    distance = obj[:, 0, 0] - 0.5
    assert [t for t, _ in placing] == [t for t in range(steps) if 0.005 < distance[t] < 0.05]
    assert all(np.allclose(d, [-1.0, 0.0]) for _, d in placing)  # towards blue: −x
    assert [t for t, _ in carry_states(arrays, objects, 0, half)] == [0, 5]  # 8 and 5.5 cm away
    speed = landing_speed(np.array([distance[t] for t, _ in placing]), 20)
    np.testing.assert_allclose(speed * 20 * 0.05, [distance[t] for t, _ in placing], rtol=1e-5)


def test_landing_miss_is_zero_at_the_landing_speed_and_grows_both_ways_from_it():
    """Blue's centre 4 cm along −x; held over 20 steps of 50 ms. Pointing straight at blue does not make a
    sample land: twice the landing speed overshoots by as much as standing still falls short."""
    towards, horizon, distance = np.array([[-1.0, 0.0]]), 20, 0.04
    speed = landing_speed(np.array([distance]), horizon)
    v = speed[0]
    samples = np.array([[[-v, 0.0], [0.0, 0.0], [-2 * v, 0.0], [v, 0.0], [-v, v]]])  # (1, 5, 2)
    miss = landing_miss(samples, towards, speed, horizon)
    np.testing.assert_allclose(miss, [[0.0, distance, distance, 2 * distance, distance]], atol=1e-12)

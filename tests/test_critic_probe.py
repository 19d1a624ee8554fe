"""benchmarks/critic_probe.py's coverage count: how often the data's xy velocity points away from blue."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.critic_probe import carry_coverage


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

"""benchmarks/grasp_coverage.py: which steps count as the gripper open over red, and in which height band."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.grasp_coverage import BANDS_CM, CARRY_EDGES_CM, band_counts, band_sums, carry_counts

RED = (0.5, 0.2, 0.025)


def _episode(rows: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gripper command, TCP offset from red in the table plane (m), TCP height above red's centre (m)) per step."""
    grip = np.array([g for g, _, _ in rows])
    tcp = np.array([[RED[0] + dx, RED[1], RED[2] + dz] for _, dx, dz in rows])
    return grip, tcp, np.tile(RED, (len(rows), 1))


@pytest.mark.parametrize(
    ("rows", "band", "opens", "closes"),
    [
        ([(0.0, 0.0, 0.060), (0.0, 0.0, 0.055)], 5, 1, 0),  # open over red at 5.5 cm: counted, no close
        ([(0.0, 0.0, 0.030), (1.0, 0.0, 0.025)], 2, 1, 1),  # closes at 2.5 cm
        ([(0.0, 0.0, 0.010), (1.0, 0.0, 0.004)], 0, 1, 1),  # the data's grasp height
        ([(0.0, 0.0, 0.200), (0.0, 0.0, 0.150)], BANDS_CM - 1, 1, 0),  # far above: the top band
        ([(0.0, 0.05, 0.030), (1.0, 0.05, 0.030)], None, 0, 0),  # 5 cm to the side: not over red
        ([(1.0, 0.0, 0.030), (1.0, 0.0, 0.030)], None, 0, 0),  # already closed: not a decision to close
        ([(0.0, 0.0, 0.000), (1.0, 0.0, -0.005)], None, 0, 0),  # below red's centre
    ],
)
def test_band_counts(rows, band, opens, closes):
    grip, tcp, red = _episode(rows)
    o, c = band_counts(grip, tcp, red)
    assert (o.sum(), c.sum()) == (opens, closes)
    if band is not None:
        assert o[band] == opens and c[band] == closes


def test_the_final_observation_row_is_ignored():
    grip, tcp, red = _episode([(0.0, 0.0, 0.03), (1.0, 0.0, 0.03)])
    extra = np.vstack([tcp, tcp[-1:]])  # an episode stores one observation more than actions
    o, c = band_counts(grip, extra, np.vstack([red, red[-1:]]))
    assert (o.sum(), c.sum()) == (1, 1)


def test_band_sums_split_the_counted_steps_into_those_that_stay_open_and_the_closes():
    grip, tcp, red = _episode([(0.0, 0.0, 0.06), (0.0, 0.0, 0.035), (0.0, 0.0, 0.031), (1.0, 0.0, 0.025)])
    value = np.array([9.0, 0.5, 0.25, 0.75])  # one number per action; step 0 is never a decision
    stay, close = band_sums(grip, tcp, red, value)
    assert stay[3] == 0.5 + 0.25 and close[2] == 0.75
    assert stay.sum() == 0.75 and close.sum() == 0.75
    opens, closes = band_counts(grip, tcp, red)
    assert opens.sum() == 3 and closes.sum() == 1  # the sums cover exactly the counted steps


BLUE = (0.6, 0.0, 0.025)


@pytest.mark.parametrize(
    ("rows", "band", "carried", "opens"),
    [
        ([(1.0, 0.07, 0.10), (0.0, 0.07, 0.10)], 3, 1, 1),  # a drop 7 cm from blue, carried high: the 6-8 cm band
        ([(1.0, 0.07, 0.10), (1.0, 0.05, 0.10)], 2, 1, 0),  # carries on closed: counted, no open
        ([(1.0, 0.01, 0.10), (0.0, 0.01, 0.10)], 0, 1, 1),  # opens over blue, high: still a drop
        ([(1.0, 0.30, 0.10), (1.0, 0.30, 0.10)], len(CARRY_EDGES_CM) - 1, 1, 0),  # far from blue: the open-ended band
        ([(1.0, 0.0, 0.055), (0.0, 0.0, 0.055)], None, 0, 0),  # a release at the stacked height: placed, not carried
        ([(0.0, 0.07, 0.10), (0.0, 0.07, 0.10)], None, 0, 0),  # already open: not a decision to open
    ],
)
def test_carry_counts(rows, band, carried, opens):
    """Rows: (gripper command, red's distance from blue along x (m), red's height over blue's centre (m))."""
    grip = np.array([g for g, _, _ in rows])
    red = np.array([[BLUE[0] + dx, BLUE[1], BLUE[2] + dz] for _, dx, dz in rows])
    held, opened = carry_counts(grip, red, np.tile(BLUE, (len(rows), 1)))
    assert (held.sum(), opened.sum()) == (carried, opens)
    if band is not None:
        assert held[band] == carried and opened[band] == opens

"""The Panda's 1 kHz interpolation: no command ever exceeds libfranka's velocity, acceleration or jerk limits.

Tables for each bound (as libfranka's rate_limiting_tests.cpp), then hypothesis properties: whatever the servo's
references do (jumps, reversals, references far outside the reachable, stale ones), every commanded velocity,
its change per tick and that change's change stay within the Panda's limits, and a steady reference is tracked.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.real.hardware import FRANKA_DT, RateLimits, franka_settings
from robots.real.interpolation import JointInterpolator, limit_rate

SETTINGS = franka_settings()
LIMITS = SETTINGS.rate_limits
DT = FRANKA_DT
TOL = 1e-9


def _check(velocities: np.ndarray, limits: RateLimits = LIMITS) -> None:
    """Every row a tick's command, starting and (if given) ending at rest: velocity, acceleration, jerk bounded."""
    v = np.vstack([np.zeros(7), velocities])
    a = np.diff(v, axis=0) / DT
    j = np.diff(np.vstack([np.zeros(7), a]), axis=0) / DT
    assert np.all(np.abs(v) <= limits.velocity + TOL), np.max(np.abs(v) - limits.velocity)
    assert np.all(np.abs(a) <= limits.acceleration * (1 + TOL) + TOL), np.max(np.abs(a) - limits.acceleration)
    assert np.all(np.abs(j) <= limits.jerk * (1 + 1e-6)), np.max(np.abs(j) - limits.jerk)


def test_the_limits_are_libfrankas_values_for_the_panda():
    # libfranka rate_limiting.h: kMaxJointAcceleration - kLimitEps, and the velocity less 3 packets at full accel
    assert LIMITS.acceleration[1] == pytest.approx(7.499)
    assert LIMITS.jerk[0] == pytest.approx(7499.999)
    assert LIMITS.velocity[0] == pytest.approx(2.175 - 1e-3 - 3 * 1e-3 * 14.999)
    assert LIMITS.velocity[6] == pytest.approx(2.61 - 1e-3 - 3 * 1e-3 * 19.999)


@pytest.mark.parametrize(
    "v, a, wanted, expect_a",
    [
        (0.0, 0.0, 1e6, 7.499),  # jerk: one tick's worth of acceleration on joint 2 (3750 rad/s³ x 1 ms = 3.75)
        (0.0, 7.0, 1e6, 7.499),  # acceleration: capped at the limit
        (0.0, 0.0, -1e6, -3.749999),  # jerk, the other way
    ],
)
def test_table_one_joint_at_a_time(v, a, wanted, expect_a):
    vel, acc = np.zeros(7), np.zeros(7)
    vel[1], acc[1] = v, a
    want = np.zeros(7)
    want[1] = wanted
    _, out = limit_rate(LIMITS, DT, vel, acc, want)
    assert out[1] == pytest.approx(min(expect_a, a + LIMITS.jerk[1] * DT) if wanted > 0 else expect_a, rel=1e-6)


def test_velocity_bound_brakes_early_enough_for_the_jerk():
    """At full acceleration near the speed limit, the acceleration is taken back in time: the speed never passes."""
    v, a = np.zeros(7), np.zeros(7)
    rows = []
    for _ in range(2000):
        v, a = limit_rate(LIMITS, DT, v, a, np.full(7, 1e6))
        rows.append(v)
    rows = np.array(rows)
    _check(rows)
    assert np.allclose(rows[-1], LIMITS.velocity, rtol=1e-6)  # and it gets there


def test_a_state_from_outside_is_brought_back_without_breaking_jerk():
    v = LIMITS.velocity * 1.1
    a = np.zeros(7)
    for _ in range(200):
        v2, a2 = limit_rate(LIMITS, DT, v, a, np.zeros(7))
        assert np.all(np.abs(a2 - a) <= LIMITS.jerk * DT * (1 + 1e-9))
        v, a = v2, a2
    assert np.all(np.abs(v) <= LIMITS.velocity + TOL)


references = st.lists(
    st.tuples(
        st.lists(st.floats(-3.0, 3.0), min_size=7, max_size=7),  # joint target offset from start, rad
        st.lists(st.floats(-3.0, 3.0), min_size=7, max_size=7),  # its velocity, rad/s (beyond the limit too)
        st.integers(1, 60),  # ticks until the next reference (up to 60 ms: stale ones too)
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(references)
def test_no_command_exceeds_the_pandas_velocity_acceleration_or_jerk_limits(refs):
    interp = JointInterpolator(LIMITS, DT, SETTINGS.bandwidth, SETTINGS.reference_hold_s)
    q0 = np.zeros(7)
    interp.start(q0)
    rows = []
    for q, qd, ticks in refs:
        interp.set_reference(q0 + np.asarray(q), np.asarray(qd))
        rows += [interp.step() for _ in range(ticks)]
    _check(np.array(rows))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-0.3, 0.3), min_size=7, max_size=7),
    st.lists(st.floats(-0.2, 0.2), min_size=7, max_size=7),
)
def test_a_servo_reference_at_100hz_is_tracked_and_a_stale_one_stops_the_arm(q, qd):
    """A reference moving at its velocity, renewed every 10 ms, is followed within 1 mrad; then none comes: the
    arm brakes to rest within the limits on the last reference, extrapolated no further than the hold time."""
    interp = JointInterpolator(LIMITS, DT, SETTINGS.bandwidth, SETTINGS.reference_hold_s)
    start, qd = np.asarray(q), np.asarray(qd)
    interp.start(start)
    rows, errors = [], []
    for k in range(100):  # 1 s of 100 Hz references from rest: a ramp
        ref = start + qd * k * 0.01
        interp.set_reference(ref, qd)
        for _ in range(10):
            rows.append(interp.step())
        if k >= 50:
            errors.append(np.max(np.abs(interp.q - (ref + qd * 0.01))))
    assert max(errors) < 1e-3
    for _ in range(500):  # then silence
        rows.append(interp.step())
    _check(np.array(rows))
    assert interp.stale and np.allclose(interp.velocity, 0.0, atol=1e-5)  # critically damped: at rest to 10 µrad/s
    last = start + qd * 99 * 0.01 + qd * SETTINGS.reference_hold_s
    assert np.allclose(interp.q, last, atol=1e-4)

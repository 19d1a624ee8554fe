"""The safety filter: one table per limit, and properties that no output violates a limit, whatever the input."""

from __future__ import annotations

import dataclasses
import warnings
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robots.contract.link import Mode
from robots.limits import ANGULAR, LINEAR, twist_of
from robots.spec import load_spec
from runtime.safety.limits import (
    SafetyLimits,
    beyond_workspace,
    braking_speed,
    clamp_range,
    filter_action,
    limit_speed,
    limit_step,
    limit_workspace,
    stopping_distance,
    workspace_excess,
)

ARMS = ("sawyer", "panda")
TOL = 1e-9  # m or m/s: the filter's arithmetic rounds; the box and speed limits already carry real margins
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def velocity_limits(arm: str) -> SafetyLimits:
    return SafetyLimits.from_arm(load_spec(arm), Mode.CARTESIAN_VELOCITY)


@cache
def joint_limits(arm: str) -> SafetyLimits:
    return SafetyLimits.from_arm(load_spec(arm), Mode.JOINT_POSITION)


def tcp_fk(arm: str):
    chain = load_spec(arm).chain()
    return lambda q: chain.fk(q)[0]


def inside(p: np.ndarray, lim: SafetyLimits, tol: float = TOL) -> bool:
    return bool(np.all(p >= lim.workspace_low - tol) and np.all(p <= lim.workspace_high + tol))


def centre(lim: SafetyLimits) -> np.ndarray:
    return (lim.workspace_low + lim.workspace_high) / 2


# --- from_arm ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arm", ARMS)
def test_from_arm_velocity_limits_come_from_the_yaml(arm):
    spec, lim = load_spec(arm), velocity_limits(arm)
    space, arm_limits = spec.action_spaces[Mode.CARTESIAN_VELOCITY], spec.limits
    assert lim.mode is Mode.CARTESIAN_VELOCITY and lim.dims == space.dims and lim.dims[-1] == "gripper"
    assert (arm_limits.max_linear_accel, arm_limits.max_angular_accel) == (1.0, 10.0)  # m/s², rad/s² (YAML)
    assert lim.max_linear_speed == arm_limits.max_linear_speed
    assert lim.max_angular_speed == arm_limits.max_angular_speed
    for i, dim in enumerate(lim.dims):
        if dim in ("vx", "vy", "vz"):
            cap, step = arm_limits.max_linear_speed, arm_limits.max_linear_accel * 0.05
        elif dim == "gripper":
            cap, step = None, 1.0
        else:
            cap, step = arm_limits.max_angular_speed, arm_limits.max_angular_accel * 0.05
        assert (lim.low[i], lim.high[i]) == ((0.0, 1.0) if cap is None else (-cap, cap))
        assert (space.low[i], space.high[i]) == (lim.low[i], lim.high[i])  # the action space is derived, not restated
        assert lim.max_step[i] == pytest.approx(step)
    np.testing.assert_allclose(lim.workspace_low, spec.limits.workspace.low)
    np.testing.assert_allclose(lim.workspace_high, spec.limits.workspace.high)
    assert lim.period_s == 0.05


@pytest.mark.parametrize("arm", ARMS)
def test_from_arm_joint_bounds_are_the_ranges_less_the_margin(arm):
    spec, lim = load_spec(arm), joint_limits(arm)
    margin = spec.limits.joint_margin
    np.testing.assert_allclose(lim.low, [*(spec.joint_lower + margin), 0.0])
    np.testing.assert_allclose(lim.high, [*(spec.joint_upper - margin), 1.0])
    np.testing.assert_allclose(lim.max_step[:-1], spec.max_joint_speed * spec.limits.joint_speed_fraction * 0.05)
    assert lim.mode is Mode.JOINT_POSITION
    assert lim.max_step[-1] == 1.0 and lim.dims == spec.action_spaces[Mode.JOINT_POSITION].dims


def test_from_arm_scales_steps_with_period_and_the_arms_accel():
    spec = load_spec("panda")
    faster = dataclasses.replace(
        spec, limits=dataclasses.replace(spec.limits, max_linear_accel=2.0, max_angular_accel=4.0)
    )
    lim = SafetyLimits.from_arm(faster, "cartesian_velocity", 0.1)  # a wire string names a mode too
    assert lim.mode is Mode.CARTESIAN_VELOCITY
    np.testing.assert_allclose(lim.max_step, [0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 1.0])


@pytest.mark.parametrize(
    "mode, period_s, match",
    [
        ("torque", 0.05, "unknown mode 'torque'"),
        (Mode.HOLD, 0.05, "unknown mode"),  # a hold carries no action to filter
        (Mode.CARTESIAN_VELOCITY, 0.0, "period_s"),
        (Mode.JOINT_POSITION, float("nan"), "period_s"),
    ],
)
def test_from_arm_rejects_bad_arguments(mode, period_s, match):
    with pytest.raises(ValueError, match=match):
        SafetyLimits.from_arm(load_spec("sawyer"), mode, period_s)


def test_from_arm_rejects_a_mode_the_arm_lacks_and_a_dim_without_a_limit():
    spec = load_spec("sawyer")
    velocity = spec.action_spaces[Mode.CARTESIAN_VELOCITY]
    no_joint = dataclasses.replace(spec, action_spaces={Mode.CARTESIAN_VELOCITY: velocity})
    with pytest.raises(ValueError, match="no 'joint_position' action space"):
        SafetyLimits.from_arm(no_joint, Mode.JOINT_POSITION)
    space = dataclasses.replace(velocity, dims=("vx", "vy", "vz", "spin", "gripper"))
    with pytest.raises(ValueError, match="no speed limit for action dim 'spin'"):
        SafetyLimits.from_arm(
            dataclasses.replace(spec, action_spaces={Mode.CARTESIAN_VELOCITY: space}), Mode.CARTESIAN_VELOCITY
        )


def test_limits_are_read_only_and_validated():
    lim = velocity_limits("sawyer")
    with pytest.raises(ValueError):
        lim.high[0] = 10.0
    with pytest.raises(ValueError, match="allow zero"):
        dataclasses.replace(lim, low=np.array([0.01, -0.07, -0.07, -1.0, 0.0]))
    with pytest.raises(ValueError, match="max_linear_speed"):
        dataclasses.replace(lim, max_linear_speed=0.0)
    with pytest.raises(ValueError, match="max_angular_speed"):
        dataclasses.replace(lim, max_angular_speed=float("inf"))
    with pytest.raises(ValueError, match="unknown mode"):
        dataclasses.replace(lim, mode="hold")
    with pytest.raises(ValueError, match="twist parts"):
        dataclasses.replace(lim, dims=("vx", "vy", "vz", "spin", "gripper"))
    assert dataclasses.replace(lim, mode="cartesian_velocity").mode is Mode.CARTESIAN_VELOCITY


# --- one table per limit -----------------------------------------------------------------------------------

LOW, HIGH = np.array([-1.0, -0.1, 0.0]), np.array([1.0, 0.1, 1.0])


@pytest.mark.parametrize(
    "action, expected",
    [
        ([0.0, 0.0, 0.5], [0.0, 0.0, 0.5]),  # inside: unchanged
        ([1.0, 0.1, 1.0], [1.0, 0.1, 1.0]),  # on the bounds: unchanged
        ([2.0, -0.5, 1.5], [1.0, -0.1, 1.0]),
        ([-1e300, 1e300, -0.1], [-1.0, 0.1, 0.0]),
    ],
)
def test_clamp_range(action, expected):
    np.testing.assert_array_equal(clamp_range(np.array(action), LOW, HIGH), expected)


@pytest.mark.parametrize(
    "action, previous, expected",
    [
        ([0.02, 0.0], [0.0, 0.0], [0.02, 0.0]),  # within the step: unchanged
        ([0.1, -0.1], [0.0, 0.0], [0.05, -0.05]),
        ([0.1, -0.1], [0.07, -0.07], [0.1, -0.1]),
        ([-0.07, 0.07], [0.07, 0.0], [0.02, 0.05]),  # reversing direction takes several periods
        ([0.05, 0.0], [0.0, 0.05], [0.05, 0.0]),  # exactly one step: unchanged
    ],
)
def test_limit_step(action, previous, expected):
    out = limit_step(np.array(action), np.array(previous), np.array([0.05, 0.05]))
    np.testing.assert_allclose(out, expected)


SQRT2, SQRT3 = np.sqrt(2.0), np.sqrt(3.0)
TURN = list(0.07 / np.linalg.norm([0.02, 0.05, 0.05]) * np.array([0.02, 0.05, 0.05]))  # x 0.019 from 0.07
S, DT = 0.05, 0.05  # max_step (m/s per period) and period (s): one "unit" of braking distance is S*DT = 2.5 mm


@pytest.mark.parametrize(
    "distance, expected",
    [
        (-0.01, 0.0),  # past the wall: no motion toward it
        (0.0, 0.0),  # at the wall
        (0.5 * S * DT, 0.5 * S),  # one period at v covers the distance, no braking left: v*dt = d
        (1 * S * DT, 1 * S),  # v = s: next command is 0
        (2 * S * DT, 1.5 * S),  # 1.5s then 0.5s
        (3 * S * DT, 2 * S),  # 2s then s
        (6 * S * DT, 3 * S),  # 3s, 2s, s
        (1e300, None),  # far away: huge but finite
    ],
)
def test_braking_speed(distance, expected):
    v = float(braking_speed(np.array(distance), np.array(S), DT))
    assert np.isfinite(v)
    if expected is not None:
        assert v == pytest.approx(expected, abs=1e-15)
        assert stopping_distance(np.array(v), np.array(S), DT) == pytest.approx(max(distance, 0.0), abs=1e-15)


@pytest.mark.parametrize(
    "speed, expected",
    [(-0.1, 0.0), (0.0, 0.0), (0.5 * S, 0.5 * S * DT), (S, S * DT), (1.5 * S, 2 * S * DT), (3 * S, 6 * S * DT)],
)
def test_stopping_distance(speed, expected):
    assert stopping_distance(np.array(speed), np.array(S), DT) == pytest.approx(expected, abs=1e-15)


@given(st.floats(0.0, 10.0), st.floats(1e-3, 1.0), st.floats(1e-3, 0.2))
@PROPERTY
def test_braking_speed_is_the_fastest_speed_that_stops_in_time(distance, step, period):
    v = braking_speed(np.array(distance), np.array(step), period)
    assert stopping_distance(v, np.array(step), period) == pytest.approx(distance, rel=1e-9, abs=1e-12)
    assert stopping_distance(v * (1 + 1e-6) + 1e-9, np.array(step), period) > distance


BOX_LOW, BOX_HIGH = np.zeros(3), np.ones(3)


@pytest.mark.parametrize(
    "velocity, tcp, expected",
    [
        ([0.07, -0.07, 0.0], [0.5, 0.5, 0.5], [0.07, -0.07, 0.0]),  # far from every wall: unchanged
        ([0.1, 0.0, 0.0], [1.0 - 2 * S * DT, 0.5, 0.5], [1.5 * S, 0.0, 0.0]),  # near +x wall: capped
        ([0.0, -0.07, 0.0], [0.5, 1 * S * DT, 0.5], [0.0, -S, 0.0]),  # near -y wall: capped
        ([0.07, 0.0, -0.07], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0]),  # at the walls: no motion into them
        ([-0.07, 0.0, 0.07], [1.0, 0.5, 0.0], [-0.07, 0.0, 0.07]),  # at the walls: moving away is free
        ([0.07, 0.07, 0.0], [1.2, 0.5, 0.5], [0.0, 0.07, 0.0]),  # past +x: outward forbidden, y unaffected
        ([-0.07, 0.0, 0.0], [1.2, 0.5, 0.5], [-0.07, 0.0, 0.0]),  # past +x: inward allowed
        ([0.0, 0.0, -0.01], [0.5, 0.5, -0.3], [0.0, 0.0, 0.0]),  # below the floor: no further down
        ([0.0, 0.0, 0.07], [0.5, 0.5, -0.3], [0.0, 0.0, 0.07]),  # below the floor: up is fine
    ],
)
def test_limit_workspace(velocity, tcp, expected):
    out = limit_workspace(np.array(velocity), np.array(tcp), BOX_LOW, BOX_HIGH, np.full(3, S), DT)
    np.testing.assert_allclose(out, expected, atol=1e-15)


@pytest.mark.parametrize(
    "tcp, expected",
    [([0.5, 0.5, 0.5], [0, 0, 0]), ([1.0, 0.0, 1.0], [0, 0, 0]), ([1.2, -0.1, 0.5], [0.2, 0.1, 0])],
)
def test_workspace_excess(tcp, expected):
    np.testing.assert_allclose(workspace_excess(np.array(tcp), BOX_LOW, BOX_HIGH), expected)


@pytest.mark.parametrize("arm", ARMS)
def test_beyond_workspace_is_the_largest_excess_above_the_tolerance(arm):
    lim = velocity_limits(arm)
    rng = np.random.default_rng(3)
    span = lim.workspace_high - lim.workspace_low
    points = [rng.uniform(lim.workspace_low - 0.2 * span, lim.workspace_high + 0.2 * span) for _ in range(500)]
    points += [lim.workspace_low - 0.02, lim.workspace_high + 0.02, np.array([np.nan, 0.0, 0.0]), centre(lim)]
    for tcp in points:
        for tol in (0.02, 1e-3):
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: nanmax is NaN, so not beyond
                expected = bool(np.nanmax(workspace_excess(tcp, lim.workspace_low, lim.workspace_high)) > tol)
            assert beyond_workspace(tcp, lim, tol) is expected
    assert not beyond_workspace(np.array([np.nan, np.nan, np.nan]), lim, 0.02)
    assert beyond_workspace(np.array([np.nan, *lim.workspace_low[1:] - 0.03]), lim, 0.02)  # the other axes count


# --- filter_action: rejections -----------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
OK5 = [0.0, 0.0, 0.0, 0.0, 0.5]  # a valid Sawyer velocity action


@pytest.mark.parametrize(
    "action, previous, tcp, q, cause",
    [
        ([0.0, 0.0, 0.0, 0.0], None, None, None, "bad_shape"),  # one dim short
        ([OK5], None, None, None, "bad_shape"),  # (1, 5)
        ([[0.0], [0.0, 1.0]], None, None, None, "bad_shape"),  # ragged
        ("fast", None, None, None, "bad_shape"),
        ([0.0, NAN, 0.0, 0.0, 0.5], None, None, None, "non_finite"),
        ([0.0, 0.0, 0.0, 0.0, INF], None, None, None, "non_finite"),
        ([0.0, 0.0, -INF, 0.0, 0.5], [NAN] * 5, None, None, "non_finite"),  # the action's fault first
        (OK5, None, [0.45, NAN, 0.0], None, "non_finite_state"),
        (OK5, [0.0, 0.0, INF, 0.0, 0.0], None, None, "non_finite_state"),
        (OK5, None, None, [0.0] * 6 + [NAN], "non_finite_state"),
        (OK5, None, [0.45, 0.16], None, "bad_state_shape"),
        (OK5, [0.0] * 4, None, None, "bad_state_shape"),
    ],
)
def test_filter_rejects_what_it_cannot_trust(action, previous, tcp, q, cause):
    lim = velocity_limits("sawyer")
    result = filter_action(action, previous, centre(lim) if tcp is None else tcp, lim, q=q)
    assert result.action is None and result.rejected == cause and result.clipped == ()


def test_joint_mode_without_previous_needs_the_joint_state():
    lim = joint_limits("panda")
    result = filter_action(np.append(load_spec("panda").home, 0.0), None, centre(lim), lim)
    assert result.action is None and result.rejected == "no_joint_state"
    bad_q = filter_action(np.append(load_spec("panda").home, 0.0), None, centre(lim), lim, q=np.zeros(6))
    assert bad_q.rejected == "bad_state_shape"


# --- filter_action: velocity mode ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action, previous, tcp_offset, expected, clipped",
    [
        ([0.01, 0.0, -0.01, 0.2, 0.3], None, [0, 0, 0], [0.01, 0.0, -0.01, 0.2, 0.3], ()),
        ([0.5, 0.0, 0.0, 0.0, 2.0], [0.05, 0, 0, 0, 0], [0, 0, 0], [0.07, 0.0, 0.0, 0.0, 1.0], ("range",)),
        ([0.07, 0.0, 0.0, 1.0, 1.0], None, [0, 0, 0], [0.05, 0.0, 0.0, 0.5, 1.0], ("step",)),
        ([0.5, 0.0, 0.0, 0.0, 0.0], None, [0, 0, 0], [0.05, 0.0, 0.0, 0.0, 0.0], ("range", "step")),
        # 1 mm from the +x wall at rest: the braking cap (0.02 m/s) is below the step (0.05 m/s)
        ([0.5, 0.0, 0.0, 0.0, 0.0], None, [0.124, 0, 0], [0.02, 0.0, 0.0, 0.0, 0.0], ("range", "step", "workspace")),
        # at 0.07 m/s 1 mm from the wall: cannot stop in time, so the workspace wins over the step limit
        ([0.07, 0.0, 0.0, 0.0, 0.0], [0.07, 0, 0, 0, 0], [0.124, 0, 0], [0.02, 0.0, 0.0, 0.0, 0.0], ("workspace",)),
        # past the -z wall and still heading down: outward forbidden at once, whatever the step
        ([0.0, 0.0, -0.07, 0.0, 0.0], [0, 0, -0.07, 0, 0], [0, 0, -0.11], [0.0, 0.0, 0.0, 0.0, 0.0], ("workspace",)),
        # a previous command above the speed limit is not continued: the step starts from the range (0.07)
        ([-0.07, 0.0, 0.0, 0.0, 0.0], [0.3, 0, 0, 0, 0], [0, 0, 0], [0.02, 0.0, 0.0, 0.0, 0.0], ("step",)),
        # ... nor above the speed norm: the step starts from (0.07, 0.07, 0) scaled to 0.07 m/s, one step from 0
        ([0.0, 0.0, 0.0, 0.0, 0.0], [0.07, 0.07, 0, 0, 0], [0, 0, 0], [0.0, 0.0, 0.0, 0.0, 0.0], ()),
        # the speed limit is a norm: 0.07 m/s on each axis is 0.12 m/s, scaled down to 0.07 m/s, direction kept
        ([0.07, 0.07, 0.07, 0.0, 0.0], [0.05, 0.05, 0.05, 0, 0], [0, 0, 0], [0.07 / SQRT3] * 3 + [0, 0], ("speed",)),
        (
            [0.07, -0.07, 0.0, 1.0, 0.0],
            [0.05, -0.05, 0, 1, 0],
            [0, 0, 0],
            [0.07 / SQRT2, -0.07 / SQRT2, 0, 1, 0],
            ("speed",),
        ),
        # the speed norm wins over the step: turning from +x to (y, z) stretches the stepped twist (0.02, 0.05,
        # 0.05) past 0.07 m/s; scaled, x drops 0.051 m/s in one period, braking harder than the step allows
        ([0.02, 0.07, 0.07, 0.0, 0.0], [0.07, 0, 0, 0, 0], [0, 0, 0], [*TURN, 0.0, 0.0], ("step", "speed")),
        # speed, then workspace: 1.25 mm from the +x wall, x is capped below its scaled speed
        (
            [0.07, 0.07, 0, 0, 0],
            [0.07, 0.07, 0, 0, 0],
            [0.12375, 0, 0],
            [0.025, 0.07 / SQRT2, 0, 0, 0],
            ("speed", "workspace"),
        ),
    ],
)
def test_filter_velocity_table(action, previous, tcp_offset, expected, clipped):
    lim = velocity_limits("sawyer")  # norms 0.07 m/s, 1 rad/s; steps 0.05 m/s, 0.5 rad/s; box half-size 0.125 m
    result = filter_action(np.array(action), previous, centre(lim) + tcp_offset, lim)
    assert result.rejected == ""
    np.testing.assert_allclose(result.action, expected, atol=1e-12)
    assert result.clipped == clipped


@pytest.mark.parametrize(
    "action, previous, expected, clipped",
    [
        ([0, 0, 0, 0.5, 0.5, 0.5, 0.0], [0, 0, 0, 0.5, 0.5, 0.5, 0], [0, 0, 0, 0.5, 0.5, 0.5, 0], ()),  # 0.87 rad/s
        ([0, 0, 0, 1.0, 1.0, 1.0, 0.0], [0, 0, 0, 0.6, 0.6, 0.6, 0], [0, 0, 0, *[1 / SQRT3] * 3, 0], ("speed",)),
        # linear and angular parts are limited separately, each keeping its direction
        (
            [0.1, 0.1, 0, 1.0, 0, 0, 1.0],
            [0.1, 0.1, 0, 1, 0, 0, 0],
            [0.1 / SQRT2, 0.1 / SQRT2, 0, 1, 0, 0, 1],
            ("speed",),
        ),
    ],
)
def test_filter_speed_norm_table_panda(action, previous, expected, clipped):
    lim = velocity_limits("panda")  # norms 0.1 m/s, 1 rad/s; steps 0.05 m/s, 0.5 rad/s
    result = filter_action(np.array(action, dtype=float), np.array(previous, dtype=float), centre(lim), lim)
    np.testing.assert_allclose(result.action, expected, atol=1e-12)
    assert result.clipped == clipped


def test_filter_output_is_a_fresh_float64_array():
    lim = velocity_limits("sawyer")
    action = np.array([0.01, 0.0, 0.0, 0.0, 0.5], dtype=np.float32)
    result = filter_action(action, None, centre(lim), lim)
    assert result.action.dtype == np.float64 and not np.shares_memory(result.action, action)
    action64 = action.astype(np.float64)
    out = filter_action(action64, action64, centre(lim), lim).action
    assert not np.shares_memory(out, action64)
    out[0] = 1.0
    assert action64[0] == np.float32(0.01)


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pushing_into_a_wall_at_full_speed_stops_at_it(arm, axis, sign):
    lim = velocity_limits(arm)
    action = np.zeros(len(lim.dims))
    action[axis] = sign * 10.0
    p, previous = centre(lim), None
    for _ in range(400):
        out = filter_action(action, previous, p, lim).action
        p, previous = p + out[:3] * lim.period_s, out
        assert inside(p, lim)
    wall = lim.workspace_high[axis] if sign > 0 else lim.workspace_low[axis]
    assert p[axis] == pytest.approx(wall, abs=1e-6) and abs(previous[axis]) < 1e-6


# --- filter_action: joint mode ------------------------------------------------------------------------------


def test_joint_mode_clamps_then_steps_from_q():
    spec, lim = load_spec("panda"), joint_limits("panda")
    q = spec.home
    result = filter_action(np.append(q + 10.0, 5.0), None, centre(lim), lim, q=q)  # previous None: step from q
    np.testing.assert_allclose(result.action, [*(q + lim.max_step[:-1]), 1.0])
    assert result.clipped == ("range", "step")
    previous = np.append(q + 0.5 * lim.max_step[:-1], 0.0)
    result = filter_action(np.append(q - 10.0, -1.0), previous, centre(lim), lim, q=q)  # step from previous
    np.testing.assert_allclose(result.action, [*(q - 0.5 * lim.max_step[:-1]), 0.0])
    # q more than a step below a bound (beyond the joint's hard range): the step wins, toward the bound
    q_low = lim.low[:-1] - 2 * lim.max_step[:-1]
    result = filter_action(np.append(q_low, 0.0), None, centre(lim), lim, q=q_low)
    np.testing.assert_allclose(result.action[:-1], q_low + lim.max_step[:-1])


def linear_fk(lim: SafetyLimits, q0: np.ndarray):
    """A stand-in kinematic model: the TCP moves 1 m per rad of the first three joints, from the box centre."""
    return lambda q: centre(lim) + (np.asarray(q)[:3] - q0[:3])


@pytest.mark.parametrize(
    "now, target, rejected",
    [
        ([0.0, 0.0, 0.0], [0.05, 0.0, 0.0], ""),  # inside to inside
        ([0.1, 0.0, 0.0], [0.15, 0.0, 0.0], "workspace"),  # inside to past +x (half-size 0.125 m)
        ([0.0, 0.0, -0.08], [0.0, 0.0, -0.11], "workspace"),  # inside to below the floor (half-height 0.1 m)
        ([0.15, 0.0, 0.0], [0.15, 0.0, 0.0], ""),  # outside, staying put
        ([0.15, 0.0, 0.0], [0.2, 0.0, 0.0], "workspace"),  # outside, further out
        ([0.15, 0.0, 0.0], [0.14, 0.0, 0.0], ""),  # outside, inward but still outside
        ([0.15, 0.0, 0.0], [0.1, 0.0, 0.0], ""),  # outside, back inside
        ([0.15, 0.0, 0.0], [0.15, 0.05, 0.0], ""),  # outside on x, moving along y inside
        ([0.15, 0.1, 0.0], [0.15, 0.13, 0.0], "workspace"),  # outside on x, leaving on y
    ],
)
def test_joint_mode_workspace_table(now, target, rejected):
    spec, lim = load_spec("sawyer"), joint_limits("sawyer")  # steps 0.07, 0.053, 0.078 rad on joints 0-2
    fk = linear_fk(lim, spec.home)
    q = spec.home.copy()
    q[:3] += now
    action = np.append(spec.home, 0.5)
    action[:3] += target
    result = filter_action(action, None, fk(q), lim, q=q, fk=fk)
    assert result.rejected == rejected and result.clipped == ()
    if not rejected:
        np.testing.assert_allclose(result.action, action)


def test_joint_mode_fk_must_return_a_position():
    spec, lim = load_spec("panda"), joint_limits("panda")
    chain = spec.chain()
    with pytest.raises(ValueError, match="TCP position"):
        filter_action(np.append(spec.home, 0.0), None, centre(lim), lim, q=spec.home, fk=chain.fk_pose)


# --- properties: whatever the input, no output violates a limit --------------------------------------------

wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2.0, 2.0),
    st.sampled_from([0.0, 1e-300, -1e300, 1e300]),
)


def vectors(low: np.ndarray, high: np.ndarray) -> st.SearchStrategy[np.ndarray]:
    return st.tuples(*(st.floats(float(lo), float(hi)) for lo, hi in zip(low, high, strict=True))).map(np.array)


def actions(n: int, *, finite: bool = False) -> st.SearchStrategy[np.ndarray]:
    elem = st.floats(-2.0, 2.0) if finite else wild
    return st.lists(elem, min_size=n, max_size=n).map(np.array)


def continued(previous: np.ndarray | None, lim: SafetyLimits) -> np.ndarray:
    """The previous command as the filter continues it: zero after a hold, else inside the range and the norms."""
    if previous is None:
        return np.zeros(len(lim.dims))
    return limit_speed(clamp_range(previous, lim.low, lim.high), lim.dims, lim.max_linear_speed, lim.max_angular_speed)


def within_speed_norms(out: np.ndarray, lim: SafetyLimits) -> bool:
    """Exactly, no tolerance: the servo rescales a twist whose norm is an ulp above its limit."""
    twist = twist_of(lim.dims, out)
    return bool(
        np.linalg.norm(twist[LINEAR]) <= lim.max_linear_speed
        and np.linalg.norm(twist[ANGULAR]) <= lim.max_angular_speed
    )


def check_step_or_braking(out: np.ndarray, base: np.ndarray, clipped: tuple[str, ...], lim: SafetyLimits) -> None:
    """The precedence as written: an axis more than a step from `base` was slowed by a motion bound (speed or
    workspace) and lies between zero and its previous value: it brakes harder than a step, never speeds up."""
    beyond = np.abs(out - base) > lim.max_step + TOL
    if np.any(beyond):
        assert {"speed", "workspace"} & set(clipped), clipped
        ratio = out[beyond] / base[beyond]
        assert np.all((ratio >= 0) & (ratio < 1)), (out, base)


def check_velocity_output(result, action, previous, tcp, lim) -> None:
    if not np.all(np.isfinite(action)):
        assert result.action is None and result.rejected == "non_finite"
        return
    out = result.action
    assert out is not None and out.dtype == np.float64 and np.all(np.isfinite(out))
    assert np.all(out >= lim.low) and np.all(out <= lim.high)
    assert within_speed_norms(out, lim)
    assert inside(tcp + out[:3] * lim.period_s, lim)
    base = continued(previous, lim)
    stepped = limit_step(clamp_range(action, lim.low, lim.high), base, lim.max_step)
    assert np.all((out * stepped >= 0) & (np.abs(out) <= np.abs(stepped))), "a motion bound sped an axis up"
    if not {"speed", "workspace"} & set(result.clipped):
        np.testing.assert_array_equal(out, stepped)
    check_step_or_braking(out, base, result.clipped, lim)


@pytest.mark.parametrize("arm", ARMS)
@given(data=st.data())
@PROPERTY
def test_velocity_filter_output_respects_every_limit(arm, data):
    lim = velocity_limits(arm)
    action = data.draw(actions(len(lim.dims)), "action")
    previous = data.draw(st.none() | vectors(lim.low, lim.high), "previous")
    tcp = data.draw(vectors(lim.workspace_low, lim.workspace_high), "tcp")
    result = filter_action(action, previous, tcp, lim)
    check_velocity_output(result, action, previous, tcp, lim)


@pytest.mark.parametrize("arm", ARMS)
@given(data=st.data())
@PROPERTY
def test_velocity_filter_from_outside_the_box_never_moves_further_out(arm, data):
    lim = velocity_limits(arm)
    action = data.draw(actions(len(lim.dims), finite=True), "action")
    previous = data.draw(st.none() | vectors(2 * lim.low, 2 * lim.high), "previous")
    tcp = data.draw(vectors(lim.workspace_low - 0.05, lim.workspace_high + 0.05), "tcp")
    result = filter_action(action, previous, tcp, lim)
    out = result.action
    assert np.all(out >= lim.low) and np.all(out <= lim.high) and within_speed_norms(out, lim)
    after = workspace_excess(tcp + out[:3] * lim.period_s, lim.workspace_low, lim.workspace_high)
    assert np.all(after <= workspace_excess(tcp, lim.workspace_low, lim.workspace_high) + TOL)
    check_step_or_braking(out, continued(previous, lim), result.clipped, lim)


near_walls = st.sampled_from([0.0, 1e-4, 0.5, 1 - 1e-4, 1.0])


@pytest.mark.parametrize("arm", ARMS)
@given(data=st.data())
@PROPERTY
def test_closed_loop_never_leaves_the_box(arm, data):
    """Perfect tracking: p += v*dt. The TCP stays in the box, every command respects range and speed norms, and
    the step too, except where the speed norm brakes an axis harder (the box alone never needs to)."""
    lim = velocity_limits(arm)
    n = len(lim.dims)
    frac = data.draw(st.tuples(*(st.floats(0.0, 1.0) | near_walls for _ in range(3))).map(np.array), "start")
    p = lim.workspace_low + frac * (lim.workspace_high - lim.workspace_low)
    push = actions(n, finite=True).map(lambda a: [a] * 40)  # a constant push, long enough to reach a wall
    noise = st.lists(actions(n), min_size=1, max_size=40)
    sequence = data.draw(st.lists(push | noise, min_size=1, max_size=4).map(lambda xs: sum(xs, [])), "actions")
    previous = None
    for action in sequence:
        result = filter_action(action, previous, p, lim)
        if not np.all(np.isfinite(action)):
            assert result.action is None and result.rejected == "non_finite"
            previous = None  # the loop commands a hold: the arm stops where it is
            continue
        out = result.action
        base = np.zeros(n) if previous is None else previous
        assert np.all(out >= lim.low) and np.all(out <= lim.high)
        assert within_speed_norms(out, lim)
        check_step_or_braking(out, base, result.clipped, lim)
        if np.any(np.abs(out - base) > lim.max_step + TOL):  # the braking model keeps the box within the step
            assert "speed" in result.clipped, result.clipped
        p = p + out[:3] * lim.period_s
        assert inside(p, lim)
        previous = out


@pytest.mark.parametrize("arm", ARMS)
@given(data=st.data())
@PROPERTY
def test_joint_filter_output_respects_every_limit(arm, data):
    spec, lim, fk = load_spec(arm), joint_limits(arm), tcp_fk(arm)
    n = len(lim.dims)
    q = spec.home + data.draw(vectors(np.full(spec.dof, -0.3), np.full(spec.dof, 0.3)), "dq")
    tcp = fk(q)
    action = data.draw(actions(n) | vectors(lim.low, lim.high), "action")
    previous = data.draw(st.none() | vectors(np.append(q, 0.0) - lim.max_step, np.append(q, 1.0) + lim.max_step))
    if previous is not None:
        previous = np.clip(previous, lim.low, lim.high)
    result = filter_action(action, previous, tcp, lim, q=q, fk=fk)
    if not np.all(np.isfinite(action)):
        assert result.action is None and result.rejected == "non_finite"
        return
    base = np.append(q, 0.0) if previous is None else previous
    now = workspace_excess(tcp, lim.workspace_low, lim.workspace_high)
    if result.action is None:  # only when the clamped target really moves the TCP out (further)
        candidate = limit_step(clamp_range(action, lim.low, lim.high), base, lim.max_step)
        assert result.rejected == "workspace"
        assert np.any(workspace_excess(fk(candidate[:-1]), lim.workspace_low, lim.workspace_high) > now)
        return
    out = result.action
    assert out.dtype == np.float64 and np.all(np.isfinite(out))
    assert np.all(out >= lim.low) and np.all(out <= lim.high)
    assert np.all(np.abs(out[:-1] - base[:-1]) <= lim.max_step[:-1] + TOL)
    assert np.all(workspace_excess(fk(out[:-1]), lim.workspace_low, lim.workspace_high) <= now)

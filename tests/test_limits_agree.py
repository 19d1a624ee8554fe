"""One meaning per limit: the speed norms the servo and the filter share, and the limits as the robot YAML states them.

The central property: whatever the policy commands, what the runtime's filter lets through is exactly what the
driver's servo applies, so the servo never has to scale it.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import cache
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robots.contract.link import Mode
from robots.limits import ANGULAR, LINEAR, TWIST_DIMS, limit_norm, limit_twist, twist_of
from robots.servo import twist_from_action
from robots.spec import ARMS, SPEC_DIR, Limits, SpecError, load_spec, parse_spec
from runtime.safety.limits import SafetyLimits, filter_action

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- limit_twist: a table, as libfranka's rate-limiting tests ----------------------------------------------

R2, R3 = np.sqrt(2.0), np.sqrt(3.0)


@pytest.mark.parametrize(
    "twist, expected",
    [
        ([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]),
        ([0.05, 0, 0, 0, 0, 0.9], [0.05, 0, 0, 0, 0, 0.9]),  # inside both norms: unchanged
        ([0.1, 0, 0, 0, 1.0, 0], [0.1, 0, 0, 0, 1.0, 0]),  # on both norms: unchanged
        ([0.1, 0.1, 0.1, 0, 0, 0], [0.1 / R3] * 3 + [0, 0, 0]),  # per-axis at the limit is √3 over the norm
        ([-0.3, 0.4, 0, 0, 0, 0], [-0.06, 0.08, 0, 0, 0, 0]),  # 0.5 m/s scaled to 0.1, direction kept
        ([0, 0, 0, 2.0, -2.0, 0], [0, 0, 0, 1 / R2, -1 / R2, 0]),  # the angular part alone
        ([0.2, 0, 0, 0, 0, 0.5], [0.1, 0, 0, 0, 0, 0.5]),  # the parts are limited separately
        ([1e300, 1e300, 0, 0, 0, -1e300], [0.1 / R2, 0.1 / R2, 0, 0, 0, -1.0]),  # squares overflow: still kept
    ],
)
def test_limit_twist(twist, expected):
    out = limit_twist(np.array(twist, dtype=float), 0.1, 1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=1e-17)
    assert np.linalg.norm(out[LINEAR]) <= 0.1 and np.linalg.norm(out[ANGULAR]) <= 1.0


@pytest.mark.parametrize(
    "twist, max_linear, max_angular, match",
    [
        ([np.nan, 0, 0, 0, 0, 0], 0.1, 1.0, "non-finite"),
        ([0, 0, 0, 0, 0, np.inf], 0.1, 1.0, "non-finite"),
        ([0, 0, 0, 0, 0], 0.1, 1.0, "shape"),
        ([0, 0, 0, 0, 0, 0], -0.1, 1.0, "norm limit"),
        ([0, 0, 0, 0, 0, 0], 0.1, np.nan, "norm limit"),
    ],
)
def test_limit_twist_refuses(twist, max_linear, max_angular, match):
    with pytest.raises(ValueError, match=match):
        limit_twist(np.array(twist, dtype=float), max_linear, max_angular)


@pytest.mark.parametrize(
    "vector, max_norm",
    [([1e-160, 1e-160, 0.0], 1e-161), ([1e-155, 2e-160, 0.0], 5e-156), ([1e308, 1e308, 1e308], 1e308)],
)
def test_limit_norm_ends_where_squares_underflow_or_overflow(vector, max_norm):
    out = limit_norm(np.array(vector), max_norm)  # a loop lowering the scale one ulp at a time never ended here
    with np.errstate(over="ignore"):
        assert np.linalg.norm(out) <= max_norm
    np.testing.assert_array_equal(limit_norm(out, max_norm), out)


def test_twist_of_names_the_parts_an_action_has():
    np.testing.assert_array_equal(twist_of(("vx", "vy", "vz", "wz", "gripper"), [1, 2, 3, 4, 5]), [1, 2, 3, 0, 0, 4])
    np.testing.assert_array_equal(twist_of((*TWIST_DIMS, "gripper"), [1, 2, 3, 4, 5, 6, 7]), [1, 2, 3, 4, 5, 6])


vectors3 = st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3).map(np.array)
norms = st.floats(0.0, 10.0) | st.sampled_from([0.0, 0.07, 0.1, 1.0])


@given(vectors3, norms)
@PROPERTY
def test_limit_norm_keeps_the_direction_and_is_idempotent(v, max_norm):
    out = limit_norm(v, max_norm)
    assert np.linalg.norm(out) <= max_norm
    assert np.all(out * v >= 0) and np.all(np.abs(out) <= np.abs(v))  # scaled toward zero, never reversed
    if np.linalg.norm(v) <= max_norm:
        np.testing.assert_array_equal(out, v)
    else:  # one common factor on every component: the same direction
        k = int(np.argmax(np.abs(v)))
        np.testing.assert_allclose(out, v * (out[k] / v[k]), rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(limit_norm(out, max_norm), out)  # a limited vector passes unchanged


# --- the filter and the servo agree --------------------------------------------------------------------------


@cache
def velocity_limits(arm: str) -> SafetyLimits:
    return SafetyLimits.from_arm(load_spec(arm), Mode.CARTESIAN_VELOCITY)


def vectors(low: np.ndarray, high: np.ndarray) -> st.SearchStrategy[np.ndarray]:
    return st.tuples(*(st.floats(float(lo), float(hi)) for lo, hi in zip(low, high, strict=True))).map(np.array)


commanded = st.floats(-2.0, 2.0) | st.sampled_from([0.0, -1e300, 1e300]) | st.floats(-0.2, 0.2)


@pytest.mark.parametrize("arm", ARMS)
@given(data=st.data())
@PROPERTY
def test_the_servo_applies_exactly_what_the_filter_let_through(arm, data):
    spec, lim = load_spec(arm), velocity_limits(arm)
    n = len(lim.dims)
    action = data.draw(st.lists(commanded, min_size=n, max_size=n).map(np.array), "action")
    previous = data.draw(st.none() | vectors(2 * lim.low - 0.1, 2 * lim.high + 0.1), "previous")
    tcp = data.draw(vectors(lim.workspace_low - 0.03, lim.workspace_high + 0.03), "tcp")  # inside or near the box
    out = filter_action(action, previous, tcp, lim).action

    twist, gripper = twist_from_action(spec, out)
    np.testing.assert_array_equal(twist, twist_of(lim.dims, out))  # not rescaled, not clipped: bit for bit
    assert gripper == out[lim.dims.index("gripper")]
    assert np.linalg.norm(twist[LINEAR]) <= spec.limits.max_linear_speed
    assert np.linalg.norm(twist[ANGULAR]) <= spec.limits.max_angular_speed


@pytest.mark.parametrize("arm", ARMS)
def test_the_servo_would_scale_what_a_per_axis_filter_let_through(arm):
    """The bug this file exists for: each axis at its per-axis cap is √3 over the norm, and the servo scales it."""
    spec, lim = load_spec(arm), velocity_limits(arm)
    per_axis = np.where(np.isin(lim.dims, ("vx", "vy", "vz")), lim.high, 0.0)
    twist, _ = twist_from_action(spec, per_axis)
    assert np.linalg.norm(twist[LINEAR]) == pytest.approx(spec.limits.max_linear_speed)
    out = filter_action(per_axis, per_axis, (lim.workspace_low + lim.workspace_high) / 2, lim)
    assert out.clipped == ("speed",)
    np.testing.assert_array_equal(twist_from_action(spec, out.action)[0], twist_of(lim.dims, out.action))


# --- the limits as the robot YAML states them ----------------------------------------------------------------


@cache
def raw_spec(arm: str) -> dict[str, Any]:
    with (SPEC_DIR / f"{arm}.yaml").open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("arm", ARMS)
def test_every_limit_is_a_float_with_its_unit_and_rating(arm):
    spec, raw = load_spec(arm), raw_spec(arm)["limits"]
    for field in dataclasses.fields(Limits):
        if field.name == "workspace":
            assert raw["workspace"]["unit"] == "m"
            continue
        value = getattr(spec.limits, field.name)
        assert type(value) is float and value == raw[field.name]["value"]
        rated = raw[field.name]["rated"]
        assert rated is None or value <= rated
    space = raw_spec(arm)["action_spaces"]["cartesian_velocity"]
    assert space["low"] == space["high"] == "from_speed_limits"  # the speed is stated once, in limits


def test_panda_speeds_sit_below_the_published_figures():
    raw = raw_spec("panda")["limits"]
    assert (raw["max_linear_speed"]["rated"], raw["max_angular_speed"]["rated"]) == (1.7, 2.5)  # robots.md


def edited(arm: str, edit) -> dict[str, Any]:
    raw = copy.deepcopy(raw_spec(arm))
    edit(raw)
    return raw


def _set(path: tuple[str, ...], value: Any):
    def edit(raw: dict[str, Any]) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set(("limits", "max_linear_speed"), 0.07), r"max_linear_speed: write \{value, unit, rated\}"),
        (_set(("limits", "max_linear_speed", "unit"), "mm/s"), "unit 'mm/s', expected 'm/s'"),
        (_set(("limits", "max_linear_accel", "unit"), "m/s^2"), "expected 'm/s²'"),
        (_set(("limits", "max_angular_speed", "value"), 3.0), "above the rated"),  # Panda: rated 2.5 rad/s
        (_set(("limits", "max_joint_accel", "value"), -1.0), "positive number"),
        (_set(("limits", "max_angular_accel", "value"), "fast"), "positive number"),
        (_set(("limits", "max_linear_speed", "rated"), 0.0), "positive number"),
        (_set(("limits", "max_lineer_speed"), {"value": 1.0, "unit": "m/s", "rated": None}), "unknown limits"),
        (_set(("limits", "workspace", "unit"), "cm"), "workspace"),
        (_set(("limits", "workspace", "high"), [0.0, 0.0, 0.0]), "low .* must lie below high"),
        (_set(("action_spaces", "cartesian_velocity", "low"), [-0.1] * 6 + [0.0]), "derive from the limits"),
        (
            _set(("action_spaces", "cartesian_velocity", "dims"), ["vx", "vy", "vz", "wx", "wy", "spin", "gripper"]),
            "no speed limit for dim 'spin'",
        ),
        (
            _set(("action_spaces", "cartesian_velocity", "units"), ["m/s"] * 3 + ["deg/s"] * 3 + ["1"]),
            "dim wx in 'deg/s'",
        ),
        (
            _set(("action_spaces", "hold"), raw_spec("panda")["action_spaces"]["cartesian_velocity"]),
            "unknown action space 'hold'",
        ),
    ],
)
def test_the_parser_refuses_a_limit_without_its_unit_or_above_its_rating(edit, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(edited("panda", edit))


def test_missing_limits_are_refused():
    def drop(raw: dict[str, Any]) -> None:
        del raw["limits"]["max_linear_accel"]

    with pytest.raises(SpecError, match="max_linear_accel"):
        parse_spec(edited("sawyer", drop))


def test_speed_bounds_follow_the_limit():
    raw = edited("sawyer", _set(("limits", "max_linear_speed", "value"), 0.05))
    space = parse_spec(raw).action_spaces[Mode.CARTESIAN_VELOCITY]
    np.testing.assert_array_equal(space.low, [-0.05, -0.05, -0.05, -1.0, 0.0])
    np.testing.assert_array_equal(space.high, [0.05, 0.05, 0.05, 1.0, 1.0])
    assert space.mode is Mode.CARTESIAN_VELOCITY

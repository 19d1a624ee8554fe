"""The real arms' interface settings, read from the `hardware:` section of each robot's YAML.

Rates, libfranka's rate limits and collision thresholds, Intera's command timeout: data beside the arm's
safety limits, each with its unit, so an adapter holds no number of its own. Values are checked as the spec's
limits are (unit, shape, finite and positive).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import yaml

from robots.spec import SPEC_DIR, SpecError

LIMIT_EPS = 1e-3  # libfranka's kLimitEps: taken off every rated rate limit
LOST_PACKETS = 3.0  # libfranka's kTolNumberPacketsLost: the velocity limit leaves room for this many lost packets
FRANKA_DT = 1e-3  # s, libfranka's control period (kDeltaT)


def _values(section: dict[str, Any], name: str, unit: str, size: int | None = None, key: str = "value") -> np.ndarray:
    entry = section.get(name)
    if not isinstance(entry, dict) or entry.get("unit") != unit or key not in entry:
        raise SpecError(f"hardware {name}: write {{unit: {unit}, {key}: ...}}, got {entry!r}")
    values = np.atleast_1d(np.asarray(entry[key], dtype=float))
    if (size is not None and values.shape != (size,)) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise SpecError(f"hardware {name}: {size or 1} positive finite values, got {entry[key]!r}")
    return values


@dataclass(frozen=True)
class RateLimits:
    """Per-joint bounds on a commanded joint velocity and its first two derivatives (rad/s, rad/s², rad/s³)."""

    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray

    def __post_init__(self) -> None:
        shapes = {np.shape(self.velocity), np.shape(self.acceleration), np.shape(self.jerk)}
        values = np.concatenate([self.velocity, self.acceleration, self.jerk])
        if len(shapes) != 1 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"rate limits: one positive finite value per joint for each bound, got {self}")

    @classmethod
    def libfranka(cls, velocity: np.ndarray, acceleration: np.ndarray, jerk: np.ndarray) -> RateLimits:
        """libfranka's limiter values from the rated figures: kLimitEps off each, and off the velocity also the
        speed that kTolNumberPacketsLost packets at full acceleration would add."""
        acc = np.asarray(acceleration, float) - LIMIT_EPS
        vel = np.asarray(velocity, float) - LIMIT_EPS - LOST_PACKETS * FRANKA_DT * acc
        return cls(vel, acc, np.asarray(jerk, float) - LIMIT_EPS)


@dataclass(frozen=True)
class CollisionThresholds:
    """libfranka's set_collision_behavior: contact flagged above `lower`, a reflex stop above `upper`."""

    torque_lower: tuple[float, ...]  # N·m per joint
    torque_upper: tuple[float, ...]
    force_lower: tuple[float, ...]  # x y z (N), rx ry rz (N·m) at the TCP
    force_upper: tuple[float, ...]


@dataclass(frozen=True)
class FrankaSettings:
    control_rate_hz: float
    servo_rate_hz: float
    rate_limits: RateLimits
    collision: CollisionThresholds
    joint_impedance: tuple[float, ...]
    bandwidth: float  # rad/s
    reference_hold_s: float
    gripper_max_width: float  # m
    gripper_speed: float  # m/s
    gripper_force: float  # N


@dataclass(frozen=True)
class InteraSettings:
    servo_rate_hz: float
    command_timeout_s: float
    reference_hold_s: float
    gripper_max_position: float  # m
    gripper_speed: float  # m/s


def _raw(robot: str) -> dict[str, Any]:
    with (SPEC_DIR / f"{robot}.yaml").open(encoding="utf-8") as f:
        raw = yaml.safe_load(f).get("hardware")
    if not isinstance(raw, dict):
        raise SpecError(f"{robot}: no hardware section in its spec")
    return raw


@cache
def franka_settings(robot: str = "panda") -> FrankaSettings:
    f = _raw(robot).get("franka")
    if not isinstance(f, dict):
        raise SpecError(f"{robot}: no hardware.franka section")
    lim, col = f["rate_limits"], f["collision"]
    g = f["gripper"]
    return FrankaSettings(
        control_rate_hz=float(f["control_rate_hz"]),
        servo_rate_hz=float(f["servo_rate_hz"]),
        rate_limits=RateLimits.libfranka(
            _values(lim, "velocity", "rad/s", 7, "rated"),
            _values(lim, "acceleration", "rad/s²", 7, "rated"),
            _values(lim, "jerk", "rad/s³", 7, "rated"),
        ),
        collision=CollisionThresholds(
            *(tuple(_values(col, name, unit, n)) for name, unit, n in _COLLISION),
        ),
        joint_impedance=tuple(_values(f, "joint_impedance", "N·m/rad", 7)),
        bandwidth=float(_values(f, "interpolation_bandwidth", "rad/s")[0]),
        reference_hold_s=float(_values(f, "reference_hold_s", "s")[0]),
        gripper_max_width=float(g["max_width"]),
        gripper_speed=float(g["speed"]),
        gripper_force=float(g["force"]),
    )


_COLLISION = (
    ("torque_lower", "N·m", 7),
    ("torque_upper", "N·m", 7),
    ("force_lower", "N", 6),
    ("force_upper", "N", 6),
)


@cache
def intera_settings(robot: str = "sawyer") -> InteraSettings:
    i = _raw(robot).get("intera")
    if not isinstance(i, dict):
        raise SpecError(f"{robot}: no hardware.intera section")
    return InteraSettings(
        servo_rate_hz=float(i["servo_rate_hz"]),
        command_timeout_s=float(_values(i, "command_timeout", "s")[0]),
        reference_hold_s=float(_values(i, "reference_hold_s", "s")[0]),
        gripper_max_position=float(i["gripper"]["max_position"]),
        gripper_speed=float(i["gripper"]["speed"]),
    )

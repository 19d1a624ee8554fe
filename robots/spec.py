"""Per-arm specs: the YAML files in robots/specs/ mapped onto typed dataclasses.

The spec is the single source of an arm's facts: the MuJoCo model, the kinematic chain, the driver's
limits, the action spaces and the proprioception layout are all derived from it, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robots.contract.link import MOTION_MODES, Mode
from robots.kinematics import KinematicChain
from robots.limits import ANGULAR_DIMS, LINEAR_DIMS
from robots.rotations import quat_to_mat

SPEC_DIR = Path(__file__).parent / "specs"
ARMS = ("sawyer", "panda")


@dataclass(frozen=True)
class JointSpec:
    body: str
    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float]
    joint: str
    range: tuple[float, float]  # rad
    max_speed: float  # rad/s, published
    mass: float  # kg
    kp: float
    kv: float
    max_torque: float  # N·m
    damping: float
    armature: float
    frictionloss: float
    capsule: dict[str, Any] | None = None  # {radius, z: [from, to]} in the body frame
    cylinder: dict[str, Any] | None = None  # {radius, half_length}


@dataclass(frozen=True)
class GripperSpec:
    quat: tuple[float, float, float, float]  # gripper frame in the flange frame
    body_length: float
    finger_length: float
    finger_range: tuple[float, float]  # opening of one finger, m
    tcp_z: float
    kp: float
    kv: float
    max_force: float
    mass: float
    finger_mass: float


@dataclass(frozen=True)
class WorkspaceBox:
    low: tuple[float, float, float]
    high: tuple[float, float, float]


@dataclass(frozen=True)
class Limits:
    """What the driver and the runtime's filter enforce, each read from `{value, unit, rated}` in the YAML."""

    joint_margin: float  # rad inside each joint's range
    joint_speed_fraction: float  # of the published max
    max_joint_accel: float  # rad/s², bounds how fast a joint target's speed may change
    max_linear_speed: float  # m/s, norm of the TCP's linear velocity
    max_angular_speed: float  # rad/s, norm of the TCP's angular velocity
    max_linear_accel: float  # m/s², bounds how fast a commanded TCP velocity may change
    max_angular_accel: float  # rad/s²
    workspace: WorkspaceBox


# The unit each limit is written in; a limit entry in another unit, or a key not listed here, is refused.
LIMIT_UNITS = {
    "joint_margin": "rad",
    "joint_speed_fraction": "1",
    "max_joint_accel": "rad/s²",
    "max_linear_speed": "m/s",
    "max_angular_speed": "rad/s",
    "max_linear_accel": "m/s²",
    "max_angular_accel": "rad/s²",
}
WORKSPACE_UNIT = "m"
GRIPPER = "gripper"  # the last dim of every action space: 0 open ... 1 closed


@dataclass(frozen=True)
class ActionSpace:
    mode: Mode
    dims: tuple[str, ...]
    units: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray

    @property
    def size(self) -> int:
        return len(self.dims)


@dataclass(frozen=True)
class CameraSpec:
    name: str
    pos: tuple[float, float, float]
    lookat: tuple[float, float, float]
    fovy: float
    width: int
    height: int


@dataclass(frozen=True)
class ProprioField:
    name: str
    size: int
    unit: str


@dataclass(frozen=True)
class ArmSpec:
    name: str
    joints: tuple[JointSpec, ...]
    base: dict[str, Any]
    flange: dict[str, Any]
    home: np.ndarray
    gripper: GripperSpec
    limits: Limits
    action_spaces: dict[Mode, ActionSpace]  # Mode is a str enum: a space is found by its name too
    cameras: tuple[CameraSpec, ...]
    proprio: tuple[ProprioField, ...]
    scene: dict[str, Any]

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.joint for j in self.joints)

    @property
    def joint_lower(self) -> np.ndarray:
        return np.array([j.range[0] for j in self.joints])

    @property
    def joint_upper(self) -> np.ndarray:
        return np.array([j.range[1] for j in self.joints])

    @property
    def max_joint_speed(self) -> np.ndarray:
        """Published max joint speeds, rad/s."""
        return np.array([j.max_speed for j in self.joints])

    @property
    def proprio_size(self) -> int:
        return sum(f.size for f in self.proprio)

    def tcp_in_flange(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and rotation in the flange frame."""
        rot = quat_to_mat(self.gripper.quat)
        return rot @ np.array([0.0, 0.0, self.gripper.tcp_z]), rot

    def chain(self) -> KinematicChain:
        flange_pos = np.asarray(self.flange["pos"], dtype=float)
        flange_rot = quat_to_mat(self.flange["quat"])
        tcp_pos, tcp_rot = self.tcp_in_flange()
        return KinematicChain(
            joint_names=self.joint_names,
            parent_pos=np.array([j.pos for j in self.joints], dtype=float),
            parent_rot=np.array([quat_to_mat(j.quat) for j in self.joints]),
            tcp_pos=flange_pos + flange_rot @ tcp_pos,
            tcp_rot=flange_rot @ tcp_rot,
            lower=self.joint_lower,
            upper=self.joint_upper,
        )

    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"{self.name} has no camera {name!r}; it has {[c.name for c in self.cameras]}")


class SpecError(ValueError):
    """A robot spec file is missing, malformed or inconsistent."""


def _limit(name: str, entry: Any) -> float:
    """The value of one `{value, unit, rated}` limit entry, checked: its unit, positive, at most the rated figure."""
    if not isinstance(entry, dict) or set(entry) != {"value", "unit", "rated"}:
        raise SpecError(f"limit {name}: write {{value, unit, rated}}, got {entry!r}")
    value, unit, rated = entry["value"], entry["unit"], entry["rated"]
    if unit != LIMIT_UNITS[name]:
        raise SpecError(f"limit {name}: unit {unit!r}, expected {LIMIT_UNITS[name]!r}")
    for what, x in (("value", value), ("rated", rated)):
        if x is None and what == "rated":
            continue
        if isinstance(x, bool) or not isinstance(x, int | float) or not (np.isfinite(x) and x > 0):
            raise SpecError(f"limit {name}: {what} must be a positive number, got {x!r}")
    if rated is not None and value > rated:
        raise SpecError(f"limit {name}: {value} {unit} is above the rated {rated} {unit}")
    return float(value)


def _limits(raw: dict[str, Any]) -> Limits:
    unknown = set(raw) - set(LIMIT_UNITS) - {"workspace"}
    if unknown:
        raise SpecError(f"unknown limits {sorted(unknown)}; known: {sorted(LIMIT_UNITS)} and workspace")
    box = raw["workspace"]
    if not isinstance(box, dict) or box.get("unit") != WORKSPACE_UNIT:
        raise SpecError(f"limit workspace: write {{unit: {WORKSPACE_UNIT}, low, high}}, got {box!r}")
    low, high = tuple(float(x) for x in box["low"]), tuple(float(x) for x in box["high"])
    if len(low) != 3 or len(high) != 3 or not all(lo < hi for lo, hi in zip(low, high, strict=True)):
        raise SpecError(f"limit workspace: low {low} must lie below high {high} on each of x, y, z")
    values = {name: _limit(name, raw[name]) for name in LIMIT_UNITS}
    return Limits(**values, workspace=WorkspaceBox(low, high))


FROM_JOINT_RANGES = "from_joint_ranges"  # each joint's range less the joint margin; gripper 0 ... 1
FROM_SPEED_LIMITS = "from_speed_limits"  # each twist dim ± its speed limit; gripper 0 ... 1


def _speed_bounds(mode: Mode, dims: tuple[str, ...], units: tuple[str, ...], limits: Limits) -> np.ndarray:
    """(2, n) bounds of a twist action: ± the speed limit on each axis (a norm limit bounds each axis too)."""
    bounds = []
    for dim, unit in zip(dims, units, strict=True):
        if dim in LINEAR_DIMS:
            cap, want = limits.max_linear_speed, LIMIT_UNITS["max_linear_speed"]
        elif dim in ANGULAR_DIMS:
            cap, want = limits.max_angular_speed, LIMIT_UNITS["max_angular_speed"]
        elif dim == GRIPPER:
            cap, want = None, "1"
        else:
            raise SpecError(f"action space {mode}: no speed limit for dim {dim!r}")
        if unit != want:
            raise SpecError(f"action space {mode}: dim {dim} in {unit!r}, its limit is in {want!r}")
        bounds.append((0.0, 1.0) if cap is None else (-cap, cap))
    return np.array(bounds).T


def _action_space(
    name: str, raw: dict[str, Any], joints: tuple[JointSpec, ...], limits: Limits
) -> tuple[Mode, ActionSpace]:
    mode = Mode.parse(name)
    if mode not in MOTION_MODES:
        raise SpecError(f"unknown action space {name!r}; expected one of {[str(m) for m in MOTION_MODES]}")
    dims, units = tuple(raw["dims"]), tuple(raw["units"])
    if len(dims) != len(units):
        raise SpecError(f"action space {mode}: dims and units differ in length")
    if dims[-1:] != (GRIPPER,):
        raise SpecError(f"action space {mode}: the last dim must be {GRIPPER!r}, got {dims}")
    derived = {Mode.JOINT_POSITION: FROM_JOINT_RANGES, Mode.CARTESIAN_VELOCITY: FROM_SPEED_LIMITS}[mode]
    if raw["low"] != derived or raw["high"] != derived:  # written out, they would restate a limit
        raise SpecError(f"action space {mode}: its bounds derive from the limits; write low/high: {derived}")
    if mode is Mode.JOINT_POSITION:
        margin = limits.joint_margin
        low = np.array([j.range[0] + margin for j in joints] + [0.0])
        high = np.array([j.range[1] - margin for j in joints] + [1.0])
    else:
        low, high = _speed_bounds(mode, dims, units, limits)
    if not (len(dims) == low.size == high.size):
        raise SpecError(f"action space {mode}: {len(dims)} dims for {low.size} bounds")
    if np.any(low >= high):
        raise SpecError(f"action space {mode}: low must be below high")
    return mode, ActionSpace(mode, dims, units, low, high)


def parse_spec(raw: dict[str, Any]) -> ArmSpec:
    """Build an ArmSpec from the YAML mapping, checking that its parts agree."""
    try:
        joints = tuple(
            JointSpec(**{**j, "pos": tuple(j["pos"]), "quat": tuple(j["quat"]), "range": tuple(j["range"])})
            for j in raw["chain"]
        )
        limits = _limits(raw["limits"])
        g = raw["gripper"]
        gripper = GripperSpec(**{**g, "quat": tuple(g["quat"]), "finger_range": tuple(g["finger_range"])})
        spec = ArmSpec(
            name=raw["name"],
            joints=joints,
            base=raw["base"],
            flange=raw["flange"],
            home=np.asarray(raw["home"], dtype=float),
            gripper=gripper,
            limits=limits,
            action_spaces=dict(_action_space(name, a, joints, limits) for name, a in raw["action_spaces"].items()),
            cameras=tuple(CameraSpec(**c) for c in raw["cameras"]),
            proprio=tuple(ProprioField(**f) for f in raw["proprio"]),
            scene=raw["scene"],
        )
    except (KeyError, TypeError) as exc:
        raise SpecError(f"robot spec {raw.get('name', '?')!r} is malformed: {exc!r}") from exc
    if spec.home.size != spec.dof:
        raise SpecError(f"{spec.name}: home has {spec.home.size} values for {spec.dof} joints")
    inside = (spec.home > spec.joint_lower + limits.joint_margin) & (spec.home < spec.joint_upper - limits.joint_margin)
    if not np.all(inside):
        raise SpecError(f"{spec.name}: home pose is outside the joint ranges less the margin")
    if set(spec.action_spaces) != set(MOTION_MODES):
        raise SpecError(
            f"{spec.name}: needs one action space per motion mode, has {sorted(map(str, spec.action_spaces))}"
        )
    if spec.action_spaces[Mode.JOINT_POSITION].size != spec.dof + 1:
        raise SpecError(f"{spec.name}: joint_position action must have one dim per joint plus the gripper")
    return spec


@cache
def load_spec(name: str) -> ArmSpec:
    """The spec of a named arm ('sawyer' or 'panda')."""
    path = SPEC_DIR / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"unknown robot {name!r}: no {path}; known robots: {', '.join(ARMS)}")
    with path.open(encoding="utf-8") as f:
        return parse_spec(yaml.safe_load(f))

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

from robots.kinematics import KinematicChain
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
    joint_margin: float  # rad inside each joint's range
    joint_speed_fraction: float  # of the published max
    max_joint_accel: float  # rad/s², bounds how fast a joint target's speed may change
    max_linear_speed: float  # m/s
    max_angular_speed: float  # rad/s
    workspace: WorkspaceBox


@dataclass(frozen=True)
class ActionSpace:
    mode: str
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
    action_spaces: dict[str, ActionSpace]
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


def _action_space(mode: str, raw: dict[str, Any], joints: tuple[JointSpec, ...], margin: float) -> ActionSpace:
    dims = tuple(raw["dims"])
    if raw["low"] == "from_joint_ranges":
        low = np.array([j.range[0] + margin for j in joints] + [0.0])
        high = np.array([j.range[1] - margin for j in joints] + [1.0])
    else:
        low, high = np.asarray(raw["low"], dtype=float), np.asarray(raw["high"], dtype=float)
    if not (len(dims) == len(raw["units"]) == low.size == high.size):
        raise SpecError(f"action space {mode}: dims, units, low and high differ in length")
    if np.any(low >= high):
        raise SpecError(f"action space {mode}: low must be below high")
    return ActionSpace(mode, dims, tuple(raw["units"]), low, high)


def parse_spec(raw: dict[str, Any]) -> ArmSpec:
    """Build an ArmSpec from the YAML mapping, checking that its parts agree."""
    try:
        joints = tuple(
            JointSpec(**{**j, "pos": tuple(j["pos"]), "quat": tuple(j["quat"]), "range": tuple(j["range"])})
            for j in raw["chain"]
        )
        lim = raw["limits"]
        limits = Limits(
            joint_margin=float(lim["joint_margin"]),
            joint_speed_fraction=float(lim["joint_speed_fraction"]),
            max_joint_accel=float(lim["max_joint_accel"]),
            max_linear_speed=float(lim["max_linear_speed"]),
            max_angular_speed=float(lim["max_angular_speed"]),
            workspace=WorkspaceBox(tuple(lim["workspace"]["low"]), tuple(lim["workspace"]["high"])),
        )
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
            action_spaces={
                mode: _action_space(mode, a, joints, limits.joint_margin) for mode, a in raw["action_spaces"].items()
            },
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
    if spec.action_spaces["joint_position"].size != spec.dof + 1:
        raise SpecError(f"{spec.name}: joint_position action must have one dim per joint plus the gripper")
    return spec


@cache
def load_spec(name: str) -> ArmSpec:
    """The spec of a named arm ('sawyer' or 'panda')."""
    path = SPEC_DIR / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"unknown robot {name!r}: no {path}; known robots: {', '.join(ARMS)}")
    with path.open() as f:
        return parse_spec(yaml.safe_load(f))

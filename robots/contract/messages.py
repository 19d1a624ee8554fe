"""The typed messages of the driver contract (DESIGN §2), each mapped onto the one wire codec.

Drivers and the runtime build and read these dataclasses, never raw headers, so a field is named and
checked in one place. `from_envelope` raises MalformedMessage for a message whose fields are missing or
of the wrong shape; the receiver counts and drops it like any other bad message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robots.contract.link import DEFAULT_LINK, Mode
from robots.contract.wire import Envelope, MalformedMessage, encode

STATE = "state"
STATUS = "status"
COMMAND = "command"
IMAGE_PREFIX = "image/"
OBJECTS = "objects"  # optional: poses of the scene's objects in the base frame (sim ground truth, or a tracker)
TASK = "task"  # sim only: the episode's outcome, from a task-aware sim driver (robots/tasks/driver.py)
TICK = "tick"  # lockstep only: advance one control period without a new command
RESET = "reset"  # sim only: arm to home, objects to their places
CLAIM = "claim"  # take (or renew) the arm's lease for a session (robots/contract/session.py)
RELEASE = "release"  # give the arm back before the lease runs out
CONTROL_TOPICS = (TICK, RESET, CLAIM, RELEASE)
MAX_SEED = 2**63 - 1  # a reset seed: an int in [0, MAX_SEED]


def _field(env: Envelope, name: str, kind: type | tuple[type, ...]) -> Any:
    value = env.fields.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise MalformedMessage(f"{env.topic}: field {name!r} missing or not {kind}")
    return value


def _optional(env: Envelope, name: str, kind: type, default: Any) -> Any:
    """A field a driver may leave out (older drivers, other vendors): `default` when absent, checked when not."""
    return _field(env, name, kind) if name in env.fields else default


def _array(env: Envelope, name: str, shape: tuple[int | None, ...], dtype: type = np.float64) -> np.ndarray:
    arr = env.arrays.get(name)
    if (
        arr is None
        or arr.ndim != len(shape)
        or any(s is not None and s != n for s, n in zip(shape, arr.shape, strict=True))
    ):
        raise MalformedMessage(f"{env.topic}: array {name!r} missing or not of shape {shape}")
    return arr.astype(dtype, copy=False)


def _check_topic(env: Envelope, topic: str) -> None:
    if env.topic != topic:
        raise MalformedMessage(f"expected topic {topic!r}, got {env.topic!r}")


@dataclass
class StateMsg:
    """Arm state at ≥ 100 Hz (one per period in lockstep)."""

    seq: int
    source: str
    t_capture_ns: int
    q: np.ndarray
    dq: np.ndarray
    gripper_pos: float
    gripper_vel: float
    gripper_grasp: float
    tcp_pose: np.ndarray  # position (3) + quaternion (w, x, y, z)
    mode: str  # driver mode: "lockstep" or "realtime"
    last_cmd_seq: int  # last applied command of the holding session
    last_rx_seq: int = -1  # last message (command or tick) of the holding session the driver processed
    step: int = 0  # control periods simulated since the last reset (lockstep)
    holder: str = ""  # fingerprint of the session holding the arm ("" when free): whose the two seqs are
    instance: str = ""  # random per driver start: a new one means a restarted driver, its seqs and clock anew

    def to_frames(self) -> list[bytes]:
        return encode(
            STATE,
            seq=self.seq,
            source=self.source,
            t_capture_ns=self.t_capture_ns,
            fields={
                "gripper_pos": float(self.gripper_pos),
                "gripper_vel": float(self.gripper_vel),
                "gripper_grasp": float(self.gripper_grasp),
                "mode": self.mode,
                "last_cmd_seq": int(self.last_cmd_seq),
                "last_rx_seq": int(self.last_rx_seq),
                "step": int(self.step),
                "holder": self.holder,
                "instance": self.instance,
            },
            arrays={"q": self.q, "dq": self.dq, "tcp_pose": self.tcp_pose},
        )

    @classmethod
    def from_envelope(cls, env: Envelope) -> StateMsg:
        _check_topic(env, STATE)
        q = _array(env, "q", (None,))
        return cls(
            seq=env.seq,
            source=env.source,
            t_capture_ns=env.t_capture_ns,
            q=q,
            dq=_array(env, "dq", q.shape),
            gripper_pos=float(_field(env, "gripper_pos", (int, float))),
            gripper_vel=float(_field(env, "gripper_vel", (int, float))),
            gripper_grasp=float(_field(env, "gripper_grasp", (int, float))),
            tcp_pose=_array(env, "tcp_pose", (7,)),
            mode=_field(env, "mode", str),
            last_cmd_seq=_field(env, "last_cmd_seq", int),
            last_rx_seq=_field(env, "last_rx_seq", int),
            step=_field(env, "step", int),
            holder=_field(env, "holder", str),
            instance=_optional(env, "instance", str, ""),
        )

    def proprio_fields(self) -> dict[str, np.ndarray]:
        """The named proprioceptive fields (robots/specs/*.yaml `proprio`) this message carries, as 1-d arrays.

        Views of the message's arrays where they can be: copy them to keep them past the message.
        """
        return {
            "joint_pos": self.q,
            "joint_vel": self.dq,
            "gripper_grasp": np.array([self.gripper_grasp]),
            "gripper_pos": np.array([self.gripper_pos]),
            "gripper_vel": np.array([self.gripper_vel]),
            "tcp_pos": self.tcp_pose[:3],
            "tcp_quat": self.tcp_pose[3:7],
        }


@dataclass
class ImageMsg:
    """One camera frame, JPEG on the wire by default (raw when lossless frames are needed)."""

    camera: str
    seq: int
    source: str
    t_capture_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    step: int = 0

    def to_frames(self, jpeg: bool = True, quality: int = DEFAULT_LINK.jpeg_quality) -> list[bytes]:
        images = {"image": self.image}
        return encode(
            IMAGE_PREFIX + self.camera,
            seq=self.seq,
            source=self.source,
            t_capture_ns=self.t_capture_ns,
            fields={"step": int(self.step)},
            jpeg=images if jpeg else None,
            arrays=None if jpeg else images,
            jpeg_quality=quality,
        )

    @classmethod
    def from_envelope(cls, env: Envelope) -> ImageMsg:
        if not env.topic.startswith(IMAGE_PREFIX):
            raise MalformedMessage(f"expected an image topic, got {env.topic!r}")
        image = env.arrays.get("image")
        if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise MalformedMessage(f"{env.topic}: 'image' missing or not (H, W, 3) uint8")
        return cls(
            camera=env.topic[len(IMAGE_PREFIX) :],
            seq=env.seq,
            source=env.source,
            t_capture_ns=env.t_capture_ns,
            image=image,
            step=_field(env, "step", int),
        )


POSE_SIZE = 7  # position (3) + quaternion (w, x, y, z)


def _check_objects(topic: str, names: object, poses: object) -> None:
    """Names distinct strings, one finite (7,) pose each: what both ends of the `objects` topic insist on."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise MalformedMessage(f"{topic}: 'names' must be a list of str, got {names!r}")
    if len(set(names)) != len(names):
        raise MalformedMessage(f"{topic}: duplicate object names in {list(names)}")
    if not isinstance(poses, np.ndarray) or poses.shape != (len(names), POSE_SIZE):
        shape = getattr(poses, "shape", type(poses).__name__)
        raise MalformedMessage(f"{topic}: 'poses' must be of shape ({len(names)}, {POSE_SIZE}), got {shape}")
    if not np.all(np.isfinite(poses)):
        raise MalformedMessage(f"{topic}: non-finite pose in {list(names)}")


@dataclass
class ObjectsMsg:
    """Poses of the scene's objects in the robot base frame: sim ground truth, or a real cell's tracker.

    An object the tracker does not see is left out (fewer names), never sent as NaN.
    """

    seq: int
    source: str
    t_capture_ns: int
    names: tuple[str, ...]
    poses: np.ndarray  # (N, 7) float64: position (3) + quaternion (w, x, y, z), one row per name
    frame: str = "base"
    step: int = 0

    def to_frames(self) -> list[bytes]:
        poses = np.asarray(self.poses, dtype=np.float64)
        _check_objects(OBJECTS, self.names, poses)
        return encode(
            OBJECTS,
            seq=self.seq,
            source=self.source,
            t_capture_ns=self.t_capture_ns,
            fields={"names": list(self.names), "frame": self.frame, "step": int(self.step)},
            arrays={"poses": poses},
        )

    @classmethod
    def from_envelope(cls, env: Envelope) -> ObjectsMsg:
        _check_topic(env, OBJECTS)
        names = env.fields.get("names")
        if not isinstance(names, list):
            raise MalformedMessage(f"{env.topic}: field 'names' missing or not a list")
        poses = _array(env, "poses", (len(names), POSE_SIZE))
        _check_objects(env.topic, names, poses)
        return cls(
            seq=env.seq,
            source=env.source,
            t_capture_ns=env.t_capture_ns,
            names=tuple(names),
            poses=poses,
            frame=_field(env, "frame", str),
            step=_field(env, "step", int),
        )

    def pose(self, name: str) -> np.ndarray:
        """(7,) pose of one object; KeyError naming the objects this message has."""
        try:
            return self.poses[self.names.index(name)]
        except ValueError:
            raise KeyError(f"no object {name!r} in this message; it has {list(self.names)}") from None

    def as_dict(self) -> dict[str, np.ndarray]:
        """name → (7,) float64 pose (copies), in the message's order."""
        return {name: np.array(pose, dtype=np.float64) for name, pose in zip(self.names, self.poses, strict=True)}


@dataclass
class TaskMsg:
    """Sim only: how the current episode stands, computed from privileged sim state after each period."""

    seq: int
    source: str
    t_capture_ns: int
    task: str
    success: bool
    reward: float  # sparse: 1.0 on a success step, else 0.0
    shaped_reward: float  # staged dense reward in [0, 1] (robots/tasks/tasks.py)
    step: int  # control periods since the last reset, as in the state message

    def to_frames(self) -> list[bytes]:
        return encode(
            TASK,
            seq=self.seq,
            source=self.source,
            t_capture_ns=self.t_capture_ns,
            fields={
                "task": self.task,
                "success": bool(self.success),
                "reward": float(self.reward),
                "shaped_reward": float(self.shaped_reward),
                "step": int(self.step),
            },
        )

    @classmethod
    def from_envelope(cls, env: Envelope) -> TaskMsg:
        _check_topic(env, TASK)
        return cls(
            seq=env.seq,
            source=env.source,
            t_capture_ns=env.t_capture_ns,
            task=_field(env, "task", str),
            success=_field(env, "success", bool),
            reward=float(_field(env, "reward", (int, float))),
            shaped_reward=float(_field(env, "shaped_reward", (int, float))),
            step=_field(env, "step", int),
        )


@dataclass
class StatusMsg:
    """Driver heartbeat and faults at ≥ 10 Hz (and after every lockstep period)."""

    seq: int
    source: str
    t_capture_ns: int
    robot: str
    mode: str  # "lockstep" or "realtime"
    holding: bool
    hold_cause: str
    last_applied_seq: int
    last_rejected_seq: int
    last_rejection: str
    commands_applied: int
    commands_rejected: dict[str, int] = field(default_factory=dict)
    messages_dropped: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    period_s: float = DEFAULT_LINK.period_s
    command_timeout_ms: float = DEFAULT_LINK.command_timeout_ms
    sim_time: float = 0.0
    holder: str = ""  # fingerprint of the session holding the arm; "" when free
    holder_label: str = ""  # what that session calls itself (its messages' source)
    lease_ms_left: float = 0.0
    not_owner: int = 0  # messages refused because another session held the arm
    overruns: int = 0  # real time: periods physics fell behind the wall clock (a fault only when sustained)
    workspace_stops: int = 0  # physics steps in which the driver stopped the TCP at its workspace box
    instance: str = ""  # random per driver start, as in the state
    arm_errors: list[str] = field(default_factory=list)  # a real arm: its SDK's own error names, for the operator
    recoveries: int = 0  # a real arm: error recoveries done since the driver started

    _FIELDS = (
        ("robot", str),
        ("mode", str),
        ("holding", bool),
        ("hold_cause", str),
        ("last_applied_seq", int),
        ("last_rejected_seq", int),
        ("last_rejection", str),
        ("commands_applied", int),
        ("commands_rejected", dict),
        ("messages_dropped", dict),
        ("faults", list),
        ("period_s", (int, float)),
        ("command_timeout_ms", (int, float)),
        ("sim_time", (int, float)),
        ("holder", str),
        ("holder_label", str),
        ("lease_ms_left", (int, float)),
        ("not_owner", int),
        ("overruns", int),
        ("workspace_stops", int),
    )

    def to_frames(self) -> list[bytes]:
        fields = {name: getattr(self, name) for name, _ in self._FIELDS} | {"instance": self.instance}
        if self.arm_errors or self.recoveries:  # only real arms send them; a reader takes their absence as none
            fields |= {"arm_errors": list(self.arm_errors), "recoveries": int(self.recoveries)}
        return encode(STATUS, seq=self.seq, source=self.source, t_capture_ns=self.t_capture_ns, fields=fields)

    @classmethod
    def from_envelope(cls, env: Envelope) -> StatusMsg:
        _check_topic(env, STATUS)
        values = {name: _field(env, name, kind) for name, kind in cls._FIELDS}
        values["instance"] = _optional(env, "instance", str, "")
        errors = _optional(env, "arm_errors", list, [])
        if not all(isinstance(e, str) for e in errors):
            raise MalformedMessage(f"{env.topic}: 'arm_errors' must be a list of str")
        values["arm_errors"] = errors
        values["recoveries"] = _optional(env, "recoveries", int, 0)
        return cls(seq=env.seq, source=env.source, t_capture_ns=env.t_capture_ns, **values)


@dataclass
class CommandMsg:
    """Runtime → driver: what to do for the next control period, and until when it may still be applied.

    `obs_t_ns` is the capture time (driver clock) of the oldest observation the command was computed from; the
    driver refuses a motion command whose observation is older than its bound, whatever the runtime thinks.
    `session` is the sender's secret session token (robots/contract/session.py).
    """

    seq: int
    mode: Mode | str  # a Mode; on receipt, whatever string came (the driver refuses one that is no Mode)
    action: np.ndarray
    deadline_ns: int
    obs_seq: int = -1  # the observation this command was computed from
    source: str = "runtime"
    t_capture_ns: int = 0
    obs_t_ns: int = -1  # capture time of the oldest input it was computed from; -1: none (a hold)
    session: str = ""

    def to_frames(self) -> list[bytes]:
        return encode(
            COMMAND,
            seq=self.seq,
            source=self.source,
            t_capture_ns=self.t_capture_ns or time.monotonic_ns(),
            fields={
                "mode": str(self.mode),
                "deadline_ns": int(self.deadline_ns),
                "obs_seq": int(self.obs_seq),
                "obs_t_ns": int(self.obs_t_ns),
                "session": self.session,
            },
            arrays={"action": np.asarray(self.action, dtype=np.float64)},
        )

    @classmethod
    def from_envelope(cls, env: Envelope) -> CommandMsg:
        _check_topic(env, COMMAND)
        return cls(
            seq=env.seq,
            mode=_field(env, "mode", str),
            action=_array(env, "action", (None,)),
            deadline_ns=_field(env, "deadline_ns", int),
            obs_seq=_field(env, "obs_seq", int),
            source=env.source,
            t_capture_ns=env.t_capture_ns,
            obs_t_ns=_field(env, "obs_t_ns", int),
            session=_field(env, "session", str),
        )


@dataclass
class ControlMsg:
    """Session and sim requests on the command socket: `claim` and `release` the arm's lease (any driver),
    `tick` (lockstep: one period, no command) and `reset` (sim only)."""

    topic: str
    seq: int
    source: str = "runtime"
    seed: int | None = None  # reset only: lay the objects out from this seed (robots/sim/layout.py)
    session: str = ""
    lease_ms: float | None = None  # claim only: the lease asked for (the driver clamps it)

    def to_frames(self) -> list[bytes]:
        if self.topic not in CONTROL_TOPICS:
            raise ValueError(f"control topic must be one of {CONTROL_TOPICS}, not {self.topic!r}")
        fields: dict[str, Any] = {"session": self.session}
        if self.seed is not None:
            fields["seed"] = int(self.seed)
        if self.lease_ms is not None:
            fields["lease_ms"] = float(self.lease_ms)
        return encode(self.topic, seq=self.seq, source=self.source, t_capture_ns=time.monotonic_ns(), fields=fields)

    @classmethod
    def from_envelope(cls, env: Envelope) -> ControlMsg:
        """The request, or MalformedMessage for a wrong topic, a missing session, a seed that is not an int in
        [0, MAX_SEED], or a lease that is not a finite number."""
        if env.topic not in CONTROL_TOPICS:
            raise MalformedMessage(f"expected one of {CONTROL_TOPICS}, got {env.topic!r}")
        seed = env.fields.get("seed")
        if seed is not None and (
            env.topic != RESET or not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED
        ):
            raise MalformedMessage(f"{env.topic}: 'seed' must be an int in [0, {MAX_SEED}] on a reset, got {seed!r}")
        lease = env.fields.get("lease_ms")
        if lease is not None and (
            env.topic != CLAIM
            or not isinstance(lease, (int, float))
            or isinstance(lease, bool)
            or not np.isfinite(lease)
        ):
            raise MalformedMessage(f"{env.topic}: 'lease_ms' must be a finite number on a claim, got {lease!r}")
        return cls(
            topic=env.topic,
            seq=env.seq,
            source=env.source,
            seed=seed,
            session=_field(env, "session", str),
            lease_ms=None if lease is None else float(lease),
        )

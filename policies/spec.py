"""What a policy sees and what it outputs, as data that travels inside the model file (DESIGN §3).

The export writes these specs into the ONNX metadata and the runtime rebuilds the same specs from the
robot's YAML: a model is served only when the two are equal field by field, so a policy trained for the
other arm, another action space or another camera set is refused before any motion. The action spec also
owns the one mapping between continuous actions and the K uniform bins of the policy head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from robots.contract.link import Mode
from robots.spec import GRIPPER, ArmSpec, ProprioField

DEFAULT_BINS = 101
DEFAULT_INSTRUCTION_LENGTH = 16
POSE_SIZE = 7  # an object pose: position (3) + quaternion (w, x, y, z), in the robot base frame


class SpecMismatch(ValueError):
    """A model's spec differs from the robot's; the message names the first differing field."""


@dataclass(frozen=True)
class ObservationSpec:
    robot: str
    proprio: tuple[ProprioField, ...]
    cameras: tuple[str, ...]
    image_height: int  # 0 when the policy uses no camera
    image_width: int
    instruction_length: int
    objects: tuple[str, ...] = ()  # tracked objects whose poses the policy reads (the `objects` topic)

    @property
    def proprio_size(self) -> int:
        return sum(f.size for f in self.proprio)

    def proprio_offset(self, name: str) -> int | None:
        """Where proprio field `name` starts in the proprio vector, or None when the spec has no such field."""
        offset = 0
        for f in self.proprio:
            if f.name == name:
                return offset
            offset += f.size
        return None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The model's inputs, in graph order: proprio, images (if cameras), objects (if any), instruction."""
        return (
            ("proprio",)
            + (("images",) if self.cameras else ())
            + (("objects",) if self.objects else ())
            + ("instruction",)
        )

    @property
    def objects_shape(self) -> tuple[int, int]:
        """(N_obj, 7) of one observation's object poses."""
        return (len(self.objects), POSE_SIZE)

    def input_shapes(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Each model input of a batch-1 observation: name → (numpy dtype name, shape), in graph order."""
        shapes = {
            "proprio": ("float32", (1, self.proprio_size)),
            "images": ("uint8", (1, *self.image_shape)),
            "objects": ("float32", (1, *self.objects_shape)),
            "instruction": ("int64", (1, self.instruction_length)),
        }
        return {name: shapes[name] for name in self.modalities}

    @property
    def image_shape(self) -> tuple[int, int, int, int]:
        """(N_cam, 3, H, W) of one observation's image stack."""
        return (len(self.cameras), 3, self.image_height, self.image_width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObservationSpec:
        return cls(
            robot=str(d["robot"]),
            proprio=tuple(ProprioField(str(f["name"]), int(f["size"]), str(f["unit"])) for f in d["proprio"]),
            cameras=tuple(str(c) for c in d["cameras"]),
            image_height=int(d["image_height"]),
            image_width=int(d["image_width"]),
            instruction_length=int(d["instruction_length"]),
            objects=tuple(str(o) for o in d.get("objects", ())),  # files exported before the modality: none
        )


def _bounds(d: dict[str, Any], key: str) -> tuple[float, ...]:
    """An action bound as finite floats; a value no float holds (10**400, inf) is a ValueError naming it."""
    out = []
    for i, x in enumerate(d[key]):
        try:
            value = float(x)
        except OverflowError:
            value = float("inf")
        if not np.isfinite(value):
            raise ValueError(f"{key}[{i}] is not a finite number")
        out.append(value)
    return tuple(out)


DECODINGS = ("argmax", "mean", "hybrid", "median", "argmax_median", "sample", "sample_median")  # ActionSpec.from_logits
SAMPLED_DECODINGS = ("sample", "sample_median")  # they draw from the policy: from_logits needs a generator


@dataclass(frozen=True)
class ActionSpec:
    robot: str
    mode: str  # a Mode's value: the spec travels as JSON
    dims: tuple[str, ...]
    units: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    bins: int

    @property
    def size(self) -> int:
        return len(self.dims)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionSpec:
        return cls(
            robot=str(d["robot"]),
            mode=str(d["mode"]),
            dims=tuple(str(x) for x in d["dims"]),
            units=tuple(str(x) for x in d["units"]),
            low=_bounds(d, "low"),
            high=_bounds(d, "high"),
            bins=int(d["bins"]),
        )

    @cached_property
    def _centers(self) -> np.ndarray:
        t = np.linspace(0.0, 1.0, self.bins)
        low, high = np.asarray(self.low), np.asarray(self.high)
        centers = low[:, None] + (high - low)[:, None] * t[None, :]
        centers.setflags(write=False)
        return centers

    def bin_centers(self) -> np.ndarray:
        """(A, K) physical value of every bin; the first and last bins sit exactly on low and high."""
        return self._centers

    def to_bins(self, action: np.ndarray) -> np.ndarray:
        """Index of the nearest bin per dimension; actions outside [low, high] go to the end bins."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        t = (np.asarray(action, dtype=np.float64) - low) / (high - low)
        return np.clip(np.rint(t * (self.bins - 1)), 0, self.bins - 1).astype(np.int64)

    def from_logits(
        self, logits: np.ndarray, how: str = "argmax", rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Physical action (A,) from logits (A, K), by one of DECODINGS: the most likely bin ("argmax"), the
        distribution's mean ("mean"), the mean for the motion dims and the most likely bin for the gripper
        ("hybrid"), or the first bin where the cumulative probability reaches one half ("median"). A policy
        cloned from noisy data has flat motion distributions whose argmax lands on a clipped end bin, and a
        two-peaked gripper whose mean is half-closed. The median suits both: clipping at the bounds is
        monotone, so the median of clipped symmetric noise is the clipped noise-free action, where the mean
        is pulled inwards by the clip and by the data's hesitations; a two-peaked gripper's median is the
        side holding more than half of the mass. "argmax_median" takes the most likely bin for the motion dims and
        the median for the gripper: an open/close decision whose "open" mass is spread over many bins (as a critic's
        improvement term leaves it) and "closed" mass on one has its argmax on the closed spike even when most of
        the mass says open.

        "sample" draws every dimension from its categorical with `rng`; "sample_median" draws the motion dims and
        takes the gripper's median. A deterministic decoding of a policy cloned from a demonstrator with hidden
        state (a count of steps before it lifts, a pause) has fixed points where the data's chance of moving on
        is below one half each step: the median stays put for ever, the argmax leaves by a spike on a clipped
        bound, often the wrong way. Drawn, the policy moves on at the data's rate. The gripper's median keeps
        a held object held, where drawing it would drop it at the data's per-step chance of a drop."""
        logits = np.asarray(logits, dtype=np.float64).reshape(self.size, self.bins)
        centers = self.bin_centers()
        if how not in DECODINGS:
            raise ValueError(f"unknown decoding {how!r}: use one of {', '.join(DECODINGS)}")
        if how in SAMPLED_DECODINGS and rng is None:
            raise ValueError(f"decoding {how!r} draws from the policy: pass a numpy Generator")
        rows = np.arange(self.size)
        if how == "argmax":
            return centers[rows, np.argmax(logits, axis=1)]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        cdf = np.cumsum(p, axis=1)
        gripper = np.asarray(self.dims) == GRIPPER
        if how in SAMPLED_DECODINGS:
            drawn = (cdf < rng.random(self.size)[:, None] * cdf[:, -1:]).sum(axis=1)  # inverse CDF, one draw each
            sampled = centers[rows, np.minimum(drawn, self.bins - 1)]
            if how == "sample":
                return sampled
        if how in ("median", "argmax_median", "sample_median"):
            median = centers[rows, np.minimum((cdf < 0.5).sum(axis=1), self.bins - 1)]
            if how == "median":
                return median
            motion = centers[rows, np.argmax(logits, axis=1)] if how == "argmax_median" else sampled
            return np.where(gripper, median, motion)
        mean = (p * centers).sum(axis=1)
        if how == "mean":
            return mean
        return np.where(gripper, centers[rows, np.argmax(logits, axis=1)], mean)


def observation_spec(
    arm: ArmSpec,
    cameras: tuple[str, ...] | None = None,
    instruction_length: int = DEFAULT_INSTRUCTION_LENGTH,
    objects: tuple[str, ...] = (),
) -> ObservationSpec:
    """What a policy for `arm` observes: the arm's proprio fields, the named cameras (None: all of them, ():
    none) and the poses of the named scene objects (none by default). A policy needs a camera or an object:
    proprioception alone cannot say where the objects are."""
    names = tuple(c.name for c in arm.cameras) if cameras is None else tuple(cameras)
    objects = tuple(objects)
    if not names and not objects:
        raise ValueError("a PAC policy needs at least one camera or one tracked object")
    scene = scene_objects(arm)
    unknown = [o for o in objects if o not in scene]
    if unknown or len(set(objects)) != len(objects):
        raise ValueError(f"objects {list(objects)}: {arm.name}'s cell tracks {list(scene)}, each at most once")
    specs = [arm.camera(n) for n in names]  # raises for an unknown camera
    sizes = {(c.height, c.width) for c in specs}
    if len(sizes) > 1:
        raise ValueError(f"cameras {names} differ in resolution {sorted(sizes)}: one model takes one resolution")
    (height, width) = sizes.pop() if sizes else (0, 0)
    return ObservationSpec(
        robot=arm.name,
        proprio=tuple(arm.proprio),
        cameras=names,
        image_height=height,
        image_width=width,
        instruction_length=instruction_length,
        objects=objects,
    )


def scene_objects(arm: ArmSpec) -> tuple[str, ...]:
    """The names of the objects in `arm`'s cell, in the spec's order (what `--objects all` means)."""
    return tuple(str(o["name"]) for o in arm.scene.get("objects", []))


def action_spec(arm: ArmSpec, mode: Mode | str = Mode.CARTESIAN_VELOCITY, bins: int = DEFAULT_BINS) -> ActionSpec:
    """The action a policy for `arm` outputs in `mode`, discretised into `bins` uniform bins per dimension."""
    if mode not in arm.action_spaces:
        raise ValueError(f"{arm.name} has no action space {str(mode)!r}; it has {sorted(map(str, arm.action_spaces))}")
    if bins < 2:
        raise ValueError("an action dimension needs at least 2 bins")
    space = arm.action_spaces[mode]
    return ActionSpec(
        robot=arm.name,
        mode=str(mode),
        dims=space.dims,
        units=space.units,
        low=tuple(float(x) for x in space.low),
        high=tuple(float(x) for x in space.high),
        bins=bins,
    )


def _first_difference(prefix: str, got: Any, want: Any) -> str | None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in want:
            diff = _first_difference(f"{prefix}.{key}", got.get(key), want[key])
            if diff:
                return diff
        return None
    if isinstance(want, list | tuple) and isinstance(got, list | tuple) and len(want) == len(got):
        if all(isinstance(w, float) for w in want):
            if np.allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=0, atol=1e-9):
                return None
            return f"{prefix}: model has {list(got)}, robot expects {list(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            diff = _first_difference(f"{prefix}[{i}]", g, w)
            if diff:
                return diff
        return None
    if got != want:
        return f"{prefix}: model has {got!r}, robot expects {want!r}"
    return None


def check_matches(model: ObservationSpec | ActionSpec, expected: ObservationSpec | ActionSpec) -> None:
    """Raise SpecMismatch naming the first field where the model's spec differs from the robot's."""
    name = "observation_spec" if isinstance(expected, ObservationSpec) else "action_spec"
    # Robot and the sizes first: "wrong robot" reads better than "wrong joint name".
    got, want = model.to_dict(), expected.to_dict()
    order = ["robot", "mode", "cameras", "objects", "dims", "proprio"]
    for key in [k for k in order if k in want] + [k for k in want if k not in order]:
        g, w = got.get(key), want[key]
        if key in ("cameras", "objects", "dims", "proprio") and isinstance(g, list | tuple) and len(g) != len(w):
            raise SpecMismatch(f"{name}.{key}: model has {len(g)} ({_names(g)}), robot expects {len(w)} ({_names(w)})")
        diff = _first_difference(f"{name}.{key}", g, w)
        if diff:
            raise SpecMismatch(diff)


def _names(items: Any) -> str:
    return ", ".join(str(x["name"]) if isinstance(x, dict) else str(x) for x in items)

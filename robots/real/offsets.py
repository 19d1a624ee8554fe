"""Joint offsets from calibration, applied where the driver meets the SDK: true angle = encoder angle + offset.

The file is what `pac-calibrate joints` writes (calibration/): `kind: joint_offsets`, `robot`, and
`offsets_rad: {joint name: rad}`. The driver reads only those keys, so it does not depend on how they were
found (the layering: calibration sits above robots). Reads are corrected (encoder → model frame) before the
servo, the kinematics and the state see them; joint targets are turned back (model → encoder frame) before
the SDK sees them. Velocities are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from robots.spec import ArmSpec

KIND = "joint_offsets"
MAX_OFFSET_RAD = 0.05  # ~3°: more is a wrong file or a wrong arm, not an encoder's zero


class OffsetsError(ValueError):
    """A joint-offsets file that does not belong to this arm or is not one."""


@dataclass(frozen=True)
class JointOffsets:
    offsets: np.ndarray  # rad per joint
    source: str = ""  # the file they came from; "" for none

    @classmethod
    def none(cls, dof: int) -> JointOffsets:
        return cls(np.zeros(dof))

    def to_model(self, q_encoder: np.ndarray) -> np.ndarray:
        return np.asarray(q_encoder, dtype=float) + self.offsets

    def to_encoder(self, q_model: np.ndarray) -> np.ndarray:
        return np.asarray(q_model, dtype=float) - self.offsets


def load_joint_offsets(path: Path, spec: ArmSpec) -> JointOffsets:
    """The offsets in `path` for `spec`'s arm; OffsetsError naming what is wrong."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise OffsetsError(f"cannot read joint offsets {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise OffsetsError(f"{path}: not a joint-offsets file (kind must be {KIND!r})")
    if raw.get("robot") != spec.name:
        raise OffsetsError(f"{path}: offsets for {raw.get('robot')!r}, this driver is for {spec.name!r}")
    values = raw.get("offsets_rad")
    if not isinstance(values, dict) or set(values) != set(spec.joint_names):
        raise OffsetsError(f"{path}: offsets_rad must name each of {list(spec.joint_names)}")
    offsets = np.array([float(values[name]) for name in spec.joint_names])
    if not np.all(np.isfinite(offsets)) or np.any(np.abs(offsets) > MAX_OFFSET_RAD):
        raise OffsetsError(f"{path}: offsets must be finite and within ±{MAX_OFFSET_RAD} rad, got {offsets}")
    return JointOffsets(offsets, str(path))

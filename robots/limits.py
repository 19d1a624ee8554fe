"""Cartesian speed limits as norms: the one definition the driver's servo and the runtime's safety filter share.

An arm's Cartesian speed limit bounds the norm of the TCP's linear velocity and, separately, of its angular
velocity, as libfranka and franky state theirs; a per-axis cap would let a diagonal move run √3 times as
fast. `limit_twist` scales each part down to its norm, keeping the direction, and leaves a twist already
within both norms unchanged, bit for bit. The servo applies it to every twist command and the runtime's
filter applies it before sending, so the servo never rescales what the filter let through.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

LINEAR_DIMS = ("vx", "vy", "vz")  # m/s, the TCP's linear velocity in the base frame
ANGULAR_DIMS = ("wx", "wy", "wz")  # rad/s, its angular velocity
TWIST_DIMS = LINEAR_DIMS + ANGULAR_DIMS
LINEAR, ANGULAR = slice(0, 3), slice(3, 6)


@functools.cache
def twist_index(dims: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the action, positions in the 6-D twist) of the twist parts an action's `dims` name."""
    pairs = [(i, TWIST_DIMS.index(d)) for i, d in enumerate(dims) if d in TWIST_DIMS]
    out = np.array([i for i, _ in pairs], dtype=np.intp), np.array([j for _, j in pairs], dtype=np.intp)
    for a in out:
        a.setflags(write=False)  # cached: shared by every caller
    return out


def twist_of(dims: Sequence[str], action: np.ndarray) -> np.ndarray:
    """The 6-D twist (vx, vy, vz, wx, wy, wz) named by an action's `dims`; a part the action lacks is 0."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (len(dims),):
        raise ValueError(f"an action for dims {tuple(dims)} has shape ({len(dims)},), got {action.shape}")
    in_action, in_twist = twist_index(tuple(dims))
    twist = np.zeros(6)
    twist[in_twist] = action[in_action]
    return twist


def _norm(v: np.ndarray) -> float:
    """np.linalg.norm of a 1-d float vector (the square root of its dot product), without the call overhead.

    inf where the squares of huge parts overflow (limit_norm handles that), silently.
    """
    with np.errstate(over="ignore"):
        return math.sqrt(v @ v)


def limit_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    """`vector` scaled down to norm `max_norm`, direction kept; a copy of it when it is already within.

    Rounding can leave a scaled vector an ulp above the limit, so the scale is lowered until the norm, computed
    as every caller computes it, is within: a limited vector then passes unchanged through a second call.
    `max_norm` must be finite and >= 0; the vector finite (a caller rejects a non-finite command first).
    This runs twice a tick in the runtime's filter and at 100 Hz in the servo, so the common case (within
    the limit) is a copy, one dot product and a comparison.
    """
    if not (math.isfinite(max_norm) and max_norm >= 0):
        raise ValueError(f"a norm limit is finite and >= 0, got {max_norm!r}")
    v = np.array(vector, dtype=np.float64)
    norm = _norm(v)  # NaN for a non-finite vector; inf where squares of huge parts overflow
    if norm <= max_norm:
        return v
    if not np.all(np.isfinite(v)):
        raise ValueError(f"cannot limit a non-finite vector {v}: reject it first")
    if not math.isfinite(norm):  # same direction, smaller numbers
        v = v / np.max(np.abs(v))
        norm = _norm(v)
    scale, shrink = max_norm / norm, 2.0**-52
    out = v * scale
    while _norm(out) > max_norm:  # an ulp or two over; more where squares underflow or overflow
        scale, shrink = scale * (1.0 - shrink), min(2.0 * shrink, 0.5)
        out = v * scale
    return out


def limit_twist(twist: np.ndarray, max_linear_speed: float, max_angular_speed: float) -> np.ndarray:
    """The 6-D twist with its linear part within max_linear_speed (m/s) and its angular part within
    max_angular_speed (rad/s), each as a norm and scaled separately, so each part keeps its direction."""
    t = np.asarray(twist, dtype=np.float64)
    if t.shape != (6,):
        raise ValueError(f"a twist has shape (6,), got {t.shape}")
    return np.concatenate([limit_norm(t[LINEAR], max_linear_speed), limit_norm(t[ANGULAR], max_angular_speed)])

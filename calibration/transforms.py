"""4x4 rigid transforms: the one representation the calibration steps pass poses in.

A transform named `a_in_b` (or T_b_a) maps points from frame a to frame b. OpenCV's rvec/tvec pairs are
converted here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from robots.rotations import make_transform  # one definition, shared with the board mount (robots/board.py)


def invert(t: np.ndarray) -> np.ndarray:
    r = t[:3, :3]
    return make_transform(r.T, -r.T @ t[:3, 3])


def from_rvec(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    return make_transform(cv2.Rodrigues(np.asarray(rvec, dtype=float).reshape(3, 1))[0], tvec)


def to_rvec(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cv2.Rodrigues(t[:3, :3])[0].ravel(), t[:3, 3].copy()


def rotation_angle(rot: np.ndarray) -> float:
    """Angle (rad) of a rotation matrix."""
    return float(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation error in m, rotation error in rad) between two transforms."""
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), rotation_angle(a[:3, :3].T @ b[:3, :3])


def mean_rotation(rots: Sequence[np.ndarray]) -> np.ndarray:
    """The rotation nearest (Frobenius) to the mean of rotation matrices: SVD projection."""
    u, _, vt = np.linalg.svd(np.mean(np.asarray(rots), axis=0))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def mean_transform(ts: Sequence[np.ndarray]) -> np.ndarray:
    arr = np.asarray(ts)
    return make_transform(mean_rotation(arr[:, :3, :3]), arr[:, :3, 3].mean(axis=0))

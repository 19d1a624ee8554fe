"""Closed-form AX = XB solvers (Tsai-Lenz, Park-Martin, Andreff) and a small Levenberg-Marquardt, in numpy.

OpenCV 5.0's Python wheel dropped cv2.calibrateHandEye (4.x had it), and this venv has no SciPy; these are
the published formulations, the same ones OpenCV implemented, each a few lines. A and B are the relative
motions of the two frames X links: A_k X = X B_k for every pair of poses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.transforms import make_transform


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _log(rot: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(rot)[0].ravel()


def _project_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt


def _translation(a: Sequence[np.ndarray], b: Sequence[np.ndarray], rot: np.ndarray) -> np.ndarray:
    """t_X from (R_A - I) t_X = R_X t_B - t_A, stacked over the motions, least squares."""
    lhs = np.vstack([ai[:3, :3] - np.eye(3) for ai in a])
    rhs = np.concatenate([rot @ bi[:3, 3] - ai[:3, 3] for ai, bi in zip(a, b, strict=True)])
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def tsai(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Tsai and Lenz (1989): rotation from modified Rodrigues vectors, then translation."""
    lhs, rhs = [], []
    for ai, bi in zip(a, b, strict=True):
        pa, pb = (
            2 * np.sin(np.linalg.norm(v) / 2) * v / max(np.linalg.norm(v), 1e-12)
            for v in (_log(ai[:3, :3]), _log(bi[:3, :3]))
        )
        lhs.append(_skew(pa + pb))
        rhs.append(pb - pa)
    p = np.linalg.lstsq(np.vstack(lhs), np.concatenate(rhs), rcond=None)[0]
    px = 2 * p / np.sqrt(1 + p @ p)
    n2 = px @ px
    rot = (1 - n2 / 2) * np.eye(3) + 0.5 * (np.outer(px, px) + np.sqrt(4 - n2) * _skew(px))
    return make_transform(rot, _translation(a, b, rot))


def park(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Park and Martin (1994): R_X = (MᵀM)^-1/2 Mᵀ with M = Σ β αᵀ over the rotations' logarithms."""
    m = sum(np.outer(_log(bi[:3, :3]), _log(ai[:3, :3])) for ai, bi in zip(a, b, strict=True))
    w, v = np.linalg.eigh(m.T @ m)
    rot = _project_rotation(v @ np.diag(1 / np.sqrt(np.maximum(w, 1e-12))) @ v.T @ m.T)
    return make_transform(rot, _translation(a, b, rot))


def andreff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Andreff et al. (2001): R_A R_X = R_X R_B as a linear system in vec(R_X), its null vector by SVD."""
    rows = np.vstack(
        [np.kron(ai[:3, :3], np.eye(3)) - np.kron(np.eye(3), bi[:3, :3].T) for ai, bi in zip(a, b, strict=True)]
    )
    m = np.linalg.svd(rows, full_matrices=False)[2][-1].reshape(3, 3)  # V only: a full U is (9·pairs)²
    m *= np.sign(np.linalg.det(m)) / abs(np.linalg.det(m)) ** (1 / 3)
    rot = _project_rotation(m)
    return make_transform(rot, _translation(a, b, rot))


SOLVERS: dict[str, Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], np.ndarray]] = {
    "tsai": tsai,
    "park": park,
    "andreff": andreff,
}


@dataclass(frozen=True)
class Fit:
    x: np.ndarray
    cost: float  # |fun(x)|²
    iterations: int
    converged: bool  # the cost stopped falling; False when the iterations ran out first


def levenberg_marquardt(
    fun: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    iterations: int = 50,
    step: float = 1e-6,
    rtol: float = 1e-10,
) -> Fit:
    """Minimise |fun(x)|² from x0; forward-difference Jacobian (the problems here have tens of parameters).
    Converged when an accepted step lowers the cost by under `rtol` of it, or no damping finds a lower cost:
    past that, the forward differences' own error is larger than what more iterations would gain."""
    x = np.asarray(x0, dtype=float).copy()
    r = fun(x)
    cost, lam = float(r @ r), 1e-3
    for it in range(1, iterations + 1):
        jac = np.empty((r.size, x.size))
        for i in range(x.size):
            dx = np.zeros_like(x)
            dx[i] = step
            jac[:, i] = (fun(x + dx) - r) / step
        jtj, jtr = jac.T @ jac, jac.T @ r
        while True:
            delta = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), -jtr)
            r_new = fun(x + delta)
            if r_new @ r_new < cost:
                x, r, lam = x + delta, r_new, lam / 3
                break
            lam *= 4
            if lam > 1e8:
                return Fit(x, cost, it, True)
        new_cost = float(r @ r)
        if cost - new_cost < rtol * max(cost, 1e-30):
            return Fit(x, new_cost, it, True)
        cost = new_cost
    return Fit(x, cost, iterations, False)

"""Joint offsets from board views: how far each encoder's zero is from the kinematic model's.

The board on the gripper is seen by calibrated fixed cameras at many poses; the offsets, the cameras' poses
and the board's pose on the gripper are solved together to minimise every corner's reprojection error
through the arm's forward kinematics. Two offsets cannot be seen this way and are held at zero: the first
joint's (turning the whole arm about the base's z axis looks the same as turning every camera the other
way) and the last joint's (turning the flange about its axis looks the same as the board mounted turned).
So the result fixes the joints between, in a gauge where the cameras' and the mount's poses absorb the other
two: the frame that hand-eye and the policy's training data were recorded in.
A view the solve cannot explain (its error far above the others', as intrinsics judges images) is dropped and
the solve rerun: one mis-detected board, 18 px off, once moved an offset by 5 mrad.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from calibration.board import Detection
from calibration.handeye import predicted_board
from calibration.intrinsics import outliers, residuals
from calibration.solvers import levenberg_marquardt
from calibration.transforms import from_rvec, make_transform, to_rvec
from robots.kinematics import KinematicChain

MIN_VIEWS = 12


class JointOffsetError(ValueError):
    """The views cannot determine the offsets; the message says why."""


@dataclass(frozen=True)
class CameraModel:
    """A fixed camera as calibrated: intrinsics and its pose in the base frame (the hand-eye result)."""

    k: np.ndarray
    dist: np.ndarray
    pose: np.ndarray  # 4x4, camera in base


@dataclass(frozen=True)
class JointView:
    q: np.ndarray  # joint angles as the encoders read them
    camera: str
    detection: Detection
    name: str = ""  # the pose's name, for naming a rejected view


@dataclass(frozen=True)
class JointOffsetResult:
    offsets: np.ndarray  # rad, per joint: true angle = read angle + offset
    solved: tuple[int, ...]  # the joints whose offsets were estimated; the others are held at zero
    rms_before_px: float
    rms_px: float
    cameras: dict[str, np.ndarray]  # camera poses re-estimated with the offsets
    target: np.ndarray  # board in the TCP frame
    std: np.ndarray  # rad, one-sigma of each solved offset from the fit's covariance
    rejected: dict[str, float] = field(default_factory=dict)  # outlier views ("camera/name") -> their error, px


def _tcp(chain: KinematicChain, q: np.ndarray) -> np.ndarray:
    p, r = chain.fk(q)
    return make_transform(r, p)


def solve_joint_offsets(
    chain: KinematicChain,
    views: Sequence[JointView],
    cameras: Mapping[str, CameraModel],
    target: np.ndarray,
    solved: Sequence[int] | None = None,
) -> JointOffsetResult:
    """Offsets of `solved` joints (default: all but the first and last), with the cameras' poses and the
    board's pose in the TCP frame re-estimated; `target` (the hand-eye board pose) starts the search."""
    solved = tuple(range(1, chain.dof - 1)) if solved is None else tuple(solved)
    if len(views) < MIN_VIEWS:
        raise JointOffsetError(f"{len(views)} views of the board; at least {MIN_VIEWS} are needed")
    names = sorted(cameras)
    missing = {v.camera for v in views} - set(names)
    if missing:
        raise JointOffsetError(f"views from camera(s) {sorted(missing)} with no calibration given")
    n = len(solved)

    def unpack(x: np.ndarray):
        offsets = np.zeros(chain.dof)
        offsets[list(solved)] = x[:n]
        cams = {
            c: from_rvec(x[n + 6 * i : n + 6 * i + 3], x[n + 6 * i + 3 : n + 6 * i + 6]) for i, c in enumerate(names)
        }
        tgt = from_rvec(x[-6:-3], x[-3:])
        return offsets, cams, tgt

    def view_residuals(x: np.ndarray, v: JointView) -> np.ndarray:
        offsets, cams, tgt = unpack(x)
        cam = cameras[v.camera]
        board = predicted_board(cams[v.camera], tgt, _tcp(chain, v.q + offsets), "eye_to_hand")
        return residuals(v.detection, cam.k, cam.dist, *to_rvec(board)).ravel()

    kept = {_label(v, i): v for i, v in enumerate(views)}

    def fun(x: np.ndarray) -> np.ndarray:
        return np.concatenate([view_residuals(x, v) for v in kept.values()])

    x0 = np.concatenate([np.zeros(n), *[np.concatenate(to_rvec(cameras[c].pose)) for c in names], *to_rvec(target)])
    r0 = fun(x0)
    x, rejected = x0, {}
    while True:
        fit = levenberg_marquardt(fun, x, iterations=100)
        if not fit.converged:
            raise JointOffsetError(
                f"the solve did not converge in {fit.iterations} iterations (RMS {_rms(fun(fit.x)):.2f} px): "
                "check that the intrinsics and hand-eye files belong to these cameras"
            )
        x = fit.x
        errors = {label: _rms(view_residuals(x, v)) for label, v in kept.items()}
        drop = outliers(errors)
        if not drop:
            break
        if len(kept) - len(drop) < MIN_VIEWS:
            raise JointOffsetError(
                f"{len(drop)} of {len(kept)} views disagree with the others (errors up to "
                f"{max(errors[d] for d in drop):.2f} px); fewer than {MIN_VIEWS} consistent views remain: recapture"
            )
        rejected |= {d: errors[d] for d in drop}
        kept = {label: v for label, v in kept.items() if label not in drop}
    r = fun(x)
    jac = np.empty((r.size, x.size))
    for i in range(x.size):
        dx = np.zeros_like(x)
        dx[i] = 1e-7
        jac[:, i] = (fun(x + dx) - r) / 1e-7
    sv = np.linalg.svd(jac, compute_uv=False)
    if sv[-1] < 1e-6 * sv[0]:
        raise JointOffsetError(
            f"the poses do not determine every offset (condition number {sv[0] / sv[-1]:.3g}): vary every joint"
        )
    sigma2 = (r @ r) / max(r.size - x.size, 1)
    std = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)) * sigma2)[:n]
    offsets, cams, tgt = unpack(x)
    return JointOffsetResult(offsets, solved, _rms(r0), _rms(r), cams, tgt, std, rejected)


def _label(view: JointView, index: int) -> str:
    return f"{view.camera}/{view.name or index}"


def _rms(res: np.ndarray) -> float:
    """px: the RMS length of the (x, y) residual vectors."""
    return float(np.sqrt(np.mean(np.sum(res.reshape(-1, 2) ** 2, axis=1))))

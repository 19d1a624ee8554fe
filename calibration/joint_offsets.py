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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.board import Detection
from calibration.handeye import predicted_board
from calibration.intrinsics import fit_without_outliers
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


def default_solved(chain: KinematicChain) -> tuple[int, ...]:
    """Every joint but the first and last: the two whose offsets the cameras and the mount absorb."""
    return tuple(range(1, chain.dof - 1))


@dataclass(frozen=True)
class _Layout:
    """Where each unknown sits in the solve's parameter vector: the solved joints' offsets, each camera's pose
    (rvec, tvec; cameras in name order), then the board's pose in the TCP frame (rvec, tvec)."""

    dof: int
    solved: tuple[int, ...]
    cameras: tuple[str, ...]

    def pack(self, cameras: Mapping[str, np.ndarray], target: np.ndarray) -> np.ndarray:
        poses = [np.concatenate(to_rvec(cameras[c])) for c in self.cameras]
        return np.concatenate([np.zeros(len(self.solved)), *poses, *to_rvec(target)])

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        n = len(self.solved)
        offsets = np.zeros(self.dof)
        offsets[list(self.solved)] = x[:n]
        cams = {
            c: from_rvec(x[n + 6 * i : n + 6 * i + 3], x[n + 6 * i + 3 : n + 6 * i + 6])
            for i, c in enumerate(self.cameras)
        }
        return offsets, cams, from_rvec(x[-6:-3], x[-3:])


def _projected(
    chain: KinematicChain,
    layout: _Layout,
    x: np.ndarray,
    q: np.ndarray,
    camera: str,
    model: CameraModel,
    points: np.ndarray,
) -> np.ndarray:
    """(N, 2) px where the parameters `x` put the board's `points` in `camera`'s image with the arm at `q`."""
    offsets, cams, tgt = layout.unpack(x)
    board = predicted_board(cams[camera], tgt, _tcp(chain, q + offsets), "eye_to_hand")
    return cv2.projectPoints(points, *to_rvec(board), model.k, model.dist)[0].reshape(-1, 2)


def pose_information(
    chain: KinematicChain,
    q: np.ndarray,
    cameras: Mapping[str, CameraModel],
    target: np.ndarray,
    points: np.ndarray,
    solved: Sequence[int] | None = None,
) -> np.ndarray:
    """What one pose, seen by every camera, tells the solve: JᵀJ (P x P) of the board's corners' pixels
    against the solve's parameters, at zero offsets, for 1 px of corner noise. Summed over poses and inverted,
    its first len(solved) diagonal entries are the offsets' variances (offset_variances): pose generation
    uses it to pick the poses that pin the offsets down, before any image is taken."""
    layout = _Layout(chain.dof, default_solved(chain) if solved is None else tuple(solved), tuple(sorted(cameras)))
    x0 = layout.pack({c: m.pose for c, m in cameras.items()}, target)
    pts = np.asarray(points, float)
    base = np.concatenate([_projected(chain, layout, x0, q, c, cameras[c], pts).ravel() for c in layout.cameras])
    jac = np.empty((base.size, x0.size))
    for i in range(x0.size):
        dx = np.zeros_like(x0)
        dx[i] = 1e-6
        moved = [_projected(chain, layout, x0 + dx, q, c, cameras[c], pts).ravel() for c in layout.cameras]
        jac[:, i] = (np.concatenate(moved) - base) / 1e-6
    return jac.T @ jac


def offset_variances(information: np.ndarray, n_solved: int) -> np.ndarray:
    """rad² per solved offset, for 1 px of corner noise, from the summed information of a pose set."""
    return np.diag(np.linalg.pinv(information))[:n_solved]


def solve_joint_offsets(
    chain: KinematicChain,
    views: Sequence[JointView],
    cameras: Mapping[str, CameraModel],
    target: np.ndarray,
    solved: Sequence[int] | None = None,
) -> JointOffsetResult:
    """Offsets of `solved` joints (default: all but the first and last), with the cameras' poses and the
    board's pose in the TCP frame re-estimated; `target` (the hand-eye board pose) starts the search."""
    solved = default_solved(chain) if solved is None else tuple(solved)
    if len(views) < MIN_VIEWS:
        raise JointOffsetError(f"{len(views)} views of the board; at least {MIN_VIEWS} are needed")
    names = sorted(cameras)
    missing = {v.camera for v in views} - set(names)
    if missing:
        raise JointOffsetError(f"views from camera(s) {sorted(missing)} with no calibration given")
    n = len(solved)
    layout = _Layout(chain.dof, solved, tuple(names))

    def view_residuals(x: np.ndarray, v: JointView) -> np.ndarray:
        projected = _projected(chain, layout, x, v.q, v.camera, cameras[v.camera], v.detection.object_points)
        return (projected - v.detection.image_points).ravel()

    labelled = {_label(v, i): v for i, v in enumerate(views)}

    def residuals(x: np.ndarray, labels: Iterable[str]) -> np.ndarray:
        return np.concatenate([view_residuals(x, labelled[label]) for label in labels])

    x0 = layout.pack({c: m.pose for c, m in cameras.items()}, target)
    x = x0  # each refit starts where the last one ended

    def fit(labels: list[str]):
        nonlocal x
        result = levenberg_marquardt(lambda y: residuals(y, labels), x, iterations=100)
        if not result.converged:
            raise JointOffsetError(
                f"the solve did not converge in {result.iterations} iterations (RMS "
                f"{_rms(residuals(result.x, labels)):.2f} px): check that the intrinsics and hand-eye files belong "
                "to these cameras"
            )
        x = result.x
        return x, {label: _rms(view_residuals(result.x, labelled[label])) for label in labels}

    x, kept, rejected = fit_without_outliers(labelled, fit, MIN_VIEWS, "views", JointOffsetError)

    def fun(y: np.ndarray) -> np.ndarray:
        return residuals(y, kept)

    r0 = residuals(x0, labelled)
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
    offsets, cams, tgt = layout.unpack(x)
    return JointOffsetResult(offsets, solved, _rms(r0), _rms(r), cams, tgt, std, rejected)


def _label(view: JointView, index: int) -> str:
    return f"{view.camera}/{view.name or index}"


def _rms(res: np.ndarray) -> float:
    """px: the RMS length of the (x, y) residual vectors."""
    return float(np.sqrt(np.mean(np.sum(res.reshape(-1, 2) ** 2, axis=1))))

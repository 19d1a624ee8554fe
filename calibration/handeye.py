"""Hand-eye calibration: where a camera is, from board views and the arm's TCP poses, with OpenCV's solvers.

Eye-to-hand (fixed cameras, the board on the gripper, the RGB-Stacking cell) gives the camera in the base
frame; eye-in-hand (the camera on the gripper, the board fixed) gives the camera in the TCP frame. One
AX = XB solve serves both, as in OpenCV: eye-to-hand passes the base in the gripper frame instead of the
gripper in the base frame. The closed-form methods (solvers.py: Tsai-Lenz, Park-Martin, Andreff; OpenCV 5.0's
wheel lacks calibrateHandEye) and a reprojection-error refinement of the camera and board poses together
disagree when the data are poor, so each is run, their spread is reported, and the one that best predicts
views it did not see (held-out reprojection error, k-fold) is kept. Before that, a view the refined solve
cannot explain (its error far above the others', as intrinsics judges images) is dropped: one mis-detected
board moves every method's answer by millimetres.
A pose set without rotations about two different axes leaves the solution undetermined (Tsai and Lenz) and
is refused before any solver runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.board import Detection
from calibration.intrinsics import fit_without_outliers, residuals
from calibration.solvers import SOLVERS, levenberg_marquardt
from calibration.transforms import from_rvec, invert, mean_transform, pose_error, to_rvec

EYE_TO_HAND, EYE_IN_HAND = "eye_to_hand", "eye_in_hand"
REFINED = "reprojection"  # camera and board poses refined together on every corner, from Park-Martin's answer
METHODS = (*SOLVERS, REFINED)
MIN_POSES = 6
MIN_ROTATION_DEG = 15.0  # the largest rotation between two poses: below it the rotation is lost in the noise
MIN_AXIS_SPREAD = 0.15  # second over first singular value of the relative rotation vectors: two axes, not one
FOLDS = 4


class HandEyeError(ValueError):
    """The poses and views cannot determine the camera; the message says why."""


@dataclass(frozen=True)
class View:
    """One pose of the arm and what the camera saw then."""

    tcp: np.ndarray  # 4x4, TCP in the base frame, from the arm's forward kinematics
    detection: Detection


@dataclass(frozen=True)
class MethodScore:
    held_out_px: float  # RMS reprojection error on held-out poses (k-fold)
    translation_from_best_m: float
    rotation_from_best_deg: float


@dataclass(frozen=True)
class HandEye:
    setup: str  # EYE_TO_HAND or EYE_IN_HAND
    camera: np.ndarray  # 4x4: the camera in the base frame (eye-to-hand) or in the TCP frame (eye-in-hand)
    target: np.ndarray  # 4x4: the board in the TCP frame (eye-to-hand) or in the base frame (eye-in-hand)
    method: str
    scores: dict[str, MethodScore]
    rms_px: float  # over every view kept, with the kept method
    per_view_px: dict[str, float]
    rejected: dict[str, float] = field(default_factory=dict)  # outlier views -> their error, px

    @property
    def spread(self) -> tuple[float, float]:
        """Largest distance (m) and angle (deg) of any method's answer from the one kept."""
        s = self.scores.values()
        return max(x.translation_from_best_m for x in s), max(x.rotation_from_best_deg for x in s)


def motion_check(tcp_poses: list[np.ndarray]) -> tuple[float, float]:
    """(largest relative rotation in deg, axis spread) of the poses; a HandEyeError when they are degenerate."""
    rotvecs = []
    for i in range(len(tcp_poses)):
        for j in range(i + 1, len(tcp_poses)):
            rvec = cv2.Rodrigues(tcp_poses[i][:3, :3].T @ tcp_poses[j][:3, :3])[0].ravel()
            rotvecs.append(rvec)
    rv = np.array(rotvecs)
    largest = float(np.degrees(np.max(np.linalg.norm(rv, axis=1)))) if len(rv) else 0.0
    if largest < MIN_ROTATION_DEG:
        raise HandEyeError(
            f"the poses barely rotate (largest rotation between two poses {largest:.1f}°, under "
            f"{MIN_ROTATION_DEG:.0f}°): pure translations cannot locate a camera; tilt the board between poses"
        )
    sv = np.linalg.svd(rv, compute_uv=False)
    spread = float(sv[1] / sv[0])
    if spread < MIN_AXIS_SPREAD:
        raise HandEyeError(
            f"every rotation between poses is about nearly the same axis (spread {spread:.3f}, under "
            f"{MIN_AXIS_SPREAD}): the camera is undetermined along that axis; rotate about two different axes"
        )
    return largest, spread


def board_in_camera(det: Detection, k: np.ndarray, dist: np.ndarray) -> np.ndarray:
    ok, rvec, tvec = cv2.solvePnP(det.object_points, det.image_points, k, dist, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise HandEyeError("solvePnP failed on a view")
    return from_rvec(rvec, tvec)


def _closed_form(label: str, tcp: list[np.ndarray], boards: list[np.ndarray], setup: str) -> np.ndarray:
    """AX = XB over every pair of views: A the motion of the gripper (or of the base seen from the gripper),
    B the board's motion seen by the camera."""
    moving = tcp if setup == EYE_IN_HAND else [invert(t) for t in tcp]
    a, b = [], []
    for i in range(len(tcp)):
        for j in range(i + 1, len(tcp)):
            a.append(invert(moving[j]) @ moving[i])
            b.append(boards[j] @ invert(boards[i]))
    return SOLVERS[label](a, b)


def _refine(views: list[View], tcp: list[np.ndarray], camera: np.ndarray, target: np.ndarray, k, dist, setup: str):
    """Camera and board poses minimising the reprojection error of every corner of every view."""

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return from_rvec(x[:3], x[3:6]), from_rvec(x[6:9], x[9:])

    def fun(x: np.ndarray) -> np.ndarray:
        cam, tgt = unpack(x)
        return np.concatenate(
            [
                _view_error(v, predicted_board(cam, tgt, t, setup), k, dist).ravel()
                for v, t in zip(views, tcp, strict=True)
            ]
        )

    fit = levenberg_marquardt(fun, np.concatenate([*to_rvec(camera), *to_rvec(target)]))
    if not fit.converged:
        raise HandEyeError(f"the reprojection refinement did not converge in {fit.iterations} iterations")
    return unpack(fit.x)


def _solve(label: str, views: list[View], tcp: list[np.ndarray], boards: list[np.ndarray], k, dist, setup: str):
    """(camera, target) by one method."""
    camera = _closed_form("park" if label == REFINED else label, tcp, boards, setup)
    target = _target(camera, tcp, boards, setup)
    if label == REFINED:
        camera, target = _refine(views, tcp, camera, target, k, dist, setup)
    return camera, target


def _target(camera: np.ndarray, tcp: list[np.ndarray], boards: list[np.ndarray], setup: str) -> np.ndarray:
    """The other unknown, averaged over the views: the board in the TCP frame (eye-to-hand) or in the base."""
    if setup == EYE_TO_HAND:
        return mean_transform([invert(t) @ camera @ b for t, b in zip(tcp, boards, strict=True)])
    return mean_transform([t @ camera @ b for t, b in zip(tcp, boards, strict=True)])


def predicted_board(camera: np.ndarray, target: np.ndarray, tcp: np.ndarray, setup: str) -> np.ndarray:
    """The board in the camera frame that the calibration predicts at a TCP pose."""
    if setup == EYE_TO_HAND:
        return invert(camera) @ tcp @ target
    return invert(tcp @ camera) @ target


def _view_error(view: View, board: np.ndarray, k: np.ndarray, dist: np.ndarray) -> np.ndarray:
    rvec, tvec = to_rvec(board)
    return residuals(view.detection, k, dist, rvec, tvec)


def _rms(res: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate([np.sum(r**2, axis=1) for r in res]))))


def _outlier_views(
    views: Mapping[str, View], boards: Mapping[str, np.ndarray], k: np.ndarray, dist: np.ndarray, setup: str
) -> dict[str, float]:
    """Views whose error under the refined solve of the others stands out (intrinsics.fit_without_outliers),
    dropped one round at a time until none does: name -> its error, px."""

    def fit(names: list[str]):
        kept, tcp = [views[n] for n in names], [views[n].tcp for n in names]
        cam, target = _solve(REFINED, kept, tcp, [boards[n] for n in names], k, dist, setup)
        errors = {
            n: _rms([_view_error(v, predicted_board(cam, target, t, setup), k, dist)])
            for n, v, t in zip(names, kept, tcp, strict=True)
        }
        return None, errors

    return fit_without_outliers(views, fit, MIN_POSES, "views", HandEyeError)[2]


def calibrate_handeye(
    views: Mapping[str, View], k: np.ndarray, dist: np.ndarray, setup: str = EYE_TO_HAND, folds: int = FOLDS
) -> HandEye:
    """Locate one camera from named views; every method is scored on held-out views, the best kept."""
    if setup not in (EYE_TO_HAND, EYE_IN_HAND):
        raise HandEyeError(f"setup {setup!r}: {EYE_TO_HAND} or {EYE_IN_HAND}")
    if len(views) < MIN_POSES:
        raise HandEyeError(f"{len(views)} views with the board found; at least {MIN_POSES} poses are needed")
    motion_check([v.tcp for v in views.values()])
    boards_by_name = {n: board_in_camera(v.detection, k, dist) for n, v in views.items()}
    rejected = _outlier_views(views, boards_by_name, k, dist, setup)
    names = sorted(n for n in views if n not in rejected)
    tcp = [views[n].tcp for n in names]
    if rejected:
        motion_check(tcp)  # what is left must still rotate about two axes
    boards = [boards_by_name[n] for n in names]
    ordered = [views[n] for n in names]
    held_out: dict[str, float] = {}
    for label in METHODS:
        res = []
        for f in range(folds):
            test = set(range(f, len(names), folds))
            train = [i for i in range(len(names)) if i not in test]
            cam, target = _solve(
                label, [ordered[i] for i in train], [tcp[i] for i in train], [boards[i] for i in train], k, dist, setup
            )
            res += [_view_error(ordered[i], predicted_board(cam, target, tcp[i], setup), k, dist) for i in test]
        held_out[label] = _rms(res)
    answers = {label: _solve(label, ordered, tcp, boards, k, dist, setup) for label in METHODS}
    best = min(held_out, key=held_out.get)
    camera, target = answers[best]
    scores = {}
    for label, (cam, _) in answers.items():
        dt, dr = pose_error(cam, camera)
        scores[label] = MethodScore(held_out[label], dt, float(np.degrees(dr)))
    per_view = {
        n: _view_error(views[n], predicted_board(camera, target, t, setup), k, dist)
        for n, t in zip(names, tcp, strict=True)
    }
    return HandEye(
        setup,
        camera,
        target,
        best,
        scores,
        _rms(list(per_view.values())),
        {n: float(np.sqrt(np.mean(np.sum(r**2, axis=1)))) for n, r in per_view.items()},
        rejected,
    )

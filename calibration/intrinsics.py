"""Camera intrinsics from board images with OpenCV: detect, calibrate, reject outlier images, calibrate again.

A single blurred or mis-detected image pulls the whole solution, so images whose reprojection error stands
far above the others are dropped and the camera is calibrated again without them; each error here names
the problem (too few images, no board, mixed sizes) so the operator knows what to recapture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np

from calibration.board import Detection, detect
from robots.board import BoardSpec

# Distortion models: which of OpenCV's (k1, k2, p1, p2, k3) are estimated; the rest are held at zero.
DISTORTION_FLAGS = {
    "none": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "k1k2": cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "k1k2p1p2": cv2.CALIB_FIX_K3,
    "k1k2p1p2k3": 0,
}
# Radial terms only by default: tangential distortion (p1, p2) is negligible in most lenses, and estimating it
# trades off against the principal point; in the sim (a pinhole) it moved the principal point by up to 1.1 px
# over 20 seeds, 0.4 px without it, and a 1 px principal-point error is a 0.4° camera rotation at 128x128.
DEFAULT_DISTORTION = "k1k2"
MIN_IMAGES = 8  # OpenCV needs 3; below ~8 varied views the focal length and principal point trade off
OUTLIER_FACTOR = 3.0  # an image whose error is this many times the median image's is dropped
OUTLIER_FLOOR_PX = 0.3  # ... and above this: below it every image is good, whatever the ratio


T = TypeVar("T")


class IntrinsicsError(ValueError):
    """The images cannot give a calibration; the message says what to recapture."""


@dataclass(frozen=True)
class Intrinsics:
    camera_matrix: np.ndarray  # (3, 3)
    dist_coeffs: np.ndarray  # (5,) k1, k2, p1, p2, k3
    distortion: str  # a key of DISTORTION_FLAGS
    width: int
    height: int
    rms: float  # px, over every corner of the images kept
    per_image: dict[str, float]  # image name -> RMS reprojection error, px (kept images)
    rejected: dict[str, float] = field(default_factory=dict)  # outlier images -> their error, px
    not_found: tuple[str, ...] = ()  # images with no whole board in them


@dataclass(frozen=True)
class IntrinsicsRun:
    """A calibration and what it was computed from: the detections and each corner's residual (for the PNG)."""

    result: Intrinsics
    detections: dict[str, Detection]
    residuals: dict[str, np.ndarray]  # image name -> (N, 2) projected minus detected, px


def image_size(images: Mapping[str, np.ndarray], expected: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) shared by every image; an error naming the odd ones out otherwise."""
    sizes = {name: (img.shape[1], img.shape[0]) for name, img in images.items()}
    want = expected or max(set(sizes.values()), key=list(sizes.values()).count)
    odd = sorted(name for name, size in sizes.items() if size != want)
    if odd:
        shown = ", ".join(f"{n} ({sizes[n][0]}x{sizes[n][1]})" for n in odd[:5])
        raise IntrinsicsError(f"{len(odd)} image(s) are not {want[0]}x{want[1]}: {shown}")
    return want


def residuals(det: Detection, k: np.ndarray, dist: np.ndarray, rvec, tvec) -> np.ndarray:
    projected = cv2.projectPoints(det.object_points, rvec, tvec, k, dist)[0].reshape(-1, 2)
    return projected - det.image_points


def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(r**2, axis=1))))


def _calibrate(dets: dict[str, Detection], size: tuple[int, int], distortion: str):
    names = sorted(dets)
    obj = [dets[n].object_points.astype(np.float32) for n in names]
    img = [dets[n].image_points.astype(np.float32) for n in names]
    rms, k, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=DISTORTION_FLAGS[distortion])
    res = {n: residuals(dets[n], k, dist, r, t) for n, r, t in zip(names, rvecs, tvecs, strict=True)}
    return float(rms), k, dist.ravel(), res


def outliers(errors: Mapping[str, float], factor: float = OUTLIER_FACTOR, floor: float = OUTLIER_FLOOR_PX) -> list[str]:
    """Images whose error is above both `factor` times the median and `floor` px."""
    median = float(np.median(list(errors.values())))
    return sorted(n for n, e in errors.items() if e > max(factor * median, floor))


def fit_without_outliers(
    names: Iterable[str],
    fit: Callable[[list[str]], tuple[T, dict[str, float]]],
    minimum: int,
    what: str,
    error: type[Exception],
) -> tuple[T, dict[str, float], dict[str, float]]:
    """Fit on every item, drop those whose error stands out (`outliers`), fit again on the rest, until none does:
    (the last fit, its error per item kept, the items dropped with the error that dropped them). Intrinsics,
    hand-eye and the joint solve reject bad views this one way. `fit(names)` returns its solution and an error
    per name, px; `error` names the items (`what`: "images", "views") when fewer than `minimum` would remain."""
    kept, rejected = sorted(names), {}
    while True:
        solution, errors = fit(kept)
        drop = outliers(errors)
        if not drop:
            return solution, errors, rejected
        if len(kept) - len(drop) < minimum:
            raise error(
                f"{len(drop)} of {len(kept)} {what} disagree with the others ({', '.join(drop[:8])}, errors up to "
                f"{max(errors[n] for n in drop):.2f} px); fewer than {minimum} consistent {what} remain: recapture"
            )
        rejected |= {n: errors[n] for n in drop}
        kept = [n for n in kept if n not in drop]


def calibrate_intrinsics(
    board: BoardSpec,
    images: Mapping[str, np.ndarray],
    *,
    distortion: str = DEFAULT_DISTORTION,
    expected_size: tuple[int, int] | None = None,
    min_images: int = MIN_IMAGES,
) -> IntrinsicsRun:
    """Calibrate one camera from named images of `board`."""
    if distortion not in DISTORTION_FLAGS:
        raise IntrinsicsError(f"distortion model {distortion!r}: one of {', '.join(DISTORTION_FLAGS)}")
    if len(images) < min_images:
        raise IntrinsicsError(f"{len(images)} image(s) given; at least {min_images} views of the board are needed")
    size = image_size(images, expected_size)
    found = {name: detect(board, img) for name, img in images.items()}
    dets = {n: d for n, d in found.items() if d is not None}
    not_found = tuple(sorted(n for n, d in found.items() if d is None))
    if not dets:
        raise IntrinsicsError(f"no {board.text} board found in any of the {len(images)} images: is it the board shown?")
    if len(dets) < min_images:
        raise IntrinsicsError(
            f"the {board.text} board was found whole in {len(dets)} of {len(images)} images; at least {min_images} "
            f"are needed (not found in: {', '.join(not_found[:8])}{' ...' if len(not_found) > 8 else ''})"
        )

    def fit(names: list[str]):
        calibration = _calibrate({n: dets[n] for n in names}, size, distortion)
        return calibration, {n: _rms(r) for n, r in calibration[3].items()}

    (rms, k, dist, res), errors, rejected = fit_without_outliers(dets, fit, min_images, "images", IntrinsicsError)
    result = Intrinsics(k, dist, distortion, size[0], size[1], rms, errors, rejected, not_found)
    return IntrinsicsRun(result, {n: dets[n] for n in errors}, res)

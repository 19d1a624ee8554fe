"""Hand-held board views for intrinsics, kept from a running driver's camera topics while a person waves the
board in front of the cameras: what `pac-calibrate capture --handheld N` does without --sim.

Intrinsics need the board near and far, tilted and all over each image, which the arm with the board on its
gripper does not give (calibration/driver_capture.py). This client only subscribes: it never claims or moves
the arm, so it runs beside any session, or none. Of the frames each camera publishes, one is kept only when

- the whole board is found in it (calibration/board.py `detect`, the detection intrinsics repeats);
- its edges are sharp: OpenCV's `estimateChessboardSharpness` (the width over which an edge rises from
  black to white) is under `MAX_EDGE_WIDTH_PX`, so a board waved too fast (motion blur) is not kept;
- the view adds something: the rule of ROS's camera_calibration. A view is four numbers in [0, 1], the
  board's centre across the image (x, y; the image shrunk by half the board's size on each side, so a large
  board can still span the range), its size (the square root of the fraction of the image it covers) and
  its skew (how far the angle at its top-right corner is from a right angle, doubled, at most 1: the tilt);
  it is kept when the sum of the four absolute differences to every view already kept exceeds
  `MIN_VIEW_CHANGE`. A still board gives one view; a board moved about fills the image and the range of tilts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.board import Detection, detect
from calibration.driver_capture import CaptureError, wait_for_driver
from robots.board import BoardSpec
from robots.contract.client import DriverClient
from robots.spec import ArmSpec

MIN_VIEW_CHANGE = 0.2  # ROS camera_calibration's threshold on the summed change of (x, y, size, skew)
# OpenCV's guidance for a sharp board (estimateChessboardSharpness: "below ~3 px"). In the sim's 128x128 hand-held
# renders (noise σ 3) sharp boards measured 1.75 px (median; at most 2.2), blurred by a Gaussian of σ 1 px 2.9-3.2.
MAX_EDGE_WIDTH_PX = 3.0
UNMEASURED = 9999.0  # what it returns when no edge could be measured: squares ~10 px wide (1 in 27 of those renders)
TIMEOUT_S = 300.0  # default for the whole capture: a person covers two cameras' images well within it
POLL_MS = 100


class TooFewViews(RuntimeError):
    """Too few views within the time allowed (or the capture was interrupted); the message names each camera short
    of its count."""


@dataclass(frozen=True)
class ViewRule:
    min_change: float = MIN_VIEW_CHANGE
    max_edge_px: float = MAX_EDGE_WIDTH_PX


def outer_corners(board: BoardSpec, det: Detection) -> np.ndarray:
    """(4, 2) px: the board's outermost inner corners (top-left, top-right, bottom-right, bottom-left in the
    board's frame) through the homography of what was detected, so a ChArUco board seen in part counts too."""
    h, _ = cv2.findHomography(det.object_points[:, :2], det.image_points)
    w, h_ = (board.inner[0] - 1) * board.square, (board.inner[1] - 1) * board.square
    rect = np.array([[[0, 0], [w, 0], [w, h_], [0, h_]]], np.float64)
    return cv2.perspectiveTransform(rect, h)[0]


def view_params(board: BoardSpec, det: Detection, width: int, height: int) -> np.ndarray:
    """(x, y, size, skew), each in [0, 1], as ROS's camera_calibration describes a view (module docstring)."""
    tl, tr, br, bl = outer_corners(board, det)
    p, q = (br - tr) + (bl - br), (tr - tl) + (br - tr)  # the quadrilateral's diagonals
    area = abs(p[0] * q[1] - p[1] * q[0]) / 2
    border = math.sqrt(area)
    cx, cy = det.image_points.mean(axis=0)
    x = min(1.0, max(0.0, (cx - border / 2) / max(width - border, 1.0)))
    y = min(1.0, max(0.0, (cy - border / 2) / max(height - border, 1.0)))
    a, b = tl - tr, br - tr
    angle = math.acos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))
    skew = min(1.0, 2 * abs(math.pi / 2 - angle))
    return np.array([x, y, math.sqrt(area / (width * height)), skew])


def edge_width_px(board: BoardSpec, grey: np.ndarray, det: Detection) -> float:
    """The board's mean black-to-white edge width, px (OpenCV's estimateChessboardSharpness); 0 (not judged)
    when not every inner corner was detected (a ChArUco board seen in part) or no edge could be measured."""
    nx, ny = board.inner
    if len(det.image_points) != nx * ny:
        return 0.0
    order = np.lexsort((det.object_points[:, 0], det.object_points[:, 1]))  # row by row, as OpenCV's grid
    corners = det.image_points[order].astype(np.float32).reshape(-1, 1, 2)
    width = float(cv2.estimateChessboardSharpness(grey, board.inner, corners)[0][0])
    return 0.0 if width >= UNMEASURED else width


@dataclass
class CameraViews:
    """The views kept for one camera, and what the other frames were turned away for."""

    name: str
    wanted: int
    images: list[np.ndarray] = field(default_factory=list)
    params: list[np.ndarray] = field(default_factory=list)
    frames: int = 0
    no_board: int = 0
    blurred: int = 0
    similar: int = 0
    last_seq: int = -1

    @property
    def done(self) -> bool:
        return len(self.images) >= self.wanted

    def tally(self) -> str:
        return (
            f"of {self.frames} frames, the board was not found whole in {self.no_board}, blurred in {self.blurred}, "
            f"too like a kept view in {self.similar}"
        )


def offer(views: CameraViews, board: BoardSpec, image: np.ndarray, rule: ViewRule = ViewRule()) -> str | None:
    """Keep `image` in `views` if it passes the rule (module docstring): a line saying why it was kept, else None."""
    views.frames += 1
    det = detect(board, image)
    if det is None:
        views.no_board += 1
        return None
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    edge = edge_width_px(board, grey, det)
    if edge > rule.max_edge_px:
        views.blurred += 1
        return None
    params = view_params(board, det, image.shape[1], image.shape[0])
    change = min((float(np.abs(params - p).sum()) for p in views.params), default=math.inf)
    if change <= rule.min_change:
        views.similar += 1
        return None
    views.images.append(image.copy())
    views.params.append(params)
    x, y, size, skew = params
    new = "the first view" if math.isinf(change) else f"{change:.2f} from the nearest kept view"
    edges = f"edges {edge:.1f} px wide" if edge > 0 else "edges too small to measure"
    return (
        f"{views.name}: view {len(views.images)}/{views.wanted} kept: board at x {x:.2f} y {y:.2f}, size {size:.2f}, "
        f"skew {skew:.2f} ({new}; {edges})"
    )


def capture_handheld(
    client: DriverClient,
    arm: ArmSpec,
    board: BoardSpec,
    count: int,
    *,
    timeout_s: float = TIMEOUT_S,
    connect_timeout_s: float = 10.0,
    rule: ViewRule = ViewRule(),
    report: Callable[[str], None] = print,
) -> dict[str, list[np.ndarray]]:
    """`count` views per camera of the spec, kept from the driver's image topics as they arrive (module
    docstring), reporting each one kept; TooFewViews naming the cameras short of `count` after `timeout_s`
    or on Ctrl-C, CaptureError for a frame not at the spec's resolution. The client is closed at the end."""
    views = {cam.name: CameraViews(cam.name, count) for cam in arm.cameras}
    sizes = {cam.name: (cam.width, cam.height) for cam in arm.cameras}
    try:
        wait_for_driver(client, arm, connect_timeout_s)
        report(f"hold the {board.text} board in front of each camera and move it about: near and far, tilted, all over")
        end = time.monotonic() + timeout_s
        try:
            while not all(v.done for v in views.values()):
                if time.monotonic() > end:
                    raise TooFewViews(_short(views, f"after {timeout_s:g} s"))
                for cam, frame in client.poll(POLL_MS).images.items():
                    v = views.get(cam)
                    if v is None or v.done or frame.seq <= v.last_seq:
                        continue
                    v.last_seq = frame.seq
                    size = (frame.image.shape[1], frame.image.shape[0])
                    if size != sizes[cam]:
                        raise CaptureError(
                            f"{cam} publishes {size[0]}x{size[1]} frames; the {arm.name}'s camera is "
                            f"{sizes[cam][0]}x{sizes[cam][1]} (the model's resolution, as pac-camera scales it)"
                        )
                    if (line := offer(v, board, frame.image, rule)) is not None:
                        report(line)
        except KeyboardInterrupt:
            raise TooFewViews(_short(views, "when interrupted")) from None
    finally:
        client.close()
    for v in views.values():
        report(f"{v.name}: {len(v.images)} views kept; {v.tally()}")
    return {cam: v.images for cam, v in views.items()}


def _short(views: dict[str, CameraViews], when: str) -> str:
    lines = []
    for v in views.values():
        if v.done:
            continue
        if v.frames == 0:
            hint = "no frames from it: does the driver publish it (pac-sim --cameras, pac-driver --camera)?"
        elif len(v.images) == 0:
            hint = "the board was never found whole and sharp in it: hold it nearer and steadier, all of it in view"
        else:
            hint = "move the board through more of the image: nearer, farther, tilted, into the corners"
        lines.append(f"{v.name}: {len(v.images)} of {v.wanted} views {when}: {hint} ({v.tally()})")
    return "; ".join(lines) + "; nothing written"

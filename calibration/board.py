"""Calibration boards: a printable image and corner detection.

The board itself (spec string, corner points, frame, mount on the gripper) is defined once in robots/board.py,
where the sim driver builds it too, so printing, the MuJoCo render and detection share one definition and the
corner order a detector returns is the order of the object points.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robots.board import CHARUCO, BoardSpec, object_points

SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)


def charuco_board(board: BoardSpec) -> cv2.aruco.CharucoBoard:
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, board.dictionary))
    return cv2.aruco.CharucoBoard((board.cols, board.rows), board.square, board.marker, dictionary)


def board_image(board: BoardSpec, px_per_square: int = 100, margin_squares: float = 1.0) -> np.ndarray:
    """Grey uint8 image of the board with a white margin, for printing (scale it so a square is `square` m)."""
    margin = int(round(margin_squares * px_per_square))
    w, h = board.cols * px_per_square, board.rows * px_per_square
    if board.kind == CHARUCO:
        inner = charuco_board(board).generateImage((w, h), marginSize=0)
    else:
        cells = (np.add.outer(np.arange(board.rows), np.arange(board.cols)) % 2).astype(np.uint8) * 255
        inner = np.kron(cells, np.ones((px_per_square, px_per_square), np.uint8))
    return cv2.copyMakeBorder(inner, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


MIN_CORNER_CONTRAST = 0.3  # of the board's dark-to-light step: below it a "corner" is no X-junction of squares


def _sample(grey: np.ndarray, points: np.ndarray, spacing: float) -> np.ndarray:
    """Grey levels at sub-pixel `points` (..., 2), each averaged over about a quarter of a square, so one noisy
    pixel cannot decide a square's colour."""
    size = int(np.clip(spacing / 4, 1, 15)) | 1
    blurred = cv2.blur(grey.astype(np.float32), (size, size))
    flat = points.reshape(-1, 1, 2).astype(np.float32)
    values = cv2.remap(blurred, flat[..., 0], flat[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return values.reshape(points.shape[:-1])


def nearest_corner_distance(corners: np.ndarray, inner: tuple[int, int]) -> float:
    """px between the two closest neighbouring corners of the grid, along its rows or its columns."""
    nx, ny = inner
    grid = corners.reshape(ny, nx, 2).astype(float)
    rows, cols = np.diff(grid, axis=1), np.diff(grid, axis=0)
    return float(min(np.linalg.norm(rows, axis=-1).min(), np.linalg.norm(cols, axis=-1).min()))


def quadrant_levels(grey: np.ndarray, corners: np.ndarray, inner: tuple[int, int]) -> np.ndarray:
    """(N, 2, 2) grey levels of the four squares around each corner: [k, 0] the pair on the diagonal along
    -(u+v) and +(u+v), [k, 1] the pair along -(u-v) and +(u-v), with u and v the local steps to the next
    corner along the rows and down the columns (central differences of the grid)."""
    nx, ny = inner
    grid = corners.reshape(ny, nx, 2).astype(float)
    v, u = np.gradient(grid, axis=(0, 1))
    spacing = nearest_corner_distance(grid, inner)
    h = 0.5 * np.stack([-(u + v), u + v, -(u - v), u - v], axis=-2)  # (ny, nx, 4, 2) to the squares' centres
    levels = _sample(grey, grid[..., None, :] + h, spacing)
    return levels.reshape(-1, 2, 2)


def _dark_on_first_diagonal(inner: tuple[int, int]) -> np.ndarray:
    """Per corner in the board's order, whether its squares along ±(u+v) are the black ones: square (0, 0) is
    black, so they are where the corner's column plus row is even."""
    nx, ny = inner
    return (np.add.outer(np.arange(ny), np.arange(nx)) % 2 == 0).ravel()


def canonical_order(grey: np.ndarray, corners: np.ndarray, inner: tuple[int, int]) -> np.ndarray:
    """Corners (N, 2) reordered to start at the black top-left square with x to the right of y, as the board
    is seen from its front: a detector may start at any end of the grid, or run the rows the other way.
    The colours vote over every corner: turning the order 180° swaps which diagonal is expected dark at every
    corner (one square count is odd, one even), so one misread square cannot flip the order."""
    nx, ny = inner
    grid = corners.reshape(ny, nx, 2)
    u, v = grid[0, 1] - grid[0, 0], grid[1, 0] - grid[0, 0]
    if u[0] * v[1] - u[1] * v[0] < 0:  # mirrored: rows run right to left
        grid = grid[:, ::-1]
    flat = grid.reshape(-1, 2)
    levels = quadrant_levels(grey, flat, inner).mean(axis=2)
    first_darker = levels[:, 0] < levels[:, 1]
    agree = np.count_nonzero(first_darker == _dark_on_first_diagonal(inner))
    return flat if 2 * agree >= len(flat) else flat[::-1].copy()


def is_checker_grid(grey: np.ndarray, corners: np.ndarray, inner: tuple[int, int]) -> bool:
    """Whether every corner, in the board's order, sits where two dark squares meet two light ones, the dark
    ones on the diagonal the board's colouring puts them on. OpenCV's detector, on a small or slanted board,
    sometimes returns a grid that takes a square's outer corner or the plate's edge for an inner corner; such
    a view is many pixels off and would pull every solve that uses it."""
    levels = quadrant_levels(grey, corners, inner)
    dark_first = _dark_on_first_diagonal(inner)
    dark = np.where(dark_first[:, None], levels[:, 0], levels[:, 1])
    light = np.where(dark_first[:, None], levels[:, 1], levels[:, 0])
    step = float(np.median(light) - np.median(dark))
    return step > 0 and bool(np.all(light.min(axis=1) - dark.max(axis=1) > MIN_CORNER_CONTRAST * step))


@dataclass(frozen=True)
class Detection:
    """Corners found in one image: pixel positions (N, 2) and their object points (N, 3), in the same order."""

    image_points: np.ndarray
    object_points: np.ndarray


def detect(board: BoardSpec, image: np.ndarray) -> Detection | None:
    """The board's corners in an image, refined to sub-pixel; None when the board is not found whole, or when
    what was found is not the board's grid of corners (is_checker_grid)."""
    grey = _grey(image)
    if board.kind == CHARUCO:
        return _detect_charuco(board, grey)
    found, corners = cv2.findChessboardCorners(
        grey, board.inner, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    )
    if not found:
        return None
    # The search window is about a third of a square, so it never reaches the next corner on a small image.
    spacing = float(np.median(np.linalg.norm(np.diff(corners.reshape(-1, 2), axis=0), axis=1)))
    win = int(np.clip(spacing / 3, 2, 11))
    corners = cv2.cornerSubPix(grey, corners, (win, win), (-1, -1), SUBPIX_CRITERIA)
    corners = canonical_order(grey, corners.reshape(-1, 2), board.inner)
    if not is_checker_grid(grey, corners, board.inner):
        return None
    return Detection(corners.reshape(-1, 2).astype(np.float64), object_points(board).astype(np.float64))


def _detect_charuco(board: BoardSpec, grey: np.ndarray, min_corners: int = 6) -> Detection | None:
    cb = charuco_board(board)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(cb).detectBoard(grey)
    if ids is None or len(ids) < min_corners:
        return None
    ids = ids.ravel()
    return Detection(corners.reshape(-1, 2).astype(np.float64), cb.getChessboardCorners()[ids].astype(np.float64))

"""Calibration boards: the spec string, the board's 3D corner points, a printable image, and corner detection.

One board definition serves printing, the MuJoCo render and detection, so the corner order a detector returns
is the order of the object points. Sizes count squares (as a printed board is described), not inner corners.
The board frame is OpenCV's: origin at the first inner corner, x along the columns, y along the rows, z into
the board (away from a viewer). Square (0, 0), the top-left one, is black.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

CHECKERBOARD, CHARUCO = "checkerboard", "charuco"
_SPEC = re.compile(
    r"^(?P<kind>checkerboard|charuco):(?P<cols>\d+)x(?P<rows>\d+):(?P<square>[0-9.]+)"
    r"(?::(?P<marker>[0-9.]+):(?P<dict>DICT_\w+))?$"
)
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)


class BoardError(ValueError):
    """A board spec that cannot be parsed, or a board that cannot be used."""


@dataclass(frozen=True)
class BoardSpec:
    kind: str  # CHECKERBOARD or CHARUCO
    cols: int  # squares along x
    rows: int  # squares along y
    square: float  # m, side of one square
    marker: float = 0.0  # m, side of a ChArUco marker
    dictionary: str = ""  # OpenCV ArUco dictionary name, e.g. DICT_4X4_50

    @property
    def text(self) -> str:
        """The spec string this board parses from (pac-calibrate --board)."""
        base = f"{self.kind}:{self.cols}x{self.rows}:{self.square:g}"
        return base + (f":{self.marker:g}:{self.dictionary}" if self.kind == CHARUCO else "")

    @property
    def inner(self) -> tuple[int, int]:
        """Inner corners per row and per column: OpenCV's pattern size."""
        return self.cols - 1, self.rows - 1

    @property
    def size_m(self) -> tuple[float, float]:
        return self.cols * self.square, self.rows * self.square


def parse_board(text: str) -> BoardSpec:
    """`checkerboard:COLSxROWS:SQUARE` or `charuco:COLSxROWS:SQUARE:MARKER:DICT`, lengths in m."""
    m = _SPEC.match(text.strip())
    if m is None:
        raise BoardError(
            f"board {text!r}: write checkerboard:COLSxROWS:SQUARE or charuco:COLSxROWS:SQUARE:MARKER:DICT "
            "(squares, lengths in m), e.g. checkerboard:9x7:0.03 or charuco:7x5:0.04:0.03:DICT_4X4_50"
        )
    kind, cols, rows, square = m["kind"], int(m["cols"]), int(m["rows"]), float(m["square"])
    if (kind == CHARUCO) != (m["dict"] is not None):
        raise BoardError(f"board {text!r}: a marker size and dictionary go with charuco, and only with it")
    if cols < 3 or rows < 3 or not square > 0:
        raise BoardError(f"board {text!r}: needs at least 3x3 squares and a positive square size")
    if kind == CHECKERBOARD and cols % 2 == rows % 2:
        raise BoardError(
            f"board {text!r}: a checkerboard with {cols}x{rows} squares looks the same turned 180°, so its corner "
            "order is ambiguous; use one odd and one even count (e.g. 9x6)"
        )
    marker = float(m["marker"]) if m["marker"] else 0.0
    if kind == CHARUCO:
        if not 0 < marker < square:
            raise BoardError(f"board {text!r}: the marker must be smaller than the square")
        if not hasattr(cv2.aruco, m["dict"]):
            raise BoardError(f"board {text!r}: OpenCV has no ArUco dictionary {m['dict']}")
    return BoardSpec(kind, cols, rows, square, marker, m["dict"] or "")


def object_points(board: BoardSpec) -> np.ndarray:
    """(N, 3) float32 inner-corner positions in the board frame, row by row: the detector's order."""
    nx, ny = board.inner
    grid = np.mgrid[0:nx, 0:ny].T.reshape(-1, 2)
    return np.hstack([grid * board.square, np.zeros((len(grid), 1))]).astype(np.float32)


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


def first_square_is_black(grey: np.ndarray, corners: np.ndarray, nx: int) -> bool:
    """Whether the square before corner 0 (diagonally away from corners 1 and nx) is the dark one: it is when
    the order starts at the board's black top-left square, and it is light when the order is turned 180°.
    The squares on that diagonal (before and after corner 0) share a colour; the two beside them the other."""
    c = corners.reshape(-1, 2)
    u, v = 0.5 * (c[1] - c[0]), 0.5 * (c[nx] - c[0])
    points = np.array([c[0] - u - v, c[0] + u + v, c[0] + u - v, c[0] - u + v])
    x = np.clip(np.round(points).astype(int), 0, [grey.shape[1] - 1, grey.shape[0] - 1])
    values = grey[x[:, 1], x[:, 0]].astype(float)
    return values[:2].mean() < values[2:].mean()


def canonical_order(grey: np.ndarray, corners: np.ndarray, inner: tuple[int, int]) -> np.ndarray:
    """Corners (N, 2) reordered to start at the black top-left square with x to the right of y, as the board
    is seen from its front: a detector may start at any end of the grid, or run the rows the other way."""
    nx, ny = inner
    grid = corners.reshape(ny, nx, 2)
    u, v = grid[0, 1] - grid[0, 0], grid[1, 0] - grid[0, 0]
    if u[0] * v[1] - u[1] * v[0] < 0:  # mirrored: rows run right to left
        grid = grid[:, ::-1]
    flat = grid.reshape(-1, 2)
    return flat if first_square_is_black(grey, flat, nx) else flat[::-1].copy()


@dataclass(frozen=True)
class Detection:
    """Corners found in one image: pixel positions (N, 2) and their object points (N, 3), in the same order."""

    image_points: np.ndarray
    object_points: np.ndarray


def detect(board: BoardSpec, image: np.ndarray) -> Detection | None:
    """The board's corners in an image, refined to sub-pixel; None when the board is not found whole."""
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
    return Detection(corners.reshape(-1, 2).astype(np.float64), object_points(board).astype(np.float64))


def _detect_charuco(board: BoardSpec, grey: np.ndarray, min_corners: int = 6) -> Detection | None:
    cb = charuco_board(board)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(cb).detectBoard(grey)
    if ids is None or len(ids) < min_corners:
        return None
    ids = ids.ravel()
    return Detection(corners.reshape(-1, 2).astype(np.float64), cb.getChessboardCorners()[ids].astype(np.float64))

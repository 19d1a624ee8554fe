"""Calibration boards as geometry: the spec string, the inner corners in the board frame, and where the board
sits on the gripper.

It lives under `robots` because the sim driver mounts the board on its arm (`pac-sim --board`,
robots/sim/board.py) from this very definition, and calibration, above, detects it and generates poses for
it: one board and one mount for the render, the poses and the detection. Sizes count squares (as a printed
board is described), not inner corners. The board frame is OpenCV's: origin at the first inner corner, x
along the columns, y along the rows, z into the board (away from a viewer). Square (0, 0), the top-left one,
is black.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from robots.rotations import make_transform, quat_to_mat

CHECKERBOARD, CHARUCO = "checkerboard", "charuco"
_SPEC = re.compile(
    r"^(?P<kind>checkerboard|charuco):(?P<cols>\d+)x(?P<rows>\d+):(?P<square>[0-9.]+)"
    r"(?::(?P<marker>[0-9.]+):(?P<dict>DICT_\w+))?$"
)


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
        """The spec string this board parses from (pac-calibrate --board, pac-sim --board)."""
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


def board_centre(board: BoardSpec) -> np.ndarray:
    """The middle of the inner corners, in the board frame."""
    nx, ny = board.inner
    return np.array([(nx - 1) * board.square / 2, (ny - 1) * board.square / 2, 0.0])


@dataclass(frozen=True)
class BoardMount:
    """Pose of the board's centre (the middle of its inner corners, board axes) in the TCP frame."""

    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float]

    def transform(self, board: BoardSpec) -> np.ndarray:
        """The board frame (origin at its first inner corner) in the TCP frame."""
        return make_transform(quat_to_mat(self.quat), self.pos) @ make_transform(np.eye(3), -board_centre(board))


# A plate across the fingertips, its face outward along the TCP's z axis 1.5 cm past the TCP, the board's x
# along the TCP's y: with the gripper pointing at the cameras, the whole arm is behind the board.
DEFAULT_MOUNT = BoardMount((0.0, 0.0, 0.015), (0.0, 0.7071068, 0.7071068, 0.0))

"""Calibration result files: YAML a person can read, with what made them, and a content hash.

Every file says its kind, the robot and camera it belongs to, when it was made, with which OpenCV and
board, at which image resolution: the pre-flight refuses a file that is stale or made at another
resolution. The hash is of the file's bytes, so a run's summary and recording name exactly the calibration
it ran with. Files are written whole (a temp file renamed), and only after a calibration succeeded.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

INTRINSICS, HANDEYE, JOINT_OFFSETS = "intrinsics", "handeye", "joint_offsets"
KINDS = (INTRINSICS, HANDEYE, JOINT_OFFSETS)
MAX_FILE_BYTES = 1 << 20


class CalibrationFileError(ValueError):
    """A calibration file is missing, unreadable or not a calibration result."""


@dataclass(frozen=True)
class CalibrationFile:
    path: Path
    kind: str
    robot: str
    camera: str  # "" for joint offsets
    date: _dt.datetime
    resolution: tuple[int, int] | None  # (width, height) of the images it was made from
    sha256: str
    data: dict[str, Any]


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as YAML lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_result(
    path: Path, kind: str, robot: str, body: dict[str, Any], *, camera: str = "", board: str = "", resolution=None
) -> str:
    """Write a result file atomically; returns its sha256."""
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind {kind!r}")
    record = {
        "kind": kind,
        "robot": robot,
        "camera": camera,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "opencv": cv2.__version__,
        "board": board,
        "resolution": list(resolution) if resolution is not None else None,
        **_plain(body),
    }
    text = yaml.safe_dump(record, sort_keys=False, width=120).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(text)
    os.replace(tmp, path)
    return hashlib.sha256(text).hexdigest()


def read_result(path: Path) -> CalibrationFile:
    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(f"calibration file {path} does not exist; run pac-calibrate")
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise CalibrationFileError(f"{path} is larger than {MAX_FILE_BYTES} bytes: not a calibration result")
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise CalibrationFileError(f"{path} is not YAML: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise CalibrationFileError(f"{path}: not a pac-calibrate result (kind must be one of {', '.join(KINDS)})")
    try:
        date = _dt.datetime.fromisoformat(str(raw["date"]))
        res = raw.get("resolution")
        resolution = (int(res[0]), int(res[1])) if res else None
        robot, camera = str(raw["robot"]), str(raw.get("camera") or "")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CalibrationFileError(f"{path}: malformed header ({exc!r})") from exc
    if date.tzinfo is None:
        date = date.replace(tzinfo=_dt.timezone.utc)
    return CalibrationFile(path, raw["kind"], robot, camera, date, resolution, hashlib.sha256(data).hexdigest(), raw)


def camera_matrix(result: CalibrationFile) -> tuple[np.ndarray, np.ndarray]:
    """(K, distortion coefficients) of an intrinsics file."""
    return np.array(result.data["camera_matrix"], float), np.array(result.data["dist_coeffs"], float)


def transform(result: CalibrationFile, key: str) -> np.ndarray:
    return np.array(result.data[key], float)

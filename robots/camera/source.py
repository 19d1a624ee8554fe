"""Where a camera's frames come from: an OpenCV device or video file, a RealSense by serial, or a synthetic pattern.

Each source returns RGB uint8 frames of the size asked for, stamped with the driver's clock (CLOCK_MONOTONIC:
on one host every process reads the same one) at the moment the frame was taken from the device. OpenCV's own
buffer is cut to one frame, so a stamp is not a queue's length late. `synthetic` draws a moving pattern, real
pixels through the real encoder, for tests and for checking a cell's wiring without a camera.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import cv2
import numpy as np

REALSENSE_PREFIX = "realsense:"
SYNTHETIC = "synthetic"
INSTALL_REALSENSE = "pip install 'pac-runtime[realsense]' (pyrealsense2)"


class CameraError(RuntimeError):
    """The device cannot be opened or stopped giving frames."""


class RealSenseMissing(CameraError):
    """pyrealsense2 is not installed."""


class FrameSource(ABC):
    def __init__(self, width: int, height: int, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.width, self.height, self.clock = width, height, clock

    @abstractmethod
    def grab(self) -> tuple[np.ndarray, int]:
        """(RGB uint8 frame of (height, width, 3), capture time in ns on the driver's clock)."""

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[:2] != (self.height, self.width):
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)

    def close(self) -> None:  # noqa: B027 (a default: nothing to release)
        pass


class OpenCvSource(FrameSource):
    """`/dev/videoN`, a device index, or a video file."""

    def __init__(self, device: str, width: int, height: int, clock: Callable[[], int] = time.monotonic_ns) -> None:
        super().__init__(width, height, clock)
        target: int | str = int(device) if device.isdigit() else device
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise CameraError(f"cannot open camera {device!r} with OpenCV")
        self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one queued behind others
        self.device = device

    def grab(self) -> tuple[np.ndarray, int]:
        if not self.cap.grab():
            raise CameraError(f"{self.device}: no frame (unplugged, or the end of a file)")
        t = self.clock()
        ok, bgr = self.cap.retrieve()
        if not ok or bgr is None:
            raise CameraError(f"{self.device}: frame could not be decoded")
        return self._fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), t

    def close(self) -> None:
        self.cap.release()


class RealSenseSource(FrameSource):
    """An Intel RealSense's colour stream, by serial number (pyrealsense2, an optional extra)."""

    def __init__(self, serial: str, width: int, height: int, rate_hz: float, clock=time.monotonic_ns) -> None:
        super().__init__(width, height, clock)
        try:
            import pyrealsense2 as rs
        except ImportError as exc:
            raise RealSenseMissing(f"a RealSense camera needs pyrealsense2: {INSTALL_REALSENSE}") from exc
        self.pipeline = rs.pipeline()
        config = rs.config()
        config.enable_device(serial)
        config.enable_stream(rs.stream.color, 640, 480, rs.format.rgb8, max(6, min(60, round(rate_hz))))
        self.pipeline.start(config)
        self.serial = serial

    def grab(self) -> tuple[np.ndarray, int]:
        frames = self.pipeline.wait_for_frames(1000)
        t = self.clock()
        color = frames.get_color_frame()
        if not color:
            raise CameraError(f"realsense {self.serial}: no colour frame")
        return self._fit(np.asanyarray(color.get_data())), t

    def close(self) -> None:
        self.pipeline.stop()


class SyntheticSource(FrameSource):
    """A colour bar pattern that moves one column per frame."""

    def __init__(self, width: int, height: int, clock: Callable[[], int] = time.monotonic_ns) -> None:
        super().__init__(width, height, clock)
        x = np.arange(width)
        self._bars = np.stack([(x * 255 // max(width - 1, 1)), 255 - (x * 255 // max(width - 1, 1)), (x % 32) * 8], 1)
        self.frames = 0

    def grab(self) -> tuple[np.ndarray, int]:
        row = np.roll(self._bars, self.frames, axis=0).astype(np.uint8)
        self.frames += 1
        return np.ascontiguousarray(np.broadcast_to(row, (self.height, self.width, 3))), self.clock()


def open_source(device: str, width: int, height: int, rate_hz: float) -> FrameSource:
    """The source a `--device` names: realsense:SERIAL, synthetic, or anything OpenCV opens."""
    if device.startswith(REALSENSE_PREFIX):
        return RealSenseSource(device[len(REALSENSE_PREFIX) :], width, height, rate_hz)
    if device == SYNTHETIC:
        return SyntheticSource(width, height)
    return OpenCvSource(device, width, height)

"""Camera frames on disk as JPEG bytes: why JPEG, and the one encoder and decoder for stored frames.

Raw frames cost 99 kB a step for two 128² cameras, 40 GB for a thousand 400-step episodes; gzip or lzf (the
HDF5 filters h5py ships) at best halve that on rendered frames, JPEG at the wire's quality cuts it 11×
(benchmarks/RESULTS.md, issue 11). The policy sees JPEG frames when it runs: pac-sim and the drivers send them
at `DEFAULT_LINK.jpeg_quality`, and collection already puts frames through that round trip; storing them at
the same quality re-encodes them with little further loss (mean 0.4 levels, PSNR 46 dB). Each camera is
stored in Minari's own image layout (one variable-length uint8 dataset of JPEG bytes per camera, its space an
(H, W, 3) uint8 box), so `minari.load_dataset` decodes it as images and any JPEG decoder reads it from h5py.
JPEG has no checksum: each stored frame carries a CRC-32 (integrity.py), checked before it is decoded;
`decode_frame` also refuses bytes that lack the start or end marker or that do not decode to the stored
shape, which, in a dataset written before checksums, catches truncation and most damage, not all.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import gymnasium as gym
import h5py
import numpy as np

from policies.data.errors import DatasetError
from policies.data.integrity import UNREADABLE, locate, step_problem
from robots.contract.link import DEFAULT_LINK

JPEG_QUALITY = DEFAULT_LINK.jpeg_quality  # the wire's: stored frames are the frames the policy meets in service
FRAMES = ("jpeg", "raw")  # how pac-collect stores frames: JPEG per camera (default), or the raw image stack
MIN_SIDE = 32  # Minari treats a uint8 box as an image (and decodes it) only from 32 px a side


class FrameError(DatasetError):
    """A stored camera frame that cannot be decoded; the message says which one and why."""


def encode_frame(chw: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """JPEG bytes (as a uint8 array, what h5py stores) of one RGB frame in the model's (3, H, W) layout."""
    if chw.dtype != np.uint8 or chw.ndim != 3 or chw.shape[0] != 3:
        raise FrameError(f"a frame to store must be uint8 (3, H, W) RGB, got {chw.dtype} {chw.shape}")
    bgr = cv2.cvtColor(np.ascontiguousarray(chw.transpose(1, 2, 0)), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FrameError(f"OpenCV could not encode a {chw.shape} frame as JPEG")
    return buffer.reshape(-1)


def decode_frame(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (3, H, W) RGB from stored JPEG bytes; raises FrameError saying what is wrong with them."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8 or data[-2] != 0xFF or data[-1] != 0xD9:
        raise FrameError(f"not a whole JPEG ({data.size} B, start or end-of-image marker missing)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as err:
        raise FrameError(f"JPEG does not decode: {err}") from err
    if image is None:
        raise FrameError("damaged JPEG, OpenCV cannot decode it")
    if image.shape != (height, width, 3):
        raise FrameError(f"JPEG decodes to {image.shape}, the dataset says ({height}, {width}, 3)")
    return image.transpose(2, 0, 1)


def image_space(cameras: tuple[str, ...], height: int, width: int) -> gym.spaces.Dict:
    """The observation space of JPEG-stored frames: one (H, W, 3) image box per camera, which Minari decodes."""
    if min(height, width) < MIN_SIDE:
        raise FrameError(f"{height}x{width} frames: Minari decodes JPEG frames from {MIN_SIDE} px a side; store raw")
    return gym.spaces.Dict({c: gym.spaces.Box(0, 255, (height, width, 3), np.uint8) for c in cameras})


def write_frames(observations: h5py.Group, images: np.ndarray, cameras: tuple[str, ...]) -> None:
    """Store an episode's (T+1, N_cam, 3, H, W) image stack under `observations/images/<camera>` as JPEG."""
    steps, count, _, height, width = images.shape
    if count != len(cameras):
        raise FrameError(f"{count} frames a step for {len(cameras)} cameras {cameras}")
    group = observations.create_group("images")
    group.attrs.update(encoding="jpeg", quality=JPEG_QUALITY, cameras=list(cameras), height=height, width=width)
    for i, camera in enumerate(cameras):
        data = np.empty(steps, dtype=object)
        for t in range(steps):
            data[t] = encode_frame(images[t, i])
        group.create_dataset(camera, data=data, dtype=h5py.vlen_dtype(np.uint8), chunks=True)


@dataclass(frozen=True)
class FrameLayout:
    """How an episode's frames are stored: `jpeg` (a group, one dataset per camera) or `raw` (one uint8 stack)."""

    encoding: str
    cameras: tuple[str, ...]  # () for raw frames, which do not record their cameras' names
    shape: tuple[int, int, int, int]  # (N_cam, 3, H, W) of one step, as the model takes it

    @classmethod
    def of(cls, node: h5py.Group | h5py.Dataset) -> FrameLayout:
        """The layout of an episode's `observations/images` node."""
        if isinstance(node, h5py.Dataset):
            return cls("raw", (), tuple(node.shape[1:]))
        attrs = node.attrs
        if attrs.get("encoding") != "jpeg":
            raise FrameError(f"{node.file.filename}:{node.name} is a group without encoding='jpeg'")
        cameras = tuple(str(c) for c in attrs["cameras"])
        return cls("jpeg", cameras, (len(cameras), 3, int(attrs["height"]), int(attrs["width"])))

    def sources(self, node: h5py.Group | h5py.Dataset) -> tuple[h5py.Dataset, ...]:
        """The datasets to `read` from: the raw stack, or one per camera in the model's order."""
        return (node,) if self.encoding == "raw" else tuple(node[c] for c in self.cameras)

    def read(
        self, sources: tuple[h5py.Dataset, ...], step: int, checksums: tuple[np.ndarray | None, ...] | None = None
    ) -> np.ndarray:
        """uint8 (N_cam, 3, H, W) of one step, decoded and checked against `checksums` (one per-step array for
        each source, integrity.py); a FrameError names the file, episode, field (camera) and step."""
        checksums = checksums or (None,) * len(sources)
        if self.encoding == "raw":
            return self._checked(sources[0], step, checksums[0])
        _, _, height, width = self.shape
        frames = np.empty(self.shape, np.uint8)
        for i, source in enumerate(sources):
            data = self._checked(source, step, checksums[i])
            try:
                frames[i] = decode_frame(data, height, width)
            except FrameError as err:
                raise FrameError(f"{locate(source)}, step {step}: {err}") from None
        return frames

    @staticmethod
    def _checked(source: h5py.Dataset, step: int, checksums: np.ndarray | None) -> np.ndarray:
        try:
            data = source[step]
        except UNREADABLE as exc:
            raise FrameError(f"{locate(source)}, step {step}: unreadable ({type(exc).__name__}: {exc})") from exc
        if problem := step_problem(step, data, checksums):
            raise FrameError(f"{locate(source)}, step {step}: {problem}")
        return data

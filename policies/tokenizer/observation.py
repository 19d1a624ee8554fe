"""Sensor readings → the model inputs `proprio`, `images`, `objects`, `instruction` (DESIGN §3).

Training (from the task environments' driver-shaped observations or recorded episodes) and serving (from
the driver's wire messages) both call `ObservationTokenizer`, so the arrays a policy sees are assembled by
one piece of code. A policy takes the inputs its spec's `modalities` name: `images` only with cameras,
`objects` (tracked poses in the base frame) only when the spec lists objects. Normalisation is not done
here: it lives inside the model graph. This module only orders, shapes and type-checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from policies.spec import ObservationSpec
from policies.tokenizer.language import InstructionTokenizer
from robots.contract.messages import StateMsg


class ObservationError(ValueError):
    """A reading is missing or has the wrong shape for the model's observation spec."""


@dataclass(frozen=True)
class ModelInputs:
    """One batch-1 observation, shaped and typed as the ONNX inputs; absent modalities are None."""

    proprio: np.ndarray  # float32 (1, P)
    images: np.ndarray | None  # uint8 (1, N_cam, 3, H, W), RGB
    instruction: np.ndarray  # int64 (1, L)
    objects: np.ndarray | None = None  # float32 (1, N_obj, 7): position + quaternion (w, x, y, z), base frame

    def feeds(self) -> dict[str, np.ndarray]:
        """The graph's inputs, in graph order (ObservationSpec.modalities)."""
        feeds = {"proprio": self.proprio}
        if self.images is not None:
            feeds["images"] = self.images
        if self.objects is not None:
            feeds["objects"] = self.objects
        feeds["instruction"] = self.instruction
        return feeds


class ObservationTokenizer:
    def __init__(self, spec: ObservationSpec, language: InstructionTokenizer):
        self.spec = spec
        self.language = language
        self._images = np.zeros((1, *spec.image_shape), dtype=np.uint8)  # reused: no allocation per tick
        # Each camera's three channel planes, contiguous views of `_images`, for cv2.split to write into.
        self._planes = [list(self._images[0, i]) for i in range(len(spec.cameras))]

    def proprio(self, fields: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 (1, P): the spec's fields concatenated in the spec's order."""
        parts = []
        for f in self.spec.proprio:
            value = fields.get(f.name)
            if value is None:
                raise ObservationError(f"proprio field {f.name!r} is missing")
            value = np.asarray(value, dtype=np.float32).ravel()
            if value.size != f.size:
                raise ObservationError(f"proprio field {f.name!r} has {value.size} values, spec says {f.size}")
            parts.append(value)
        return np.concatenate(parts)[None, :]

    def images(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        """uint8 (1, N_cam, 3, H, W) from (H, W, 3) RGB frames keyed by camera name, resized if needed.

        The returned array is reused by the next call: copy it to keep it.
        """
        h, w = self.spec.image_height, self.spec.image_width
        for i, name in enumerate(self.spec.cameras):
            frame = frames.get(name)
            if frame is None:
                raise ObservationError(f"no frame from camera {name!r}")
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
                raise ObservationError(
                    f"camera {name!r}: expected (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}"
                )
            if frame.shape[:2] != (h, w):
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            if frame.flags.c_contiguous:  # HWC → CHW: cv2.split is a third of numpy's strided copy, every tick
                cv2.split(frame, self._planes[i])
            else:
                self._images[0, i] = frame.transpose(2, 0, 1)
        return self._images

    def objects(self, poses: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 (1, N_obj, 7): the spec's objects' poses in the spec's order."""
        out = np.empty((1, *self.spec.objects_shape), np.float32)
        for i, name in enumerate(self.spec.objects):
            pose = poses.get(name)
            if pose is None:
                raise ObservationError(f"no pose of object {name!r} (the tracker sees {sorted(poses)})")
            pose = np.asarray(pose, dtype=np.float32).ravel()
            if pose.size != out.shape[2] or not np.isfinite(pose).all():
                raise ObservationError(f"object {name!r}: expected 7 finite values, got {pose.size}")
            out[0, i] = pose
        return out

    def instruction(self, text: str) -> np.ndarray:
        """int64 (1, L) token ids, padded."""
        return self.language.encode(text, self.spec.instruction_length)[None, :]

    def __call__(
        self,
        fields: Mapping[str, np.ndarray],
        frames: Mapping[str, np.ndarray],
        instruction: str,
        poses: Mapping[str, np.ndarray] | None = None,
    ) -> ModelInputs:
        """Model inputs from named proprio fields, frames per camera and object poses per name (each only
        read when the spec uses that modality)."""
        return ModelInputs(
            proprio=self.proprio(fields),
            images=self.images(frames) if self.spec.cameras else None,
            instruction=self.instruction(instruction),
            objects=self.objects(poses or {}) if self.spec.objects else None,
        )

    def from_messages(
        self,
        state: StateMsg,
        frames: Mapping[str, np.ndarray],
        instruction: str,
        poses: Mapping[str, np.ndarray] | None = None,
    ) -> ModelInputs:
        """What serving calls: the newest state message, decoded frame per camera and object poses."""
        return self(state.proprio_fields(), frames, instruction, poses)

    def from_observation(self, observation: Mapping[str, Mapping[str, np.ndarray]], instruction: str) -> ModelInputs:
        """What training calls: a driver-shaped observation, {"proprio": named fields, "images": frame per
        camera, "objects": pose per name}, as the task environments (robots/tasks/env.py) emit it."""
        return self(observation["proprio"], observation.get("images", {}), instruction, observation.get("objects"))

"""Open a collected dataset for training, or fail with a message that says what is wrong with it.

`minari.load_dataset` alone reports a missing or damaged file as a KeyError, an OSError from h5py or a
shape error deep in training; `open_dataset` checks up front that the dataset exists, that its HDF5 file
opens and holds every episode its metadata counts, and that its observations match the policy's
observation spec (proprio size, cameras and resolution, instruction length).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py

from policies.spec import ObservationSpec

KEYS = ("proprio", "instruction")  # always; "images" too unless collected with --cameras none


class DatasetError(ValueError):
    """A dataset is missing, truncated or of the wrong schema; the message names the file and the problem."""


def _data_file(root: Path, dataset_id: str) -> Path:
    return root / dataset_id / "data" / "main_data.hdf5"


def open_dataset(root: Path, dataset_id: str, spec: ObservationSpec | None = None):
    """The MinariDataset `dataset_id` under `root`, checked; raises DatasetError."""
    root = Path(root)
    path = _data_file(root, dataset_id)
    meta_path = path.with_name("metadata.json")
    if not path.is_file() or not meta_path.is_file():
        raise DatasetError(f"dataset {dataset_id!r} not found: no {path} (collect one with pac-collect)")
    try:
        meta = json.loads(meta_path.read_text())
        expected = int(meta["total_episodes"])
    except (ValueError, KeyError) as exc:
        raise DatasetError(f"{meta_path} is not a Minari metadata file: {exc!r}") from exc
    try:
        with h5py.File(path, "r") as f:
            episodes = [k for k in f if k.startswith("episode_")]
            if len(episodes) != expected:
                raise DatasetError(f"{path} holds {len(episodes)} episodes, its metadata says {expected}: truncated?")
            if episodes:
                obs = f[episodes[0]]["observations"]
                missing = [k for k in KEYS if k not in obs]
                if missing:
                    raise DatasetError(f"{path}: observations lack {missing}; a PAC dataset has {list(KEYS)}")
                if spec is not None:
                    if "images" not in obs:
                        raise DatasetError(f"{path} has no images (collected with --cameras none); the spec needs them")
                    _check_shapes(path, {k: obs[k].shape[1:] for k in (*KEYS, "images")}, spec)
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read as HDF5 (truncated or corrupt?): {exc}") from exc
    os.environ["MINARI_DATASETS_PATH"] = str(root.resolve())
    import minari

    return minari.load_dataset(dataset_id)


def _check_shapes(path: Path, shapes: dict[str, tuple[int, ...]], spec: ObservationSpec) -> None:
    want = {"proprio": (spec.proprio_size,), "images": spec.image_shape, "instruction": (spec.instruction_length,)}
    for key, shape in want.items():
        if tuple(shapes[key]) != tuple(shape):
            raise DatasetError(f"{path}: observation {key!r} has shape {tuple(shapes[key])}, the spec expects {shape}")

"""Open a collected dataset for training, or fail with a message that says what is wrong with it.

`minari.load_dataset` alone reports a missing or damaged file as a KeyError, an OSError from h5py or a
shape error deep in training; `open_dataset` checks up front that the dataset exists, that its HDF5 file
opens and holds every episode its metadata counts, that every episode stores the same observations (a
write interrupted while adding JPEG frames leaves some without), and that its observations match the
policy's observation spec (proprio size, cameras and resolution, instruction length). The training reader
(episodes.py) runs the same checks through `check_dataset` without loading every episode through Minari.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py

from policies.data.errors import DatasetError
from policies.data.frames import FrameError, FrameLayout
from policies.spec import ObservationSpec

__all__ = ["KEYS", "DatasetError", "check_dataset", "locate_dataset", "open_dataset"]

KEYS = ("proprio", "instruction")  # always; "images" unless --cameras none, "objects" unless --objects none


def locate_dataset(directory: Path) -> tuple[Path, str]:
    """(root, dataset id) of the dataset stored in `directory` (ROOT/<namespace>/<name>, as pac-collect
    writes it), from its metadata; DatasetError when `directory` is not a dataset."""
    directory = Path(directory)
    meta_path = directory / "data" / "metadata.json"
    if not meta_path.is_file():
        raise DatasetError(f"{directory} is not a dataset directory: no data/metadata.json (made by pac-collect)")
    try:
        dataset_id = str(json.loads(meta_path.read_text())["dataset_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{meta_path} is not a Minari metadata file: {exc!r}") from exc
    root = directory
    for _ in dataset_id.split("/"):
        root = root.parent
    if _data_file(root, dataset_id).parent.resolve() != (directory / "data").resolve():
        raise DatasetError(f"{directory} holds dataset {dataset_id!r}, but not at ROOT/{dataset_id}")
    return root, dataset_id


def _data_file(root: Path, dataset_id: str) -> Path:
    return root / dataset_id / "data" / "main_data.hdf5"


def open_dataset(root: Path, dataset_id: str, spec: ObservationSpec | None = None):
    """The MinariDataset `dataset_id` under `root`, checked; raises DatasetError."""
    check_dataset(root, dataset_id, spec)
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())
    import minari

    return minari.load_dataset(dataset_id)


def check_dataset(root: Path, dataset_id: str, spec: ObservationSpec | None = None) -> Path:
    """The HDF5 file of dataset `dataset_id` under `root`, after the checks above; raises DatasetError."""
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
                for name in episodes[1:]:
                    if lacking := sorted(set(obs) - set(f[name]["observations"])):
                        raise DatasetError(f"{path}: {name} lacks observations {lacking} (an interrupted write?)")
                if spec is not None:
                    _check_spec(path, obs, spec)
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read as HDF5 (truncated or corrupt?): {exc}") from exc
    return path


def _frame_layout(path: Path, node) -> FrameLayout:
    try:
        return FrameLayout.of(node)
    except (FrameError, KeyError) as exc:
        raise DatasetError(f"{path}: camera frames stored in an unknown layout: {exc}") from exc


def _check_spec(path: Path, obs, spec: ObservationSpec) -> None:
    """The first episode's observations hold every modality of `spec`, in its shapes."""
    if spec.cameras and "images" not in obs:
        raise DatasetError(f"{path} has no images (collected with --cameras none); the spec needs them")
    if spec.objects and "objects" not in obs:
        raise DatasetError(f"{path} has no object poses (collected with --objects none); the spec needs them")
    shapes = {k: tuple(obs[k].shape[1:]) for k in spec.modalities if k != "images"}
    if spec.cameras:
        layout = _frame_layout(path, obs["images"])
        shapes["images"] = layout.shape
        if layout.cameras and layout.cameras != spec.cameras:
            raise DatasetError(f"{path}: cameras {layout.cameras}, the spec expects {spec.cameras}")
    for key, (_, shape) in spec.input_shapes().items():
        if shapes[key] != shape[1:]:
            raise DatasetError(f"{path}: observation {key!r} has shape {shapes[key]}, the spec expects {shape[1:]}")

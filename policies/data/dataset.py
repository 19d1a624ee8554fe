"""Open a collected dataset for training, or fail with a message that says what is wrong with it.

`minari.load_dataset` alone reports a missing or damaged file as a KeyError, an OSError from h5py or a
shape error deep in training, and reads flipped bytes back as data; `open_dataset` checks up front that the
dataset exists, that its metadata's counts are integers that match its HDF5 file, that every episode has
the structure its checksums recorded (integrity.py: fields, dtypes, shapes, attributes, T + 1 observations
for T steps) and the first one's (a write interrupted while adding JPEG frames leaves some without), that
its observations match the policy's observation spec (proprio size, cameras and resolution, instruction
length), and, as Minari then decodes every episode whole, every episode's data against its checksums. The
training reader (episodes.py) runs the structural checks through `check_dataset` and checks each episode's
data as it reads it; `pac-collect --check` reads every episode and names every corrupt one."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import h5py

from policies.data import integrity as _integrity
from policies.data.errors import DatasetError
from policies.data.frames import FrameError, FrameLayout
from policies.spec import ObservationSpec

__all__ = ["KEYS", "DatasetError", "check_dataset", "locate_dataset", "open_dataset", "survey_dataset"]

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
    """The MinariDataset `dataset_id` under `root`, every episode's data checked first (Minari decodes whole
    episodes, past any check of ours); raises DatasetError."""
    check_dataset(root, dataset_id, spec, data=True)
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())
    import minari

    return minari.load_dataset(dataset_id)


def check_dataset(root: Path, dataset_id: str, spec: ObservationSpec | None = None, data: bool = False) -> Path:
    """The HDF5 file of dataset `dataset_id` under `root`, after the checks above and every episode's
    structure; with `data`, every episode read whole against its checksums. Raises one DatasetError naming
    every corrupt episode."""
    path, problems = survey_dataset(root, dataset_id, spec, data)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise DatasetError(f"{path}: {len(problems)} corrupt episodes:\n{lines}")
    return path


def survey_dataset(
    root: Path, dataset_id: str, spec: ObservationSpec | None = None, data: bool = False
) -> tuple[Path, list[DatasetError]]:
    """The HDF5 file and one DatasetError per corrupt episode (as `check_dataset`); a problem with the whole
    file (its metadata, its HDF5 structure, the observations against `spec`) raises instead.

    A file whose bytes no longer match the CRC-32 written with it is damaged somewhere: it is surveyed in a
    child process with a time limit, since some damage to HDF5's own structures makes libhdf5 loop for ever."""
    root = Path(root)
    path = _data_file(root, dataset_id)
    meta_path = path.with_name("metadata.json")
    if not path.is_file() or not meta_path.is_file():
        raise DatasetError(f"dataset {dataset_id!r} not found: no {path} (collect one with pac-collect)")
    expected, total_steps, stored_crc = _metadata(meta_path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if stored_crc is not None and key not in _SOUND and (read := _integrity.file_crc32(path)) != stored_crc:
        detail = f"stored crc32 {stored_crc:#010x}, read {read:#010x}"
        return path, _survey_guarded(path, expected, total_steps, spec, data, detail)
    return path, _survey(path, expected, total_steps, spec, data, key)


# A damaged file's survey in a child process: past this (2 s, plus 1 s per 5 MB read) HDF5 is taken to hang on it.
SURVEY_TIMEOUT_S, SURVEY_BYTES_PER_S = 2.0, 5e6


def _survey_guarded(
    path: Path, expected: int, total_steps: int, spec: ObservationSpec | None, data: bool, detail: str
) -> list[DatasetError]:
    """`_survey` of a damaged file, all of its data read, in a forked child killed after SURVEY_TIMEOUT_S: the
    episodes and fields it names, or one DatasetError for the file when HDF5 cannot read it at all."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            problems = _survey(path, expected, total_steps, spec, True, None)  # every byte read: name the damage
            send.send(("problems", [str(p) for p in problems]))
        except DatasetError as exc:
            send.send(("error", str(exc)))
        except Exception as exc:  # noqa: BLE001 - h5py's own errors on a damaged file: named, not a traceback
            send.send(("error", f"{path}: HDF5 cannot read it: {type(exc).__name__}: {exc}"))

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    try:
        timeout_s = SURVEY_TIMEOUT_S + path.stat().st_size / SURVEY_BYTES_PER_S
        answer = receive.recv() if receive.poll(timeout_s) else None
    except EOFError:  # the child died (libhdf5 can abort on a damaged file)
        answer = None
    finally:
        proc.kill()
        proc.join()
    if answer is None:
        raise DatasetError(
            f"{path}: damaged (its bytes do not match the checksum written with it: {detail}) and HDF5 cannot read "
            f"it within {timeout_s:.0f} s; re-collect the dataset"
        )
    kind, text = answer
    if kind == "error":
        raise DatasetError(f"{text} (file checksum: {detail})")
    if not text:  # damage outside every episode's checked contents: still not the file that was written
        raise DatasetError(f"{path}: damaged outside its episodes' checked contents ({detail}); re-collect the dataset")
    return [DatasetError(t) for t in text]


def _survey(
    path: Path,
    expected: int,
    total_steps: int,
    spec: ObservationSpec | None,
    data: bool,
    key: tuple[str, int, int] | None,
) -> list[DatasetError]:
    problems: list[DatasetError] = []
    try:
        with h5py.File(path, "r") as f:
            episodes = list(f)
            if len(episodes) != expected:
                raise DatasetError(f"{path} holds {len(episodes)} episodes, its metadata says {expected}: truncated?")
            if unexpected := sorted(set(episodes) - {f"episode_{i}" for i in range(expected)}):
                raise DatasetError(f"{path}: {unexpected} where episodes 0..{expected - 1} belong")
            sealed = _integrity.file_format(path, f, episodes) is not None
            if data or key is None or key not in _SOUND:
                problems, first = _check_episodes(path, f, total_steps, sealed, data)
                if not problems and key is not None:
                    _SOUND.add(key)
            else:
                first = 0
            if first is not None:  # the first sound episode: the others share its observations
                _check_observations(path, f[f"episode_{first}/observations"], spec)
    except DatasetError:
        raise
    except _integrity.UNREADABLE as exc:  # damage outside any episode: the superblock, the root group
        raise DatasetError(f"{path} cannot be read as HDF5 (truncated or corrupt?): {exc}") from exc
    return problems


# Files whose every episode was found sound in this process, by (path, mtime, size): the trainer opens one
# dataset four times, and a check costs ~5 ms an episode on a busy machine (h5py's per-object overhead).
_SOUND: set[tuple[str, int, int]] = set()


def _check_episodes(
    path: Path, f: h5py.File, total_steps: int, sealed: bool, data: bool
) -> tuple[list[DatasetError], int | None]:
    """One DatasetError per corrupt episode, and the first sound one's index (None: there is none)."""
    problems: list[DatasetError] = []
    reference, steps = None, 0
    for i in range(len(f)):
        try:
            manifest, shared = _integrity.check_episode(path, f, i, sealed, reference)
            if data:
                _integrity.verify_data(path, f, i, manifest)
        except DatasetError as exc:
            problems.append(exc)
            continue
        steps += shared.steps
        reference = reference or shared
    if not problems and steps != total_steps:
        raise DatasetError(f"{path}: its episodes hold {steps} steps, its metadata says {total_steps}")
    return problems, reference and reference.index


def _metadata(meta_path: Path) -> tuple[int, int, int | None]:
    """(total_episodes, total_steps, the data file's CRC-32 or None) of a Minari metadata file, each checked."""
    try:
        meta = json.loads(meta_path.read_text())
        counts = meta["total_episodes"], meta["total_steps"]
        crc = meta.get(_integrity.FILE_CRC_KEY)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{meta_path} is not a Minari metadata file: {exc!r}") from exc
    for name, value in zip(("total_episodes", "total_steps"), counts, strict=True):
        if type(value) is not int or value < 0:
            raise DatasetError(f"{meta_path}: {name!r} is {value!r}, not a non-negative integer")
    if crc is not None and (type(crc) is not int or not 0 <= crc < 2**32):
        raise DatasetError(f"{meta_path}: {_integrity.FILE_CRC_KEY!r} is {crc!r}, not a CRC-32")
    return (*counts, crc)


def _check_observations(path: Path, obs, spec: ObservationSpec | None) -> None:
    """The first sound episode stores every observation a PAC dataset has, and those of `spec` in its shapes
    (the others share its fields and shapes)."""
    missing = [k for k in KEYS if k not in obs]
    if missing:
        raise DatasetError(f"{path}: observations lack {missing}; a PAC dataset has {list(KEYS)}")
    if "images" in obs:
        layout = _frame_layout(path, obs["images"])
        if layout.encoding == "jpeg" and set(layout.cameras) != set(obs["images"]):
            raise DatasetError(f"{path}: frames of cameras {sorted(obs['images'])}, its layout names {layout.cameras}")
    if spec is not None:
        _check_spec(path, obs, spec)


def _frame_layout(path: Path, node) -> FrameLayout:
    try:
        return FrameLayout.of(node)
    except (FrameError, *_integrity.UNREADABLE) as exc:
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

"""Checksums sealed into a dataset's HDF5 file when it is written, and checked when it is opened and read.

After Minari and `write_frames` have written a file, `seal` reads every episode back and stores, as one JSON
attribute on the episode's group, a manifest: each field's dtype, shape and checksum, and every attribute of
the episode's objects; the file's root gets the format version. Opening a dataset checks every episode's
structure against its manifest (fields present, dtypes and shapes, attributes, T + 1 observations for T
actions, rewards, terminations and truncations), which reads no array; reading an episode checks the bytes
of what is read. Camera frames are read one step at a time, so they carry a checksum per step (an attribute
of the frames' dataset) and the reader checks the frame it decodes; the other fields one per array.

CRC-32 (zlib), not sha256: the risk is accidental damage (bit rot, a truncated copy, an interrupted write,
an edit by hand), which CRC-32 catches (every burst of up to 32 bits, all but 2^-32 of random damage) at
several times sha256's speed, and a frame's check should cost little beside its JPEG decode. It does not
defend against deliberate tampering; the trainer records the whole file's sha256 for provenance.

Measured (scratch script, 20 synthetic 400-step episodes with two 128² cameras, on a busy 2-core machine):
a manifest of 1.2 kB and per-step checksums of 3.2 kB an episode (0.1% of its 4.9 MB); reading an episode's
arrays 1.3 -> 1.5 ms, a frame 0.60 -> 0.63 ms; the structural check ~5 ms an episode (h5py's cost per object
and attribute, ~10x the check it replaces), done once per process for an unchanged file (dataset.py).

A file written before checksums (no `pac_format` attribute, no manifests) still has its structure checked,
against its first episode; its data cannot be checked, and a warning says so once per file and process
(re-collect to have it checked). Refusing it would strand datasets that are fine; reading it silently would
hide that no data is verified.
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from policies.data.errors import DatasetError

FORMAT = 1  # the layout of the checksums; a newer one is refused, not misread
FORMAT_ATTR = "pac_format"  # on the file's root
MANIFEST_ATTR = "pac_checksums"  # on each episode's group
STEP_ATTR = "crc32"  # on each camera-frame dataset: uint32, one per step
IMAGES = "observations/images"  # frames: a checksum per step (a dataset per camera, or one raw stack)
MAX_STEPS = 16_000  # per-step checksums live in an attribute, which HDF5 caps near 64 kB; episodes are 400
# Minari's fields of T rows (infos/* too): numpy kind and dimensions; observations/* have T + 1 rows
STEP_FIELDS = {"actions": ("f", 2), "rewards": ("f", 1), "terminations": ("b", 1), "truncations": ("b", 1)}
_KINDS = {"f": "floats", "b": "bools"}
# What h5py and numpy raise for a damaged file, depending on where the damage falls: each becomes a
# DatasetError naming the episode and field.
UNREADABLE = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError)


class UncheckedDataWarning(UserWarning):
    """A dataset written before checksums: its structure is checked, its data cannot be."""


@dataclass(frozen=True)
class Sum:
    """What an episode's field was when sealed."""

    dtype: str
    shape: tuple[int, ...]
    crc32: int  # of the array's bytes, or, for camera frames, of its per-step checksums


@dataclass(frozen=True)
class Manifest:
    fields: dict[str, Sum]  # by path inside the episode's group ("observations/proprio")
    attrs: dict[str, str]  # by object path ("" the episode's group): its attributes as canonical JSON


FILE_CRC_KEY = "pac_file_crc32"  # in metadata.json: the whole HDF5 file's CRC-32, written after it is sealed


def file_crc32(path: Path, chunk: int = 16 << 20) -> int:
    """CRC-32 of a whole file, read in chunks (about 1 GB/s): checked before HDF5 parses anything, because
    some damage to HDF5's own structures makes libhdf5 loop for ever (found by benchmarks/fuzz.py)."""
    value = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            value = zlib.crc32(block, value)
    return value


def crc32(data) -> int:
    return zlib.crc32(np.ascontiguousarray(data).reshape(-1).view(np.uint8))


def per_step(field: str) -> bool:
    return field == IMAGES or field.startswith(IMAGES + "/")


def describe(ds: h5py.Dataset) -> str:
    """A dataset's dtype as the manifest records it; JPEG frames are variable-length uint8."""
    vlen = h5py.check_vlen_dtype(ds.dtype)
    return f"vlen {vlen}" if vlen is not None else str(ds.dtype)


def step_crcs(ds: h5py.Dataset) -> np.ndarray:
    """uint32 (T + 1,): the checksum of each step's frames (one JPEG, or one row of the raw stack)."""
    return np.array([crc32(row) for row in ds[()]], np.uint32)


# --- writing ------------------------------------------------------------------------------------------------


def seal(f: h5py.File) -> None:
    """Store every episode's manifest and the format version, from the bytes as stored."""
    for name in f:
        group = f[name]
        fields = {}
        contents = _contents(Path(f.filename), int(name.removeprefix("episode_")), group)
        for field, ds in contents.datasets.items():
            if per_step(field):
                if ds.shape[0] > MAX_STEPS:
                    raise DatasetError(f"{f.filename}: {name} has {ds.shape[0]} steps, more than {MAX_STEPS}")
                ds.attrs[STEP_ATTR] = crcs = step_crcs(ds)
            else:
                crcs = ds[()]
            fields[field] = {"dtype": describe(ds), "shape": list(ds.shape), "crc32": crc32(crcs)}
        attrs = {obj: json.loads(text) for obj, text in contents.attrs.items()}
        group.attrs[MANIFEST_ATTR] = json.dumps({"fields": fields, "attrs": attrs}, sort_keys=True)
    f.attrs[FORMAT_ATTR] = FORMAT


# --- opening ------------------------------------------------------------------------------------------------


def file_format(path: Path, f: h5py.File, episodes: list[str]) -> int | None:
    """The file's checksum format, or None for a file written before checksums (warned about once)."""
    if FORMAT_ATTR not in f.attrs:
        if any(MANIFEST_ATTR in f[name].attrs for name in episodes):
            raise DatasetError(f"{path}: its episodes carry checksums but the file lacks {FORMAT_ATTR!r}: damaged")
        if str(path) not in _WARNED:
            _WARNED.add(str(path))
            warnings.warn(
                f"{path} was written before datasets carried checksums: its structure is checked, its data "
                "cannot be; re-collect it (pac-collect) to have every episode checked",
                UncheckedDataWarning,
                stacklevel=3,
            )
        return None
    version = f.attrs[FORMAT_ATTR]
    if not _is_int(version):
        raise DatasetError(f"{path}: attribute {FORMAT_ATTR!r} is {version!r}, not an integer: damaged")
    if int(version) != FORMAT:
        raise DatasetError(f"{path}: checksum format {int(version)}; this pac-runtime reads format {FORMAT}")
    return FORMAT


_WARNED: set[str] = set()


@dataclass(frozen=True)
class EpisodeShape:
    """What every episode of a file shares with the first sound one, and its own length."""

    index: int
    steps: int
    fields: dict[str, tuple[str, tuple[int, ...]]]  # dtype and shape after the first axis
    attrs: dict[str, str]  # of every object below the episode's group


def check_episode(
    path: Path, f: h5py.File, index: int, sealed: bool, reference: EpisodeShape | None
) -> tuple[Manifest | None, EpisodeShape]:
    """Check episode `index`'s structure (and, when `sealed`, its manifest) and that it shares `reference`'s
    (None: this is the first); return its manifest and shape. Raises DatasetError."""
    with reading(path, index, "group"):
        group = f[f"episode_{index}"]
        if not isinstance(group, h5py.Group):
            raise _error(path, index, "group", f"a {type(group).__name__}, not a group")
        manifest = manifest_of(path, group, index) if sealed else None
    contents = _contents(path, index, group)
    steps = _steps(path, index, contents.attrs[""])
    if manifest is not None:
        _match_manifest(path, index, manifest, contents)
    shared = {}
    for field, (dtype, shape) in contents.kinds.items():
        rows = steps + 1 if field.startswith("observations/") else steps
        if not shape or shape[0] != rows:
            problem = f"shape {shape}: {rows} rows expected for {steps} steps"
            raise _error(path, index, f"field {field!r}", problem)
        shared[field] = (dtype, shape[1:])
    for field, (kind, ndim) in STEP_FIELDS.items():
        if field not in shared:
            raise _error(path, index, f"field {field!r}", "missing")
        dtype, trailing = shared[field]
        if _kind(dtype) != kind or len(trailing) + 1 != ndim:
            problem = f"{dtype} of shape (T, *{trailing}), not {_KINDS[kind]} of {ndim} dimension(s)"
            raise _error(path, index, f"field {field!r}", problem)
    this = EpisodeShape(index, steps, shared, {k: v for k, v in contents.attrs.items() if k})
    if reference is not None:
        _match_reference(path, index, reference, this)
    return manifest, this


def manifest_of(path: Path, group: h5py.Group, index: int) -> Manifest:
    """The episode's manifest, parsed and checked for shape; raises DatasetError when missing or damaged."""
    where = f"attribute {MANIFEST_ATTR!r}"
    if MANIFEST_ATTR not in group.attrs:
        raise _error(path, index, where, "missing (the file is sealed, this episode is not)")
    try:
        raw = group.attrs[MANIFEST_ATTR]
        text = raw.decode() if isinstance(raw, bytes) else raw
        data = json.loads(text)
        fields = {
            str(k): Sum(_str(v["dtype"]), tuple(_int(n) for n in v["shape"]), _int(v["crc32"]))
            for k, v in data["fields"].items()
        }
        attrs = {str(k): _canonical(v) for k, v in data["attrs"].items()}
    except (*UNREADABLE, json.JSONDecodeError, AttributeError) as exc:  # AttributeError: "fields" or "attrs" no map
        raise _error(path, index, where, f"damaged ({type(exc).__name__}: {exc})") from exc
    return Manifest(fields, attrs)


# --- reading ------------------------------------------------------------------------------------------------


def verify(path: Path, index: int, field: str, array: np.ndarray, manifest: Manifest | None) -> np.ndarray:
    """`array`, as read from episode `index`'s `field`, if it matches its manifest; raises DatasetError."""
    if manifest is None:
        return array
    sealed = _sealed(path, index, field, manifest)
    where = f"field {field!r}"
    if str(array.dtype) != sealed.dtype or array.shape != sealed.shape:
        raise _error(path, index, where, f"{array.dtype} {array.shape}, sealed as {sealed.dtype} {sealed.shape}")
    if (read := crc32(array)) != sealed.crc32:
        raise _error(path, index, where, f"checksum mismatch (stored crc32 {sealed.crc32:#010x}, read {read:#010x})")
    return array


def stored_step_crcs(path: Path, index: int, field: str, ds: h5py.Dataset, manifest: Manifest | None):
    """The per-step checksums of a frames dataset, checked against the manifest; None when unsealed."""
    if manifest is None:
        return None
    sealed = _sealed(path, index, field, manifest)
    with reading(path, index, f"field {field!r}"):
        crcs = ds.attrs[STEP_ATTR] if STEP_ATTR in ds.attrs else None
    if crcs is None:
        raise _error(path, index, f"field {field!r}", f"its per-step checksums ({STEP_ATTR!r}) are missing")
    crcs = np.asarray(crcs)
    if crcs.dtype != np.uint32 or crcs.shape != sealed.shape[:1] or crc32(crcs) != sealed.crc32:
        raise _error(path, index, f"field {field!r}", f"its per-step checksums ({STEP_ATTR!r}) are damaged")
    return crcs


def step_problem(step: int, data: np.ndarray, crcs: np.ndarray | None) -> str | None:
    """What is wrong with one step's frames, as read, against their checksums (None: nothing, or unsealed)."""
    if crcs is not None and (read := crc32(data)) != crcs[step]:
        return f"checksum mismatch (stored crc32 {crcs[step]:#010x}, read {read:#010x})"
    return None


def verify_data(path: Path, f: h5py.File, index: int, manifest: Manifest | None) -> None:
    """Read every field of episode `index` whole and check it (every frame's checksum, no decoding)."""
    with reading(path, index, "group"):
        group = f[f"episode_{index}"]
    for field, ds in _contents(path, index, group).datasets.items():
        with reading(path, index, f"field {field!r}"):
            data = ds[()]
        if per_step(field):
            crcs = stored_step_crcs(path, index, field, ds, manifest)
            for step, row in enumerate(data):
                if problem := step_problem(step, row, crcs):
                    raise DatasetError(f"{locate(ds)}, step {step}: {problem}")
        else:
            verify(path, index, field, data, manifest)


def locate(ds: h5py.Dataset) -> str:
    """Where a dataset inside an episode's group is, as errors name it: FILE: episode I, field 'F'."""
    _, episode, *field = ds.name.split("/")
    return f"{ds.file.filename}: episode {episode.removeprefix('episode_')}, field {'/'.join(field)!r}"


@contextmanager
def reading(path: Path, index: int, where: str) -> Iterator[None]:
    """Turn whatever h5py raises on damaged bytes into a DatasetError naming the episode and `where`."""
    try:
        yield
    except DatasetError:
        raise
    except UNREADABLE as exc:
        raise _error(path, index, where, f"unreadable ({type(exc).__name__}: {exc})") from exc


# --- helpers --------------------------------------------------------------------------------------------------


def _error(path: Path, index: int, where: str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: episode {index}, {where}: {problem}")


@dataclass(frozen=True)
class _Contents:
    datasets: dict[str, h5py.Dataset]  # every dataset under an episode's group, by its path there
    kinds: dict[str, tuple[str, tuple[int, ...]]]  # their dtype (`describe`) and shape
    attrs: dict[str, str]  # every object's attributes (the group's own: ""), as canonical JSON, checksums left out


def _contents(path: Path, index: int, group: h5py.Group) -> _Contents:
    datasets: dict[str, h5py.Dataset] = {}
    kinds: dict[str, tuple[str, tuple[int, ...]]] = {}
    with reading(path, index, "attributes"):
        attrs = {"": _attrs_json(group, MANIFEST_ATTR)}

    def visit(name: str, obj) -> None:
        with reading(path, index, f"field {name!r}"):
            if isinstance(obj, h5py.Dataset):
                datasets[name], kinds[name] = obj, (describe(obj), tuple(obj.shape))
            elif not isinstance(obj, h5py.Group):
                raise TypeError(f"a {type(obj).__name__}, not a dataset or group")
            if len(obj.attrs) and (text := _attrs_json(obj, STEP_ATTR)) != "{}":
                attrs[name] = text

    with reading(path, index, "fields"):
        group.visititems(visit)
    return _Contents(dict(sorted(datasets.items())), kinds, attrs)


def _attrs_json(obj, skip: str) -> str:
    attrs = obj.attrs
    return _canonical({k: _plain(attrs[k]) for k in attrs if k != skip})  # the skipped value is never read


def _canonical(value) -> str:
    """JSON that tells 4 from 4.0, "4" and True, so an attribute's type is sealed with its value."""
    return json.dumps(value, sort_keys=True)


def _plain(value):
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value[()])
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"an attribute of type {type(value).__name__}")


def _steps(path: Path, index: int, attrs: str) -> int:
    """The episode's `total_steps`, once it (at least 1), `id` and `seed` are integers and `id` is the
    episode's index."""
    episode = json.loads(attrs)
    for name, least in (("id", 0), ("total_steps", 1), ("seed", 0)):
        value = episode.get(name)
        if not (type(value) is int and value >= least) and not (name == "seed" and value is None):
            raise _error(path, index, f"attribute {name!r}", f"{value!r}, not an integer from {least}")
    if episode["id"] != index:
        raise _error(path, index, "attribute 'id'", f"{episode['id']}, in group episode_{index}")
    return episode["total_steps"]


def _match_manifest(path: Path, index: int, manifest: Manifest, contents: _Contents) -> None:
    for field in sorted(manifest.fields.keys() - contents.kinds.keys()):
        raise _error(path, index, f"field {field!r}", "missing")
    for field in sorted(contents.kinds.keys() - manifest.fields.keys()):
        raise _error(path, index, f"field {field!r}", "not in the episode's checksums (added after collection?)")
    for field, (dtype, shape) in contents.kinds.items():
        sealed = manifest.fields[field]
        if (dtype, shape) != (sealed.dtype, sealed.shape):
            raise _error(path, index, f"field {field!r}", f"{dtype} {shape}, sealed as {sealed.dtype} {sealed.shape}")
    for obj in sorted(manifest.attrs.keys() | contents.attrs.keys()):
        sealed, read = json.loads(manifest.attrs.get(obj, "{}")), json.loads(contents.attrs.get(obj, "{}"))
        if not isinstance(sealed, dict) or not isinstance(read, dict):  # a damaged manifest (found by the fuzzer)
            raise _error(path, index, f"attributes of {obj!r}", f"damaged checksum record {_short(sealed)}")
        for name in sorted(sealed.keys() | read.keys()):
            if _canonical(sealed.get(name)) != _canonical(read.get(name)):
                where = f"attribute {name!r}" + (f" of {obj!r}" if obj else "")
                have = "missing" if name not in read else f"{read[name]!r}"
                raise _error(path, index, where, f"{have}, sealed as {sealed.get(name, 'absent')!r}")


def _match_reference(path: Path, index: int, reference: EpisodeShape, this: EpisodeShape) -> None:
    first = f"episode {reference.index}"
    for field in sorted(reference.fields.keys() | this.fields.keys()):
        theirs, ours = reference.fields.get(field), this.fields.get(field)
        if ours is None:
            raise _error(path, index, f"field {field!r}", f"missing ({first} has it: an interrupted write?)")
        if theirs is None:
            raise _error(path, index, f"field {field!r}", f"not in {first}")
        if theirs != ours:
            problem = f"{ours[0]} rows of shape {ours[1]}; {first}'s are {theirs[0]} of {theirs[1]}"
            raise _error(path, index, f"field {field!r}", problem)
    for obj in sorted(reference.attrs.keys() | this.attrs.keys()):
        if reference.attrs.get(obj) != this.attrs.get(obj):
            problem = f"{this.attrs.get(obj)}; {first}'s are {reference.attrs.get(obj)}"
            raise _error(path, index, f"attributes of {obj!r}", problem)


def _sealed(path: Path, index: int, field: str, manifest: Manifest) -> Sum:
    if field not in manifest.fields:
        raise _error(path, index, f"field {field!r}", "not in the episode's checksums")
    return manifest.fields[field]


def _kind(dtype: str) -> str:
    """numpy's kind of a `describe`d dtype ("f", "b", ...); "" for frames and types numpy cannot name."""
    try:
        return np.dtype(dtype).kind
    except TypeError:
        return ""


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _int(value) -> int:
    if type(value) is not int:
        raise TypeError(f"{value!r} is not an integer")
    return value


def _str(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _short(value, limit: int = 80) -> str:
    """A bounded repr for messages: a damaged record may be long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

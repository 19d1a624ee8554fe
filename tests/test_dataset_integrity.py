"""Datasets carry checksums (issue 12): however a file is damaged, opening or reading it ends in a DatasetError
that names the file, the episode and the field; never another exception, never altered data read back."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.data.collect import Episode, main, tokenizer, write_dataset
from policies.data.dataset import DatasetError, check_dataset, open_dataset
from policies.data.episodes import EpisodeReader
from policies.data.frames import FrameError
from policies.data.integrity import FILE_CRC_KEY, FORMAT_ATTR, MANIFEST_ATTR, STEP_ATTR, UncheckedDataWarning
from tests.test_data import DID, synthetic_episode

CAMERA = "front_left"
LENGTHS = (3, 4, 3)
HDF5 = Path(DID) / "data" / "main_data.hdf5"


def framed_episode(index: int, steps: int) -> Episode:
    """`synthetic_episode` with one camera's frames: smooth gradients that differ by step and episode."""
    episode = synthetic_episode(index, steps, terminated=True)
    _, _, height, width = tokenizer("sawyer", (CAMERA,), objects=False).spec.image_shape
    t = np.arange(steps + 1)[:, None, None, None, None]
    channel = 60 * np.arange(3)[None, None, :, None, None]
    images = (np.add.outer(np.arange(height), np.arange(width)) + 40 * t + 7 * index + channel) % 256
    episode.observations = {**episode.observations, "images": images.astype(np.uint8)}
    return episode


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sealed")
    episodes = [framed_episode(i, n) for i, n in enumerate(LENGTHS)]
    write_dataset(episodes, root, "sawyer", "stack", "mixed", cameras=(CAMERA,), objects=False)
    return root


@pytest.fixture
def copy(sealed, tmp_path) -> Path:
    """A fresh copy of the sealed dataset, to damage."""
    shutil.copytree(sealed / DID, tmp_path / DID)
    return tmp_path


def everything(root: Path) -> list:
    """All a reader gives of the dataset, after the full check: what damage must never silently alter."""
    check_dataset(root, DID, data=True)
    reader = EpisodeReader(root, DID)
    out = [reader.lengths, reader.layout, reader.successes()]
    for i in range(len(reader)):
        for reward in ("sparse", "shaped"):
            a = reader.arrays(i, reward)
            out += [a.observations, a.actions, a.rewards, a.terminations, a.truncations]
        out += [reader.frames(i, step) for step in range(reader.lengths[i] + 1)]
    reader.close()
    return out


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def flip(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def offset_of(path: Path, field: str) -> int:
    """The file offset of a dataset's first bytes (Minari writes them chunked, uncompressed)."""
    with h5py.File(path, "r") as f:
        ds = f[field]
        assert ds.compression is None
        offset = ds.id.get_offset()
        return offset if offset is not None else ds.id.get_chunk_info(0).byte_offset


def frame_offset(path: Path, episode: int, step: int) -> int:
    """The file offset of the middle of one stored JPEG frame (h5py keeps them in a heap: found by content)."""
    with h5py.File(path, "r") as f:
        frame = f[f"episode_{episode}/observations/images/{CAMERA}"][step].tobytes()
    data = path.read_bytes()
    assert data.count(frame) == 1
    return data.find(frame) + len(frame) // 2


def test_a_sealed_dataset_reads_back_what_was_written_and_minari_still_loads_it(sealed):
    reader = EpisodeReader(sealed, DID)
    assert reader.sealed and reader.layout.cameras == (CAMERA,)
    episode = synthetic_episode(1, LENGTHS[1], terminated=True)
    arrays = reader.arrays(1, "shaped")
    np.testing.assert_array_equal(arrays.observations["proprio"], episode.observations["proprio"])
    np.testing.assert_array_equal(arrays.actions, episode.actions)
    np.testing.assert_array_equal(arrays.rewards, episode.shaped)
    assert reader.frames(1, 2).shape == (1, 3, 128, 128)
    loaded = open_dataset(sealed, DID)  # the full check, then Minari, which ignores the checksum attributes
    assert loaded.total_episodes == len(LENGTHS)
    assert main(["--check", str(sealed / DID)]) == 0


def _set(field: str, attr: str, value):
    def damage(f):
        f[field].attrs[attr] = value

    return damage


def _delete(field: str):
    def damage(f):
        del f[field]

    return damage


def _replace(field: str, change):
    def damage(f):
        data = change(f[field][()])
        del f[field]
        f[field] = data

    return damage


def _move(old: str, new: str):
    return lambda f: f.move(old, new)


# damage to the structure, done through h5py, and what opening the dataset must then say
DAMAGE = {
    "total_steps a string": (
        _set("episode_1", "total_steps", "4"),
        r"episode 1, attribute 'total_steps': '4', not an integer",
    ),
    "seed a float": (_set("episode_2", "seed", 2.0), r"episode 2, attribute 'seed': 2.0, not an integer"),
    "frame height a string": (
        _set("episode_0/observations/images", "height", "128"),
        r"episode 0, attribute 'height' of 'observations/images': '128', sealed as 128",
    ),
    "checksums not JSON": (_set("episode_1", MANIFEST_ATTR, "{"), r"episode 1, attribute 'pac_checksums': damaged"),
    "checksums' attrs a list": (  # found by the dataset fuzzer: AttributeError before
        _set("episode_1", MANIFEST_ATTR, '{"fields": {}, "attrs": []}'),
        r"episode 1, attribute 'pac_checksums': damaged",
    ),
    "checksums deleted": (
        lambda f: f["episode_2"].attrs.__delitem__(MANIFEST_ATTR),
        r"episode 2, attribute 'pac_checksums': missing",
    ),
    "a field deleted in episode 2": (
        _delete("episode_2/observations/proprio"),
        r"episode 2, field 'observations/proprio': missing",
    ),
    "frames deleted in episode 1": (
        _delete("episode_1/observations/images"),
        r"episode 1, field 'observations/images/front_left': missing",
    ),
    "an array truncated": (
        _replace("episode_1/actions", lambda a: a[:-1]),
        r"episode 1, field 'actions': float32 \(3, 5\), sealed as float32 \(4, 5\)",
    ),
    "a dtype changed": (
        _replace("episode_0/terminations", lambda a: a.astype(np.float32)),
        r"episode 0, field 'terminations': float32 \(3,\), sealed as bool \(3,\)",
    ),
    "a field added": (
        lambda f: f.create_dataset("episode_1/infos/extra", data=np.zeros(4)),
        r"episode 1, field 'infos/extra': not in the episode's checksums",
    ),
    "episode renamed": (_move("episode_2", "episode_7"), r"\['episode_7'\] where episodes 0..2 belong"),
    "newer format": (
        lambda f: f.attrs.__setitem__(FORMAT_ATTR, 2),
        r"checksum format 2; this pac-runtime reads format 1",
    ),
    "format deleted": (lambda f: f.attrs.__delitem__(FORMAT_ATTR), r"carry checksums but the file lacks 'pac_format'"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_damage_to_the_structure_is_named_when_the_dataset_is_opened(copy, name):
    damage, message = DAMAGE[name]
    with h5py.File(copy / HDF5, "a") as f:
        damage(f)
    with pytest.raises(DatasetError, match=message) as opened:
        EpisodeReader(copy, DID)
    assert str(copy / HDF5) in str(opened.value)
    with pytest.raises(DatasetError, match=message):
        check_dataset(copy, DID, data=True)


def test_metadata_of_the_wrong_type_is_named(copy):
    meta_path = copy / DID / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "total_episodes": [3]}))
    with pytest.raises(DatasetError, match=r"metadata.json: 'total_episodes' is \[3\], not a non-negative integer"):
        EpisodeReader(copy, DID)
    meta_path.write_text(json.dumps({**meta, "total_steps": 11}))
    with pytest.raises(DatasetError, match=r"its episodes hold 10 steps, its metadata says 11"):
        EpisodeReader(copy, DID)


def test_flipped_bytes_in_an_array_are_named_when_the_dataset_is_opened(copy):
    """The whole file's CRC-32 fails on open; the guarded survey then names the episode and field."""
    flip(copy / HDF5, offset_of(copy / HDF5, "episode_1/observations/proprio") + 8)
    message = r"episode 1, field 'observations/proprio': checksum mismatch \(stored crc32 0x[0-9a-f]{8}, read 0x"
    with pytest.raises(DatasetError, match=message):
        EpisodeReader(copy, DID)
    with pytest.raises(DatasetError, match=message):
        check_dataset(copy, DID, data=True)


def drop_file_crc(root: Path) -> None:
    """Remove the whole file's CRC-32 from metadata.json, as a dataset written before it lacks it."""
    meta = root / HDF5.parent / "metadata.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != FILE_CRC_KEY}))


def test_flipped_bytes_in_an_array_of_an_unsealed_file_are_named_when_the_episode_is_read(copy):
    """Without the file's CRC-32 (a dataset from before it), opening reads no array: the read names the damage."""
    drop_file_crc(copy)
    flip(copy / HDF5, offset_of(copy / HDF5, "episode_1/observations/proprio") + 8)
    reader = EpisodeReader(copy, DID)
    reader.arrays(0)
    message = r"episode 1, field 'observations/proprio': checksum mismatch \(stored crc32 0x[0-9a-f]{8}, read 0x"
    with pytest.raises(DatasetError, match=message):
        reader.arrays(1)


def test_flipped_bytes_in_a_jpeg_frame_are_named_with_their_step(copy):
    flip(copy / HDF5, frame_offset(copy / HDF5, 1, 2), bit=3)
    message = r"episode 1, field 'observations/images/front_left', step 2: checksum mismatch"
    with pytest.raises(DatasetError, match=message):
        EpisodeReader(copy, DID)
    with pytest.raises(DatasetError, match=message):
        check_dataset(copy, DID, data=True)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "checksum mismatch"),
        (lambda b: b[::-1], "checksum mismatch"),
    ],
    ids=["truncated", "reversed"],
)
def test_a_rewritten_frame_is_named(copy, damage, message):
    with h5py.File(copy / HDF5, "a") as f:
        frames = f[f"episode_0/observations/images/{CAMERA}"]
        frames[3] = damage(frames[3])
    with pytest.raises(DatasetError, match=rf"episode 0, field 'observations/images/front_left', step 3: {message}"):
        EpisodeReader(copy, DID)  # the file's CRC-32 fails on open; the guarded survey names the frame


def test_damaged_per_step_checksums_are_named(copy):
    with h5py.File(copy / HDF5, "a") as f:
        crcs = f[f"episode_2/observations/images/{CAMERA}"].attrs
        crcs[STEP_ATTR] = crcs[STEP_ATTR][::-1]
    with pytest.raises(DatasetError, match=r"episode 2, field 'observations/images/front_left': its per-step"):
        EpisodeReader(copy, DID).frames(2, 0)


def test_the_full_check_names_every_corrupt_episode(copy, capsys):
    flip(copy / HDF5, offset_of(copy / HDF5, "episode_0/actions"))
    flip(copy / HDF5, frame_offset(copy / HDF5, 2, 0))
    with pytest.raises(DatasetError, match="2 corrupt episodes"):
        EpisodeReader(copy, DID)  # the file's CRC-32 fails on open: every episode is read to name the damage
    with pytest.raises(DatasetError, match="2 corrupt episodes") as report:
        check_dataset(copy, DID, data=True)
    assert "episode 0, field 'actions': checksum mismatch" in str(report.value)
    assert "episode 2, field 'observations/images/front_left', step 0: checksum mismatch" in str(report.value)
    assert main(["--check", str(copy / DID)]) == 1
    out = capsys.readouterr()
    assert "episode 0, field 'actions'" in out.err and "episode 2, field" in out.err
    assert "1 of 3 episodes sound, 2 corrupt" in out.out


def test_a_dataset_from_before_checksums_has_its_structure_checked_and_is_warned_about_once(copy):
    drop_file_crc(copy)
    with h5py.File(copy / HDF5, "a") as f:
        del f.attrs[FORMAT_ATTR]
        for i in range(len(LENGTHS)):
            del f[f"episode_{i}"].attrs[MANIFEST_ATTR]
            del f[f"episode_{i}/observations/images/{CAMERA}"].attrs[STEP_ATTR]
    with pytest.warns(UncheckedDataWarning, match="written before datasets carried checksums.*re-collect"):
        reader = EpisodeReader(copy, DID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EpisodeReader(copy, DID)  # once per file
    assert not reader.sealed
    np.testing.assert_array_equal(reader.arrays(2).actions, np.full((3, 5), 2, np.float32))
    reader.frames(2, 3)
    reader.close()
    with h5py.File(copy / HDF5, "a") as f:
        frames = f[f"episode_0/observations/images/{CAMERA}"]
        frames[1] = frames[1][: frames[1].size // 2]
    reader = EpisodeReader(copy, DID)
    with pytest.raises(FrameError, match=r"episode 0, field 'observations/images/front_left', step 1: not a whole"):
        reader.frames(0, 1)  # no checksum to compare: the decoder still refuses it
    reader.close()
    with h5py.File(copy / HDF5, "a") as f:
        f["episode_0/observations/images"].attrs["height"] = "tall"
    with pytest.raises(DatasetError, match="camera frames stored in an unknown layout"):
        EpisodeReader(copy, DID)
    with h5py.File(copy / HDF5, "a") as f:
        f["episode_0/observations/images"].attrs["height"] = 128
        del f["episode_2/observations/proprio"]
        f["episode_1"].attrs["total_steps"] = 4.0
    with pytest.raises(DatasetError, match="2 corrupt episodes") as report:
        check_dataset(copy, DID)
    assert "episode 1, attribute 'total_steps': 4.0, not an integer from 1" in str(report.value)
    assert "episode 2, field 'observations/proprio': missing (episode 0 has it" in str(report.value)


# --- whatever the damage ---------------------------------------------------------------------------------


def _attributes(path: Path) -> list[tuple[str, str]]:
    """(object, attribute) of every attribute in the file, the root's as "/"."""
    with h5py.File(path, "r") as f:
        found = [("/", name) for name in f.attrs]
        f.visititems(lambda name, obj: found.extend((name, a) for a in obj.attrs))
    return sorted(found)


ATTR_VALUES = st.one_of(
    st.none(),  # delete it
    st.integers(-3, 2**40),
    st.floats(allow_nan=False),
    st.text(alphabet='ab4{}"[', max_size=8),
    st.booleans(),
    st.lists(st.integers(0, 2**32 - 1), max_size=6),
)


@pytest.fixture(scope="module")
def original(sealed) -> list:
    return everything(sealed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_flipped_byte_or_changed_attribute_is_a_dataset_error_or_changes_nothing(sealed, original, data):
    """A byte anywhere in the file (HDF5's own structures included), or any attribute set to another value
    or type, or deleted: either the full check or a read raises DatasetError, or all reads are unchanged."""
    size = (sealed / HDF5).stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(sealed / DID, root / DID)
        path = root / HDF5
        if data.draw(st.booleans(), label="flip a byte"):
            flip(path, data.draw(st.integers(0, size - 1), label="offset"), data.draw(st.integers(0, 7), label="bit"))
        else:
            obj, name = data.draw(st.sampled_from(_attributes(path)), label="attribute")
            value = data.draw(ATTR_VALUES, label="value")
            with h5py.File(path, "a") as f:
                attrs = f.attrs if obj == "/" else f[obj].attrs
                if value is None:
                    del attrs[name]
                else:
                    attrs[name] = np.asarray(value, np.uint32) if isinstance(value, list) and value else value
        try:
            read = everything(root)
        except DatasetError:
            return
        assert len(read) == len(original) and all(same(a, b) for a, b in zip(original, read, strict=True))

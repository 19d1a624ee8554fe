"""Read a collected dataset's episodes straight from its HDF5 file, for training.

`minari.load_dataset` decodes every frame of an episode whenever it is read; a learner wants a few steps of
many episodes, and the JPEG decoding in DataLoader workers rather than in the training process. The reader
loads the small arrays (proprio, instruction, any other state observation, actions, rewards) of an episode
at once and decodes camera frames one step at a time. Opening checks every episode's structure; each read
checks what it read against the episode's checksums (integrity.py): the small arrays whole, camera frames
step by step. h5py file handles must not cross a fork, so the file is opened lazily in each process that
reads, and never pickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from policies.data import integrity as _integrity
from policies.data.dataset import check_dataset
from policies.data.errors import DatasetError
from policies.data.frames import FrameLayout
from policies.spec import ObservationSpec

IMAGES = "images"
REWARDS = ("sparse", "shaped")  # `rewards` as stored (1 at success), or `infos/shaped_reward`


@dataclass(frozen=True)
class EpisodeArrays:
    """Everything of one episode of T steps but its camera frames."""

    observations: dict[str, np.ndarray]  # each (T + 1, ...): every stored observation except images
    actions: np.ndarray  # float32 (T, A)
    rewards: np.ndarray  # float32 (T,), the chosen reward
    terminations: np.ndarray  # bool (T,)
    truncations: np.ndarray  # bool (T,)

    @property
    def steps(self) -> int:
        return int(self.actions.shape[0])


class EpisodeReader:
    """A checked dataset's episodes: their lengths, their arrays, and their camera frames step by step."""

    def __init__(self, root: Path, dataset_id: str, spec: ObservationSpec | None = None):
        self.path = check_dataset(root, dataset_id, spec)
        self._file: h5py.File | None = None
        self._pid = -1
        self._sources: dict[int, tuple] = {}  # per episode, with checksums: h5py lookups cost more than a decode
        self._manifests: dict[int, _integrity.Manifest | None] = {}
        f = self._open()
        self.sealed = _integrity.FORMAT_ATTR in f.attrs  # False: written before checksums (warned at the check)
        count = sum(1 for k in f if k.startswith("episode_"))
        self.lengths = np.array([int(f[f"episode_{i}"].attrs["total_steps"]) for i in range(count)], np.int64)
        obs = f["episode_0/observations"] if count else {}
        self.layout = FrameLayout.of(obs[IMAGES]) if IMAGES in obs else None  # None: no cameras stored
        self.close()  # a DataLoader may fork next: each process opens its own handle

    def __len__(self) -> int:
        return len(self.lengths)

    def arrays(self, episode: int, reward: str = "sparse") -> EpisodeArrays:
        """One episode's arrays, with `reward` in REWARDS."""
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        group = self._episode(episode)
        observations = group["observations"]
        observations = {k: self._read(episode, observations, k, "observations/") for k in observations if k != IMAGES}
        field = "rewards" if reward == "sparse" else "infos/shaped_reward"
        if field not in group:
            raise DatasetError(f"{self.path}: episode {episode}, field {field!r}: missing, no {reward} reward")
        return EpisodeArrays(
            observations=observations,
            actions=self._read(episode, group, "actions").astype(np.float32),
            rewards=np.asarray(self._read(episode, group, field), np.float32),
            terminations=self._read(episode, group, "terminations").astype(bool),
            truncations=self._read(episode, group, "truncations").astype(bool),
        )

    def successes(self) -> np.ndarray:
        """bool per episode: did it end in a termination (the task done)? Reads each one's terminations."""
        return np.array([bool(self._read(i, self._episode(i), "terminations")[-1]) for i in range(len(self))])

    def frames(self, episode: int, step: int) -> np.ndarray:
        """uint8 (N_cam, 3, H, W) of one step, decoded; raises FrameError for a damaged frame."""
        if self.layout is None:
            raise DatasetError(f"{self.path} stores no camera frames (collected with --cameras none)")
        cached = self._sources.get(episode)
        if cached is None:
            manifest = self._manifest(episode)
            with _integrity.reading(self.path, episode, f"field {_integrity.IMAGES!r}"):
                sources = self.layout.sources(self._episode(episode)["observations"][IMAGES])
            crcs = tuple(
                _integrity.stored_step_crcs(self.path, episode, s.name.split("/", 2)[2], s, manifest) for s in sources
            )
            cached = self._sources[episode] = sources, crcs
        if not 0 <= step <= self.lengths[episode]:
            raise IndexError(f"step {step} of episode {episode}'s {self.lengths[episode] + 1} observations")
        sources, crcs = cached
        return self.layout.read(sources, step, crcs)

    def _read(self, episode: int, group: h5py.Group, name: str, prefix: str = "") -> np.ndarray:
        """The field `prefix + name` of an episode, whole (`name` inside `group`, the episode's group or the
        one at `prefix`), checked against its checksum."""
        field = prefix + name
        manifest = self._manifest(episode)
        with _integrity.reading(self.path, episode, f"field {field!r}"):
            array = group[name][()]
        return _integrity.verify(self.path, episode, field, array, manifest)

    def _manifest(self, episode: int) -> _integrity.Manifest | None:
        if episode not in self._manifests:
            manifest = _integrity.manifest_of(self.path, self._episode(episode), episode) if self.sealed else None
            self._manifests[episode] = manifest
        return self._manifests[episode]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._sources = None, {}

    def _episode(self, episode: int) -> h5py.Group:
        if not 0 <= episode < len(self.lengths):
            raise IndexError(f"episode {episode} of {len(self.lengths)}")
        return self._open()[f"episode_{episode}"]

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():  # a handle inherited through fork is not ours
            self._file, self._sources = h5py.File(self.path, "r"), {}
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": -1, "_sources": {}}

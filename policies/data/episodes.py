"""Read a collected dataset's episodes straight from its HDF5 file, for training.

`minari.load_dataset` decodes every frame of an episode whenever it is read; a learner wants a few steps of
many episodes, and the JPEG decoding in DataLoader workers rather than in the training process. The reader
loads the small arrays (proprio, instruction, any other state observation, actions, rewards) of an episode
at once and decodes camera frames one step at a time. h5py file handles must not cross a fork, so the file is
opened lazily in each process that reads, and never pickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

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
        self._sources: dict[int, tuple[h5py.Dataset, ...]] = {}  # per episode; h5py's lookups cost more than a decode
        f = self._open()
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
        observations = {k: v[()] for k, v in group["observations"].items() if k != IMAGES}
        try:
            rewards = group["rewards"][()] if reward == "sparse" else group["infos/shaped_reward"][()]
        except KeyError as exc:
            raise DatasetError(f"{self.path}: episode_{episode} has no {reward} reward") from exc
        return EpisodeArrays(
            observations=observations,
            actions=group["actions"][()].astype(np.float32),
            rewards=np.asarray(rewards, np.float32),
            terminations=group["terminations"][()].astype(bool),
            truncations=group["truncations"][()].astype(bool),
        )

    def successes(self) -> np.ndarray:
        """bool per episode: did it end in a termination (the task done)? Reads one value per episode."""
        return np.array([bool(self._episode(i)["terminations"][-1]) for i in range(len(self))])

    def frames(self, episode: int, step: int) -> np.ndarray:
        """uint8 (N_cam, 3, H, W) of one step, decoded; raises FrameError for a damaged frame."""
        if self.layout is None:
            raise DatasetError(f"{self.path} stores no camera frames (collected with --cameras none)")
        sources = self._sources.get(episode)
        if sources is None:
            sources = self._sources[episode] = self.layout.sources(self._episode(episode)["observations"][IMAGES])
        return self.layout.read(sources, step)

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

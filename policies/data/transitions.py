"""Episodes → batches of (observation, action, reward, discount, next observation) for the offline learner.

A map-style Dataset indexed by a whole batch of transitions, with a batch sampler that lives in the training
process: the sampler (seed, epoch, rank) alone decides what each batch holds, so a DataLoader gives the same
batches with any number of workers, and resuming at an epoch replays it. The workers only read and decode
(JPEG frames for the observation and the next observation). The small arrays of this rank's episodes are held
in memory, n-step targets computed once (nstep.py); frames are read from the file per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from policies.data.episodes import IMAGES, REWARDS, EpisodeReader
from policies.data.errors import DatasetError
from policies.data.nstep import gripper_horizons, held_actions, n_step_targets, per_step_rewards, staged_success_rewards
from policies.data.sharding import Shard, batches_per_epoch, shard_episodes
from policies.spec import ObservationSpec

TRAINING_REWARDS = (*REWARDS, "staged")


@dataclass(frozen=True)
class TransitionConfig:
    """What a transition is and how batches are drawn; γ and n are open in the paper (pac.md): our choice."""

    n_step: int = 5
    gamma: float = 0.99
    # one of TRAINING_REWARDS: "sparse" (1 at success), "shaped" (the stage value on the [0, 1] return scale,
    # nstep.per_step_rewards) or "staged" (the stage value at half weight, success at its full value)
    reward: str = "sparse"
    batch_size: int = 256
    seed: int = 0  # the shard assignment and every epoch's order
    images: bool = True  # decode camera frames when the dataset has them (False: state observations only)
    # the critic's action: the mean of the data's next `critic_horizon` actions (nstep.held_actions); 1: the action
    # itself. One horizon per action dimension where they differ (the gripper scored by its own step)
    critic_horizon: int | tuple[int, ...] = 1
    # (gripper dimension, h): the gripper's window where its previous command was closed (nstep.gripper_horizons:
    # when to let go is valued by what follows, when to grasp by the step); None: critic_horizon everywhere
    critic_horizon_closed: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.reward not in TRAINING_REWARDS:
            raise ValueError(f"reward must be one of {TRAINING_REWARDS}, got {self.reward!r}")
        if self.n_step < 1 or not 0.0 <= self.gamma <= 1.0 or self.batch_size < 1:
            raise ValueError(f"need n_step ≥ 1, gamma in [0, 1], batch_size ≥ 1: {self}")
        horizons = self.critic_horizon if isinstance(self.critic_horizon, tuple) else (self.critic_horizon,)
        if self.critic_horizon_closed is not None:
            horizons = (*horizons, self.critic_horizon_closed[1])
        if not horizons or not all(1 <= h <= self.n_step for h in horizons):
            raise ValueError(f"critic_horizon must lie in 1..n_step (the return must span the hold): {self}")


@dataclass(frozen=True)
class Draw:
    """One batch's transition indices and their importance weights (a prioritised sampler's, priority.py)."""

    indices: np.ndarray  # (B,) int64, rows of the dataset
    weights: np.ndarray  # (B,) float32 in (0, 1]


@dataclass
class Batch:
    """B transitions; `discount` is γ^k for the k steps the reward sums (0 after a termination)."""

    observation: dict[
        str, torch.Tensor
    ]  # proprio float32 (B, P), instruction int64 (B, L), images uint8 (B, N, 3, H, W)
    action: torch.Tensor  # float32 (B, A)
    critic_action: torch.Tensor  # float32 (B, A): the action the critic is asked about (TransitionConfig)
    reward: torch.Tensor  # float32 (B,): the n-step discounted reward sum
    discount: torch.Tensor  # float32 (B,)
    next_observation: dict[str, torch.Tensor]  # as `observation`, k steps later
    success: torch.Tensor | None = None  # bool (B,): the transition's episode ended in success
    index: torch.Tensor | None = None  # int64 (B,): the transitions' rows in their dataset (the sampler's draw)
    weight: torch.Tensor | None = None  # float32 (B,): importance weights of a prioritised draw (priority.py)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn) -> Batch:
        return Batch(
            observation={k: fn(v) for k, v in self.observation.items()},
            action=fn(self.action),
            critic_action=fn(self.critic_action),
            reward=fn(self.reward),
            discount=fn(self.discount),
            next_observation={k: fn(v) for k, v in self.next_observation.items()},
            success=fn(self.success) if self.success is not None else None,
            index=fn(self.index) if self.index is not None else None,
            weight=fn(self.weight) if self.weight is not None else None,
        )


class TransitionDataset(Dataset):
    """This rank's transitions of a collected dataset; `dataset[indices]` is one Batch.

    `config` defaults to TransitionConfig(), `shard` to one process alone; `episodes` restricts the data to
    those episode indices before sharding (filtered BC keeps the successes).
    """

    def __init__(
        self,
        root: Path,
        dataset_id: str,
        config: TransitionConfig | None = None,
        shard: Shard | None = None,
        episodes: Sequence[int] | None = None,
        spec: ObservationSpec | None = None,
    ):
        config = self.config = config or TransitionConfig()
        shard = self.shard = shard or Shard()
        self.reader = EpisodeReader(root, dataset_id, spec)
        chosen = np.arange(len(self.reader)) if episodes is None else np.unique(np.asarray(episodes, np.int64))
        if chosen.size and not (0 <= chosen[0] and chosen[-1] < len(self.reader)):
            raise DatasetError(f"{self.reader.path} holds episodes 0..{len(self.reader) - 1}, asked for {episodes}")
        lengths = self.reader.lengths[chosen]
        shards = shard_episodes(lengths, shard.world_size, config.seed)
        self.num_batches = batches_per_epoch(lengths, shards, config.batch_size)
        self.episodes = chosen[shards[shard.rank]]  # this rank's, as indices into the file
        self._load()
        self.reader.close()

    def _load(self) -> None:
        """Concatenate this shard's small arrays; index every transition by its rows in them."""
        cfg = self.config
        obs: dict[str, list[np.ndarray]] = {}
        actions, rewards, discounts, rows, next_rows, steps, next_steps, owners = [], [], [], [], [], [], [], []
        critic_actions, successes = [], []
        start = 0
        for episode in self.episodes:
            arrays = self.reader.arrays(int(episode), "sparse" if cfg.reward == "sparse" else "shaped")
            per_step = arrays.rewards
            if cfg.reward == "shaped":
                per_step = per_step_rewards(per_step, arrays.terminations, cfg.gamma)
            elif cfg.reward == "staged":
                per_step = staged_success_rewards(per_step, arrays.terminations, cfg.gamma)
            targets = n_step_targets(per_step, arrays.terminations, cfg.n_step, cfg.gamma)
            for k, v in arrays.observations.items():
                obs.setdefault(k, []).append(v)
            t = np.arange(arrays.steps)
            actions.append(arrays.actions)
            horizon = cfg.critic_horizon
            if cfg.critic_horizon_closed is not None:
                horizon = gripper_horizons(arrays.actions, horizon, *cfg.critic_horizon_closed)
            critic_actions.append(held_actions(arrays.actions, horizon))
            rewards.append(targets.reward)
            discounts.append(targets.discount)
            rows.append(start + t)
            next_rows.append(start + targets.next_step)
            steps.append(t)
            next_steps.append(targets.next_step)
            owners.append(np.full(arrays.steps, episode))
            successes.append(np.full(arrays.steps, bool(arrays.steps and arrays.terminations[-1])))
            start += arrays.steps + 1  # observations have one more entry than steps
        self._obs = {k: np.concatenate(v) for k, v in obs.items()}
        self._actions, self._rewards, self._discounts = map(np.concatenate, (actions, rewards, discounts))
        self._critic_actions = np.concatenate(critic_actions)
        self._rows, self._next_rows = np.concatenate(rows), np.concatenate(next_rows)
        self._steps, self._next_steps = np.concatenate(steps), np.concatenate(next_steps)
        self._owners = np.concatenate(owners)
        self._success = np.concatenate(successes) if successes else np.zeros(0, bool)
        self._images = cfg.images and self.reader.layout is not None

    def __len__(self) -> int:
        """Transitions in this rank's shard."""
        return len(self._actions)

    def __getitem__(self, indices: Sequence[int] | np.ndarray | Draw) -> Batch:
        weight = None
        if isinstance(indices, Draw):  # a prioritised draw: its importance weights travel with the batch
            indices, weight = indices.indices, torch.from_numpy(indices.weights)
        i = np.asarray(indices, dtype=np.int64)
        observation = {k: torch.from_numpy(v[self._rows[i]]) for k, v in self._obs.items()}
        next_observation = {k: torch.from_numpy(v[self._next_rows[i]]) for k, v in self._obs.items()}
        if self._images:
            observation[IMAGES] = self._frames(self._owners[i], self._steps[i])
            next_observation[IMAGES] = self._frames(self._owners[i], self._next_steps[i])
        return Batch(
            observation=observation,
            action=torch.from_numpy(self._actions[i]),
            critic_action=torch.from_numpy(self._critic_actions[i]),
            reward=torch.from_numpy(self._rewards[i]),
            discount=torch.from_numpy(self._discounts[i]),
            next_observation=next_observation,
            success=torch.from_numpy(self._success[i]),
            index=torch.from_numpy(i),
            weight=weight,
        )

    def _frames(self, episodes: np.ndarray, steps: np.ndarray) -> torch.Tensor:
        out = np.empty((len(steps), *self.reader.layout.shape), np.uint8)
        for j, (episode, step) in enumerate(zip(episodes, steps, strict=True)):
            out[j] = self.reader.frames(int(episode), int(step))
        return torch.from_numpy(out)

    def episode_of(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(episode, step) in the file of each transition index."""
        i = np.asarray(indices, dtype=np.int64)
        return self._owners[i], self._steps[i]


class TransitionSampler(Sampler[np.ndarray]):
    """The batches of an epoch on this rank: `dataset.num_batches` of them, drawn without replacement.

    Call `set_epoch(e)` before each epoch (as with DistributedSampler): the order is a function of
    (seed, epoch, rank) only. `set_epoch(e, start=b)` skips the epoch's first b batches (a resumed run)."""

    def __init__(self, dataset: TransitionDataset, shuffle: bool = True):
        self.size, self.num_batches = len(dataset), dataset.num_batches
        self.batch_size, self.shuffle = dataset.config.batch_size, shuffle
        self.seed, self.rank = dataset.config.seed, dataset.shard.rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_batches - self.start

    def check_loader(self, num_workers: int, prefetch_factor: int | None) -> None:
        """Refuse a DataLoader this sampler cannot feed correctly (any can feed this one)."""

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, self.rank]).permutation(self.size)
        else:
            order = np.arange(self.size)
        for b in range(self.start, self.num_batches):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


def transition_loader(
    dataset: TransitionDataset, num_workers: int = 0, sampler: TransitionSampler | None = None, **kwargs
) -> DataLoader:
    """A DataLoader of Batches over `dataset` with `sampler` (default: a TransitionSampler; a PrioritySampler
    needs a loader that draws no further ahead than its delay), `loader.sampler.set_epoch(e)` before each epoch.

    Extra keyword arguments go to DataLoader (pin_memory, prefetch_factor, persistent_workers...). The loader
    draws its workers' base seed from its own generator, never from torch's global one, so iterating it
    leaves the training process's random state as it was (a resumed run must match an uninterrupted one)."""
    kwargs.setdefault("generator", torch.Generator().manual_seed(dataset.config.seed))
    sampler = sampler or TransitionSampler(dataset)
    sampler.check_loader(num_workers, kwargs.get("prefetch_factor"))
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers, **kwargs)

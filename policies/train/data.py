"""What a run trains on: the held-out split, the observation spec a dataset supports, the inputs' statistics.

The split is by whole episodes with a fixed seed, so every algorithm and training seed is judged on the same
held-out episodes; filtered BC then keeps the successful training episodes. The normalisation statistics
(model buffers, exported inside the graph) come from the training episodes only.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from policies.data.dataset import DatasetError
from policies.data.episodes import EpisodeReader
from policies.data.transitions import TransitionConfig
from policies.spec import ObservationSpec, observation_spec, scene_objects
from policies.train.config import TrainConfig
from robots.spec import load_spec

STD_FLOOR = 1e-2  # normalisation never divides by less (a constant field, a quaternion's fixed part)
SPLIT_SEED = 0  # the held-out episodes are the same for every algorithm and training seed


@dataclasses.dataclass(frozen=True)
class DataSplit:
    train: np.ndarray  # episode indices
    held_out: np.ndarray


def split_episodes(successes: np.ndarray, holdout: float, successes_only: bool) -> DataSplit:
    """Hold out ⌈holdout·n⌉ episodes chosen by SPLIT_SEED; filtered BC then keeps the successful rest."""
    n = len(successes)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    k = math.ceil(holdout * n) if holdout > 0 else 0
    held_out, train = np.sort(order[:k]), np.sort(order[k:])
    if successes_only:
        train = train[successes[train]]
    return DataSplit(train, held_out)


def observation_for(kind: str, robot: str, reader: EpisodeReader) -> ObservationSpec:
    arm = load_spec(robot)
    if kind == "state":
        return observation_spec(arm, cameras=(), objects=scene_objects(arm))
    if reader.layout is None:
        raise DatasetError(f"{reader.path} stores no camera frames: a vision policy needs them (--observation state?)")
    return observation_spec(arm, cameras=reader.layout.cameras or None)


def normalisation(reader: EpisodeReader, episodes: np.ndarray, spec: ObservationSpec) -> dict[str, torch.Tensor]:
    """Mean and std of the proprio and object-pose inputs over the training episodes (model buffers)."""
    keys = [k for k in ("proprio", "objects") if k in spec.modalities]
    values: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for episode in episodes:
        arrays = reader.arrays(int(episode))
        for k in keys:
            values[k].append(arrays.observations[k].astype(np.float64))
    out = {}
    for k in keys:
        v = np.concatenate(values[k])
        mean, std = v.mean(axis=0), np.maximum(v.std(axis=0), STD_FLOOR)
        if k == "objects":  # quaternions stay as they are: already in [-1, 1], and a resting cube's barely vary
            mean[..., 3:], std[..., 3:] = 0.0, 1.0
        out[f"{k}_mean"] = torch.from_numpy(mean).float()
        out[f"{k}_std"] = torch.from_numpy(std).float()
    return out


def transition_config(config: TrainConfig, spec: ObservationSpec, dims: tuple[str, ...], **changes) -> TransitionConfig:
    """The transitions a run trains on (n-step, reward, the critic's held actions, batch and seed), for `spec`'s
    inputs and the action dimensions `dims`; `changes` replace fields (a probe's batch size)."""
    data = TransitionConfig(
        n_step=config.n_step,
        gamma=config.gamma,
        reward=config.reward,
        batch_size=config.batch_size,
        seed=config.seed,
        images=bool(spec.cameras),
        critic_horizon=config.critic_horizon_per_dim(dims),
        critic_horizon_closed=config.critic_horizon_closed(dims),
    )
    return dataclasses.replace(data, **changes)

"""Episodes split across DDP ranks: disjoint, every episode on exactly one rank, the same batches on each.

Whole episodes go to a rank (never steps of one episode to two), so an n-step window never crosses a shard
and each process reads only its part of the file. Episodes differ in length (a success ends early), so they
are dealt longest first to the rank holding the fewest steps so far, ties broken by a seeded shuffle: the
shards' sizes then differ by at most one episode. DDP needs every rank to run the same number of steps, or
the all-reduce hangs; each rank computes every shard from the episode lengths alone, so all agree on the
smallest shard's batch count without talking to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policies.data.errors import DatasetError


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: torch.distributed's rank and world size (0 and 1 alone)."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..world_size-1 (world_size {self.world_size})")


def shard_episodes(lengths: Sequence[int], world_size: int, seed: int) -> list[np.ndarray]:
    """Episode indices (into `lengths`) of every rank, each sorted; a partition of range(len(lengths))."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) < world_size:
        raise DatasetError(f"{len(lengths)} episodes cannot be shared across {world_size} ranks")
    order = np.random.default_rng(seed).permutation(len(lengths))
    order = order[np.argsort(-lengths[order], kind="stable")]  # longest first; equal lengths in shuffled order
    load = np.zeros(world_size, dtype=np.int64)
    owner = np.empty(len(lengths), dtype=np.int64)
    for episode in order:
        rank = int(np.argmin(load))  # the first of the least loaded
        owner[episode] = rank
        load[rank] += lengths[episode]
    return [np.flatnonzero(owner == rank) for rank in range(world_size)]


def batches_per_epoch(lengths: Sequence[int], shards: list[np.ndarray], batch_size: int) -> int:
    """The batches every rank draws in an epoch: as many as the smallest shard fills (the rest wait an epoch)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    sizes = [int(lengths[s].sum()) for s in shards]
    batches = min(sizes) // batch_size
    if batches == 0:
        raise DatasetError(
            f"the smallest shard holds {min(sizes)} transitions, less than one batch of {batch_size}: "
            "use a smaller batch, fewer ranks or more episodes"
        )
    return batches

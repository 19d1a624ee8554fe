"""Joining torchrun's process group: one function, so pac-train and the DDP test start the same way."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from policies.data.sharding import Shard


def init_distributed() -> tuple[Shard, torch.device]:
    """Join torchrun's process group when there is one (gloo on CPUs, nccl on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Shard(rank=rank, world_size=world), device

"""Run under torchrun (or alone): one PAC loss backward on a fixed batch, each rank on its share of it.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_first_step.py OUT.safetensors
    python tests/ddp_first_step.py OUT.safetensors

The batch, the model and the target network's outputs are the same on every rank (fixed seeds); rank r
takes rows r::world of them, so DDP's averaged gradient must equal one process's gradient on all rows.
Rank 0 writes the gradients it holds after backward. tests/test_train.py compares the two files.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from policies.model.config import size_config
from policies.model.perceiver import build_model
from policies.spec import action_spec, observation_spec, scene_objects
from policies.train.config import TrainConfig
from policies.train.distributed import init_distributed
from policies.train.learner import Learner
from policies.train.objective import Targets
from robots.spec import load_spec

BATCH = 8


def main(out: str) -> None:
    torch.set_num_threads(1)
    shard, device = init_distributed()
    arm = load_spec("sawyer")
    obs, act = observation_spec(arm, cameras=(), objects=scene_objects(arm)), action_spec(arm)
    model = build_model(size_config("XS"), obs, act, seed=0)
    config = TrainConfig(dataset="", algo="pac", steps=10, batch_size=BATCH)
    learner = Learner(config, model, device, rank=0)  # rank 0's generator on every rank: same targets
    g = torch.Generator().manual_seed(1)
    low, high = torch.tensor(act.low), torch.tensor(act.high)

    def observation() -> dict[str, torch.Tensor]:
        return {
            "proprio": torch.randn(BATCH, obs.proprio_size, generator=g),
            "objects": torch.randn(BATCH, *obs.objects_shape, generator=g) * 0.1,
            "instruction": torch.randint(2, 30, (BATCH, obs.instruction_length), generator=g),
        }

    o, o2 = observation(), observation()
    action = low + (high - low) * torch.rand(BATCH, act.size, generator=g)
    reward, discount = torch.rand(BATCH, generator=g), torch.full((BATCH,), 0.95)
    t = learner._targets(type("B", (), dict(observation=o, next_observation=o2, reward=reward, discount=discount)))
    mine = slice(shard.rank, None, shard.world_size)
    share = Targets(t.td_target[mine], t.improve_bins[mine], t.improve_weights[mine])
    losses = learner.loss({k: v[mine] for k, v in o.items()}, action[mine], share)
    losses["total"].backward()
    if shard.rank == 0:
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        save_file(grads, out)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

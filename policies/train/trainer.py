"""A training run from start to end: build it (data, model, learner, or a checkpoint to resume), step it with
logging, held-out losses and checkpoints, and summarise it. The command line is cli.py."""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from policies.data.collect import parse_dataset_id
from policies.data.dataset import DatasetError, check_dataset, locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.priority import PrioritySampler
from policies.data.sharding import Shard
from policies.data.transitions import TransitionDataset, TransitionSampler, transition_loader
from policies.model.config import size_config
from policies.model.perceiver import PerceiverActorCritic, build_model
from policies.provenance import git_commit
from policies.spec import ObservationSpec, action_spec
from policies.train.checkpoint import (
    CheckpointError,
    Progress,
    file_sha256,
    latest_checkpoint,
    load_checkpoint,
    read_run,
    recorded_threads,
    save_checkpoint,
    write_run,
)
from policies.train.config import TrainConfig
from policies.train.data import SPLIT_SEED, normalisation, observation_for, split_episodes, transition_config
from policies.train.distributed import init_distributed
from policies.train.learner import Learner
from policies.train.metrics import MetricsLog
from robots.spec import load_spec

HELD_OUT_BATCHES = 4  # batches of held-out transitions each evaluation averages over


@dataclasses.dataclass
class Trainer:
    config: TrainConfig
    run: Path
    shard: Shard
    device: torch.device
    spec: ObservationSpec
    model: PerceiverActorCritic
    learner: Learner
    train_data: TransitionDataset
    sampler: TransitionSampler | PrioritySampler
    held_out: TransitionDataset | None
    progress: Progress
    info: dict[str, Any]

    @property
    def leader(self) -> bool:
        return self.shard.rank == 0


def build_trainer(config: TrainConfig, run: Path, argv: list[str], resume: bool) -> Trainer:
    shard, device = init_distributed()
    root, did = locate_dataset(Path(config.dataset))
    robot, task, quality = parse_dataset_id(did)
    probe = EpisodeReader(root, did)
    spec = observation_for(config.observation, robot, probe)
    check_dataset(root, did, spec)  # every input the spec names is stored, in its shape
    successes = probe.successes()
    split = split_episodes(successes, config.holdout, config.algorithm.successes_only)
    if len(split.train) == 0:
        raise DatasetError(f"{did}: no training episodes left (holdout {config.holdout}, algo {config.algo})")
    act = action_spec(load_spec(robot))
    model = build_model(
        size_config(config.size, q_readout=config.q_readout, position_inputs=config.position_inputs),
        spec,
        act,
        seed=config.seed,
    )
    for name, value in normalisation(probe, split.train, spec).items():
        getattr(model, name).copy_(value)
    data = transition_config(config, spec, act.dims)
    train_data = TransitionDataset(root, did, data, shard, episodes=split.train)
    held_out = None
    if len(split.held_out):
        held_out = TransitionDataset(root, did, dataclasses.replace(data, seed=SPLIT_SEED), Shard(), split.held_out)
    learner = Learner(config, model, device, shard.rank)
    sampler: TransitionSampler | PrioritySampler = TransitionSampler(train_data)
    if config.priority > 0.0:
        sampler = PrioritySampler(train_data, config.priority, config.priority_correction, config.steps)
    progress = Progress(step=0, epoch=0, batch=0)
    data_hash = file_sha256(probe.path)
    info = {
        "train": config.to_dict(),
        "model": model.config.to_dict(),
        "observation_spec": spec.to_dict(),
        "action_spec": act.to_dict(),
        "dataset": {
            "id": did,
            "robot": robot,
            "task": task,
            "quality": quality,
            "sha256": data_hash,
            "episodes": len(successes),
            "success_rate": float(successes.mean()),
            "train_episodes": len(split.train),
            "held_out_episodes": len(split.held_out),
        },
        "command": "pac-train " + shlex.join(argv),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "world_size": shard.world_size,
        "threads": torch.get_num_threads(),  # torch's intra-op threads: a resume keeps them (bit for bit)
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if resume:
        recorded = read_run(run)
        if recorded["dataset"]["sha256"] != data_hash:
            raise CheckpointError(f"{run} was trained on a dataset with another sha256 than {probe.path} now has")
        checkpoint = latest_checkpoint(run)  # read once: the model, the sampler and the random state from one step
        groups, progress = load_checkpoint(checkpoint)
        if shard.rank and (own := _rank_keys(groups["rng"], shard.rank)):  # this rank's random state, not rank 0's
            groups["rng"] = own
        learner.load_state_tensors(groups, progress.step)
        if isinstance(sampler, PrioritySampler):
            sampler.load_state_tensors(rank_sampler_state(checkpoint, shard.rank))
        info["created_utc"] = recorded.get("created_utc", info["created_utc"])
        resumed = {"step": progress.step, "command": info["command"], "threads": info["threads"]}
        info["resumed"] = recorded.get("resumed", []) + [resumed]
        info["command"] = recorded["command"]
        info["threads"] = recorded_threads(recorded) or info["threads"]
    return Trainer(config, run, shard, device, spec, model, learner, train_data, sampler, held_out, progress, info)


def rank_sampler_state(checkpoint: Path, rank: int) -> dict[str, torch.Tensor]:
    """This rank's prioritised sampler state in `checkpoint` (rank_states wrote every rank's)."""
    saved = {}
    if (checkpoint / "sampler.safetensors").is_file():
        saved = load_checkpoint(checkpoint, ("sampler",))[0]["sampler"]
    state = _rank_keys(saved, rank)
    if not state:
        raise CheckpointError(f"{checkpoint} holds no prioritised sampler state for rank {rank}")
    return state


def _rank_keys(group: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    prefix = f"r{rank}."
    return {k.removeprefix(prefix): v for k, v in group.items() if k.startswith(prefix)}


def rank_states(t: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    """What differs between DDP ranks, from every rank, for the leader's checkpoint: the random state (rank 0's
    under its own names, rank r's as r<r>.<name>) and a prioritised sampler's state (r<r>.<name>). Every rank
    calls it; with one process it gathers nothing."""
    own = {"rng": t.learner.rng_state(), "sampler": {}}
    if isinstance(t.sampler, PrioritySampler):
        own["sampler"] = t.sampler.state_tensors()
    states: list = [own]
    if t.shard.world_size > 1:
        states = [None] * t.shard.world_size
        dist.all_gather_object(states, own)
    rng = dict(states[0]["rng"])
    rng.update({f"r{rank}.{k}": v for rank, s in enumerate(states) if rank for k, v in s["rng"].items()})
    sampler = {f"r{rank}.{k}": v for rank, s in enumerate(states) for k, v in s["sampler"].items()}
    return {"rng": rng, "sampler": sampler}


def held_out_losses(t: Trainer) -> dict[str, float]:
    sums: dict[str, float] = {}
    n = min(HELD_OUT_BATCHES, t.held_out.num_batches)
    for b in range(n):
        idx = np.arange(b * t.config.batch_size, (b + 1) * t.config.batch_size) % len(t.held_out)
        for k, v in t.learner.evaluate(t.held_out[idx].to(t.device)).items():
            sums[k] = sums.get(k, 0.0) + v / n
    return sums


def train(t: Trainer, stop_at: int | None = None) -> dict[str, float]:
    """Train to the config's `steps` (or stop after `stop_at`, checkpointed, on the same schedule)."""
    c, learner = t.config, t.learner
    end = min(c.steps, stop_at) if stop_at else c.steps
    loader = transition_loader(t.train_data, c.workers, t.sampler, persistent_workers=c.workers > 0)
    prioritised = isinstance(t.sampler, PrioritySampler)
    log = MetricsLog(t.run) if t.leader else None
    if t.leader:
        write_run(t.run, t.info)
    epoch, start = t.progress.epoch, t.progress.batch
    bar = tqdm(total=c.steps, initial=learner.step, desc=f"{c.algo} {c.size}", unit="step", disable=not t.leader)
    last: dict[str, float] = {}
    window_started, window_steps = time.perf_counter(), 0
    samples_per_step = c.batch_size * t.shard.world_size
    if t.held_out is not None and t.leader and learner.step == 0:
        log.log(0, held_out_losses(t), "held_out/")  # where the curves start
    while learner.step < end:
        loader.sampler.set_epoch(epoch, start)
        for batch_index, batch in enumerate(loader, start=start):
            last = learner.train_step(batch.to(t.device))
            if prioritised:
                t.sampler.update(learner.step, batch.index.numpy(), learner.td_errors.float().cpu().numpy())
            window_steps += 1
            done_in_epoch = batch_index + 1
            step = learner.step
            if t.leader and (step % c.log_every == 0 or step == c.steps):
                elapsed = time.perf_counter() - window_started
                last["samples_per_s"] = samples_per_step * window_steps / max(elapsed, 1e-9)
                window_started, window_steps = time.perf_counter(), 0
                log.log(step, last, "train/")
                shown = {k: f"{last[k]:.3g}" for k in ("bc", "improve", "td", "q") if k in last}
                bar.set_postfix(shown | {"samples/s": f"{last['samples_per_s']:.0f}"})
            if t.held_out is not None and t.leader and (step % c.eval_every == 0 or step == c.steps):
                log.log(step, held_out_losses(t), "held_out/")
            if step % c.checkpoint_every == 0 or step == end:
                at_end = done_in_epoch == len(loader.sampler) + start
                progress = Progress(step, epoch + 1 if at_end else epoch, 0 if at_end else done_in_epoch)
                per_rank = rank_states(t)
                if t.leader:
                    save_checkpoint(t.run, learner.state_tensors() | per_rank, progress)
                    log.flush()
            bar.update(1)
            if step >= end:
                break
        else:  # the epoch ran out before the run did
            epoch, start = epoch + 1, 0
    bar.close()
    if log is not None:
        log.close()
    return last


def summary(t: Trainer, last: dict[str, float], seconds: float) -> str:
    held = {}
    path = t.run / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        held = {k.removeprefix("held_out/"): v for k, v in rows[-1].items() if k.startswith("held_out/") and v}
    lines = [
        f"\n{t.config.algo} {t.config.size} on {t.info['dataset']['id']} "
        f"({t.info['dataset']['train_episodes']} training episodes, {t.shard.world_size} process(es))",
        f"  {'metric':<14}{'train (last)':>14}{'held out':>14}",
    ]
    for k in ("total", "bc", "improve", "td", "q"):
        if k in last or k in held:
            train_v = f"{last[k]:.4g}" if k in last else "-"
            lines.append(f"  {k:<14}{train_v:>14}{held.get(k, '-'):>14}")
    lines.append(f"  steps {t.learner.step}, {seconds:.0f} s, {last.get('samples_per_s', float('nan')):.0f} samples/s")
    lines.append(f"  checkpoint    {latest_checkpoint(t.run)}")
    lines.append(f"  export with   pac-export --checkpoint {t.run}")
    return "\n".join(lines)

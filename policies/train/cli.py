"""`pac-train`: train PAC or a baseline on a collected dataset, on one process or many (torchrun).

    pac-train --dataset data/pac/sawyer-stack-rl_like-v0 --size XS --algo pac --steps 20000 --out runs/pac_xs
    pac-train --resume runs/pac_xs [--steps 40000]
    torchrun --nproc_per_node=2 -m policies.train.cli --dataset ... --out ...        (DDP; gloo on CPUs)

The robot comes from the dataset, the observation (`state`: proprio + object poses; `vision`: proprio +
the dataset's cameras) from --observation. A fixed share of episodes (by --set split_seed, the same for
every algorithm and seed) is held out for the held-out losses. Rank 0 writes RUN/run.json, checkpoints
(checkpoint.py), metrics.csv and TensorBoard logs, shows a progress bar and prints a summary table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from policies.data.collect import parse_dataset_id
from policies.data.dataset import DatasetError, locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.sharding import Shard
from policies.data.transitions import TransitionConfig, TransitionDataset, transition_loader
from policies.model.config import SIZES, size_config
from policies.model.perceiver import PerceiverActorCritic, build_model
from policies.spec import ObservationSpec, action_spec, observation_spec, scene_objects
from policies.train.checkpoint import (
    CheckpointError,
    Progress,
    file_sha256,
    latest_checkpoint,
    load_checkpoint,
    read_run,
    save_checkpoint,
    write_run,
)
from policies.train.config import ALGORITHMS, OBSERVATIONS, TrainConfig
from policies.train.learner import Learner
from policies.train.metrics import MetricsLog
from robots.spec import load_spec

HELD_OUT_BATCHES = 4  # batches of held-out transitions each evaluation averages over
STD_FLOOR = 1e-2  # normalisation never divides by less (a constant field, a quaternion's fixed part)
SPLIT_SEED = 0  # the held-out episodes are the same for every algorithm and training seed


# ------------------------------------------------------------------ data
@dataclasses.dataclass(frozen=True)
class DataSplit:
    train: np.ndarray  # episode indices
    held_out: np.ndarray
    successes: np.ndarray  # bool per episode of the file


def split_episodes(successes: np.ndarray, holdout: float, successes_only: bool) -> DataSplit:
    """Hold out ⌈holdout·n⌉ episodes chosen by SPLIT_SEED; filtered BC then keeps the successful rest."""
    n = len(successes)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    k = math.ceil(holdout * n) if holdout > 0 else 0
    held_out, train = np.sort(order[:k]), np.sort(order[k:])
    if successes_only:
        train = train[successes[train]]
    return DataSplit(train, held_out, successes)


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


# ------------------------------------------------------------------ process group
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


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------ the run
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
    probe = EpisodeReader(root, did, spec if spec.cameras else None)  # checks the frames fit the spec
    successes = np.array([bool(probe.arrays(i).terminations[-1]) for i in range(len(probe))])
    split = split_episodes(successes, config.holdout, config.algorithm.successes_only)
    if len(split.train) == 0:
        raise DatasetError(f"{did}: no training episodes left (holdout {config.holdout}, algo {config.algo})")
    act = action_spec(load_spec(robot))
    model = build_model(size_config(config.size), spec, act, seed=config.seed)
    for name, value in normalisation(probe, split.train, spec).items():
        getattr(model, name).copy_(value)
    data = TransitionConfig(
        n_step=config.n_step,
        gamma=config.gamma,
        reward=config.reward,
        batch_size=config.batch_size,
        seed=config.seed,
        images=bool(spec.cameras),
    )
    train_data = TransitionDataset(root, did, data, shard, episodes=split.train)
    held_out = None
    if len(split.held_out):
        held_out = TransitionDataset(root, did, dataclasses.replace(data, seed=SPLIT_SEED), Shard(), split.held_out)
    learner = Learner(config, model, device, shard.rank)
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
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "world_size": shard.world_size,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if resume:
        recorded = read_run(run)
        if recorded["dataset"]["sha256"] != data_hash:
            raise CheckpointError(f"{run} was trained on a dataset with another sha256 than {probe.path} now has")
        groups, progress = load_checkpoint(latest_checkpoint(run))
        learner.load_state_tensors(groups, progress.step)
        info["created_utc"] = recorded.get("created_utc", info["created_utc"])
        info["resumed"] = recorded.get("resumed", []) + [{"step": progress.step, "command": info["command"]}]
        info["command"] = recorded["command"]
    return Trainer(config, run, shard, device, spec, model, learner, train_data, held_out, progress, info)


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
    loader = transition_loader(t.train_data, num_workers=c.workers, persistent_workers=c.workers > 0)
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
                if t.leader:
                    save_checkpoint(t.run, learner.state_tensors(), progress)
                    log.flush()
            bar.update(1)
            if step >= end:
                break
        else:
            epoch, start = epoch + 1, 0
            continue
        break
    bar.close()
    if log is not None:
        log.close()
    return last


def summary(t: Trainer, last: dict[str, float], seconds: float) -> str:
    held = {}
    path = t.run / "metrics.csv"
    if path.is_file():
        import csv

        rows = list(csv.DictReader(open(path)))
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


def _parse_set(items: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in fields or not _:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        kind = type(getattr(TrainConfig(dataset=""), key))
        out[key] = kind(raw) if kind is not bool else raw.lower() in ("1", "true", "yes")
    return out


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(dataset="")
    p = argparse.ArgumentParser(prog="pac-train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, help="a dataset directory written by pac-collect")
    p.add_argument("--size", choices=list(SIZES), default=d.size)
    p.add_argument("--algo", choices=list(ALGORITHMS), default=d.algo)
    p.add_argument("--observation", choices=OBSERVATIONS, default=d.observation)
    p.add_argument("--steps", type=int, default=None, help=f"optimiser steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader processes decoding frames")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads per process (default: torch's; torchrun sets 1). Fewer than the free cores: "
        "a thread that shares its core with another busy process makes every step wait for it",
    )
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<algo>_<size>_s<seed>)")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this directory")
    p.add_argument(
        "--stop-at", type=int, default=None, help="stop (checkpointed) after this step, keeping the --steps schedule"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig field")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.resume is not None:
            recorded = TrainConfig.from_dict(read_run(args.resume)["train"])
            config = recorded.with_(steps=args.steps or recorded.steps)
            run = args.resume
        else:
            if args.dataset is None:
                raise ValueError("--dataset is required (or --resume RUN)")
            config = TrainConfig(
                dataset=str(args.dataset),
                size=args.size,
                algo=args.algo,
                observation=args.observation,
                steps=args.steps or TrainConfig.steps,
                batch_size=args.batch_size,
                seed=args.seed,
                workers=args.workers,
            ).with_(**_parse_set(args.set))
            run = args.out or Path("runs") / f"{config.algo}_{config.size}_s{config.seed}"
            if (run / "checkpoints" / "latest").exists():
                raise ValueError(f"{run} already holds a run: --resume {run} to continue it, or choose another --out")
        started = time.perf_counter()
        trainer = build_trainer(config, run, argv, resume=args.resume is not None)
        last = train(trainer, args.stop_at)
        if trainer.leader:
            print(summary(trainer, last, time.perf_counter() - started))
            (run / "summary.json").write_text(json.dumps(last, indent=2, sort_keys=True) + "\n")
    except (ValueError, DatasetError, CheckpointError) as err:
        print(f"pac-train: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

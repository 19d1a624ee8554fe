"""`pac-train`: train PAC or a baseline on a collected dataset, on one process or many (torchrun).

    pac-train --dataset data/pac/sawyer-stack-rl_like-v0 --size XS --algo pac --steps 20000 --out runs/pac_xs
    pac-train --resume runs/pac_xs [--steps 40000]
    torchrun --nproc_per_node=2 -m policies.train.cli --dataset ... --out ...        (DDP; gloo on CPUs)

The robot comes from the dataset, the observation (`state`: proprio + object poses; `vision`: proprio +
the dataset's cameras) from --observation. A share of episodes (--set holdout=0.05, chosen by a fixed seed: the same for
every algorithm and seed) is held out for the held-out losses. Rank 0 writes RUN/run.json, checkpoints
(checkpoint.py), metrics.csv and TensorBoard logs, shows a progress bar and prints a summary table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from policies.data.dataset import DatasetError
from policies.model.config import SIZES
from policies.train.checkpoint import CheckpointError, read_run, recorded_threads
from policies.train.config import ALGORITHMS, OBSERVATIONS, TrainConfig
from policies.train.trainer import build_trainer, summary, train


def _parse_set(items: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in fields or not _:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        default = getattr(TrainConfig(dataset=""), key)
        if default is None:  # an optional field ("float | None"): its type from the annotation; "none" unsets it
            kind = {"float": float, "int": int, "str": str}[str(fields[key].type).split("|")[0].strip()]
            out[key] = None if raw.lower() == "none" else kind(raw)
            continue
        kind = type(default)
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
        help="torch intra-op threads per process (default: torch's; torchrun sets 1; --resume: the run's own). "
        "Fewer than the free cores: a thread that shares its core with another busy process makes every step wait "
        "for it",
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
    try:
        resumed = read_run(args.resume) if args.resume is not None else None
        # A resume keeps the run's own thread count unless told otherwise: a CPU matmul's sums depend on how many
        # threads share it, so a resume on another count is no longer bit for bit the uninterrupted run.
        threads = args.threads or (recorded_threads(resumed) if resumed is not None else None)
        if threads:
            torch.set_num_threads(threads)
        if resumed is not None:
            recorded = TrainConfig.from_dict(resumed["train"])
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

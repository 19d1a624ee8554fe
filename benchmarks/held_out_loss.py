"""Held-out losses of a run's checkpoints, per action dimension, after the fact (issue 11).

pac-train logs the held-out BC loss per dimension since session 25 (held_out/bc_vx ... bc_gripper); runs trained
before it logged one number for all five, which cannot say whether a variant that moves the gripper on purpose
also hurt the arm. This reads each checkpoint of each run back into the run's own trainer (same split, same
held-out batches, same objective) and prints the held-out losses it would have logged:

    python -m benchmarks.held_out_loss --runs RUN[,RUN...] [--steps all|N,N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from policies.train.checkpoint import checkpoint_at, checkpoint_steps, load_checkpoint, read_run
from policies.train.config import TrainConfig
from policies.train.trainer import build_trainer, held_out_losses


def held_out_at(run: Path, steps: list[int] | None = None) -> dict[int, dict[str, float]]:
    """{step: held-out losses} for the run's checkpoints at `steps` (None: every one)."""
    config = TrainConfig.from_dict(read_run(run)["train"])
    trainer = build_trainer(config, run, [], resume=False)  # builds the model, split and data; writes nothing
    if trainer.held_out is None:
        raise ValueError(f"{run} holds out no episodes (holdout {config.holdout})")
    out = {}
    for step in checkpoint_steps(run) if steps is None else steps:
        groups, progress = load_checkpoint(checkpoint_at(run, step))
        trainer.learner.load_state_tensors(groups, progress.step)
        out[step] = held_out_losses(trainer)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="comma-separated pac-train run directories")
    p.add_argument("--steps", default="all", help="'all', or comma-separated checkpoint steps")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    steps = None if args.steps == "all" else [int(s) for s in args.steps.split(",")]
    results = {}
    for run in (Path(r) for r in args.runs.split(",") if r):
        results[str(run)] = held_out_at(run, steps)
    keys = sorted({k for per_step in results.values() for losses in per_step.values() for k in losses})
    bc_dims = [k for k in keys if k.startswith("bc_")]
    columns = ["bc", *bc_dims] + [k for k in ("td", "q") if k in keys]
    print("| run | step | " + " | ".join(columns) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in columns) + " |")
    for run, per_step in results.items():
        for step, losses in per_step.items():
            cells = [f"{losses[k]:.3f}" if k in losses else "–" for k in columns]
            print(f"| {Path(run).name} | {step} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

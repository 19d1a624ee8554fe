"""What `--set bc_data=advantage` clones (issue 11): the share of a run's training transitions whose n-step advantage
under a checkpoint's target network is positive, split by the episode's outcome.

The filter is meant to keep what succeeds without being told which episodes did: filtered BC, which is told,
clones 100 % of the successful episodes' transitions and none of the failed ones'. This reads how close the
filter comes, with the run's own config, data split, transitions and objective (Learner._targets):

    PYTHONPATH=. python -m benchmarks.advantage_filter --run RUN [--step N] [--rows 4096] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from policies.data.dataset import locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.sharding import Shard
from policies.data.transitions import TransitionConfig, TransitionDataset
from policies.spec import ActionSpec
from policies.train.checkpoint import load_checkpoint, load_trained_model
from policies.train.config import TrainConfig
from policies.train.data import split_episodes
from policies.train.learner import Learner

BATCH = 256


def advantage_shares(run: Path, step: int | None = None, rows: int = 4096, seed: int = 0) -> dict[str, float]:
    """The kept share (advantage > 0) and mean advantage over `rows` training transitions drawn at random, for
    all of them and by the outcome of their episode."""
    model, info, path = load_trained_model(run, step)
    config = replace(TrainConfig.from_dict(info["train"]), bc_data="advantage")
    if not config.algorithm.critic:
        raise ValueError(f"{run} trained {config.algo}, which has no critic to filter with")
    learner = Learner(config, model, torch.device("cpu"))
    learner.target.load_state_dict(load_checkpoint(path, ("target",))[0]["target"])
    root, did = locate_dataset(Path(config.dataset))
    successes = EpisodeReader(root, did).successes()
    dims = ActionSpec.from_dict(info["action_spec"]).dims
    transitions = TransitionConfig(
        n_step=config.n_step,
        gamma=config.gamma,
        reward=config.reward,
        batch_size=BATCH,
        seed=seed,
        images=bool(model.obs_spec.cameras),
        critic_horizon=config.critic_horizon_per_dim(dims),
        critic_horizon_closed=config.critic_horizon_closed(dims),
    )
    split = split_episodes(successes, config.holdout, successes_only=False)
    data = TransitionDataset(root, did, transitions, Shard(), split.train)
    chosen = np.random.default_rng(seed).choice(len(data), min(rows, len(data)), replace=False)
    won = successes[data.episode_of(chosen)[0]]
    with torch.no_grad():
        batches = (data[chosen[i : i + BATCH]] for i in range(0, len(chosen), BATCH))
        gain = np.concatenate([learner._targets(b).advantage.numpy() for b in batches])
    out = {"rows": float(len(chosen)), "kept": float((gain > 0).mean()), "mean_advantage": float(gain.mean())}
    for name, rows_of in (("successful", won), ("failed", ~won)):
        out[f"rows_{name}"] = float(rows_of.sum())
        out[f"kept_{name}"] = float((gain[rows_of] > 0).mean()) if rows_of.any() else float("nan")
        out[f"mean_advantage_{name}"] = float(gain[rows_of].mean()) if rows_of.any() else float("nan")
    kept = gain > 0
    out["successful_share_of_kept"] = float(won[kept].mean()) if kept.any() else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a pac-train run directory with a critic")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--rows", type=int, default=4096, help="training transitions drawn at random")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the shares")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    shares = advantage_shares(args.run, args.step, args.rows)
    print(f"{'':<12} {'rows':>6} {'kept':>6} {'mean advantage':>15}")
    for name in ("successful", "failed"):
        row = (shares[f"rows_{name}"], shares[f"kept_{name}"], shares[f"mean_advantage_{name}"])
        print(f"{name:<12} {row[0]:>6.0f} {row[1]:>6.3f} {row[2]:>+15.4f}")
    print(f"kept overall {shares['kept']:.3f}; successful episodes' share of what is kept "
          f"{shares['successful_share_of_kept']:.3f} (filtered BC: 1.000)")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run), "step": args.step, **shares}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What `--set bc_data=advantage` clones (issue 11): the share of a run's training transitions whose n-step advantage
under a checkpoint's target network is positive, split by the episode's outcome.

The filter is meant to keep what succeeds without being told which episodes did: filtered BC, which is told,
clones 100 % of the successful episodes' transitions and none of the failed ones'. This reads how close the
filter comes, with the run's own config, data split, transitions and objective (Learner._targets):

    PYTHONPATH=. python -m benchmarks.advantage_filter --run RUN [--step N] [--rows 4096] [--episodes 300] [--out F]

`--episodes K` also reads the gripper decisions of the first K training episodes (benchmarks/critic_probe's
moments: releases on blue, which succeed, misplaced releases beside it, which fail, grasps): where the
data's choice decides the outcome, a filter that works keeps the releases and drops the misplaces.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from policies.data.dataset import locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.sharding import Shard
from policies.data.transitions import TransitionDataset
from policies.spec import ActionSpec
from policies.train.checkpoint import load_checkpoint, load_trained_model
from policies.train.config import TrainConfig
from policies.train.data import split_episodes, transition_config
from policies.train.learner import Learner

BATCH = 256


@dataclass
class Filter:
    """A run's checkpoint set up as `bc_data=advantage` would filter with it, over the run's training episodes."""

    learner: Learner
    data: TransitionDataset
    reader: EpisodeReader
    train_episodes: np.ndarray
    info: dict

    @classmethod
    def load(cls, run: Path, step: int | None = None, seed: int = 0) -> Filter:
        model, info, path = load_trained_model(run, step)
        config = replace(TrainConfig.from_dict(info["train"]), bc_data="advantage")
        if not config.algorithm.critic:
            raise ValueError(f"{run} trained {config.algo}, which has no critic to filter with")
        learner = Learner(config, model, torch.device("cpu"))
        learner.target.load_state_dict(load_checkpoint(path, ("target",))[0]["target"])
        root, did = locate_dataset(Path(config.dataset))
        reader = EpisodeReader(root, did)
        dims = ActionSpec.from_dict(info["action_spec"]).dims
        transitions = transition_config(config, model.obs_spec, dims, batch_size=BATCH, seed=seed)
        split = split_episodes(reader.successes(), config.holdout, successes_only=False)
        data = TransitionDataset(root, did, transitions, Shard(), split.train)
        return cls(learner, data, reader, split.train, info)

    def advantage(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) the n-step advantage of those training transitions."""
        with torch.no_grad():
            batches = (self.data[rows[i : i + BATCH]] for i in range(0, len(rows), BATCH))
            return np.concatenate([self.learner._targets(b).advantage.numpy() for b in batches])


def _kept(gain: np.ndarray) -> dict[str, float]:
    if len(gain) == 0:
        return {"rows": 0.0, "kept": float("nan"), "mean_advantage": float("nan")}
    return {"rows": float(len(gain)), "kept": float((gain > 0).mean()), "mean_advantage": float(gain.mean())}


def advantage_shares(f: Filter, rows: int = 4096, seed: int = 0) -> dict[str, dict[str, float]]:
    """Kept share (advantage > 0) and mean advantage over `rows` training transitions drawn at random: all of
    them, by the outcome of their episode, and the successful episodes' share of what is kept."""
    chosen = np.random.default_rng(seed).choice(len(f.data), min(rows, len(f.data)), replace=False)
    won = f.reader.successes()[f.data.episode_of(chosen)[0]]
    gain = f.advantage(chosen)
    kept = gain > 0
    share = float(won[kept].mean()) if kept.any() else float("nan")
    return {
        "all": _kept(gain) | {"successful_share_of_kept": share},
        "successful": _kept(gain[won]),
        "failed": _kept(gain[~won]),
    }


def moment_shares(f: Filter, episodes: int = 300) -> dict[str, dict[str, float]]:
    """The same per kind of gripper decision (critic_probe.find_moments) in the first `episodes` training
    episodes: releases on blue, misplaced releases, grasps."""
    from benchmarks.critic_probe import KINDS, find_moments, proprio_offset
    from robots.spec import load_spec

    obs = f.learner.model.obs_spec
    owners, steps = f.data.episode_of(np.arange(len(f.data)))
    row_of = {(int(e), int(t)): i for i, (e, t) in enumerate(zip(owners, steps, strict=True))}
    half = float(load_spec(f.info["dataset"]["robot"]).scene["objects"][0]["size"])
    tcp_at = proprio_offset(obs, "tcp_pos")
    reward = f.learner.config.reward
    moments = []
    for e in f.train_episodes[:episodes]:
        found = find_moments(f.reader.arrays(int(e), reward), obs.objects, tcp_at, half, int(e))
        moments += [m for m in found if (m.episode, m.step) in row_of]
    out = {}
    for kind in KINDS[:3]:  # approach steps are no decision the data makes
        rows = np.array([row_of[(m.episode, m.step)] for m in moments if m.kind == kind], dtype=np.int64)
        out[kind] = _kept(f.advantage(rows) if len(rows) else np.zeros(0))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a pac-train run directory with a critic")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--rows", type=int, default=4096, help="training transitions drawn at random")
    p.add_argument("--episodes", type=int, default=0, help="also the gripper decisions of this many episodes")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the shares")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    f = Filter.load(args.run, args.step)
    result = {"run": str(args.run), "step": args.step, "random_rows": advantage_shares(f, args.rows)}
    if args.episodes:
        result["moments"] = moment_shares(f, args.episodes)
    print(f"{'':<12} {'rows':>6} {'kept':>6} {'mean advantage':>15}")
    for group in ("random_rows", "moments"):
        for name, row in result.get(group, {}).items():
            print(f"{name:<12} {row['rows']:>6.0f} {row['kept']:>6.3f} {row['mean_advantage']:>+15.4f}")
    share = result["random_rows"]["all"]["successful_share_of_kept"]
    print(f"successful episodes' share of what is kept: {share:.3f} (filtered BC: 1.000)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

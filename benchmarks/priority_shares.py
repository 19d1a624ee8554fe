"""Where `--set priority=a` sends a run's draws (issue 11): the share of the sampling probability, at one of its
checkpoints, on each kind of training transition, against that kind's share of the data.

Prioritised sampling was added for exposure: the placing states where the data's action decides the outcome are
3 % of the steps. This reads whether the TD errors really point there, from the checkpoint's own sampler state
(rank 0's shard) and the run's own transitions:

    PYTHONPATH=. python -m benchmarks.priority_shares --run RUN [--step N] [--out F]

Kinds: the episode's outcome; placing states (critic_probe.carry_states(placing=True): red held within 5 cm of
blue's centre, above the stacked height); the data's gripper decisions (critic_probe.find_moments: releases on
blue, misplaced releases, grasps). "enrichment" is the draw share over the data share (1: drawn as uniformly).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.critic_probe import KINDS, carry_states, find_moments, proprio_offset
from policies.data.dataset import locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.priority import PrioritySampler, sampling_probabilities
from policies.data.sharding import Shard
from policies.data.transitions import TransitionDataset
from policies.spec import ActionSpec, ObservationSpec
from policies.train.checkpoint import checkpoint_at, read_run
from policies.train.config import TrainConfig
from policies.train.data import split_episodes, transition_config
from policies.train.trainer import rank_sampler_state
from robots.spec import load_spec


def kinds_of_rows(data: TransitionDataset, reader: EpisodeReader, spec: ObservationSpec, robot: str, reward: str):
    """{kind: bool mask over the dataset's rows}: outcome, placing states, gripper decisions."""
    owners, steps = data.episode_of(np.arange(len(data)))
    successes = reader.successes()
    masks = {"successful episode": successes[owners], "failed episode": ~successes[owners]}
    row_of = {(int(e), int(t)): i for i, (e, t) in enumerate(zip(owners, steps, strict=True))}
    half = float(load_spec(robot).scene["objects"][0]["size"])
    tcp_at, grasp_at = proprio_offset(spec, "tcp_pos"), proprio_offset(spec, "gripper_grasp")
    placing = np.zeros(len(data), bool)
    moments = {k: np.zeros(len(data), bool) for k in KINDS[:3]}  # approach steps are no decision
    for episode in np.unique(owners):
        arrays = reader.arrays(int(episode), reward)
        for t, _ in carry_states(arrays, spec.objects, grasp_at, half, placing=True):
            placing[row_of[(int(episode), t)]] = True
        for m in find_moments(arrays, spec.objects, tcp_at, half, int(episode)):
            if m.kind in moments and (m.episode, m.step) in row_of:
                moments[m.kind][row_of[(m.episode, m.step)]] = True
    return masks | {"placing": placing} | moments


def priority_shares(run: Path, step: int | None = None) -> dict:
    info = read_run(run)
    config = TrainConfig.from_dict(info["train"])
    if config.priority <= 0.0:
        raise ValueError(f"{run} drew its batches uniformly (priority {config.priority})")
    checkpoint = checkpoint_at(run, step)
    spec = ObservationSpec.from_dict(info["observation_spec"])
    root, did = locate_dataset(Path(config.dataset))
    reader = EpisodeReader(root, did)
    split = split_episodes(reader.successes(), config.holdout, config.algorithm.successes_only)
    dims = ActionSpec.from_dict(info["action_spec"]).dims
    shard = Shard(0, int(info.get("world_size", 1)))
    data = TransitionDataset(root, did, transition_config(config, spec, dims), shard, split.train)
    sampler = PrioritySampler(data, config.priority, config.priority_correction, config.steps)
    sampler.load_state_tensors(rank_sampler_state(checkpoint, 0))
    p = sampling_probabilities(sampler.errors, config.priority)
    errors = sampler.errors
    out = {
        "run": str(run),
        "checkpoint": checkpoint.name,
        "rows": len(data),
        "visited": float(np.isfinite(errors).mean()),
    }
    out["kinds"] = {}
    for kind, mask in kinds_of_rows(data, reader, spec, info["dataset"]["robot"], config.reward).items():
        seen = mask & np.isfinite(errors)
        data_share, draw_share = float(mask.mean()), float(p[mask].sum())
        out["kinds"][kind] = {
            "rows": int(mask.sum()),
            "data_share": data_share,
            "draw_share": draw_share,
            "enrichment": draw_share / data_share if data_share else float("nan"),
            "mean_error": float(errors[seen].mean()) if seen.any() else float("nan"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a pac-train run with --set priority=a")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the shares")
    args = p.parse_args(argv)
    result = priority_shares(args.run, args.step)
    print(f"{result['run']} {result['checkpoint']}: {result['rows']} rows, {result['visited']:.1%} visited")
    print(f"{'kind':<20} {'rows':>7} {'data':>7} {'draws':>7} {'enrichment':>11} {'mean TD error':>14}")
    for kind, r in result["kinds"].items():
        print(
            f"{kind:<20} {r['rows']:>7} {r['data_share']:>7.3f} {r['draw_share']:>7.3f} {r['enrichment']:>11.2f} "
            f"{r['mean_error']:>14.4f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Stacking success of the scripted experts per arm and quality, over seeds 0..N-1 (issue 6's figures).

Runs pac-collect's own episodes without cameras (the experts read privileged sim state, never images).

    python -m benchmarks.expert_success [--seeds 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from policies.data.collect import collect
from robots.tasks.experts import MIXED_TARGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for robot in ("sawyer", "panda"):
        for quality in ("expert", "mixed"):
            episodes = collect(robot, "stack", quality, args.seeds, args.workers, seed=0, cameras=())
            wins = sum(e.success for e in episodes)
            steps = np.mean([e.actions.shape[0] for e in episodes])
            rows.append((robot, quality, wins, steps))
    print(f"\n| arm | quality | success (seeds 0-{args.seeds - 1}) | mean steps |")
    print("| --- | --- | --- | --- |")
    for robot, quality, wins, steps in rows:
        print(f"| {robot} | {quality} | {wins}/{args.seeds} = {wins / args.seeds:.0%} | {steps:.0f} |")
    print(f"budget: expert ≥ 90%; mixed within ±5 points of {MIXED_TARGET:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stacking success of the scripted experts per arm and quality over seeds 0..N-1, and what their episodes
went through (issue 6's and issue 11's figures).

Each episode runs through `expert_rollout`, the loop pac-collect runs, without cameras (the experts read
privileged sim state, never images); the events are the ones each `ExpertStep` carries.

    python -m benchmarks.expert_success [--seeds 50] [--workers 2] [--qualities expert,mixed,rl_like]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from multiprocessing import Pool

import numpy as np

from robots.tasks.env import PacTaskEnv
from robots.tasks.experts import MIXED_TARGET, QUALITIES, RL_LIKE_RANGE, expert_rollout, make_expert

ROBOTS = ("sawyer", "panda")


@dataclass(frozen=True)
class Outcome:
    success: bool
    steps: int
    events: frozenset[str]  # the kinds of event the episode went through, hesitations left out
    shaped: float  # the episode's return under the shaped reward (robots/tasks/tasks.py), undiscounted
    sloppiness: float  # the episode's place on the continuum of skill (ExpertQuality); 0.5 without a spread


def episode(job: tuple[str, str, int]) -> Outcome:
    robot, quality, seed = job
    env = PacTaskEnv(robot, "stack", cameras=(), render_images=False)
    try:
        steps = list(expert_rollout(env, quality, seed))[1:]  # after the reset
        low, high = env.action_space.low, env.action_space.high
        sloppiness = make_expert("stack", low, high, quality, seed).sloppiness  # the rollout's expert, redrawn
    finally:
        env.close()
    events = frozenset(e for step in steps for e in step.events if e != "hesitate")
    shaped = sum(step.info["shaped_reward"] for step in steps)
    return Outcome(bool(steps[-1].terminated), len(steps), events, shaped, sloppiness)


def recovered(o: Outcome) -> bool:
    """Whether the expert noticed a mistake and went back for red at least once."""
    return any(e.startswith("notice_") for e in o.events)


def row(robot: str, quality: str, outcomes: list[Outcome]) -> str:
    n, wins = len(outcomes), sum(o.success for o in outcomes)
    steps = np.mean([o.steps for o in outcomes])

    def count(kind: str) -> int:
        return sum(kind in o.events for o in outcomes)

    def shaped(success: bool) -> str:
        returns = [o.shaped for o in outcomes if o.success == success]
        return f"{np.mean(returns):.0f}" if returns else "-"

    def by_third(third: int) -> str:
        wins = [o.success for o in outcomes if min(int(o.sloppiness * 3), 2) == third]
        return f"{np.mean(wins):.0%}" if wins else "-"

    after = sum(o.success and recovered(o) for o in outcomes)
    return (
        f"| {robot} | {quality} | {wins}/{n} = **{wins / n:.0%}** | {steps:.0f} | {count('drop')} | "
        f"{count('misplace')} | {count('notice_distractor')} | {count('regrasp')} | "
        f"{sum(map(recovered, outcomes))} | {after}/{wins} | {shaped(True)} / {shaped(False)} | "
        f"{' / '.join(map(by_third, range(3)))} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--qualities", default="expert,mixed,rl_like", help="comma-separated, of: " + ",".join(QUALITIES)
    )
    args = parser.parse_args(argv)
    qualities = args.qualities.split(",")
    unknown = set(qualities) - set(QUALITIES)
    if unknown:
        parser.error(f"unknown qualities {sorted(unknown)}; qualities: {', '.join(QUALITIES)}")
    rows = []
    with Pool(args.workers) as pool:
        for robot in ROBOTS:
            for quality in qualities:
                jobs = [(robot, quality, seed) for seed in range(args.seeds)]
                rows.append(row(robot, quality, pool.map(episode, jobs, chunksize=1)))
                print(rows[-1], file=sys.stderr, flush=True)
    print(
        f"\n| arm | quality | success (seeds 0-{args.seeds - 1}) | mean steps | episodes with: a drop | "
        "a misplaced release | a corrected distractor | a re-grasp | a noticed mistake | successes after one | "
        "shaped return, successes / failures | success by sloppiness third |"
    )
    print("| --- " * 12 + "|")
    print("\n".join(rows))
    low, high = RL_LIKE_RANGE
    print(f"budget: expert ≥ 90%; mixed within ±5 points of {MIXED_TARGET:.0%}; rl_like in [{low:.0%}, {high:.0%}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a dataset's gripper closes over red: the coverage an offline critic has for the grasp's timing (issue 11).

    python -m benchmarks.grasp_coverage --dataset DATA/pac/sawyer-stack-rl_like-v0 [--robot sawyer] [--out FILE.json]

PAC's failing seeds closed the gripper on air above red (benchmarks/critic_probe.py: their critic preferred
closing from five steps before the data's grasps, by 0.01-0.02). A critic can rank closing at a height only
if the data closes there now and then and shows what follows. This counts, over every episode, the steps
whose previous gripper command was open with the TCP over red (within GRASP_RADIUS in the table plane), by
the TCP's height above red's centre in 1 cm bands, and how many of them command a close: a band with open
steps but no close is one where the critic's value of closing is extrapolation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.critic_probe import GRASP_RADIUS, OPEN_BELOW, proprio_offset
from policies.data.dataset import locate_dataset
from policies.data.episodes import EpisodeReader
from policies.spec import observation_spec, scene_objects
from robots.spec import load_spec

BANDS_CM = 8  # 1 cm bands above red's centre; the last holds everything higher


def band_counts(grip: np.ndarray, tcp: np.ndarray, red: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(open steps, closes) per height band for one episode: steps t ≥ 1 whose gripper command at t − 1 was open,
    with the TCP within GRASP_RADIUS of red in the table plane and not below its centre. `tcp` and `red` may hold
    one more row than `grip` (an episode's final observation), which is not used."""
    tcp, red = tcp[: len(grip)], red[: len(grip)]
    was_open = grip[:-1] < OPEN_BELOW
    closes = grip[1:] >= OPEN_BELOW
    dz = tcp[1:, 2] - red[1:, 2]
    over = was_open & (np.linalg.norm(tcp[1:, :2] - red[1:, :2], axis=1) < GRASP_RADIUS) & (dz >= 0)
    band = np.minimum((dz * 100).astype(int), BANDS_CM - 1)
    return (
        np.bincount(band[over], minlength=BANDS_CM),
        np.bincount(band[over & closes], minlength=BANDS_CM),
    )


def coverage(dataset: Path, robot: str) -> dict:
    root, did = locate_dataset(dataset)
    reader = EpisodeReader(root, did)
    arm = load_spec(robot)
    objects = scene_objects(arm)
    at, red_at = proprio_offset(observation_spec(arm, cameras=(), objects=objects), "tcp_pos"), objects.index("red")
    open_steps, closes = np.zeros(BANDS_CM, np.int64), np.zeros(BANDS_CM, np.int64)
    for episode in range(len(reader)):
        arrays = reader.arrays(episode)
        tcp = arrays.observations["proprio"][:, at : at + 3]
        o, c = band_counts(arrays.actions[:, -1], tcp, arrays.observations["objects"][:, red_at, :3])
        open_steps += o
        closes += c
    return {
        "dataset": did,
        "episodes": len(reader),
        "bands_cm": [f"{b}-{b + 1}" if b < BANDS_CM - 1 else f"{b}+" for b in range(BANDS_CM)],
        "open_steps": open_steps.tolist(),
        "closes": closes.tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--robot", default="sawyer")
    p.add_argument("--out", type=Path, default=None, help="JSON of the counts")
    args = p.parse_args(argv)
    result = coverage(args.dataset, args.robot)
    print(f"{result['dataset']}: {result['episodes']} episodes, TCP over red with the gripper open")
    print("| TCP above red's centre (cm) | open steps | closes | closes per step |")
    print("| --- | --- | --- | --- |")
    for band, o, c in zip(result["bands_cm"], result["open_steps"], result["closes"], strict=True):
        print(f"| {band} | {o} | {c} | {c / o if o else float('nan'):.4f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

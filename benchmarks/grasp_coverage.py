"""Where a dataset's gripper closes over red: the coverage an offline critic has for the grasp's timing (issue 11).

    python -m benchmarks.grasp_coverage --dataset DATA/pac/sawyer-stack-rl_like-v0 [--robot sawyer] [--out FILE.json]

PAC's failing seeds closed the gripper on air above red (benchmarks/critic_probe.py: their critic preferred
closing from five steps before the data's grasps, by 0.01-0.02). A critic can rank closing at a height only
if the data closes there now and then and shows what follows. This counts, over every episode, the steps
whose previous gripper command was open with the TCP over red (within GRASP_RADIUS in the table plane), by
the TCP's height above red's centre in 1 cm bands, and how many of them command a close: a band with open
steps but no close is one where the critic's value of closing is extrapolation.

Where a band does close, the data also says what closing there is worth: the mean discounted shaped return
from the closing steps against that from the steps that stayed open (the behaviour policy's Monte-Carlo
Q(s, close) and Q(s, open) at those heights, γ the training default), and the share of each whose episode
succeeds. A critic that rates closing above staying open by more than the data does is overestimating it.

The second table is the carry's: steps whose previous gripper command was closed with red carried (its centre
CARRIED_ABOVE over blue's), by red's distance from blue in the table plane, and how many of them command an open:
the data's drops. "rl_like" drops in most of its episodes, nearly all in the 6-8 cm band, yet at one step per drop
among the steps that carry on closed there; what a cloned policy copies at those states is the majority.
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.critic_probe import GRASP_RADIUS, OPEN_BELOW, proprio_offset
from policies.data.dataset import locate_dataset
from policies.data.episodes import EpisodeReader
from policies.data.nstep import n_step_targets, per_step_rewards
from policies.spec import observation_spec, scene_objects
from policies.train.config import TrainConfig
from robots.spec import load_spec

BANDS_CM = 8  # 1 cm bands above red's centre; the last holds everything higher
CARRY_EDGES_CM = (0, 2, 4, 6, 8, 10, 14)  # bands of red's distance from blue in the table plane; the last is open above
CARRIED_ABOVE = 0.07  # m of red's centre over blue's: 2 cm above the stacked height (one 5 cm cube): carried


def _decisions(grip: np.ndarray, tcp: np.ndarray, red: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(band, over, closes) for steps 1..T−1: the step's height band, whether it is a decision over red with the
    gripper open before it, whether it commands a close."""
    tcp, red = tcp[: len(grip)], red[: len(grip)]
    was_open = grip[:-1] < OPEN_BELOW
    closes = grip[1:] >= OPEN_BELOW
    dz = tcp[1:, 2] - red[1:, 2]
    over = was_open & (np.linalg.norm(tcp[1:, :2] - red[1:, :2], axis=1) < GRASP_RADIUS) & (dz >= 0)
    band = np.minimum((np.maximum(dz, 0.0) * 100).astype(int), BANDS_CM - 1)
    return band, over, closes


def band_counts(grip: np.ndarray, tcp: np.ndarray, red: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(open steps, closes) per height band for one episode: steps t ≥ 1 whose gripper command at t − 1 was open,
    with the TCP within GRASP_RADIUS of red in the table plane and not below its centre. `tcp` and `red` may hold
    one more row than `grip` (an episode's final observation), which is not used."""
    band, over, closes = _decisions(grip, tcp, red)
    return (
        np.bincount(band[over], minlength=BANDS_CM),
        np.bincount(band[over & closes], minlength=BANDS_CM),
    )


def band_sums(grip: np.ndarray, tcp: np.ndarray, red: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ value over the steps band_counts counts, per band: (those that stay open, the closes). `value` holds one
    number per action (a return from that step, or the episode's success)."""
    band, over, closes = _decisions(grip, tcp, red)
    v = np.asarray(value, dtype=np.float64)[1 : len(grip)]
    stay = over & ~closes
    return (
        np.bincount(band[stay], weights=v[stay], minlength=BANDS_CM),
        np.bincount(band[over & closes], weights=v[over & closes], minlength=BANDS_CM),
    )


def carry_counts(grip: np.ndarray, red: np.ndarray, blue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(closed steps, opens) per CARRY_EDGES_CM band for one episode: steps t ≥ 1 whose gripper command at t − 1 was
    closed with red's centre at least CARRIED_ABOVE over blue's, by red's distance from blue in the table plane.
    `red` and `blue` may hold one more row than `grip` (an episode's final observation), which is not used."""
    red, blue = red[1 : len(grip)], blue[1 : len(grip)]
    carried = (grip[:-1] >= OPEN_BELOW) & (red[:, 2] - blue[:, 2] >= CARRIED_ABOVE)
    opens = grip[1:] < OPEN_BELOW
    band = np.searchsorted(
        np.asarray(CARRY_EDGES_CM[1:]) / 100, np.linalg.norm(red[:, :2] - blue[:, :2], axis=1), "right"
    )
    size = len(CARRY_EDGES_CM)
    return np.bincount(band[carried], minlength=size), np.bincount(band[carried & opens], minlength=size)


def coverage(dataset: Path, robot: str) -> dict:
    root, did = locate_dataset(dataset)
    reader = EpisodeReader(root, did)
    arm = load_spec(robot)
    objects = scene_objects(arm)
    at, red_at = proprio_offset(observation_spec(arm, cameras=(), objects=objects), "tcp_pos"), objects.index("red")
    blue_at = objects.index("blue")
    carried, drops = np.zeros(len(CARRY_EDGES_CM), np.int64), np.zeros(len(CARRY_EDGES_CM), np.int64)
    gamma = TrainConfig(dataset=str(dataset)).gamma
    open_steps, closes = np.zeros(BANDS_CM, np.int64), np.zeros(BANDS_CM, np.int64)
    sums = {key: np.zeros(BANDS_CM) for key in ("return_open", "return_close", "success_open", "success_close")}
    for episode in tqdm(range(len(reader)), desc="episodes", leave=False):
        arrays = reader.arrays(episode, "shaped")
        tcp, grip = arrays.observations["proprio"][:, at : at + 3], arrays.actions[:, -1]
        red = arrays.observations["objects"][:, red_at, :3]
        o, c = band_counts(grip, tcp, red)
        open_steps += o
        closes += c
        held, opened = carry_counts(grip, red, arrays.observations["objects"][:, blue_at, :3])
        carried += held
        drops += opened
        per_step = per_step_rewards(arrays.rewards, arrays.terminations, gamma)
        returns = n_step_targets(per_step, arrays.terminations, len(per_step), gamma).reward  # the full return
        success = np.full(len(grip), float(arrays.terminations[-1]))
        for kind, value in (("return", returns), ("success", success)):
            stay, close = band_sums(grip, tcp, red, value)
            sums[f"{kind}_open"] += stay
            sums[f"{kind}_close"] += close
    counts = {"open": open_steps - closes, "close": closes}  # the steps each sum ran over, per band
    means = {}
    for key, total in sums.items():
        n = counts[key.rsplit("_", 1)[1]]
        means[key] = np.where(n > 0, total / np.maximum(n, 1), np.nan).round(4)  # nan: no such step in the band
    return {
        "dataset": did,
        "episodes": len(reader),
        "bands_cm": [f"{b}-{b + 1}" if b < BANDS_CM - 1 else f"{b}+" for b in range(BANDS_CM)],
        "open_steps": open_steps.tolist(),
        "closes": closes.tolist(),
        "gamma": gamma,
        "carry_bands_cm": [f"{lo}-{hi}" for lo, hi in pairwise(CARRY_EDGES_CM)] + [f"{CARRY_EDGES_CM[-1]}+"],
        "carried_steps": carried.tolist(),
        "carry_opens": drops.tolist(),
        **{f"mean_{k}": [None if np.isnan(x) else float(x) for x in v] for k, v in means.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--robot", default="sawyer")
    p.add_argument("--out", type=Path, default=None, help="JSON of the counts")
    args = p.parse_args(argv)
    result = coverage(args.dataset, args.robot)
    print(f"{result['dataset']}: {result['episodes']} episodes, TCP over red with the gripper open")
    print(f"returns: discounted shaped, γ {result['gamma']}, from the step on; success: the episode's")
    print(
        "| TCP above red's centre (cm) | open steps | closes | closes per step "
        "| return: stay open | return: close | success: stay open | success: close |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    columns = [result[f"mean_{k}"] for k in ("return_open", "return_close", "success_open", "success_close")]
    for i, (band, o, c) in enumerate(zip(result["bands_cm"], result["open_steps"], result["closes"], strict=True)):
        cells = " | ".join("-" if col[i] is None else f"{col[i]:.3f}" for col in columns)
        print(f"| {band} | {o} | {c} | {c / o if o else float('nan'):.4f} | {cells} |")
    print(f"\nred carried (its centre {CARRIED_ABOVE * 100:.0f} cm over blue's) with the gripper closed")
    print("| red from blue in the table plane (cm) | closed steps | opens | opens per step |")
    print("| --- | --- | --- | --- |")
    for band, n, d in zip(result["carry_bands_cm"], result["carried_steps"], result["carry_opens"], strict=True):
        print(f"| {band} | {n} | {d} | {d / n if n else float('nan'):.4f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

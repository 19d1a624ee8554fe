"""Lockstep sim speed as a real-time factor: state only and with two 128×128 JPEG cameras.

Each configuration runs `pac-sim --lockstep` as its own process and steps it over loopback with the
runtime's client. The baseline, measured in the same run, is the same physics and servo stepped in this
process with no sockets, no rendering and no encoding: the ratio says what the driver contract costs.
Budget (DESIGN §5): ≥ 10× real time state only, ≥ 2× with cameras.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from robots.contract.client import DriverClient
from robots.contract.link import DEFAULT_LINK, Mode
from robots.servo import Command, CommandServo, ServoConfig
from robots.sim.physics import SimArm
from robots.sim.process import start_sim, stop_sim
from robots.spec import load_spec

PERIOD_S = DEFAULT_LINK.period_s


def _actions(robot: str, periods: int) -> list[np.ndarray]:
    """A slow circle in the horizontal plane with the gripper opening and closing: keeps the IK busy."""
    space = load_spec(robot).action_spaces[Mode.CARTESIAN_VELOCITY]
    out = []
    for k in range(periods):
        a = np.zeros(space.size)
        a[0], a[1] = 0.04 * np.cos(k / 20), 0.04 * np.sin(k / 20)
        a[-1] = float((k // 40) % 2)
        out.append(a)
    return out


def in_process_baseline(robot: str, periods: int) -> np.ndarray:
    spec = load_spec(robot)
    sim = SimArm(spec, cameras=())
    cfg = ServoConfig()
    servo = CommandServo(spec, cfg, spec.home, 0)
    steps = round(cfg.period_s / cfg.dt)
    times = np.empty(periods)
    now = 0
    for k, action in enumerate(_actions(robot, periods)):
        t0 = time.perf_counter()
        servo.submit(Command(k, Mode.CARTESIAN_VELOCITY, action, now + 10**9), now)
        for _ in range(steps):
            q, qd, g = servo.step(now)
            sim.set_targets(q, qd, g)
            sim.step()
            now += round(cfg.dt * 1e9)
        sim.state()
        times[k] = time.perf_counter() - t0
    return times


def over_sockets(robot: str, periods: int, cameras: str) -> np.ndarray:
    proc, pub, cmd = start_sim(robot, "--lockstep", "--cameras", cameras, capture=False)
    client = DriverClient(pub, cmd)
    try:
        client.wait_ready(timeout_s=60)
        client.reset()
        client.step(Mode.HOLD)  # connection fully set up before timing
        times = np.empty(periods)
        for k, action in enumerate(_actions(robot, periods)):
            t0 = time.perf_counter()
            client.step(Mode.CARTESIAN_VELOCITY, action)
            times[k] = time.perf_counter() - t0
        return times
    finally:
        client.close()
        stop_sim(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--periods", type=int, default=400, help="control periods per configuration (400 = 20 s)")
    p.add_argument("--robots", default="sawyer,panda")
    p.add_argument("--json", type=Path, default=Path("out/bench/sim_speed.json"))
    args = p.parse_args(argv)
    rows = []
    configs = [(r, c) for r in args.robots.split(",") for c in ("baseline", "none", "front_left,front_right")]
    for robot, cameras in tqdm(configs, desc="sim speed", unit="config"):
        if cameras == "baseline":
            times = in_process_baseline(robot, args.periods)
            label = "in-process physics+servo (baseline)"
        else:
            times = over_sockets(robot, args.periods, cameras)
            label = "pac-sim lockstep, " + ("state only" if cameras == "none" else "2 cameras 128² JPEG")
        rows.append(
            {
                "robot": robot,
                "config": label,
                "median_ms": float(np.median(times) * 1e3),
                "p99_ms": float(np.percentile(times, 99) * 1e3),
                "rtf": PERIOD_S * len(times) / float(np.sum(times)),
            }
        )
    for row in rows:
        base = next(r for r in rows if r["robot"] == row["robot"] and "baseline" in r["config"])
        row["median_vs_baseline"] = row["median_ms"] / base["median_ms"]
        row["p99_vs_baseline"] = row["p99_ms"] / base["p99_ms"]
    columns = [
        "robot",
        "configuration",
        "median ms/period",
        "p99 ms/period",
        "median × baseline",
        "p99 × baseline",
        "real-time factor",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * 7)
    for r in rows:
        print(
            f"| {r['robot']} | {r['config']} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['median_vs_baseline']:.2f} | {r['p99_vs_baseline']:.2f} | {r['rtf']:.1f}× |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

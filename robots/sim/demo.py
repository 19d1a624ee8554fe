"""`make demo-sim`, the driver alone: start `pac-sim` in lockstep and drive a square with the gripper cycling.

Everything goes through the real contract (a separate driver process, ZeroMQ over loopback, JPEG frames),
so the demo shows what a policy would drive. It prints a summary table and writes a PNG of the TCP path
and the two camera views to out/demo/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from robots.contract.client import DriverClient  # noqa: E402
from robots.contract.link import Mode  # noqa: E402
from robots.sim.process import start_sim, stop_sim  # noqa: E402
from robots.spec import ARMS, load_spec  # noqa: E402


def square_actions(robot: str, side_periods: int = 20, speed: float = 0.05) -> list[np.ndarray]:
    space = load_spec(robot).action_spaces[Mode.CARTESIAN_VELOCITY]
    out = []
    for k, (vx, vy) in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)]):
        for _ in range(side_periods):
            a = np.zeros(space.size)
            a[0], a[1], a[-1] = speed * vx, speed * vy, float(k % 2)
            out.append(a)
    return out


def run(robot: str, out_dir: Path) -> dict[str, float]:
    proc, pub, cmd = start_sim(robot, "--lockstep", capture=False)
    client = DriverClient(pub, cmd)
    try:
        client.wait_ready(timeout_s=60)
        obs = client.reset()
        path = [obs.state.tcp_pose[:3].copy()]
        for action in tqdm(square_actions(robot), desc=f"{robot} square", unit="tick"):
            obs = client.step(Mode.CARTESIAN_VELOCITY, action)
            path.append(obs.state.tcp_pose[:3].copy())
        obs = client.step(Mode.HOLD)
        status = obs.status
        path = np.array(path)
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        axes[0].plot(path[:, 0] * 1000, path[:, 1] * 1000, "-")
        axes[0].set(title=f"{robot} TCP path (mm)", xlabel="x", ylabel="y", aspect="equal")
        for ax, (name, image) in zip(axes[1:], sorted(obs.images.items()), strict=False):
            ax.imshow(image.image)
            ax.set(title=name)
            ax.axis("off")
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out_dir / f"{robot}.png", dpi=80)
        plt.close(fig)
        closure_mm = float(np.linalg.norm(path[-1] - path[0]) * 1000)
        return {
            "ticks": len(path) - 1,
            "applied": status.commands_applied,
            "rejected": sum(status.commands_rejected.values()),
            "dropped": sum(status.messages_dropped.values()),
            "square closure mm": closure_mm,
            "side mm": float(np.ptp(path[:, 0]) * 1000),
        }
    finally:
        client.close()
        stop_sim(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--robots", default=",".join(ARMS))
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    args = p.parse_args(argv)
    rows = {robot: run(robot, args.out) for robot in args.robots.split(",")}
    keys = list(next(iter(rows.values())))
    print("\n| robot | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 1))
    for robot, row in rows.items():
        print(
            f"| {robot} | "
            + " | ".join(f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
            + " |"
        )
    print(f"\nplots: {args.out}/<robot>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

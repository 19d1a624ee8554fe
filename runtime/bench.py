"""`pac-bench`: pac-run against the embedded sim in real time, measured against DESIGN §5's budgets.

Runs `pac-run --sim` (real time, both cameras as 128² JPEG) for the given duration and reads its summary:
runtime overhead (everything but the inference call), observation age at dispatch, overruns and RSS growth.
The baseline, measured in the same process right before, is the irreducible part of the overhead: decoding
the two cameras' JPEG frames, so "overhead ÷ baseline" says what the loop adds to it.

    pac-bench --robot sawyer --policy pac_S.int8.onnx --duration 600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from robots.contract.messages import ImageMsg
from robots.contract.wire import decode
from runtime.cli import main as pac_run

BUDGETS = {"overhead_p99_ms": 2.0, "obs_age_p99_ms": 40.0, "overruns": 0, "rss_growth_mb": 5.0}


def jpeg_decode_baseline(n: int = 2000, cameras: int = 2) -> tuple[float, float]:
    """(p50, p99) ms to decode one tick's camera frames from the wire (128² JPEG, quality 90)."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), (5, 5), 0)
    frames = ImageMsg("front_left", 1, "bench", 0, image).to_frames()
    times = []
    for _ in range(n):
        t = time.perf_counter_ns()
        for _ in range(cameras):
            decode(frames)
        times.append((time.perf_counter_ns() - t) / 1e6)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pac-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="sawyer")
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--cpu-spin", choices=("on", "off"), default="off")
    args = parser.parse_args(argv)
    base50, base99 = jpeg_decode_baseline()
    summary_path = args.out / f"{args.policy.stem}_{int(args.duration)}s.json"
    code = pac_run(
        [
            "--robot",
            args.robot,
            "--policy",
            str(args.policy),
            "--sim",
            "--duration",
            str(args.duration),
            "--summary",
            str(summary_path),
            "--cpu-spin",
            args.cpu_spin,
        ]
    )
    s = json.loads(summary_path.read_text())
    over, age = s["stages_ms"]["overhead"], s["obs_age_ms"]
    rows = [
        (
            "runtime overhead p50 / p99 ms",
            f"{over['p50']:.2f} / {over['p99']:.2f}",
            f"{over['p50'] / base50:.1f}× / {over['p99'] / base99:.1f}×",
            f"p99 ≤ {BUDGETS['overhead_p99_ms']}",
        ),
        (
            "obs age at dispatch p50 / p99 ms",
            f"{age['p50']:.1f} / {age['p99']:.1f}",
            "",
            f"p99 ≤ {BUDGETS['obs_age_p99_ms']}",
        ),
        (
            "inference p50 / p99 ms",
            f"{s['stages_ms']['infer']['p50']:.1f} / {s['stages_ms']['infer']['p99']:.1f}",
            "",
            "",
        ),
        ("ticks / overruns", f"{s['ticks']} / {s['overruns']}", "", f"overruns = {BUDGETS['overruns']}"),
        (
            "RSS start → end MB",
            f"{s['rss_mb']['start']:.1f} → {s['rss_mb']['end']:.1f}",
            "",
            f"growth < {BUDGETS['rss_growth_mb']}",
        ),
        ("baseline: decode 2 JPEGs p50 / p99 ms", f"{base50:.2f} / {base99:.2f}", "1×", ""),
    ]
    print(f"\npac-bench: {args.policy.name} on {s['provider']}, {args.duration:.0f} s real time, exit code {code}")
    print(f"  {'measure':<40}{'value':>22}{'× baseline':>16}  budget")
    for name, value, ratio, budget in rows:
        print(f"  {name:<40}{value:>22}{ratio:>16}  {budget}")
    met = (
        over["p99"] <= BUDGETS["overhead_p99_ms"]
        and age["p99"] <= BUDGETS["obs_age_p99_ms"]
        and s["overruns"] == BUDGETS["overruns"]
        and s["rss_mb"]["end"] - s["rss_mb"]["start"] < BUDGETS["rss_growth_mb"]
    )
    print(f"  all budgets {'met' if met else 'NOT met'}; summary: {summary_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())

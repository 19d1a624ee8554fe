"""Calibration accuracy over seeds: intrinsics, hand-eye and joint offsets against the MuJoCo cell's ground truth.

The tests check issue 14's targets on a few seeds; a seed is one draw of hand-held views, arm poses and image
noise, and a procedure that meets the targets on one draw can miss them on the next (seed 13 once put the
joint offsets 5.9 mrad off). This runs calibration.sim_study.study, the procedure the tests use, for each arm
and seed, and prints the worst error of each kind next to its target.
Targets (issue 14): focal ≤ 1 %, principal point ≤ 2 px, camera ≤ 5 mm and 0.5°, offsets ≤ 0.5 mrad.

    .venv/bin/python -m benchmarks.calibration_accuracy --seeds 10-21
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from calibration.sim_study import ARM_POSES, HANDHELD_VIEWS, study

TARGETS = {"focal_pct": 1.0, "principal_px": 2.0, "handeye_mm": 5.0, "handeye_deg": 0.5, "offsets_mrad": 0.5}
RESULTS = Path(__file__).parent / "results" / "calibration_accuracy.json"


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=["sawyer", "panda"])
    p.add_argument("--seeds", type=_seeds, default=_seeds("10-21"), help="a range, e.g. 10-21")
    p.add_argument("--poses", type=int, default=ARM_POSES, help="arm poses per capture")
    p.add_argument("--handheld", type=int, default=HANDHELD_VIEWS, help="hand-held views per camera")
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows, failures = [], []
    runs = [(arm, seed) for arm in args.arms for seed in args.seeds]
    try:
        for arm, seed in tqdm(runs, desc="calibration accuracy", unit="seed"):
            try:
                rows.append({"arm": arm, "seed": seed, **asdict(study(arm, seed, args.poses, args.handheld))})
            except ValueError as e:  # a refused solve is a result too: the procedure said so rather than erring
                failures.append({"arm": arm, "seed": seed, "error": f"{type(e).__name__}: {e}"})
    finally:
        _report(rows, failures, args)
    return 1 if failures or any(_misses(r) for r in rows) else 0


def _misses(row: dict) -> list[str]:
    return [k for k, limit in TARGETS.items() if row[k] > limit]


def _report(rows: list[dict], failures: list[dict], args: argparse.Namespace) -> None:
    print(f"{'arm':7s} {'seed':>4s} {'focal %':>8s} {'pp px':>6s} {'cam mm':>7s} {'cam °':>6s} {'mrad':>9s}  joints")
    for r in rows:
        joints = " ".join(f"{x:+.3f}" for x in r["offsets"])
        miss = f"  MISSES {', '.join(_misses(r))}" if _misses(r) else ""
        print(
            f"{r['arm']:7s} {r['seed']:4d} {r['focal_pct']:8.3f} {r['principal_px']:6.2f} {r['handeye_mm']:7.2f} "
            f"{r['handeye_deg']:6.3f} {r['offsets_mrad']:9.3f}  {joints}{miss}"
        )
    for f in failures:
        print(f"{f['arm']:7s} {f['seed']:4d} refused: {f['error']}")
    summary = {}
    for arm in sorted({r["arm"] for r in rows}):
        mine = [r for r in rows if r["arm"] == arm]
        summary[arm] = {
            k: {"worst": max(r[k] for r in mine), "median": float(np.median([r[k] for r in mine]))} for k in TARGETS
        }
        worst = ", ".join(f"{k} {v['worst']:.3g} (target {TARGETS[k]:g})" for k, v in summary[arm].items())
        print(f"{arm}: worst over {len(mine)} seeds: {worst}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "targets": TARGETS,
        "arm_poses": args.poses,
        "handheld_views": args.handheld,
        "seeds": args.seeds,
        "rows": rows,
        "refused": failures,
        "summary": summary,
    }
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of pac-train (samples/s) per size, on 1 process and on N DDP processes (torchrun).

    python -m benchmarks.train_throughput --dataset DATA/pac/sawyer-stack-rl_like-v0 [--sizes XS,S]
        [--algo pac] [--batch-size 64] [--steps 40] [--procs 2] [--amp none,bf16]
    python -m benchmarks.train_throughput --gpu --dataset ... --sizes XS,S,M,L --batch-size 64,256

Each configuration is a real `pac-train` run (state observations) of --steps steps; its throughput is the
median of the logged samples/s after the first logging window (start-up and warm-up excluded). One
process runs with one thread and with --procs threads; --procs processes with one thread each (gloo).
Scaling efficiency = DDP samples/s ÷ (procs × one single-threaded process's samples/s).
--amp lists pac-train's autocast settings to measure on the CPU, one row each: bf16 runs the matmuls on a
CPU's bf16 units (AMX or AVX-512 BF16) where it has them, and is emulated, slower, where it does not.
With --gpu: one process on the GPU per size and batch size (bf16 autocast, pac-train's default there).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _throughput(cmd: list[str], run: Path, env: dict[str, str]) -> float:
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(run / "metrics.csv", newline="") as f:
        values = [float(r["train/samples_per_s"]) for r in csv.DictReader(f) if r.get("train/samples_per_s")]
    return statistics.median(values[1:] if len(values) > 2 else values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--sizes", default="XS,S")
    p.add_argument("--algo", default="pac")
    p.add_argument("--batch-size", default="64", help="per process (with --gpu, a comma-separated list)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--amp", default="none", help="CPU autocast settings, comma-separated: none, bf16")
    p.add_argument("--gpu", action="store_true", help="one process on the GPU; --batch-size may list several")
    args = p.parse_args(argv)
    if args.gpu:
        return _gpu(args)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [*_run_args(args), "--batch-size", args.batch_size]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            for amp in args.amp.split(","):
                base = [*common, "--size", size, "--set", f"amp={amp}"]
                single, threads, distributed, efficiency = _cpu_row(base, Path(tmp) / f"{size}_{amp}", args.procs, env)
                rows.append((size, amp, single, threads, distributed, efficiency))
                print(f"{size} amp {amp}: {single:.0f} samples/s on one thread", flush=True)
    n = args.procs
    head = f"| size | autocast | 1 process, 1 thread | 1 process, {n} threads | {n} DDP processes | DDP efficiency |"
    print(head)
    print("| --- | --- | --- | --- | --- | --- |")
    for size, amp, single, threads, distributed, eff in rows:
        print(f"| {size} | {amp} | {single:.0f} | {threads:.0f} | {distributed:.0f} | {eff:.2f} |")
    return 0


def _cpu_row(base: list[str], out: Path, procs: int, env: dict[str, str]) -> tuple[float, float, float, float]:
    """One configuration's samples/s: one thread, `procs` threads, `procs` DDP processes; and DDP's efficiency."""
    train = [sys.executable, "-m", "policies.train.cli", *base]
    single = _throughput([*train, "--threads", "1", "--out", str(out / "t1")], out / "t1", env)
    threads = _throughput(
        [*train, "--threads", str(procs), "--out", str(out / "tn")], out / "tn", {**env, "OMP_NUM_THREADS": str(procs)}
    )
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    ddp += ["-m", "policies.train.cli", *base, "--out", str(out / "ddp")]
    distributed = _throughput(ddp, out / "ddp", env)
    return single, threads, distributed, distributed / (procs * single)


def _run_args(args: argparse.Namespace) -> list[str]:
    """pac-train's arguments every measured run shares: the data, the algorithm, the steps, frequent logging."""
    run = ["--dataset", str(args.dataset), "--algo", args.algo, "--steps", str(args.steps)]
    return run + ["--set", "log_every=5", "--set", "holdout=0", "--set", f"checkpoint_every={args.steps}"]


def _gpu(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        print("train_throughput --gpu: torch sees no CUDA device", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batch_size.split(",")]
    common = [*_run_args(args), "--threads", "1"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            for batch in batches:
                run = Path(tmp) / f"{size}_b{batch}"
                cmd = [sys.executable, "-m", "policies.train.cli", *common, "--size", size]
                cmd += ["--batch-size", str(batch), "--out", str(run)]
                rows.append((size, batch, _throughput(cmd, run, dict(os.environ))))
                print(f"{size} batch {batch}: {rows[-1][2]:.0f} samples/s", flush=True)
    print(f"| size | batch | samples/s on {torch.cuda.get_device_name()} (1 process, bf16 autocast) |")
    print("| --- | --- | --- |")
    for size, batch, rate in rows:
        print(f"| {size} | {batch} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

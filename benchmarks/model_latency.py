"""Actor latency per model size and backend, as a ratio to this CPU's FLOP bound, all in one run.

Backends: torch eager, torch.compile, ONNX Runtime fp32 and int8 (dynamic QUInt8), each on the CPU with
as many threads as cores. The FLOP bound of a size is its analytic FLOPs per inference (policies/model/
flops.py, checked against torch's flop counter) divided by this CPU's sgemm peak, measured here with a
2048³ fp32 matmul before and after the model runs (the larger of the two). Backends are measured in
interleaved rounds so that a noisy neighbour hits all of them alike. Budget (DESIGN §5): S with ORT fp32
median ≤ 1.5× its FLOP bound, int8 faster.

    python -m benchmarks.model_latency --sizes S,M,L [--seconds 20] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from policies.export.onnx_export import ActorGraph, export_policy, golden_inputs
from policies.model.config import size_config
from policies.model.flops import actor_flops, parameter_count
from policies.model.perceiver import build_model
from policies.spec import action_spec, observation_spec
from policies.tokenizer.language import InstructionTokenizer
from robots.spec import load_spec
from runtime.inference.loader import load_policy
from runtime.inference.providers import SessionConfig

BACKENDS = ("torch eager", "torch.compile", "ORT fp32", "ORT int8")
ROUNDS = 3


def sgemm_peak(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large fp32 matmul with all cores: the best this CPU does on the work a model is made of."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(times))


def _runners(size: str, robot: str, workdir: Path, backends: list[str]):
    arm = load_spec(robot)
    obs, act = observation_spec(arm), action_spec(arm)
    model = build_model(size_config(size), obs, act, seed=0).eval()
    tokenizer = InstructionTokenizer.default()
    feeds = golden_inputs(model, tokenizer)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    runners = {}
    if "torch eager" in backends:
        actor = ActorGraph(model).eval()

        def eager():
            with torch.inference_mode():
                actor(*args)

        runners["torch eager"] = eager
    if "torch.compile" in backends:
        compiled = torch.compile(ActorGraph(model).eval())

        def comp():
            with torch.inference_mode():
                compiled(*args)

        with torch.inference_mode():
            compiled(*args)  # compile now, outside the timing
        runners["torch.compile"] = comp
    if "ORT fp32" in backends or "ORT int8" in backends:
        path = workdir / f"pac_{size}_{robot}.onnx"
        export_policy(model, path, tokenizer, variants=("fp32", "int8"))
        for backend, file in (("ORT fp32", path), ("ORT int8", path.with_name(f"{path.stem}.int8.onnx"))):
            if backend in backends:
                # The model alone, as measured in RESULTS.md: ORT's threads spin between calls.
                policy = load_policy(file, obs, act, SessionConfig(device="cpu", allow_spinning=True))
                runners[backend] = lambda policy=policy: policy.run(feeds)
    return runners, actor_flops(model.config, obs, act), parameter_count(model.config, obs, act)


def measure(run, seconds: float, min_iters: int) -> list[float]:
    out = []
    deadline = time.perf_counter() + seconds
    while len(out) < min_iters or time.perf_counter() < deadline:
        t = time.perf_counter()
        run()
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="S,M,L")
    parser.add_argument("--robot", default="sawyer")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--seconds", type=float, default=20.0, help="per size and backend, split over rounds")
    parser.add_argument("--min-iters", type=int, default=30, help="per size and backend, at least")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pac-bench"), help="where exports go")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = args.sizes.split(",")
    backends = [b for b in BACKENDS if b in args.backends.split(",")]

    peak_before = sgemm_peak()
    rows = []
    for size in tqdm(sizes, desc="sizes", unit="size"):
        started = time.perf_counter()
        runners, flops, params = _runners(size, args.robot, args.workdir, backends)
        setup_s = time.perf_counter() - started
        for run in runners.values():  # warm-up, outside the timing
            run()
        samples = {b: [] for b in runners}
        for _ in tqdm(range(ROUNDS), desc=f"{size} rounds", leave=False):
            for backend, run in runners.items():
                samples[backend] += measure(run, args.seconds / ROUNDS, max(1, args.min_iters // ROUNDS))
        for backend in runners:
            ms = np.asarray(samples[backend]) * 1e3
            rows.append(
                {
                    "size": size,
                    "parameters": params,
                    "gflop": flops / 1e9,
                    "backend": backend,
                    "n": int(ms.size),
                    "median_ms": float(np.median(ms)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "setup_s": setup_s,
                }
            )
        del runners
        gc.collect()
    peak_after = sgemm_peak()
    peak = max(peak_before, peak_after)
    for r in rows:
        r["bound_ms"] = r["gflop"] * 1e9 / peak * 1e3
        r["median_x_bound"] = r["median_ms"] / r["bound_ms"]
        r["p99_x_bound"] = r["p99_ms"] / r["bound_ms"]

    header = "| size | params | GFLOP | bound ms | backend | n | median ms | p99 ms | median × bound | p99 × bound |"
    lines = [header, "| --- " * 10 + "|"]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['parameters'] / 1e6:.1f}M | {r['gflop']:.2f} | {r['bound_ms']:.1f} | {r['backend']} "
            f"| {r['n']} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['median_x_bound']:.2f} "
            f"| {r['p99_x_bound']:.2f} |"
        )
    print(f"sgemm peak: {peak_before / 1e9:.0f} GFLOP/s before, {peak_after / 1e9:.0f} after; bound uses the larger")
    print("\n".join(lines))
    s_fp32 = [r for r in rows if r["size"] == "S" and r["backend"] == "ORT fp32"]
    if s_fp32:
        verdict = "met" if s_fp32[0]["median_x_bound"] <= 1.5 else "MISSED"
        print(f"budget S ORT fp32 median ≤ 1.5× bound: {s_fp32[0]['median_x_bound']:.2f}× ({verdict})")
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "sgemm_peak_flops": {"before": peak_before, "after": peak_after},
        "rows": rows,
    }
    (args.out / "model_latency.json").write_text(json.dumps(result, indent=1))
    _plot(rows, args.out / "model_latency.png")
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = [
            next((r["median_x_bound"] for r in rows if r["size"] == s and r["backend"] == backend), 0) for s in sizes
        ]
        ax.bar(np.arange(len(sizes)) + i * width, values, width, label=backend)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.5, color="r", lw=0.8, ls="--", label="S budget (1.5×)")
    ax.set_xticks(np.arange(len(sizes)) + width * (len(backends) - 1) / 2, sizes)
    ax.set_ylabel("median latency ÷ FLOP bound")
    ax.set_title("PAC actor latency on this CPU (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

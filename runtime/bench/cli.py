"""`pac-bench`: will this policy hold 20 Hz here, and with which settings? Exit 0 when the serving setting
fits the budget, 1 when it does not (a deployment script gates on it), 2 when the file cannot be served.

    pac-bench --policy pac_S.onnx                                  # every backend, threads and spinning swept
    pac-bench --policy pac_S.onnx --backends ort,ort-int8 --e2e    # and the real loop against the sim
    pac-bench --policy pac_L.onnx --backends tensorrt,cuda,torch-cuda --budget-ms 10 --json out/L.json

The serving setting is the first backend asked for at pac-run's defaults (all cores, no spinning, or
--threads/--spin): what `pac-run --policy FILE` would run. `ort-int8` serves FILE's int8 variant.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
from pathlib import Path

import onnxruntime as ort
from tqdm import tqdm

from runtime.bench.backends import (
    BACKENDS,
    DEFAULT_BACKENDS,
    GPU_BACKENDS,
    Opened,
    PolicyFile,
    Setting,
    Unavailable,
    open_setting,
    settings_for,
)
from runtime.bench.e2e import run_e2e
from runtime.bench.inference import RT_REST_S, Plan, interleaved, paced
from runtime.bench.probes import MachinePeaks, gpu_peaks, machine_peaks
from runtime.bench.report import Measured, Report, measured_from, plot
from runtime.bench.verdict import ASSUMED_OVERHEAD_MS, Budget, Row, judge
from runtime.config import ConfigError, load_config
from runtime.inference.loader import PolicyRefused
from runtime.scheduling import SchedulingRefused, set_realtime_priority

EXIT_PASS, EXIT_FAIL, EXIT_REFUSED = 0, 1, 2
SERVED_BY_PAC_RUN = {"ort": "cpu", "ort-int8": "cpu", "cuda": "cuda", "tensorrt": "tensorrt"}  # backend → --device


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pac-bench", description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=Path, required=True, help="exported actor (.onnx)")
    p.add_argument(
        "--backends",
        default=",".join(DEFAULT_BACKENDS),
        help=f"comma-separated, the first is the serving one: {', '.join(BACKENDS)}",
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds of timed calls, all settings together")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds the duration is split into")
    p.add_argument("--min-calls", type=int, default=30, help="per setting, at least")
    p.add_argument(
        "--paced-calls",
        type=int,
        default=40,
        help="per setting, calls one per control period as the loop makes them (the verdict judges their p99); 0: none",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads: this count only (no sweep)")
    p.add_argument(
        "--spin", action="store_true", help="the serving setting spins ORT's threads (pac-run --cpu-spin on)"
    )
    p.add_argument("--no-sweep", action="store_true", help="CPU backends at pac-run's defaults only")
    p.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        metavar="N",
        help="time (and serve, with --e2e) at SCHED_FIFO priority N, as pac-run --rt-priority N would run",
    )
    p.add_argument("--e2e", action="store_true", help="also run the real loop against the sim (cameras on)")
    p.add_argument("--robot", default=None, help="with --e2e: the arm (default: the policy's)")
    p.add_argument("--e2e-duration", type=float, default=30.0, help="seconds of the end-to-end run")
    p.add_argument("--budget-ms", type=float, default=None, help="per tick (default: the robot's control period)")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--plot", type=Path, default=None, help="write the latency CDF/histogram PNG here")
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="end-to-end logs and summaries")
    p.add_argument("--no-progress", action="store_true")
    return p


def _open_all(settings: list[Setting], policy: PolicyFile, progress: bool) -> tuple[list[Opened], dict[str, str]]:
    opened, unavailable = [], {}
    for setting in tqdm(settings, desc="opening", unit="setting", disable=not progress):
        if setting.backend in unavailable:
            continue  # the backend itself cannot run here: said once
        try:
            opened.append(open_setting(setting, policy))
        except Unavailable as exc:
            unavailable[setting.backend] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a backend that fails to open is reported, the others still run
            unavailable[setting.label] = f"failed to open: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return opened, unavailable


def _serving(args: argparse.Namespace, backends: list[str]) -> Setting:
    backend = backends[0]
    if backend in GPU_BACKENDS:
        return Setting(backend)
    return Setting(backend, args.threads or os.cpu_count() or 1, args.spin and backend.startswith("ort"))


def _row(m: Measured, policy: PolicyFile, rt_priority: int = 0) -> Row:
    """The verdict's view of a measured setting, with the pac-run flags that serve it."""
    if m.backend in ("cuda", "tensorrt"):
        flags = f"--policy {policy.path.name} --device {SERVED_BY_PAC_RUN[m.backend]}"
    elif m.backend in ("ort", "ort-int8"):
        path = policy.int8_path() if m.backend == "ort-int8" else policy.path
        flags = f"--policy {path.name} --device cpu --threads {m.threads} --cpu-spin {'on' if m.spinning else 'off'}"
    else:
        flags = ""
    if flags and rt_priority:
        flags += f" --rt-priority {rt_priority}"
    return Row(m.label, m.variant, m.threads, m.spinning, m.loop_p99_ms, servable=bool(flags), flags=flags)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := [b for b in backends if b not in BACKENDS]:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        policy = PolicyFile.open(args.policy)
        robot = args.robot or policy.metadata.action.robot
        period_ms = load_config(None, robot).link.period_s * 1e3
    except (PolicyRefused, ConfigError) as exc:
        print(f"pac-bench: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.rt_priority:  # before any session exists: their threads inherit it, as in pac-run
        try:
            set_realtime_priority(args.rt_priority)
        except (SchedulingRefused, ValueError) as exc:
            print(f"pac-bench: refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    progress = not args.no_progress
    cpus = os.cpu_count() or 1
    serving = _serving(args, backends)
    settings = settings_for(backends, cpus, sweep=not args.no_sweep and args.threads is None, threads=args.threads)
    if serving not in settings:
        settings.insert(0, serving)

    before = machine_peaks()
    opened, unavailable = _open_all(settings, policy, progress)
    rest = RT_REST_S if args.rt_priority else 0.0  # slices of back-to-back calls must not hit RT throttling
    samples = interleaved(opened, Plan(args.duration, args.rounds, args.min_calls, rest), progress=progress)
    paced_samples = paced(opened, round(period_ms * 1e6), args.paced_calls, progress=progress)
    after = machine_peaks()
    peaks = MachinePeaks(
        max(before.matmul_flops, after.matmul_flops), max(before.memory_bytes_per_s, after.memory_bytes_per_s), cpus
    )
    on_gpu = any(o.setting.backend in GPU_BACKENDS for o in opened)
    gpu = gpu_peaks() if on_gpu else None  # GPU settings are judged against the GPU's bounds, not the CPU's

    def bounds(o: Opened) -> MachinePeaks:
        return gpu if gpu is not None and o.setting.backend in GPU_BACKENDS else peaks

    measured = [
        measured_from(o, samples[o.setting.label], policy.flops, bounds(o), paced_samples.get(o.setting.label))
        for o in opened
    ]
    for o in opened:
        o.close()
    del opened
    gc.collect()

    e2e = None
    if args.e2e:
        served = next((m for m in measured if m.label == serving.label), None)
        if served is None or served.backend not in SERVED_BY_PAC_RUN:
            print(f"pac-bench: no end-to-end run: pac-run does not serve {serving.label} here", file=sys.stderr)
        else:
            e2e = run_e2e(
                policy.int8_path() if serving.backend == "ort-int8" else policy.path,
                robot,
                args.e2e_duration,
                args.out,
                threads=serving.threads,
                spinning=serving.spinning,
                device=SERVED_BY_PAC_RUN[serving.backend],
                rt_priority=args.rt_priority,
            )

    overhead = e2e.overhead_p99_ms if e2e is not None else ASSUMED_OVERHEAD_MS
    budget = Budget(args.budget_ms if args.budget_ms is not None else period_ms, overhead, e2e is not None)
    rows = {m.label: _row(m, policy, args.rt_priority) for m in measured}
    verdict = judge(list(rows.values()), rows.get(serving.label), budget)
    meta = policy.metadata
    report = Report(
        policy=str(args.policy),
        model={"size": meta.model.get("size"), "parameters": meta.model.get("parameters", 0), "flops": policy.flops},
        machine={
            "cpus": cpus,
            "platform": platform.platform(),
            "processor": platform.processor(),
            "onnxruntime": ort.__version__,
            "load_average": os.getloadavg(),
        },
        peaks=peaks,
        gpu_peaks=gpu,
        measured=measured,
        unavailable=unavailable,
        budget=budget,
        verdict=verdict,
        e2e=e2e,
    )
    print()
    print(report.table())
    if not budget.overhead_measured:
        print(f"(loop overhead assumed {ASSUMED_OVERHEAD_MS:g} ms: --e2e measures it)")
    if args.json:
        report.write_json(args.json)
        print(f"report: {args.json}")
    if args.plot:
        plot(report, args.plot)
        print(f"plot: {args.plot}")
    return EXIT_PASS if verdict.passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())

"""pac-bench's output: the summary table printed at the end, the JSON report, and the latency PNG."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bench.e2e import EndToEnd
from runtime.bench.probes import MachinePeaks
from runtime.bench.stats import LatencyStats, latency_stats
from runtime.bench.verdict import Budget, Verdict


@dataclass
class Measured:
    """One setting's result: its stats and its bounds on this machine."""

    label: str
    backend: str
    threads: int
    spinning: bool
    provider: str
    variant: str
    stats: LatencyStats
    flop_bound_ms: float
    weight_bound_ms: float
    open_s: float
    first_call_ms: float
    golden_error: float
    note: str = ""
    samples_ms: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    paced: LatencyStats | None = None  # one call per control period, as the loop makes them

    @property
    def loop_p99_ms(self) -> float:
        """The p99 the loop will see: of the paced calls when they were timed, else back to back."""
        return self.paced.p99_ms if self.paced is not None and self.paced.n else self.stats.p99_ms

    @property
    def x_flop_bound(self) -> float:
        return self.stats.p50_ms / self.flop_bound_ms

    @property
    def x_weight_bound(self) -> float:
        return self.stats.p50_ms / self.weight_bound_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "backend": self.backend,
            "threads": self.threads,
            "spinning": self.spinning,
            "provider": self.provider,
            "variant": self.variant,
            **self.stats.as_dict(),
            "flop_bound_ms": self.flop_bound_ms,
            "median_x_flop_bound": self.x_flop_bound,
            "weight_bound_ms": self.weight_bound_ms,
            "median_x_weight_bound": self.x_weight_bound,
            "warmup": {"open_s": self.open_s, "first_call_ms": self.first_call_ms},
            "golden_error": self.golden_error,
            "note": self.note,
            "paced": self.paced.as_dict() if self.paced is not None else None,
        }


@dataclass
class Report:
    policy: str
    model: dict[str, Any]  # size, parameters, flops
    machine: dict[str, Any]
    peaks: MachinePeaks
    measured: list[Measured]
    unavailable: dict[str, str]  # label → reason
    budget: Budget
    verdict: Verdict
    e2e: EndToEnd | None = None
    gpu_peaks: MachinePeaks | None = None  # probed when a GPU setting ran: its rows' bounds

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "model": self.model,
            "machine": self.machine,
            "peaks": self.peaks.as_dict(),
            "gpu_peaks": self.gpu_peaks.as_dict() if self.gpu_peaks is not None else None,
            "settings": [m.as_dict() for m in self.measured],
            "unavailable": self.unavailable,
            "budget": {**self.budget.__dict__, "inference_ms": self.budget.inference_ms},
            "verdict": {
                "passed": self.verdict.passed,
                "serving": self.verdict.serving.label if self.verdict.serving else None,
                "recommended": self.verdict.recommended.label if self.verdict.recommended else None,
                "message": self.verdict.message,
            },
            "e2e": self.e2e.as_dict() if self.e2e is not None else None,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1, default=_jsonable) + "\n")

    def table(self) -> str:
        p = self.peaks
        m = self.model
        lines = [
            f"pac-bench: {Path(self.policy).name} ({m.get('size', '?')}, {m.get('parameters', 0) / 1e6:.1f}M params, "
            f"{m.get('flops', 0) / 1e9:.2f} GFLOP per call) on {self.machine['cpus']} CPUs",
            f"  probes: matmul peak {p.matmul_flops / 1e9:.0f} GFLOP/s (all cores), memory "
            f"{p.memory_bytes_per_s / 1e9:.1f} GB/s (copy, read + write)",
            *(
                [
                    f"  GPU probes ({g.device}): fp16 matmul peak {g.matmul_flops / 1e12:.0f} TFLOP/s, memory "
                    f"{g.memory_bytes_per_s / 1e12:.2f} TB/s (the bounds of the GPU rows)"
                ]
                if (g := self.gpu_peaks) is not None
                else []
            ),
            "",
            "| setting | provider | variant | n | p50 ms | p90 ms | p99 ms | max ms | jitter ms | p50 ÷ FLOP bound "
            "| p50 ÷ weight bound | paced p50 / p99 ms | open s | first call ms |",
            "| --- " * 14 + "|",
        ]
        for r in self.measured:
            s, q = r.stats, r.paced
            paced = f"{q.p50_ms:.2f} / {q.p99_ms:.2f}" if q is not None and q.n else "–"
            lines.append(
                f"| {r.label} | {r.provider} | {r.variant} | {s.n} | {s.p50_ms:.2f} | {s.p90_ms:.2f} | {s.p99_ms:.2f} "
                f"| {s.max_ms:.2f} | {s.jitter_ms:.2f} | {r.x_flop_bound:.2f} ({r.flop_bound_ms:.2f} ms) "
                f"| {r.x_weight_bound:.2f} ({r.weight_bound_ms:.2f} ms) | {paced} | {r.open_s:.2f} "
                f"| {r.first_call_ms:.1f} |"
            )
        if any(r.paced is not None and r.paced.n for r in self.measured):
            lines.append("(paced: one call per control period, as the loop makes them; the verdict judges their p99)")
        for label, reason in self.unavailable.items():
            lines.append(f"| {label} | unavailable: {reason} |" + " |" * 12)
        fastest = {}
        for r in sorted(self.measured, key=lambda r: r.stats.p50_ms):
            fastest.setdefault(r.backend, r)
        if fastest:
            best = ", ".join(f"{r.label} ({r.stats.p50_ms:.2f} ms)" for r in fastest.values())
            lines += ["", f"fastest setting per backend (p50): {best}"]
        if self.e2e is not None:
            lines += ["", *e2e_table(self.e2e)]
        lines += ["", self.verdict.message]
        return "\n".join(lines)


def e2e_table(e: EndToEnd) -> list[str]:
    base = e.decode_baseline
    lines = [
        f"end to end: {Path(e.policy).name} on {e.provider}"
        + (f" at SCHED_FIFO {e.rt_priority}" if e.rt_priority else "")
        + f", {e.duration_s:g} s real time, {e.ticks} ticks, "
        f"{e.overruns} overruns, pac-run exit code {e.exit_code}",
        "| stage | p50 ms | p99 ms | n |",
        "| --- | --- | --- | --- |",
    ]
    for stage, v in e.stages_ms.items():
        if v["n"]:
            lines.append(f"| {stage} | {v['p50']:.3f} | {v['p99']:.3f} | {v['n']} |")
    over = e.stages_ms["overhead"]
    lines += [
        f"| obs age at dispatch | {e.obs_age_ms['p50']:.2f} | {e.obs_age_ms['p99']:.2f} | {e.obs_age_ms['n']} |",
        f"| baseline: JPEG decode of one tick's frames | {base.p50_ms:.3f} | {base.p99_ms:.3f} | {base.n} |",
        f"| overhead ÷ baseline | {over['p50'] / base.p50_ms:.1f}× | {over['p99'] / base.p99_ms:.1f}× | |",
        *_frame_lag_row(e.frame_lag_ms),
        *_overhead_tail_rows(e.overhead_tail),
        "",
        "| process | CPU s | CPU % of a core | peak RSS MB |",
        "| --- | --- | --- | --- |",
        f"| pac-run | {e.pac_run.cpu_s:.1f} | {e.pac_run.cpu_percent:.0f} | {e.pac_run.max_rss_mb:.0f} |",
        f"| pac-sim | {e.pac_sim.cpu_s:.1f} | {e.pac_sim.cpu_percent:.0f} | {e.pac_sim.max_rss_mb:.0f} |",
        "",
        "| loop budget | measured | met |",
        "| --- | --- | --- |",
        *(f"| {b} | {m} | {'yes' if ok else 'NO'} |" for b, m, ok in e.budgets()),
    ]
    return lines


def _overhead_tail_rows(tail: dict[str, float]) -> list[str]:
    """Where the overhead goes, in the median tick's company and in its slowest ticks' (the p99's side)."""
    if not tail:
        return []
    parts = [k for k in tail if k != "ticks" and not k.endswith("_all")]
    return [
        "",
        f"| overhead's parts, mean ms | all ticks | slowest {tail['ticks']:.0f} ticks by overhead |",
        "| --- | --- | --- |",
        *(f"| {p} | {tail[p + '_all']:.3f} | {tail[p]:.3f} |" for p in parts),
        f"| total | {sum(tail[p + '_all'] for p in parts):.3f} | {sum(tail[p] for p in parts):.3f} |",
    ]


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "as_dict"):
        return x.as_dict()
    if hasattr(x, "__dict__"):
        return x.__dict__
    return str(x)


def plot(report: Report, path: Path) -> None:
    """CDF of every setting, histogram of the serving and recommended ones, the budget marked; with an
    end-to-end run, its stages' p50 and p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def log_ms(ax, label: str) -> None:  # plain numbers at 1, 2, 5 × 10^k, no crowded labels between them
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)

    panels = 3 if report.e2e is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    limit = report.budget.inference_ms
    ax = axes[0]
    for r in report.measured:
        x = np.sort(r.samples_ms)
        ax.plot(x, np.arange(1, x.size + 1) / x.size, label=r.label, lw=1.2)
    ax.axvline(limit, color="r", ls="--", lw=1, label=f"inference budget {limit:.1f} ms")
    log_ms(ax, "latency per call (ms, log)")
    ax.set_ylabel("fraction of calls ≤ x")
    ax.set_title("CDF per setting")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[1]
    shown = [
        r
        for r in report.measured
        if r.label in {v.label for v in (report.verdict.serving, report.verdict.recommended) if v}
    ]
    if shown:
        low = min(float(r.samples_ms.min()) for r in shown)
        high = max(float(r.samples_ms.max()) for r in shown)
        bins = np.geomspace(low, max(high, low * 1.01), 60)
        for r in shown:
            ax.hist(r.samples_ms, bins=bins, alpha=0.6, label=f"{r.label} (p99 {r.stats.p99_ms:.2f} ms)")
            ax.axvline(r.stats.p99_ms, color="k", ls=":", lw=0.8)
    ax.axvline(limit, color="r", ls="--", lw=1, label="inference budget")
    log_ms(ax, "latency per call (ms, log; dotted: p99)")
    ax.set_ylabel("calls")
    ax.set_title("serving and recommended settings")
    ax.legend(fontsize=8)
    if report.e2e is not None:
        ax = axes[2]
        stages = [s for s, v in report.e2e.stages_ms.items() if v["n"] and s != "tick"]
        y = np.arange(len(stages))
        ax.barh(y - 0.2, [report.e2e.stages_ms[s]["p50"] for s in stages], 0.4, label="p50")
        ax.barh(y + 0.2, [report.e2e.stages_ms[s]["p99"] for s in stages], 0.4, label="p99")
        ax.set_yticks(y, stages)
        log_ms(ax, "ms per tick (log)")
        ax.set_title("end to end, per stage")
        ax.legend(fontsize=8)
    # the verdict whole, wrapped to the figure's width: its recommendation (a pac-run command line) is at the end
    title = textwrap.wrap(f"pac-bench: {Path(report.policy).name} — {report.verdict.message}", width=45 * panels)
    fig.suptitle("\n".join(title), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measured_from(
    opened, samples_ms: np.ndarray, flops: int, peaks: MachinePeaks, paced_ms: np.ndarray | None = None
) -> Measured:
    """A Measured row for an opened setting and its samples (and paced samples), with its bounds on this machine."""
    s = opened.setting
    return Measured(
        label=s.label,
        backend=s.backend,
        threads=s.threads,
        spinning=s.spinning,
        provider=opened.provider,
        variant=opened.variant,
        stats=latency_stats(samples_ms),
        flop_bound_ms=flops / peaks.matmul_flops * 1e3,
        weight_bound_ms=opened.weight_bytes / peaks.memory_bytes_per_s * 1e3,
        open_s=opened.open_s,
        first_call_ms=opened.first_call_ms,
        golden_error=opened.golden_error,
        note=opened.note,
        samples_ms=samples_ms,
        paced=latency_stats(paced_ms) if paced_ms is not None else None,
    )


def _frame_lag_row(lag: dict[str, float]) -> list[str]:
    """The frames' lag behind capture as the loop learned it, and where it put the tick (real time only)."""
    if "p50" not in lag:
        return []
    return [
        f"| frames in after capture (p50, p95 of the last {lag['n']}; ticks at +{lag['tick_offset']:.2f} ms) | "
        f"{lag['p50']:.2f} | {lag['p95']:.2f} | {lag['n']} |"
    ]

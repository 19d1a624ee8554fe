"""Pass or fail against a budget, and which setting to use instead: pure functions over measured rows.

A setting passes when its inference p99 (of calls paced one per control period, as the loop makes them, when
those were timed) plus the loop's own overhead fits the budget (default: the control period). The loop
overhead is the end-to-end run's p99 when one ran, else `ASSUMED_OVERHEAD_MS` (the budget the loop is held
to), said as such. The recommendation is the most conservative setting that passes: full precision before
reduced, no spinning threads before spinning ones (they steal the CPU the loop and driver need), fewer
threads before more, and then the lowest p99. So a looser budget recommends a gentler setting, and a tighter
one the fastest that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

ASSUMED_OVERHEAD_MS = 1.0  # issue 13's loop-overhead budget, used when no end-to-end run measured it
PRECISION_RANK = {"fp32": 0, "fp16": 1, "fp32→fp16": 1, "int8": 2}


@dataclass(frozen=True)
class Row:
    """One measured setting, as the verdict sees it."""

    label: str
    variant: str
    threads: int
    spinning: bool
    p99_ms: float  # as the loop will see it: paced when timed so
    servable: bool = True  # pac-run can serve it (ORT); torch rows are references, never recommended
    flags: str = ""  # how to run it: pac-run's flags for this setting


@dataclass(frozen=True)
class Budget:
    total_ms: float  # one control period by default
    overhead_ms: float  # the loop's own work per tick (p99)
    overhead_measured: bool  # from an end-to-end run, not assumed

    @property
    def inference_ms(self) -> float:
        """What inference may take at p99 for the tick to fit."""
        return self.total_ms - self.overhead_ms


@dataclass(frozen=True)
class Verdict:
    serving: Row | None  # the setting a deployment runs (the first backend asked for, at pac-run's defaults)
    passed: bool
    recommended: Row | None  # the most conservative setting that passes; None when none does
    message: str


def fits(row: Row, budget: Budget) -> bool:
    return row.p99_ms <= budget.inference_ms


def preference(row: Row) -> tuple:
    return (PRECISION_RANK.get(row.variant, 3), row.spinning, row.threads, row.p99_ms)


def recommend(rows: list[Row], budget: Budget) -> Row | None:
    passing = [r for r in rows if r.servable and fits(r, budget)]
    return min(passing, key=preference) if passing else None


def judge(rows: list[Row], serving: Row | None, budget: Budget) -> Verdict:
    """The verdict on `serving` and the recommendation among `rows` (available settings only)."""
    best = recommend(rows, budget)
    limit = f"{budget.inference_ms:.2f} ms (budget {budget.total_ms:g} ms − loop overhead {budget.overhead_ms:.2f} ms)"
    if serving is None:
        return Verdict(None, False, best, "the serving setting could not run here")
    passed = fits(serving, budget)
    verdict = f"{serving.label}: p99 {serving.p99_ms:.2f} ms {'≤' if passed else '>'} {limit}"
    if best is None:
        advice = "no measured setting that pac-run serves fits: a smaller model, a GPU, or a longer period"
    elif best == serving:
        advice = f"recommended: {best.label} (the serving setting; pac-run {best.flags})"
    else:
        advice = f"recommended: {best.label} ({best.variant}, p99 {best.p99_ms:.2f} ms; pac-run {best.flags})"
    return Verdict(serving, passed, best, f"{'PASS' if passed else 'FAIL'} {verdict}; {advice}")

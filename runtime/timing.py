"""Pacing by absolute deadlines and per-stage timing of each tick (lerobot's cycle timer, done our way).

`Pacer` wakes the loop at t0 + k·period on a monotonic clock: lateness never accumulates. A deadline the
loop starts more than `tolerance` after is an overrun; whole periods missed are overruns too, counted and
skipped rather than raced through. The clock
is injected (runtime/clock.py) so tests run on a virtual one. `StageTimer` times the named stages of each tick and
keeps every sample in preallocated arrays, so the summary has exact p50/p99 and the loop allocates nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from runtime.clock import MONOTONIC, Clock


@dataclass
class Pacer:
    period_ns: int
    clock: Clock = MONOTONIC
    idle: Callable[[float], None] | None = None  # how to spend the wait (default: the clock's sleep)
    next_ns: int | None = None
    tolerance_ns: int | None = None  # default: a fifth of the period (sleep wake-up jitter is far below)
    overruns: int = 0
    ticks: int = 0
    late_ms: list[float] = field(default_factory=list)  # how late each overrun started (first 100)

    def align(self, t_ns: int) -> None:
        """Put the tick phase at `t_ns` (mod period).

        The next tick is the first such instant from now, and (when called during a tick) no earlier than
        half a period before the tick already scheduled: re-phasing never starts a tick the current tick's
        own work would make late.
        """
        earliest = self.clock.now_ns()
        if self.next_ns is not None:
            earliest = max(earliest, self.next_ns - self.period_ns // 2)
        k = -(-(earliest - t_ns) // self.period_ns)  # ceil
        self.next_ns = t_ns + k * self.period_ns

    def wait(self) -> int:
        """Sleep until the next deadline; returns it. Late by a period or more: count overruns, re-phase."""
        now = self.clock.now_ns()
        if self.next_ns is None:
            self.next_ns = now
        late = now - self.next_ns
        tolerance = self.period_ns // 5 if self.tolerance_ns is None else self.tolerance_ns
        if late > tolerance:
            missed = late // self.period_ns  # deadlines wholly passed: run now as the latest one, late
            self.overruns += int(missed) + 1
            if len(self.late_ms) < 100:
                self.late_ms.append(late / 1e6)
            self.next_ns += missed * self.period_ns
        elif late < 0:
            (self.idle or self.clock.sleep)(-late / 1e9)
        deadline = self.next_ns
        self.next_ns += self.period_ns
        self.ticks += 1
        return deadline


class StageTimer:
    """Durations of named stages per tick, in ms, for up to `capacity` ticks (then a ring)."""

    def __init__(self, stages: tuple[str, ...], capacity: int = 1 << 16, clock: Clock = MONOTONIC):
        self.stages = stages
        self.clock = clock
        self.capacity = capacity
        self._data = {s: np.full(capacity, np.nan) for s in stages}
        self.count = 0

    @contextmanager
    def section(self, stage: str) -> Iterator[None]:
        """Time the block under `stage`; a stage entered several times in one tick adds up."""
        start = self.clock.now_ns()
        try:
            yield
        finally:
            self.add(stage, (self.clock.now_ns() - start) / 1e6)

    def record(self, stage: str, ms: float) -> None:
        self._data[stage][self.count % self.capacity] = ms

    def add(self, stage: str, ms: float) -> None:
        """Accumulate into this tick's value of `stage` (a stage that runs several times per tick)."""
        i = self.count % self.capacity
        current = self._data[stage][i]
        self._data[stage][i] = ms if np.isnan(current) else current + ms

    def next_tick(self) -> None:
        self.count += 1
        if self.count % self.capacity == 0:
            for arr in self._data.values():
                arr.fill(np.nan)

    def last(self, stage: str) -> float:
        return float(self._data[stage][self.count % self.capacity])

    def samples(self, stage: str) -> np.ndarray:
        arr = self._data[stage][: min(self.count, self.capacity)]
        return arr[np.isfinite(arr)]

    def percentiles(self, stage: str) -> tuple[float, float, int]:
        """(p50, p99, n) in ms; NaNs when the stage never ran."""
        s = self.samples(stage)
        if s.size == 0:
            return float("nan"), float("nan"), 0
        return float(np.percentile(s, 50)), float(np.percentile(s, 99)), int(s.size)

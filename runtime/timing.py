"""Pacing by absolute deadlines and per-stage timing of each tick (lerobot's cycle timer, done our way).

`Pacer` wakes the loop at t0 + k·period on a monotonic clock: lateness never accumulates. A deadline the
loop starts more than `tolerance` after is an overrun; whole periods missed are overruns too, counted and
skipped rather than raced through. The clock
is injected (runtime/clock.py) so tests run on a virtual one. `StageTimer` times the named stages of each tick and
keeps every sample in preallocated arrays, so the summary has exact p50/p99 and the loop allocates nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime.clock import MONOTONIC, Clock

NAN = float("nan")


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


@dataclass
class ArrivalPhase:
    """How long after capture a period's frames are in and decoded, learned from what the link measures.

    A real-time tick that starts before its frames arrive waits for them and decodes them inside the tick;
    one that starts long after computes on older frames than it needs to. The lag from capture to arrival
    depends on the cell (exposure, rendering, encoding, transport, decoding), so it is measured rather than
    configured: `offset_ms` is a high quantile of the recent lags plus a margin, never below `floor_ms`,
    and moves only when the quantile moved by more than `hysteresis_ms` (re-phasing is not free).
    """

    floor_ms: float
    ceiling_ms: float
    quantile: float = 0.95
    margin_ms: float = 0.5
    window: int = 100  # lags kept (5 s at 20 Hz)
    min_samples: int = 10  # below this, the floor
    hysteresis_ms: float = 1.0
    lags: deque = field(default_factory=deque)
    offset_ms: float = NAN

    def __post_init__(self) -> None:
        self.lags = deque(self.lags, maxlen=self.window)
        if self.offset_ms != self.offset_ms:  # NaN: not set
            self.offset_ms = self.floor_ms

    def record(self, lag_ms: float) -> None:
        self.lags.append(lag_ms)

    def target_ms(self) -> float:
        """Where the phase should be now: the lag quantile plus margin, within [floor, ceiling]."""
        if len(self.lags) < self.min_samples:
            return self.floor_ms
        lag = float(np.quantile(np.fromiter(self.lags, float, len(self.lags)), self.quantile))
        return min(self.ceiling_ms, max(self.floor_ms, lag + self.margin_ms))

    def update(self) -> bool:
        """Move `offset_ms` to the target when it is more than the hysteresis away; True when it moved."""
        target = self.target_ms()
        if abs(target - self.offset_ms) <= self.hysteresis_ms:
            return False
        self.offset_ms = target
        return True


class StageTimer:
    """Durations of named stages per tick, in ms, for up to `capacity` ticks (then a ring).

    The tick under way is a list of Python floats, written into the arrays once, by `next_tick`: a stage timed
    several times a tick costs a float addition, not numpy scalar indexing (the loop's overhead, issue 13).
    """

    def __init__(self, stages: tuple[str, ...], capacity: int = 1 << 16, clock: Clock = MONOTONIC):
        self.stages = stages
        self.clock = clock
        self.capacity = capacity
        self._table = np.full((len(stages), capacity), np.nan)
        self._data = dict(zip(stages, self._table, strict=True))  # stage → its row of the table (a view)
        self._index = {s: i for i, s in enumerate(stages)}
        self._tick = [NAN] * len(stages)  # this tick's values, NaN for a stage that did not run
        self.count = 0

    def section(self, stage: str) -> _Section:
        """Time the block under `stage`; a stage entered several times in one tick adds up."""
        return _Section(self, stage)

    def record(self, stage: str, ms: float) -> None:
        self._tick[self._index[stage]] = ms

    def add(self, stage: str, ms: float) -> None:
        """Accumulate into this tick's value of `stage` (a stage that runs several times per tick)."""
        i = self._index[stage]
        current = self._tick[i]
        self._tick[i] = ms if current != current else current + ms  # current != current: NaN, not yet run

    def next_tick(self) -> None:
        self._table[:, self.count % self.capacity] = self._tick
        self._tick = [NAN] * len(self.stages)
        self.count += 1
        if self.count % self.capacity == 0:
            self._table.fill(np.nan)

    def last(self, stage: str) -> float:
        return float(self._tick[self._index[stage]])

    def samples(self, stage: str) -> np.ndarray:
        self._table[:, self.count % self.capacity] = self._tick  # the tick under way counts, as it always did
        arr = self._data[stage][: min(self.count, self.capacity)]
        return arr[np.isfinite(arr)]

    def percentiles(self, stage: str) -> tuple[float, float, int]:
        """(p50, p99, n) in ms; NaNs when the stage never ran."""
        s = self.samples(stage)
        if s.size == 0:
            return float("nan"), float("nan"), 0
        return float(np.percentile(s, 50)), float(np.percentile(s, 99)), int(s.size)


class _Section:
    """`StageTimer.section`'s context manager: a plain class, a third of a generator-based one's cost."""

    __slots__ = ("timer", "stage", "start")

    def __init__(self, timer: StageTimer, stage: str):
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.start = self.timer.clock.now_ns()

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.stage, (self.timer.clock.now_ns() - self.start) / 1e6)

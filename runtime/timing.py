"""Pacing by absolute deadlines and per-stage timing of each tick (lerobot's cycle timer, done our way).

`Pacer` wakes the loop at t0 + k·period on a monotonic clock: lateness never accumulates. A deadline the
loop starts more than `tolerance` after is an overrun; whole periods missed are overruns too, counted and
skipped rather than raced through. The clock
is injected (runtime/clock.py) so tests run on a virtual one. `StageTimer` times the named stages of each tick and
keeps every sample in preallocated arrays, so the summary has exact p50/p99 and the loop allocates nothing.
"""

from __future__ import annotations

import itertools
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


class ArrivalPhase:
    """Where in the period a real-time tick should start: just after a period's frames are in and decoded.

    A tick that starts before its frames arrive waits for them and decodes them inside the tick; one that starts
    long after computes on older frames than it needs to. Both the cameras' capture phase and how long their
    frames take to arrive (exposure, rendering, encoding, transport, decoding) depend on the cell, so they are
    learned from what the link measures, per complete set of frames: the capture phase is the median of the
    recent captures on the period grid (a camera's own clock), and the tick goes `offset_ms` after it, a high
    quantile of the arrivals' lag behind that phase plus a margin. The quantile covers the capture jitter and the
    transport together; it is clamped to [floor_ms, ceiling_ms]. Captures that leave the phase by more than
    `shift_ms`, `shift_samples` sets running, mean the driver re-phased: the estimate restarts from them.
    """

    def __init__(
        self,
        period_ns: int,
        floor_ms: float,
        ceiling_ms: float,
        *,
        quantile: float = 0.99,
        margin_ms: float = 0.5,
        window: int = 200,  # sets kept (10 s at 20 Hz)
        min_samples: int = 20,  # arrivals needed before the quantile is trusted (before: the floor)
        hysteresis_ms: float = 1.0,  # the tick moves earlier only when its phase did by more than this
        shift_ms: float = 5.0,
        shift_samples: int = 5,
    ):
        self.period_ns, self.floor_ms, self.ceiling_ms = period_ns, floor_ms, ceiling_ms
        self.quantile, self.margin_ms, self.min_samples = quantile, margin_ms, min_samples
        self.hysteresis_ms, self.shift_ms, self.shift_samples = hysteresis_ms, shift_ms, shift_samples
        self._origin: int | None = None  # the first capture: phases are kept relative to it, in ns
        # per set: (capture phase, arrival phase or None), unwrapped onto the grid period nearest the current phase
        self._sets: deque[tuple[int, int | None]] = deque(maxlen=window)
        self._capture_phase = 0  # median of the kept capture phases
        self.offset_ms = floor_ms  # the tick's delay after the capture phase
        self.phase_ns: int | None = None  # ticks at phase_ns + k·period (set by update)

    def record(self, capture_ns: int, arrival_ns: int | None) -> None:
        """A complete set of frames, newest capture `capture_ns`, all in and decoded at `arrival_ns` (None: the
        set queued while the loop was busy, so only its capture time is known)."""
        if self._origin is None:
            self._origin = capture_ns
        c = capture_ns - self._origin
        c -= round((c - self._capture_phase) / self.period_ns) * self.period_ns  # the grid point nearest the phase
        self._sets.append((c, None if arrival_ns is None else c + arrival_ns - capture_ns))
        recent = list(itertools.islice(reversed(self._sets), self.shift_samples))[::-1]  # the last few, in order
        off = [x - self._capture_phase for x, _ in recent]
        limit = self.shift_ms * 1e6
        if len(recent) == self.shift_samples and (all(d > limit for d in off) or all(d < -limit for d in off)):
            self._sets = deque(recent, maxlen=self._sets.maxlen)  # the driver re-phased: start again from now
            self._capture_phase = int(np.median([x for x, _ in recent]))

    def lags_ms(self) -> np.ndarray:
        """The kept arrivals' lag behind the capture phase, ms."""
        arrivals = [a for _, a in self._sets if a is not None]
        return (np.asarray(arrivals, dtype=np.int64) - self._capture_phase) / 1e6

    def update(self) -> bool:
        """Re-estimate (between ticks: this costs a median and a quantile); True when the tick phase moved later,
        or earlier by more than the hysteresis, or was set for the first time."""
        if self._origin is None:
            return False
        self._capture_phase = int(np.median([x for x, _ in self._sets]))
        lags = self.lags_ms()
        offset = self.floor_ms
        if lags.size >= self.min_samples:
            offset = min(self.ceiling_ms, max(self.floor_ms, float(np.quantile(lags, self.quantile)) + self.margin_ms))
        phase = self._origin + self._capture_phase + round(offset * 1e6)
        if self.phase_ns is not None:
            moved = (phase - self.phase_ns + self.period_ns // 2) % self.period_ns - self.period_ns // 2
            if -self.hysteresis_ms * 1e6 <= moved <= 0:  # a little earlier is not worth a re-phase; any later is:
                return False  # frames would be waited for
        self.offset_ms, self.phase_ns = offset, phase
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

    def tail(self, by: str, parts: tuple[str, ...], share: float = 0.01) -> dict[str, float]:
        """Where the slowest ticks by `by` spend it: the mean of each of `parts` (a stage that did not run in a
        tick counts 0 there) over the `share` of recorded ticks with the largest `by`, and over all of them,
        and "other", what `by` holds beyond its parts. Keys: "ticks" (how many are in the tail), then
        "<part>" and "<part>_all" in ms. Empty before `by` has been recorded. Issue 13: a p99 says how large
        the tail is, this says what it is made of."""
        n = min(self.count, self.capacity)
        rows = self._table[:, :n]
        total = rows[self._index[by]]
        done = np.isfinite(total)
        if not done.any():
            return {}
        total = total[done]
        k = max(1, int(np.ceil(share * total.size)))
        slowest = np.argsort(total)[-k:]
        values = {p: np.nan_to_num(rows[self._index[p]][done]) for p in parts}
        values["other"] = total - sum(values.values())
        out = {"ticks": float(k)}
        for name, v in values.items():
            out[name] = float(v[slowest].mean())
            out[f"{name}_all"] = float(v.mean())
        return out


class _Section:
    """`StageTimer.section`'s context manager: a plain class, a third of a generator-based one's cost."""

    __slots__ = ("timer", "stage", "start")

    def __init__(self, timer: StageTimer, stage: str):
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.start = self.timer.clock.now_ns()

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.stage, (self.timer.clock.now_ns() - self.start) / 1e6)

"""The one clock the runtime reads: monotonic nanoseconds and a sleep, injected everywhere.

The loop, the links to the driver, the pacer and the stage timer all take a `Clock`, so a test (or the
replay of a recording) swaps in `VirtualClock` and every timing decision becomes exact and repeatable.
Nothing in runtime/ calls `time.monotonic_ns`, `time.perf_counter_ns` or `time.sleep` directly.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Monotonic time, ns."""

    def sleep(self, seconds: float) -> None:
        """Block for `seconds` (a virtual clock just advances)."""


class MonotonicClock:
    """The host's monotonic clock: the one drivers on this host stamp their messages with (DESIGN §2)."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Time that moves only when told: `sleep` and `advance` add to it. For tests and replay."""

    def __init__(self, start_ns: int = 1_000_000_000):
        self.t_ns = start_ns
        self.sleeps: list[float] = []

    def now_ns(self) -> int:
        return self.t_ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(round(seconds * 1e9))

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError(f"a monotonic clock cannot go back ({ns} ns)")
        self.t_ns += ns


MONOTONIC = MonotonicClock()

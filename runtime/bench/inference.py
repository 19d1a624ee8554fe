"""Inference timing: every setting in one run, interleaved in short rounds so a noisy machine hits them alike.

Each round visits every opened setting (in an order rotated round by round, so none always follows the
same neighbour) and times back-to-back calls for its share of the round. Warm-up (opening, the first call)
is measured apart when a setting is opened (backends.py) and never mixed into these samples. The clock is
injected so the bookkeeping is tested exactly on a fake one.

`paced` times calls the way the control loop makes them: one per control period, the machine idle in
between. That is slower than back to back on a CPU (thread-pool workers asleep, caches cold): S int8 with two
ORT threads took 17 ms p50 paced at 50 ms against 11 ms back to back on the 2-core benchmark machine (issue 13),
so the verdict judges the paced p99.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from runtime.bench.backends import Opened

Clock = Callable[[], int]  # ns
Sleep = Callable[[float], None]  # seconds
RT_REST_S = 0.1  # at SCHED_FIFO: an untimed pause this long ...
REST_EVERY_NS = 500_000_000  # ... after each 0.5 s of back-to-back calls: never 0.95 s busy in a second


@dataclass(frozen=True)
class Plan:
    """How long to time: `seconds` in all, split evenly over settings and `rounds`, and at least
    `min_calls` calls per setting. `rest_s` > 0: after each 0.5 s of calls, an untimed pause that long (a process
    at SCHED_FIFO that runs without one for 0.95 s of a second is stopped by the kernel for the rest of it, which
    would show as a 50 ms call)."""

    seconds: float = 20.0
    rounds: int = 10
    min_calls: int = 30
    rest_s: float = 0.0


def interleaved(
    opened: Sequence[Opened],
    plan: Plan,
    clock: Clock = time.perf_counter_ns,
    progress: bool = True,
    sleep: Sleep = time.sleep,
) -> dict[str, np.ndarray]:
    """Per-call latency in ms of each setting (by label)."""
    if not opened:
        return {}
    slice_ns = round(plan.seconds * 1e9 / (plan.rounds * len(opened)))
    per_round = max(1, -(-plan.min_calls // plan.rounds))
    samples: dict[str, list[float]] = {o.setting.label: [] for o in opened}
    bar = tqdm(total=plan.rounds * len(opened), desc="inference rounds", unit="slice", disable=not progress)
    rested = clock()
    try:
        for r in range(plan.rounds):
            k = r % len(opened)
            for o in [*opened[k:], *opened[:k]]:
                o.enter()
                out = samples[o.setting.label]
                calls, end = 0, clock() + slice_ns
                while calls < per_round or clock() < end:
                    t = clock()
                    o.run()
                    out.append((clock() - t) / 1e6)
                    calls += 1
                    if plan.rest_s > 0 and clock() - rested >= REST_EVERY_NS:
                        before = clock()
                        sleep(plan.rest_s)  # untimed, and not taken from the slice
                        rested = clock()
                        end += rested - before
                bar.update()
    finally:
        bar.close()
    return {label: np.asarray(x) for label, x in samples.items()}


def paced(
    opened: Sequence[Opened],
    period_ns: int,
    calls: int,
    rounds: int = 4,
    clock: Clock = time.perf_counter_ns,
    sleep: Sleep = time.sleep,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Per-call latency in ms of each setting, `calls` calls each, one per `period_ns` on absolute deadlines
    (a call that overran starts at once), the settings taking turns in `rounds` rounds."""
    if not opened or calls <= 0:
        return {}
    per_round = -(-calls // rounds)
    samples: dict[str, list[float]] = {o.setting.label: [] for o in opened}
    bar = tqdm(total=calls * len(opened), desc="paced calls", unit="call", disable=not progress)
    deadline = clock()
    try:
        for r in range(rounds):
            k = r % len(opened)
            for o in [*opened[k:], *opened[:k]]:
                o.enter()
                out = samples[o.setting.label]
                for _ in range(min(per_round, calls - len(out))):
                    deadline += period_ns
                    if (wait := deadline - clock()) > 0:
                        sleep(wait / 1e9)
                    else:
                        deadline = clock()
                    t = clock()
                    o.run()
                    out.append((clock() - t) / 1e6)
                    bar.update()
    finally:
        bar.close()
    return {label: np.asarray(x) for label, x in samples.items()}

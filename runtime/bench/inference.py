"""Inference timing: every setting in one run, interleaved in short rounds so a noisy machine hits them alike.

Each round visits every opened setting (in an order rotated round by round, so none always follows the
same neighbour) and times back-to-back calls for its share of the round. Warm-up (opening, the first call)
is measured apart when a setting is opened (backends.py) and never mixed into these samples. The clock is
injected so the bookkeeping is tested exactly on a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from runtime.bench.backends import Opened

Clock = Callable[[], int]  # ns


@dataclass(frozen=True)
class Plan:
    """How long to time: `seconds` in all, split evenly over settings and `rounds`, and at least
    `min_calls` calls per setting."""

    seconds: float = 20.0
    rounds: int = 10
    min_calls: int = 30


def interleaved(
    opened: Sequence[Opened], plan: Plan, clock: Clock = time.perf_counter_ns, progress: bool = True
) -> dict[str, np.ndarray]:
    """Per-call latency in ms of each setting (by label)."""
    if not opened:
        return {}
    slice_ns = round(plan.seconds * 1e9 / (plan.rounds * len(opened)))
    per_round = max(1, -(-plan.min_calls // plan.rounds))
    samples: dict[str, list[float]] = {o.setting.label: [] for o in opened}
    bar = tqdm(total=plan.rounds * len(opened), desc="inference rounds", unit="slice", disable=not progress)
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
                bar.update()
    finally:
        bar.close()
    return {label: np.asarray(x) for label, x in samples.items()}

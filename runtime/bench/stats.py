"""Latency statistics of one set of timed calls: what every pac-bench table reports, computed one way."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of per-call latency in ms. `jitter_ms` is p99 − p50: the tail a control period must hold
    beyond the typical call."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    jitter_ms: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def latency_stats(samples_ms: np.ndarray | list[float]) -> LatencyStats:
    """Statistics of `samples_ms`; NaNs (and n = 0) for none."""
    x = np.asarray(samples_ms, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        nan = float("nan")
        return LatencyStats(0, nan, nan, nan, nan, nan, nan)
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    return LatencyStats(int(x.size), float(x.mean()), p50, p90, p99, float(x.max()), p99 - p50)

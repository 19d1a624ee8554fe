"""A run's numbers as one snapshot: what the summary prints and writes, taken from the loop's parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoopStats:
    link: str  # "lockstep" or "realtime"
    final_state: str
    stop_reason: str
    ticks: int
    overruns: int
    overrun_late_ms: list[float]
    commands_sent: int
    holds_sent: int
    inferences: int
    holds_by_cause: dict[str, int]
    transitions: list[dict[str, Any]]
    fault_cause: str
    stages_ms: dict[str, dict[str, float]]  # stage → p50, p99, n
    obs_age_ms: dict[str, float]
    filter_clipped: dict[str, int]
    filter_rejected: dict[str, int]
    messages_dropped: dict[str, int]
    driver_rejected: dict[str, int]
    rss_mb: dict[str, float] = field(default_factory=dict)  # after warm-up and at the end
    frame_lag_ms: dict[str, float] = field(default_factory=dict)  # real time: frames' lag (last 5 s), tick offset
    # the overhead's parts, mean ms over the slowest 1 % of ticks and over all (StageTimer.tail)
    overhead_tail: dict[str, float] = field(default_factory=dict)
    final_hold_confirmed: bool = False

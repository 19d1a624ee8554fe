"""Watchdogs: is every input fresh enough, and is the driver alive and doing what it is told?

Each check is a pure function of timestamps, so tests drive it with a fake clock. Ages are measured on
the clock the driver stamps with: the host's monotonic clock in real time, sim time (the newest state's
capture time) in lockstep. Any cause these checks raise puts the loop in HOLD for that tick (DESIGN §4);
only `driver_lost` is a FAULT.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from runtime.safety.causes import Cause, stale

MS = 1_000_000  # ns
FRAME_AGE_MS = 90.0  # sources at the camera rate (20 Hz): 50 ms apart, plus rendering/transport jitter


@dataclass(frozen=True)
class WatchdogConfig:
    max_state_age_ms: float = 30.0  # state comes at 100 Hz: 10 ms apart
    max_image_age_ms: float = FRAME_AGE_MS
    max_objects_age_ms: float = FRAME_AGE_MS  # object poses (a tracker, or the sim) come at the camera rate
    inference_deadline_ms: float = 40.0  # a result later than this is dropped: the observation is too old
    heartbeat_timeout_ms: float = 300.0  # status comes at ≥ 10 Hz
    ack_timeout_ms: float = 150.0  # a command not applied by the driver within this long
    driver_lost_ms: float = 1000.0  # no state and no status for this long: FAULT


def stale_sources(now_ns: int, captures: dict[str, int | None], max_age_ms: dict[str, float]) -> set[Cause]:
    """A STALE cause for every source never seen or older than its limit at `now_ns`."""
    return {stale(source) for source, t in captures.items() if t is None or now_ns - t > max_age_ms[source] * MS}


def heartbeat_lost(now_ns: int, status_capture_ns: int | None, config: WatchdogConfig) -> bool:
    return status_capture_ns is None or now_ns - status_capture_ns > config.heartbeat_timeout_ms * MS


def driver_lost(silent_ns: int, config: WatchdogConfig) -> bool:
    """Nothing new at all from the driver for driver_lost_ms, on the local clock (a dead sim stops sim time)."""
    return silent_ns > config.driver_lost_ms * MS


class AckTracker:
    """Commands sent and not yet applied by the driver (state.last_cmd_seq), oldest first."""

    def __init__(self, timeout_ms: float, capacity: int = 256):
        self.timeout_ns = round(timeout_ms * MS)
        self._pending: deque[tuple[int, int]] = deque(maxlen=capacity)

    def sent(self, seq: int, now_ns: int) -> None:
        self._pending.append((seq, now_ns))

    def acknowledged(self, last_applied_seq: int) -> None:
        while self._pending and self._pending[0][0] <= last_applied_seq:
            self._pending.popleft()

    def overdue(self, now_ns: int) -> bool:
        return bool(self._pending) and now_ns - self._pending[0][1] > self.timeout_ns

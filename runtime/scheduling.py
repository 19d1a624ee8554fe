"""Real-time scheduling for the control loop: SCHED_FIFO at a priority the operator names (libfranka's
`RealtimeConfig::kEnforce`, done our way).

Under the default time-sharing scheduler a loop that sleeps 30 ms each period wakes behind whatever else
runs (an embedded sim's renderer, a shell), and ONNX Runtime's worker threads wake late at every parallel
operator: on the 2-core benchmark machine S int8 inference took 17.3 ms p50 / 22.3 ms p99 inside the loop
against 11.4 ms back to back (benchmarks/RESULTS.md, issue 13). With the loop's process at SCHED_FIFO it took
12.6 / 14.0 ms. The priority is set before the inference session and the driver client are created, so
their threads inherit it; a process the loop starts (an embedded sim) goes back to the time-sharing
scheduler (robots/sim/process.py). Asked for and not granted is an error, never a silent downgrade: the
operator planned the loop's timing on it.
"""

from __future__ import annotations

import os

MAX_PRIORITY = 99


class SchedulingRefused(RuntimeError):
    """The kernel did not grant the real-time priority asked for."""


def set_realtime_priority(priority: int) -> None:
    """Run this process (and the threads it creates from now on) at SCHED_FIFO `priority` (1–99).

    Raises SchedulingRefused with what to change when the kernel says no (no CAP_SYS_NICE, or an `rtprio`
    limit below `priority`), ValueError for a priority out of range.
    """
    if not 1 <= priority <= MAX_PRIORITY:
        raise ValueError(f"a real-time priority is 1 to {MAX_PRIORITY}, got {priority}")
    if not hasattr(os, "sched_setscheduler"):
        raise SchedulingRefused("this platform has no SCHED_FIFO (Linux only)")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError as exc:
        raise SchedulingRefused(
            f"SCHED_FIFO priority {priority} not granted ({exc.strerror}): run with CAP_SYS_NICE, or give the "
            f"user an rtprio limit of at least {priority} (/etc/security/limits.conf: `USER - rtprio {priority}`)"
        ) from exc


def realtime_priority() -> int:
    """This process's SCHED_FIFO priority; 0 under any other policy."""
    if not hasattr(os, "sched_getscheduler") or os.sched_getscheduler(0) != os.SCHED_FIFO:
        return 0
    return os.sched_getparam(0).sched_priority

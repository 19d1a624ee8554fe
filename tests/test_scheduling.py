"""pac-run --rt-priority: SCHED_FIFO granted and inherited by the threads made after it, refused loudly when the
kernel says no, and never passed on to the embedded sim. Each case runs in a forked child: a test process must
not itself end up at real-time priority."""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading

import pytest

from robots.sim.process import start_sim, stop_sim
from runtime.scheduling import SchedulingRefused, realtime_priority, set_realtime_priority

NOBODY = 65534


def _in_child(target) -> object:
    """Run `target()` in a forked process and return what it returned (or the exception it raised)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def run() -> None:
        try:
            queue.put(target())
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            queue.put(exc)

    child = ctx.Process(target=run)
    child.start()
    result = queue.get(timeout=60)
    child.join(10)
    return result


def _may_use_fifo() -> bool:
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 5


def _unprivileged() -> None:
    """Drop what lets a process take real-time priority: root's capabilities, and the rtprio limit."""
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))


def test_a_priority_out_of_range_is_refused_before_asking_the_kernel():
    for bad in (0, -1, 100):
        with pytest.raises(ValueError, match="1 to 99"):
            set_realtime_priority(bad)


def test_a_priority_the_kernel_does_not_grant_is_an_error_that_says_what_to_change():
    def attempt():
        _unprivileged()
        set_realtime_priority(10)
        return realtime_priority()

    result = _in_child(attempt)
    assert isinstance(result, SchedulingRefused), result
    assert "rtprio" in str(result) and "CAP_SYS_NICE" in str(result)


@pytest.mark.skipif(not _may_use_fifo(), reason="this user may not take SCHED_FIFO (not root, rtprio limit < 5)")
def test_a_granted_priority_holds_for_the_threads_made_after_it_but_not_for_the_sim():
    def attempt():
        before = realtime_priority()
        set_realtime_priority(5)
        seen = []
        worker = threading.Thread(target=lambda: seen.append(realtime_priority()))
        worker.start()
        worker.join()
        sim, _, _ = start_sim("sawyer", "--cameras", "none", "--duration", "5", capture=True)
        try:
            sim_policy = os.sched_getscheduler(sim.pid)
        finally:
            stop_sim(sim)
        return before, realtime_priority(), seen[0], sim_policy

    result = _in_child(attempt)
    assert not isinstance(result, Exception), result
    before, after, in_thread, sim_policy = result
    assert (before, after, in_thread) == (0, 5, 5)
    assert sim_policy == os.SCHED_OTHER

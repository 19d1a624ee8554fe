"""Pacing, stage timing and watchdogs on a virtual clock: exact, whatever the machine's load."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.clock import VirtualClock
from runtime.safety.causes import stale
from runtime.safety.watchdogs import MS, AckTracker, WatchdogConfig, driver_lost, heartbeat_lost, stale_sources
from runtime.timing import ArrivalPhase, Pacer, StageTimer

PERIOD = 50 * MS


def test_pacer_wakes_on_absolute_deadlines_without_drift(virtual_clock):
    clock = virtual_clock
    pacer = Pacer(PERIOD, clock=clock)
    start = pacer.wait()
    for k in range(1, 100):
        clock.advance(7 * MS)  # each tick's work; the sleep makes up the rest of the period
        assert pacer.wait() == start + k * PERIOD
    assert clock.now_ns() == start + 99 * PERIOD and pacer.overruns == 0


def test_pacer_counts_each_missed_period_and_does_not_race_to_catch_up(virtual_clock):
    clock = virtual_clock
    pacer = Pacer(PERIOD, clock=clock)
    start = pacer.wait()
    clock.advance(130 * MS)  # work overran into the third period
    deadline = pacer.wait()
    assert pacer.overruns == 2 and deadline == start + 3 * PERIOD - PERIOD  # runs now in the period it is in
    clock.advance(5 * MS)
    assert pacer.wait() == start + 3 * PERIOD


def test_pacer_align_sets_the_tick_phase():
    clock = VirtualClock(start_ns=1_000 * MS)
    pacer = Pacer(PERIOD, clock=clock)
    pacer.align(t_ns=973 * MS)  # frames captured at 973 + k·50 ms
    assert pacer.wait() == 1_023 * MS and clock.now_ns() == 1_023 * MS


def test_pacer_spends_its_wait_in_the_idle_hook_when_given_one(virtual_clock):
    idled: list[float] = []

    def idle(seconds: float) -> None:
        idled.append(seconds)
        virtual_clock.sleep(seconds)

    pacer = Pacer(PERIOD, clock=virtual_clock, idle=idle)
    pacer.wait()
    virtual_clock.advance(20 * MS)
    pacer.wait()
    assert idled == [pytest.approx(0.030)] and virtual_clock.sleeps == idled


def _phase(**kwargs) -> ArrivalPhase:
    return ArrivalPhase(PERIOD, floor_ms=4.0, ceiling_ms=25.0, **kwargs)


def _feed(phase: ArrivalPhase, lags_ms: list[float], start_ns: int = 1_000 * MS, jitter_ms=None) -> int:
    """One set per period from `start_ns`: captured on the grid (plus its jitter), in `lag` ms after capture."""
    t = start_ns
    for k, lag in enumerate(lags_ms):
        capture = t + round((jitter_ms[k] if jitter_ms else 0.0) * MS)
        phase.record(capture, capture + round(lag * MS))
        t += PERIOD
    return t


@pytest.mark.parametrize(
    "lags, offset",
    [
        ([], 4.0),  # nothing heard: the floor
        ([9.0] * 19, 4.0),  # too few lags to trust: still the floor
        ([9.0] * 20, 9.5),  # the lag plus the margin
        ([9.0] * 180 + [20.0] * 20, 20.5),  # a tenth of the frames late: the phase waits for them
        ([9.0] * 199 + [20.0] * 1, 9.5),  # one in 200: that tick waits, the rest stay young
        ([1.0] * 30, 4.0),  # frames faster than the floor: never earlier than the floor
        ([40.0] * 30, 25.0),  # a lag past the ceiling is a fault to surface, not a phase to follow
        ([9.0] * 200 + [12.0] * 200, 12.5),  # the window keeps the last 200 sets: the old lags are forgotten
    ],
)
def test_the_tick_offset_follows_a_high_quantile_of_the_recent_lags(lags, offset):
    phase = _phase()
    _feed(phase, lags)
    phase.update()
    assert phase.offset_ms == pytest.approx(offset, abs=0.02)


def test_capture_jitter_counts_in_the_lag_and_the_capture_phase_is_the_median():
    phase = _phase()
    jitter = [0.0, 3.0] * 50  # every other frame captured 3 ms late, each in 2 ms after its capture
    _feed(phase, [2.0] * 100, jitter_ms=jitter)
    phase.update()
    # the median capture is on the grid or 3 ms late (np.median of two values: 1.5 ms); the late ones arrive 5 ms
    # after the grid, 3.5 ms after that median; plus the margin, and never under the 4 ms floor
    assert phase.offset_ms == pytest.approx(4.0)
    phase = _phase()
    _feed(phase, [6.0] * 100, jitter_ms=jitter)
    phase.update()
    assert phase.offset_ms == pytest.approx(6.0 + 1.5 + 0.5)
    assert (phase.phase_ns - 1_000 * MS) % PERIOD == round((1.5 + 8.0) * MS)


def test_the_tick_phase_moves_earlier_only_past_its_hysteresis_and_later_at_once():
    phase = _phase(window=20, min_samples=20)
    t = _feed(phase, [10.0] * 20)
    assert phase.update() and phase.offset_ms == 10.5
    t = _feed(phase, [9.0] * 20, start_ns=t)  # 1 ms earlier: within the hysteresis, the tick stays
    assert not phase.update() and phase.offset_ms == 10.5
    t = _feed(phase, [8.0] * 20, start_ns=t)  # 2 ms earlier: it moves
    assert phase.update() and phase.offset_ms == 8.5
    _feed(phase, [8.2] * 20, start_ns=t)  # later, however little: it moves, or those frames would be waited for
    assert phase.update() and phase.offset_ms == pytest.approx(8.7)


@pytest.mark.parametrize("shift_ms", [20.0, -20.0])
def test_a_driver_that_re_phases_is_followed_after_a_few_sets(shift_ms):
    phase = _phase()
    t = _feed(phase, [2.0] * 100)
    phase.update()
    before = phase.phase_ns % PERIOD
    t = _feed(phase, [2.0] * 4, start_ns=t + round(shift_ms * MS))  # four sets: could still be jitter, but
    phase.update()
    if shift_ms > 0:  # frames that come later are waited for at once (the quantile), just after they arrive
        assert phase.phase_ns % PERIOD == (before + round((shift_ms - 4.0 + 2.0 + 0.5) * MS)) % PERIOD
    else:  # frames that come earlier are not worth a re-phase yet
        assert phase.phase_ns % PERIOD == before
    _feed(phase, [2.0], start_ns=t)  # the fifth: the driver re-phased; the floor after its new capture phase
    phase.update()
    assert phase.phase_ns % PERIOD == (before + round(shift_ms * MS)) % PERIOD


def test_stage_timer_percentiles_and_ring(virtual_clock):
    timer = StageTimer(("a", "b"), capacity=8, clock=virtual_clock)
    for i in range(5):
        with timer.section("a"):
            virtual_clock.advance((i + 1) * MS)
        timer.next_tick()
    p50, p99, n = timer.percentiles("a")
    assert (p50, n) == (3.0, 5) and p99 == pytest.approx(4.96)
    assert np.isnan(timer.percentiles("b")[0]) and timer.percentiles("b")[2] == 0


def test_stage_timer_tail_takes_the_slowest_ticks_apart(virtual_clock):
    """99 ticks of 1 ms split evenly, one of 5 ms where "b" took 3.5 ms: the tail names "b", the glue is the rest."""
    timer = StageTimer(("a", "b", "total"), capacity=256, clock=virtual_clock)
    for i in range(100):
        slow = i == 42
        timer.record("a", 0.5)
        if i % 2 == 0 or slow:  # "b" does not run every tick: absent counts as 0
            timer.record("b", 3.5 if slow else 0.4)
        timer.record("total", 5.0 if slow else 1.0)
        timer.next_tick()
    tail = timer.tail("total", ("a", "b"), share=0.01)
    assert tail["ticks"] == 1
    assert (tail["a"], tail["b"], tail["other"]) == pytest.approx((0.5, 3.5, 1.0))
    assert tail["b_all"] == pytest.approx((49 * 0.4 + 3.5) / 100)
    assert tail["other_all"] == pytest.approx((99 * 1.0 + 5.0) / 100 - 0.5 - tail["b_all"])
    assert timer.tail("total", ("a",), share=0.05)["ticks"] == 5
    assert StageTimer(("a",), clock=virtual_clock).tail("a", ()) == {}


@pytest.mark.parametrize(
    "captures, expected",
    [
        ({"state": 990 * MS, "image/a": 960 * MS}, set()),
        ({"state": 960 * MS, "image/a": 960 * MS}, {stale("state")}),
        ({"state": 990 * MS, "image/a": 900 * MS}, {stale("image/a")}),
        ({"state": None, "image/a": 990 * MS}, {stale("state")}),
        ({"state": 990 * MS, "image/a": 910 * MS}, set()),  # exactly at the limit is still fresh
    ],
)
def test_stale_sources(captures, expected):
    assert stale_sources(1_000 * MS, captures, {"state": 30.0, "image/a": 90.0}) == expected


def test_heartbeat_and_driver_lost():
    cfg = WatchdogConfig(heartbeat_timeout_ms=300, driver_lost_ms=1000)
    assert heartbeat_lost(1_000 * MS, None, cfg)
    assert not heartbeat_lost(1_000 * MS, 800 * MS, cfg) and heartbeat_lost(1_000 * MS, 600 * MS, cfg)
    assert not driver_lost(1_000 * MS, cfg) and driver_lost(1_000 * MS + 1, cfg)


def test_ack_tracker_flags_the_oldest_unapplied_command():
    acks = AckTracker(timeout_ms=150)
    acks.sent(1, 0)
    acks.sent(2, 50 * MS)
    assert not acks.overdue(150 * MS)
    assert acks.overdue(151 * MS)
    acks.acknowledged(1)
    assert not acks.overdue(199 * MS) and acks.overdue(201 * MS)
    acks.acknowledged(5)
    assert not acks.overdue(10_000 * MS)

"""The real-time path on a virtual clock: phase lock, late frames, overruns, a stale source → hold in a period.

The loop, the real-time link, the pacer, the guard (watchdogs, filter, state machine) are the real ones;
only the driver's socket side and the policy's compute are scripted, on the same `VirtualClock`, so every
assertion is exact (no wall-clock thresholds). A driver publishes state every 10 ms and a frame per camera
every 50 ms at a fixed phase, each arriving a transport delay after capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from robots.contract.client import LatestMessages
from robots.contract.link import DEFAULT_LINK, Mode
from robots.contract.messages import ImageMsg, StateMsg, StatusMsg
from robots.spec import load_spec
from runtime.clock import VirtualClock
from runtime.guard import Guard
from runtime.link import FRAME_WAIT_MS, LAST_MS_SLICE_NS, PHASE_OFFSET_MS, Inputs, RealtimeLink
from runtime.loop import STAGES, ControlLoop
from runtime.policy_step import PolicyOutput
from runtime.safety.limits import SafetyLimits
from runtime.safety.watchdogs import MS, WatchdogConfig
from runtime.timing import StageTimer

CAMERAS = ("front_left", "front_right")
PERIOD = DEFAULT_LINK.period_ns
FRAME_PHASE = 7 * MS  # cameras capture at 7 ms + k·50 ms
DELAY = 1 * MS  # capture → arrival
INFER = 15 * MS
ARM = load_spec("sawyer")
HOME_TCP = ARM.chain().fk(ARM.home)[0]


@dataclass
class Sent:
    seq: int
    t_ns: int
    mode: Mode
    action: np.ndarray
    obs_seq: int
    obs_t_ns: int | None = None


@dataclass
class ScriptedDriver:
    """The `DriverClient` surface the link uses, for a driver whose messages arrive on a virtual clock."""

    clock: VirtualClock
    duration_ns: int
    late: dict[tuple[str, int], int] = field(default_factory=dict)  # (camera, frame k) → extra delay, ns
    frozen: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera → (from, to) capture window, ns
    frame_delay: int = DELAY  # capture → arrival of each camera frame, ns
    state_delay: int = DELAY  # capture → arrival of each state (100 Hz), ns
    shift: tuple[int, int] = (0, 0)  # (from, by) ns: the cameras re-phase, capturing `by` later from `from` on

    def __post_init__(self) -> None:
        self.latest = LatestMessages()
        self.sent: list[Sent] = []
        self.seq = 0
        self.dropped: dict[str, int] = {}
        t0 = self.clock.now_ns()
        schedule = [(t + self.state_delay, "state", t, "") for t in range(t0, t0 + self.duration_ns, 10 * MS)]
        schedule += [(t + DELAY, "status", t, "") for t in range(t0, t0 + self.duration_ns, 100 * MS)]
        for k, t in enumerate(range(t0 + FRAME_PHASE, t0 + self.duration_ns, PERIOD)):
            t += self.shift[1] if t >= t0 + self.shift[0] else 0
            for camera in CAMERAS:
                start, stop = self.frozen.get(camera, (0, 0))
                if not start <= t < stop:
                    schedule.append((t + self.frame_delay + self.late.get((camera, k), 0), "image", t, camera))
        self._schedule = sorted(schedule)
        self._next = 0
        self._msg_seq = 0

    def wait(self, timeout_ms: int) -> bool:
        now = self.clock.now_ns()
        if self._next >= len(self._schedule):
            self.clock.advance(timeout_ms * MS)
            return False
        arrival = self._schedule[self._next][0]
        if arrival <= now:
            return True
        if arrival <= now + timeout_ms * MS:
            self.clock.advance(arrival - now)
            return True
        self.clock.advance(timeout_ms * MS)
        return False

    def poll(self, timeout_ms: int = 0) -> LatestMessages:
        if timeout_ms:
            self.wait(timeout_ms)
        now = self.clock.now_ns()
        while self._next < len(self._schedule) and self._schedule[self._next][0] <= now:
            _, kind, t, camera = self._schedule[self._next]
            self._deliver(kind, t, camera)
            self._next += 1
        return self.latest

    def _deliver(self, kind: str, t: int, camera: str) -> None:
        self._msg_seq += 1
        acked = max([s.seq for s in self.sent if s.t_ns <= t], default=-1)
        if kind == "state":
            q = ARM.home.copy()
            pose = np.concatenate([HOME_TCP, [1.0, 0.0, 0.0, 0.0]])
            self.latest.state = StateMsg(
                self._msg_seq, "sim", t, q, np.zeros(7), 0.0, 0.0, 0.0, pose, "realtime", acked
            )
        elif kind == "status":
            self.latest.status = StatusMsg(
                self._msg_seq, "sim", t, "sawyer", "realtime", False, "", acked, -1, "", len(self.sent)
            )
        else:
            self.latest.images[camera] = ImageMsg(camera, self._msg_seq, "sim", t, np.zeros((128, 128, 3), np.uint8))

    def send_command(
        self, mode: Mode, action: np.ndarray, deadline_ns: int, obs_seq: int = -1, obs_t_ns: int | None = None
    ) -> int:
        self.seq += 1
        self.sent.append(Sent(self.seq, self.clock.now_ns(), mode, np.array(action), obs_seq, obs_t_ns))
        return self.seq

    def mine(self, state: StateMsg | None) -> bool:  # one client, no other sessions: every state is its own
        return state is not None


@dataclass
class ScriptedPolicy:
    """A policy that takes INFER of virtual time (more on chosen ticks) and always asks for a small move."""

    clock: VirtualClock
    slow: dict[int, int] = field(default_factory=dict)  # call index → compute time, ns
    seen: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # per call: when, frame captures
    inferences: int = 0

    def __call__(self, inputs: Inputs) -> PolicyOutput:
        self.seen.append((self.clock.now_ns(), {c: f.t_capture_ns for c, f in inputs.frames.items()}))
        self.clock.advance(self.slow.get(self.inferences, INFER))
        self.inferences += 1
        return PolicyOutput(np.array([0.01, 0.0, 0.0, 0.0, 0.0]))


def run_loop(clock: VirtualClock, driver: ScriptedDriver, policy: ScriptedPolicy, ticks: int) -> ControlLoop:
    timer = StageTimer(STAGES, clock=clock)
    link = RealtimeLink(driver, CAMERAS, DEFAULT_LINK, timer, clock)
    limits = SafetyLimits.from_arm(ARM, Mode.CARTESIAN_VELOCITY, DEFAULT_LINK.period_s)
    guard = Guard(limits, WatchdogConfig(), CAMERAS)
    loop = ControlLoop(link, policy, guard, timer, clock=clock)
    loop.run(max_ticks=ticks)
    return loop


def frame_capture(t_ns: int, t0: int) -> int:
    """The capture time of the newest frame a camera has taken by `t_ns` (no jitter)."""
    return t0 + FRAME_PHASE + (t_ns - t0 - FRAME_PHASE) // PERIOD * PERIOD


def test_ticks_lock_to_just_after_the_cameras_capture(virtual_clock):
    t0 = virtual_clock.now_ns()
    driver = ScriptedDriver(virtual_clock, 3_000 * MS)
    policy = ScriptedPolicy(virtual_clock)
    loop = run_loop(virtual_clock, driver, policy, ticks=40)
    moving = [s for s in driver.sent if s.mode is Mode.CARTESIAN_VELOCITY]
    assert len(moving) >= 38 and loop.stats().overruns == 0
    # Every command leaves PHASE_OFFSET + INFER after its period's capture, computed on that period's frames.
    expected = round(PHASE_OFFSET_MS * MS) + INFER
    assert all(s.t_ns - frame_capture(s.t_ns, t0) == expected for s in moving[1:])
    assert all(seen == dict.fromkeys(CAMERAS, frame_capture(t, t0)) for t, seen in policy.seen[1:])
    ages = loop.stats().obs_age_ms
    assert ages["n"] == len(moving) and ages["p50"] == pytest.approx(expected / MS, abs=1e-6)  # the oldest: a frame
    # Each motion command carries its oldest input's capture time (a frame's) for the driver's age bound; holds none.
    assert all(s.obs_t_ns == frame_capture(s.t_ns, t0) for s in moving[1:])
    assert all(s.obs_t_ns == -1 for s in driver.sent if s.mode is Mode.HOLD)


def test_the_phase_learns_how_late_frames_arrive_and_ticks_just_after(virtual_clock):
    """Frames that take 10 ms from capture to arrival (rendering, encoding, transport): with the fixed
    4 ms offset every tick would wait 6 ms for them and decode them inside the tick. After the first
    second's lags the tick starts when they are in, 10 ms + the 0.5 ms margin after capture."""
    t0 = virtual_clock.now_ns()
    lag = 10 * MS
    driver = ScriptedDriver(virtual_clock, 4_000 * MS, frame_delay=lag)
    policy = ScriptedPolicy(virtual_clock)
    loop = run_loop(virtual_clock, driver, policy, ticks=60)
    moving = [s for s in driver.sent if s.mode is Mode.CARTESIAN_VELOCITY]
    settled = moving[20:]
    expected = lag + MS // 2 + INFER
    assert len(settled) >= 35 and all(s.t_ns - frame_capture(s.t_ns, t0) == expected for s in settled)
    assert all(seen == dict.fromkeys(CAMERAS, frame_capture(t, t0)) for t, seen in policy.seen[20:])  # this period's
    waited = loop.timer.samples("frame_wait")
    assert waited.size <= 22  # only while the lag was being learned (20 sets, ArrivalPhase.min_samples)
    stats = loop.stats()
    assert stats.overruns == 0 and stats.frame_lag_ms["tick_offset"] == pytest.approx(10.5)
    assert stats.frame_lag_ms["p50"] == pytest.approx(10.0)


@pytest.mark.parametrize(
    "shift_ms, after_capture_ms",
    [(20, (PHASE_OFFSET_MS, PHASE_OFFSET_MS)), (-20, (PHASE_OFFSET_MS, PHASE_OFFSET_MS)), (3, (1.5, PHASE_OFFSET_MS))],
    ids=["later", "earlier", "small"],
)
def test_when_the_cameras_re_phase_the_ticks_follow_within_a_few_periods(virtual_clock, shift_ms, after_capture_ms):
    """A shift past the jitter bound (5 ms, 5 sets running) re-phases on the new captures, at the floor. A small
    one first moves the tick to where the frames now arrive (1 ms after the new capture, plus the margin), then,
    once the median capture has moved, to the floor after it. Either way every tick computes on its own period's
    frames and none waits for them."""
    t0 = virtual_clock.now_ns()
    at = 1_000 * MS
    driver = ScriptedDriver(virtual_clock, 3_000 * MS, shift=(at, shift_ms * MS))
    policy = ScriptedPolicy(virtual_clock)
    loop = run_loop(virtual_clock, driver, policy, ticks=58)
    captures = sorted({t for _, seen in policy.seen for t in seen.values()})

    def capture_before(t_ns: int) -> int:
        return max(c for c in captures if c <= t_ns)

    settled = t0 + at + 7 * PERIOD
    moving = [s for s in driver.sent if s.mode is Mode.CARTESIAN_VELOCITY and s.t_ns > settled]
    low, high = (round(x * MS) + INFER for x in after_capture_ms)
    assert len(moving) >= 30 and all(low <= s.t_ns - capture_before(s.t_ns) <= high for s in moving)
    assert all(set(seen.values()) == {capture_before(t)} for t, seen in policy.seen if t > settled)
    waits = loop.timer.samples("frame_wait")
    assert waits.size <= 8  # only around the shift
    assert loop.stats().overruns == 0


def test_frames_that_arrive_in_the_last_millisecond_before_the_tick_are_taken_in_before_it(virtual_clock):
    """zmq polls whole milliseconds. States 1.4 ms and frames 3.45 ms from capture to arrival: the pacer last
    wakes for a state 9.6 ms before the tick, its 9 ms poll ends 0.6 ms before it, and the frames come in
    within those 0.6 ms. Slept blind, that remainder let the frames be decoded inside the tick (issue 13: most of
    the overhead's tail) and their lag be learned as the tick's start, which moved the tick later than the frames
    need. Slept in slices and polled between them, the frames are in before the tick, their lag learned within a
    slice."""
    lag = round(3.45 * MS)
    driver = ScriptedDriver(virtual_clock, 3_000 * MS, frame_delay=lag, state_delay=round(1.4 * MS))
    policy = ScriptedPolicy(virtual_clock)
    loop = run_loop(virtual_clock, driver, policy, ticks=60)
    stats = loop.stats()
    assert lag / MS <= stats.frame_lag_ms["p95"] <= lag / MS + LAST_MS_SLICE_NS / MS
    assert stats.frame_lag_ms["tick_offset"] <= lag / MS + 0.5 + LAST_MS_SLICE_NS / MS
    assert loop.timer.samples("frame_wait").size <= 1 and stats.overruns == 0


@pytest.mark.parametrize(
    "extra_ms, waits", [(8, True), (FRAME_WAIT_MS + PHASE_OFFSET_MS + 5, False)], ids=["late", "too-late"]
)
def test_a_late_frame_is_waited_for_up_to_its_bound_then_the_tick_goes_on(virtual_clock, extra_ms, waits):
    t0 = virtual_clock.now_ns()
    k = 20
    driver = ScriptedDriver(virtual_clock, 3_000 * MS, late={("front_left", k): round(extra_ms * MS)})
    policy = ScriptedPolicy(virtual_clock)
    loop = run_loop(virtual_clock, driver, policy, ticks=40)
    late_capture = t0 + FRAME_PHASE + k * PERIOD
    used = [seen["front_left"] for _, seen in policy.seen]
    i = next(i for i, (_, seen) in enumerate(policy.seen) if seen["front_right"] == late_capture)
    if waits:  # the tick waited and used the fresh frame
        assert used[i] == late_capture
    else:  # it waited FRAME_WAIT_MS at most and went on with the previous period's frame
        assert used[i] == late_capture - PERIOD
    waited = loop.timer.samples("frame_wait")
    assert waited.size >= 1 and waited.max() <= FRAME_WAIT_MS + 1e-9
    assert all(s.mode is Mode.CARTESIAN_VELOCITY for s in driver.sent[1:-1])  # a late frame is not stale


def test_an_overrun_is_counted_not_absorbed_and_the_phase_kept(virtual_clock):
    t0 = virtual_clock.now_ns()
    driver = ScriptedDriver(virtual_clock, 3_000 * MS)
    policy = ScriptedPolicy(virtual_clock, slow={10: 70 * MS})  # one inference runs into the next period
    loop = run_loop(virtual_clock, driver, policy, ticks=40)
    stats = loop.stats()
    assert stats.overruns == 1 and len(stats.overrun_late_ms) == 1
    moving = [s for s in driver.sent if s.mode is Mode.CARTESIAN_VELOCITY]
    expected = round(PHASE_OFFSET_MS * MS) + INFER
    late = [s for s in moving[1:] if s.t_ns - frame_capture(s.t_ns, t0) != expected]
    assert len(late) <= 2  # the slow tick and the one it delayed; then back on phase


def test_a_stale_camera_holds_within_one_period_and_running_resumes(virtual_clock):
    t0 = virtual_clock.now_ns()
    freeze = (t0 + 500 * MS, t0 + 1_000 * MS)  # no front_right frames captured in this window
    driver = ScriptedDriver(virtual_clock, 3_000 * MS, frozen={"front_right": freeze})
    policy = ScriptedPolicy(virtual_clock)
    loop = run_loop(virtual_clock, driver, policy, ticks=40)
    last_frame = frame_capture(freeze[0] - 1, t0)
    stale_from = last_frame + round(WatchdogConfig().max_image_age_ms * MS)
    holds = [s for s in driver.sent if s.mode is Mode.HOLD]
    first_hold = holds[0]
    assert stale_from < first_hold.t_ns <= stale_from + PERIOD  # the first tick that sees it stale holds
    assert all(s.mode is Mode.HOLD for s in driver.sent if stale_from < s.t_ns <= freeze[1])
    assert all(s.mode is Mode.CARTESIAN_VELOCITY for s in driver.sent[1:] if s.t_ns <= stale_from)
    after = [s for s in driver.sent if s.t_ns > freeze[1] + PERIOD]
    assert after[0].mode is Mode.CARTESIAN_VELOCITY  # fresh frames again: RUNNING resumes by itself
    stats = loop.stats()
    assert stats.holds_by_cause == {"stale:image/front_right": 1}
    assert policy.inferences < 40  # no inference on stale inputs


def test_a_silent_driver_holds_at_once_and_faults_after_driver_lost_ms(virtual_clock):
    t0 = virtual_clock.now_ns()
    driver = ScriptedDriver(virtual_clock, 1_000 * MS)  # publishes for 1 s, then nothing
    policy = ScriptedPolicy(virtual_clock)
    loop = run_loop(virtual_clock, driver, policy, ticks=200)
    stats = loop.stats()
    last_state = t0 + 990 * MS
    lost_after = round(WatchdogConfig().driver_lost_ms * MS)
    assert stats.final_state == "FAULT" and stats.fault_cause.startswith("driver_lost")
    assert stats.stop_reason == "fault" and stats.ticks < 200 and not stats.final_hold_confirmed
    stale = round(WatchdogConfig().max_state_age_ms * MS)
    assert all(s.mode is Mode.HOLD for s in driver.sent if s.t_ns > last_state + stale)  # hold at once
    fault = next(t for t in stats.transitions if t["to"] == "FAULT")
    assert fault["tick"] == stats.ticks - 1  # the loop stopped on the tick that latched it
    assert virtual_clock.now_ns() - (last_state + DELAY) <= lost_after + PERIOD + round(FRAME_WAIT_MS * MS)

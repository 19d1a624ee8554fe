"""The 20 Hz loop: observe → check → infer → filter → send, one tick per control period (DESIGN §1, §4).

Every tick takes the newest message per topic, runs the watchdogs, and, when the inputs are fresh, runs
the policy. The safety state machine decides from this tick's causes whether the filtered action may go
out; otherwise a hold does. Nothing the policy emits reaches the driver without passing the filter, and
non-finite policy output latches FAULT. In real time the loop is paced by absolute deadlines; in lockstep
(sim, tests) each sent command advances the sim one period and the acknowledging state starts the next
tick, so runs are deterministic whatever the machine's speed.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import zmq

from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.messages import StateMsg
from runtime.config import RunConfig
from runtime.inference.loader import LoadedPolicy
from runtime.recorder import Recorder
from runtime.safety.limits import SafetyLimits, filter_action, workspace_excess
from runtime.safety.state_machine import LATCHED, SafetyStateMachine, State
from runtime.safety.watchdogs import AckTracker, driver_lost, heartbeat_lost, stale_sources
from runtime.timing import Pacer, StageTimer

log = logging.getLogger(__name__)

STAGES = (
    "receive_idle",
    "receive",
    "frame_wait",
    "tokenize",
    "infer",
    "filter",
    "send",
    "send_wait",
    "tick",
    "overhead",
)
HOLD = "hold"
ESTOP_FAULT = "estop"  # a driver listing this fault (a pressed emergency stop) latches ESTOP
RSS_START_TICK = 200  # memory baseline after warm-up (10 s at 20 Hz): allocator pools settle in the first ticks
FRAME_WAIT_MS = 12.0  # real time: longest wait for a late frame before ticking on the previous one
PHASE_OFFSET_MS = 4.0  # real time: tick this long after the cameras capture (transport + JPEG decode)
WORKSPACE_TOLERANCE_M = 0.02  # TCP this far outside the box (tracking error, a push): hold, don't steer back


def rss_mb() -> float:
    """Resident set size of this process (Linux), MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


@dataclass
class LoopCounters:
    ticks: int = 0
    commands_sent: int = 0
    holds_sent: int = 0
    inferences: int = 0
    clipped: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    stop_reason: str = ""


class ControlLoop:
    def __init__(
        self,
        config: RunConfig,
        policy: LoadedPolicy,
        client: DriverClient,
        limits: SafetyLimits,
        *,
        lockstep: bool,
        recorder: Recorder | None = None,
        fk: Callable[[np.ndarray], np.ndarray] | None = None,
        clock=time.monotonic_ns,
    ):
        self.config, self.policy, self.client, self.limits = config, policy, client, limits
        self.lockstep = lockstep
        self.recorder = recorder
        self.fk = fk  # joint mode: TCP position of a joint target, for the filter's workspace check
        self.clock = clock
        self.period_ns = round(config.period_s * 1e9)
        self.cameras = policy.metadata.observation.cameras
        self.safety = SafetyStateMachine()
        self.timer = StageTimer(STAGES)
        self.obs_age_ms = StageTimer(("obs_age",))
        self.pacer = Pacer(self.period_ns, clock=clock, sleep=self._idle)
        self.acks = AckTracker(config.watchdogs.ack_timeout_ms)
        self.counters = LoopCounters()
        self._previous: np.ndarray | None = None  # last action sent (None after a hold)
        self._heard: tuple[int, int] = (-1, -1)  # (state seq, status seq) last seen
        self._last_heard_wall = clock()
        self._stop = False
        self._aligned = False
        self._late_frames = 0
        self.final_hold_confirmed = False
        self.rss_mb = {"start": float("nan"), "end": float("nan")}
        w = config.watchdogs
        self._max_age = {"state": w.max_state_age_ms} | {f"image/{c}": w.max_image_age_ms for c in self.cameras}

    # ------------------------------------------------------------------ control
    def stop(self, reason: str) -> None:
        """Ask the loop to end after the current tick (signal handlers call this)."""
        if not self._stop:
            self.counters.stop_reason = reason
        self._stop = True

    def run(self, duration_s: float | None = None, max_ticks: int | None = None) -> State:
        """Tick until stopped, the duration or tick count is reached, or a latched state; then hold."""
        self.safety.ready(0, self._driver_now())
        # Start-up made every long-lived object; park them outside the collector so the cyclic GC's passes
        # during the run only walk what the loop itself allocates (sub-ms instead of a random multi-ms stall).
        gc.collect()
        gc.freeze()
        end_wall = None if duration_s is None else self.clock() + round(duration_s * 1e9)
        try:
            while not self._stop:
                if max_ticks is not None and self.counters.ticks >= max_ticks:
                    self.stop("ticks")
                    break
                if end_wall is not None and self.clock() >= end_wall:
                    self.stop("duration")
                    break
                if not self.lockstep:
                    if not self._aligned:
                        self._track_phase()
                    self.pacer.wait()
                self.tick()
                if self.safety.state in LATCHED:
                    self.stop(self.safety.state.value.lower())
        finally:
            self.rss_mb["end"] = rss_mb()
            self.final_hold_confirmed = self.hold_and_confirm()
        return self.safety.state

    # --------------------------------------------------------------------- tick
    def _driver_now(self) -> int:
        """The clock the driver stamps with: monotonic in real time, sim time in lockstep."""
        if self.lockstep:
            state = self.client.latest.state
            return state.t_capture_ns if state is not None else 0
        return self.clock()

    def _track_phase(self) -> None:
        """Real time: tick just after the cameras' frames arrive, so observations are as young as they can be.

        Aligned on the first frames, and again when the frames come later than expected three ticks running
        (the driver re-phased, e.g. after its own overrun).
        """
        images = [self.client.latest.images.get(c) for c in self.cameras]
        if any(i is None for i in images):
            return
        oldest = min(i.t_capture_ns for i in images)
        lag_ms = (self.clock() - oldest) / 1e6
        self._late_frames = self._late_frames + 1 if lag_ms > PHASE_OFFSET_MS + 15.0 else 0
        if not self._aligned or self._late_frames >= 3:
            newest = max(i.t_capture_ns for i in images)
            self.pacer.align(newest + round(PHASE_OFFSET_MS * 1e6))
            self._aligned, self._late_frames = True, 0

    def _idle(self, seconds: float) -> None:
        """The pacer's sleep: decode arrivals as they come, so a tick finds only the newest few messages.

        This moves receive work off the critical path; it is timed as "receive_idle", outside the overhead.
        """
        end = self.clock() + round(seconds * 1e9)
        while (remaining_ns := end - self.clock()) > 0:
            if remaining_ns < 1_000_000:
                time.sleep(remaining_ns / 1e9)
                return
            if self.client.sub.poll(remaining_ns // 1_000_000, zmq.POLLIN):
                self._receive("receive_idle")

    def _await_frames(self) -> None:
        """Real time: if this period's frames are not in yet (capture jitter), wait for them a little.

        Waiting up to FRAME_WAIT_MS costs less than computing on a frame a whole period old. The wait is
        recorded as its own stage; decoding what arrives counts as receive work.
        """
        end = self.clock() + round(FRAME_WAIT_MS * 1e6)
        while True:
            images = [self.client.latest.images.get(c) for c in self.cameras]
            if all(i is not None and self.clock() - i.t_capture_ns < self.period_ns // 2 for i in images):
                return
            remaining_ms = (end - self.clock()) / 1e6
            if remaining_ms <= 0:
                return
            started = time.perf_counter_ns()
            ready = self.client.sub.poll(max(1, int(remaining_ms)), zmq.POLLIN)
            self.timer.add("frame_wait", (time.perf_counter_ns() - started) / 1e6)
            if ready:
                self._receive()

    def _receive(self, stage: str = "receive") -> None:
        """Take what is queued (timed under `stage`) and note when the driver was last heard from."""
        started = time.perf_counter_ns()
        latest = self.client.poll(0)
        self.timer.add(stage, (time.perf_counter_ns() - started) / 1e6)
        heard = (
            latest.state.seq if latest.state is not None else -1,
            latest.status.seq if latest.status is not None else -1,
        )
        if heard != self._heard:
            self._heard, self._last_heard_wall = heard, self.clock()

    def _input_causes(self, now: int) -> set[str]:
        latest = self.client.latest
        captures = {"state": latest.state.t_capture_ns if latest.state else None}
        for c in self.cameras:
            image = latest.images.get(c)
            captures[f"image/{c}"] = image.t_capture_ns if image is not None else None
        causes = stale_sources(now, captures, self._max_age)
        if heartbeat_lost(now, latest.status.t_capture_ns if latest.status else None, self.config.watchdogs):
            causes.add("heartbeat")
        if latest.state is not None:
            self.acks.acknowledged(latest.state.last_cmd_seq)
        if self.acks.overdue(now):
            causes.add("no_ack")
        if latest.state is not None:
            excess = workspace_excess(latest.state.tcp_pose[:3], self.limits.workspace_low, self.limits.workspace_high)
            if np.max(excess) > WORKSPACE_TOLERANCE_M:
                causes.add("workspace")
        return causes

    def _infer(self, state: StateMsg) -> tuple[np.ndarray | None, set[str]]:
        """The policy's action for this tick, or None with the causes that stopped it."""
        frames = {c: self.client.latest.images[c].image for c in self.cameras}
        with self.timer.section("tokenize"):
            obs = self.policy.tokenizer.from_messages(state, frames, self.config.instruction)
        started = time.perf_counter_ns()
        logits = self.policy.infer(obs)
        infer_ms = (time.perf_counter_ns() - started) / 1e6
        self.timer.record("infer", infer_ms)
        self.counters.inferences += 1
        if not np.all(np.isfinite(logits)):
            return None, {"fault:non_finite_policy_output"}
        if infer_ms > self.config.watchdogs.inference_deadline_ms:
            return None, {"inference_deadline"}
        with self.timer.section("filter"):
            action = self.policy.action(logits, self.config.decode)
            result = filter_action(action, self._previous, state.tcp_pose[:3], self.limits, q=state.q, fk=self.fk)
        for name in result.clipped:
            self.counters.clipped[name] = self.counters.clipped.get(name, 0) + 1
        if result.action is None:
            self.counters.rejected[result.rejected] = self.counters.rejected.get(result.rejected, 0) + 1
            if result.rejected.startswith("non_finite"):
                return None, {f"fault:{result.rejected}"}
            return None, {f"filter:{result.rejected}"}
        return result.action, set()

    def tick(self) -> None:
        tick_start = time.perf_counter_ns()
        n = self.counters.ticks
        self._receive()
        if not self.lockstep:
            self._await_frames()
            self._track_phase()
        now = self._driver_now()
        causes = self._input_causes(now)
        state = self.client.latest.state
        status = self.client.latest.status
        if status is not None and ESTOP_FAULT in status.faults:
            self.safety.estop(f"driver reports {ESTOP_FAULT}", n, now)
        if driver_lost(self.clock(), self._last_heard_wall, self.config.watchdogs):
            self.safety.fault(
                f"driver lost: no state or status for {self.config.watchdogs.driver_lost_ms:.0f} ms", n, now
            )
        action = None
        if state is not None and not any(c.startswith("stale:") for c in causes) and self.safety.state not in LATCHED:
            action, infer_causes = self._infer(state)
            faults = sorted(c for c in infer_causes if c.startswith("fault:"))
            if faults:
                self.safety.fault(faults[0][len("fault:") :], n, now)
            causes |= {c for c in infer_causes if not c.startswith("fault:")}
        self.safety.update(causes, n, now)
        sent = action if self.safety.may_move else None
        if sent is not None:
            self._send(self.limits.mode, sent, state)
        else:
            self._send(HOLD, np.zeros(0), state)
        self._previous = sent
        total_ms = (time.perf_counter_ns() - tick_start) / 1e6
        self.timer.record("tick", total_ms)
        # Waiting is not work: the sim's step (lockstep) and a late frame are excluded from the overhead.
        excluded = [self.timer.last(s) for s in ("infer", "send_wait", "frame_wait")]  # NaN: did not run
        self.timer.record("overhead", total_ms - sum(x for x in excluded if np.isfinite(x)))
        if self.recorder is not None:
            self.recorder.tick(n, self.safety.state.value, sorted(causes), state, sent, self.client.seq)
        self.timer.next_tick()
        self.obs_age_ms.next_tick()
        self.counters.ticks += 1
        if self.counters.ticks == RSS_START_TICK:
            self.rss_mb["start"] = rss_mb()

    # --------------------------------------------------------------------- send
    def _send(self, mode: str, action: np.ndarray, state: StateMsg | None) -> None:
        obs_seq = state.seq if state is not None else -1
        if mode != HOLD and not np.all(np.isfinite(action)):  # the filter guarantees this; never trust, check
            raise AssertionError("non-finite action reached the send stage")
        with self.timer.section("send"):
            if self.lockstep:
                deadline = self._driver_now() + 2 * self.period_ns
                self._send_lockstep(mode, action, deadline)
            else:
                deadline = self.clock() + self.period_ns
                seq = self.client.send_command(mode, action, deadline, obs_seq)
                self.acks.sent(seq, self.clock())
        if mode == HOLD:
            self.counters.holds_sent += 1
        else:
            self.counters.commands_sent += 1
            if not self.lockstep and state is not None:
                oldest = min([state.t_capture_ns] + [self.client.latest.images[c].t_capture_ns for c in self.cameras])
                self.obs_age_ms.record("obs_age", (self.clock() - oldest) / 1e6)

    def _send_lockstep(self, mode: str, action: np.ndarray, deadline: int) -> None:
        """Send and wait for the acknowledging state; the wait is the sim's step, not runtime overhead."""
        started = time.perf_counter_ns()
        try:
            self.client.step(mode, action, deadline_ns=deadline, timeout_s=self.config.watchdogs.driver_lost_ms / 1000)
        except DriverUnavailable as exc:
            self.safety.fault(f"driver lost: {exc}", self.counters.ticks, self._driver_now())
        self.acks.sent(self.client.seq, self._driver_now())
        self.timer.record("send_wait", (time.perf_counter_ns() - started) / 1e6)

    def hold_and_confirm(self, timeout_s: float = 1.0) -> bool:
        """Command a hold and wait until the driver reports it applied; True when confirmed."""
        if self.safety.state is State.FAULT and "driver lost" in self.safety.fault_cause:
            return False
        try:
            if self.lockstep:
                self.client.step(HOLD, np.zeros(0), timeout_s=timeout_s)
                seq = self.client.seq
            else:
                seq = self.client.send_command(HOLD, np.zeros(0), self.clock() + round(timeout_s * 1e9))
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                latest = self.client.poll(20)
                if latest.state is not None and latest.state.last_cmd_seq >= seq:
                    log.info("driver acknowledged the final hold (command %d)", seq)
                    return True
        except DriverUnavailable:
            pass
        log.error("the driver did not acknowledge the final hold within %.1f s", timeout_s)
        return False

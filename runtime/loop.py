"""The 20 Hz loop: observe → watch → infer → decide → send, one tick per control period (DESIGN §1, §4).

The loop only composes its parts: the link to the driver (lockstep or real time: when a tick starts, what
it sees, how a command goes out), the policy step (tokenize → infer → decode), and the guard (watchdogs,
safety filter, state machine), all on one injected clock and one stage timer. Nothing the policy emits
reaches the driver without the guard's decision; when a run ends, for whatever reason, the arm is told to
hold and the loop waits for the driver to confirm it.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import Callable

from runtime.clock import MONOTONIC, Clock
from runtime.guard import Decision, Guard
from runtime.link import DriverLink, Inputs
from runtime.policy_step import PolicyStep
from runtime.recorder import Recorder
from runtime.safety.causes import CauseKind
from runtime.safety.state_machine import LATCHED, State
from runtime.stats import LoopStats
from runtime.timing import StageTimer

log = logging.getLogger(__name__)

STAGES = (
    "receive_idle",  # real time: arrivals decoded while waiting for the tick (off the critical path)
    "receive",
    "frame_wait",  # real time: waiting for a late frame
    "tokenize",
    "infer",
    "decode",
    "guard",  # watchdogs, safety filter, state machine
    "send",
    "send_wait",  # lockstep: the sim's step
    "tick",
    "overhead",  # the tick's work less inference and waiting: what the runtime itself costs
)
WAITING = ("infer", "send_wait", "frame_wait")  # excluded from the overhead
OVERHEAD_PARTS = ("receive", "tokenize", "decode", "guard", "send")  # the overhead's named stages; the rest is glue
TAIL_SHARE = 0.01  # the slowest ticks whose overhead the summary takes apart: the p99's side
RSS_START_TICK = 200  # memory baseline after warm-up (10 s at 20 Hz): allocator pools settle in the first ticks


def rss_mb() -> float:
    """Resident set size of this process (Linux), MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


class ControlLoop:
    def __init__(
        self,
        link: DriverLink,
        policy: PolicyStep,
        guard: Guard,
        timer: StageTimer,
        *,
        recorder: Recorder | None = None,
        clock: Clock = MONOTONIC,
        between_ticks: Callable[[ControlLoop], None] | None = None,
        await_reset: bool = False,
    ):
        self.link, self.policy, self.guard, self.timer = link, policy, guard, timer
        self.recorder = recorder
        self.clock = clock
        # Called after each tick's command left (the operator's control socket, runtime/control.py): it must not
        # block. With `await_reset`, FAULT and ESTOP do not end the run: it holds until a reset or a stop.
        self.between_ticks = between_ticks
        self.await_reset = await_reset
        self.last_inputs: Inputs | None = None  # what the last tick saw: whether a latch's condition still holds
        self.ticks = 0
        self.stop_reason = ""
        self.final_hold_confirmed = False
        self._stop = False
        self._rss = {"start": float("nan"), "end": float("nan")}

    def stop(self, reason: str) -> None:
        """Ask the loop to end after the current tick (signal handlers call this)."""
        if not self._stop:
            self.stop_reason = reason
        self._stop = True

    def run(
        self, duration_s: float | None = None, max_ticks: int | None = None, until: Callable[[], str] | None = None
    ) -> State:
        """Tick until stopped, the duration or tick count is reached, a latched state (unless awaiting a reset),
        or `until()` names a reason to stop (asked after every tick: pac-eval's "success"); then hold."""
        self.guard.ready(self.link.now_ns())
        # Start-up made every long-lived object; park them outside the collector so the cyclic GC's passes
        # during the run only walk what the loop itself allocates (sub-ms instead of a random multi-ms stall).
        gc.collect()
        gc.freeze()
        end_ns = None if duration_s is None else self.clock.now_ns() + round(duration_s * 1e9)
        try:
            while not self._stop:
                if max_ticks is not None and self.ticks >= max_ticks:
                    self.stop("ticks")
                elif end_ns is not None and self.clock.now_ns() >= end_ns:
                    self.stop("duration")
                else:
                    self.link.await_tick()
                    self.tick()
                    if self.between_ticks is not None:
                        self.between_ticks(self)
                    if self.guard.safety.state in LATCHED and not self.await_reset:
                        self.stop(self.guard.safety.state.value.lower())
                    elif until is not None and (reason := until()):
                        self.stop(reason)
        finally:
            self._rss["end"] = rss_mb()
            self.final_hold_confirmed = self._final_hold()
            gc.unfreeze()  # a process that runs many loops (pac-eval) lets each one's objects be collected
        return self.guard.safety.state

    def tick(self) -> None:
        """One control period: observe, watch, infer (when worth it), decide, send."""
        started = self.clock.now_ns()
        inputs = self.last_inputs = self.link.observe()
        with self.timer.section("guard"):
            causes = self.guard.watch(inputs, self.ticks)
        output = self.policy(inputs) if self.guard.may_infer(inputs, causes) else None
        with self.timer.section("guard"):
            decision = self.guard.decide(inputs, causes, output, self.ticks)
        seq = self.link.send(decision.mode, decision.action, inputs)
        self.guard.sent(seq, self.link.now_ns())
        self._account(started, inputs, decision, seq)

    def _account(self, started_ns: int, inputs: Inputs, decision: Decision, seq: int) -> None:
        total_ms = (self.clock.now_ns() - started_ns) / 1e6
        self.timer.record("tick", total_ms)
        waited = [self.timer.last(s) for s in WAITING]  # NaN: did not run this tick
        self.timer.record("overhead", total_ms - sum(x for x in waited if math.isfinite(x)))
        if self.recorder is not None:
            self.recorder.tick(self.ticks, decision, inputs.state, seq)
        self.timer.next_tick()
        self.ticks += 1
        if self.ticks == RSS_START_TICK:
            self._rss["start"] = rss_mb()

    def _final_hold(self) -> bool:
        fault = self.guard.safety.fault_cause
        if fault is not None and fault.kind is CauseKind.DRIVER_LOST:
            return False  # nobody to tell
        confirmed = self.link.hold_and_confirm()
        if confirmed:
            log.info("driver acknowledged the final hold")
        else:
            log.error("the driver did not acknowledge the final hold")
        return confirmed

    def stats(self) -> LoopStats:
        """A snapshot of everything the run summary reports."""
        stages = {}
        for s in STAGES:
            p50, p99, n = self.timer.percentiles(s)
            stages[s] = {"p50": p50, "p99": p99, "n": n}
        safety, counts, link = self.guard.safety, self.guard.counts, self.link.stats()
        return LoopStats(
            link=link.kind.value,
            final_state=safety.state.value,
            stop_reason=self.stop_reason,
            ticks=self.ticks,
            overruns=link.overruns,
            overrun_late_ms=link.overrun_late_ms,
            commands_sent=counts.commands_sent,
            holds_sent=counts.holds_sent,
            inferences=self.policy.inferences,
            holds_by_cause={str(c): n for c, n in sorted(safety.holds_by_cause.items())},
            transitions=[
                {"tick": t.tick, "from": t.source.value, "to": t.target.value, "cause": t.cause}
                for t in safety.transitions
            ],
            fault_cause=str(safety.fault_cause) if safety.fault_cause is not None else "",
            stages_ms=stages,
            obs_age_ms=link.obs_age_ms,
            filter_clipped=dict(counts.clipped),
            filter_rejected=dict(counts.rejected),
            messages_dropped=link.messages_dropped,
            driver_rejected=link.driver_rejected,
            rss_mb=dict(self._rss),
            frame_lag_ms=link.frame_lag_ms,
            overhead_tail=self.timer.tail("overhead", OVERHEAD_PARTS, TAIL_SHARE),
            final_hold_confirmed=self.final_hold_confirmed,
        )

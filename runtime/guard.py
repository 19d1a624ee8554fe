"""The guard: watchdogs, the safety filter and the state machine, deciding what each tick may send.

`watch` turns a tick's inputs into hold causes (stale sources: state, cameras, object poses; heartbeat;
acknowledgement; a command the driver refused; a lapsed lease; TCP outside its box) and latches FAULT/ESTOP on
a lost or restarted driver, a jump of its clock, an arm another session took, or a pressed stop.
Acknowledgements and rejections count only when the driver reports this session (`session`, its fingerprint)
as the arm's holder; `decide` filters the policy's action and returns a typed `Decision`: the action in the
arm's mode when the state machine is RUNNING, else a hold. Nothing but a hold leaves the guard unless it passed
`filter_action` and is finite (DESIGN §4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robots.contract.link import DriverFault, DriverMode, Mode
from runtime.link import NO_ACTION, Inputs
from runtime.policy_step import PolicyOutput
from runtime.safety.causes import Cause, CauseKind
from runtime.safety.limits import SafetyLimits, beyond_workspace, filter_action
from runtime.safety.state_machine import LATCHED, SafetyStateMachine, State
from runtime.safety.watchdogs import AckTracker, WatchdogConfig, driver_lost, heartbeat_lost, stale_sources

WORKSPACE_TOLERANCE_M = 0.02  # TCP this far outside the box (tracking error, a push): hold, don't steer back
# Filter rejections that mean a number is not finite: the policy or the driver is sick, so FAULT, not HOLD.
NON_FINITE_REJECTIONS = {"non_finite": "action", "non_finite_state": "state", "non_finite_fk": "fk"}
# Real time: a capture stamped this far past the runtime's own clock is a jump, not an offset (the pre-flight
# allows max_clock_offset_ms between hosts, 5 ms by default; on one host a capture is never ahead at all).
CLOCK_AHEAD_TOLERANCE_MS = 100.0


class DriverClock:
    """Is the driver still the one this run began with, and can its clock be trusted? (issue 12)

    - restarted: its state or status names another `instance` than the first one seen.
    - clock back: a newer message of a source (higher seq) is stamped earlier than the one before it.
    - clock ahead: real time, a capture stamped past the tick's own clock by CLOCK_AHEAD_TOLERANCE_MS; lockstep,
      the sim clock ran further than one period per tick since the first tick (each command advances it one
      period; nothing else can while this session holds the arm).
    `now` is the driver's time as far as the runtime knows: the tick's clock or the newest stamp it was sent, if
    later. In lockstep (where the tick's clock is the state's stamp) that is what keeps ages running when the state
    stream stalls and the cameras and heartbeats go on. An operator's reset out of FAULT starts a new DriverClock:
    the driver as it is then is the one the run goes on with.
    """

    def __init__(self, period_ns: int):
        self.period_ns = period_ns
        self.instance = ""
        self._last: dict[str, tuple[int, int]] = {}  # source → (seq, capture) of the newest message seen
        self._first: tuple[int, int] | None = None  # lockstep: (tick, newest capture) at the first tick

    @staticmethod
    def _stamps(inputs: Inputs) -> dict[str, tuple[int, int]]:
        sources = {"state": inputs.state, "status": inputs.status, "objects": inputs.objects}
        sources |= {f"image/{camera}": frame for camera, frame in inputs.frames.items()}
        return {name: (m.seq, m.t_capture_ns) for name, m in sources.items() if m is not None}

    def now(self, inputs: Inputs) -> int:
        return max([inputs.tick_ns, *(t for _, t in self._stamps(inputs).values())])

    def check(self, inputs: Inputs, tick: int) -> Cause | None:
        """The first thing wrong with the driver's identity or clock at this tick, as a latching cause."""
        for report in (inputs.status, inputs.state):
            instance = getattr(report, "instance", "")
            if instance and not self.instance:
                self.instance = instance
            elif instance and instance != self.instance:
                return Cause(CauseKind.DRIVER_RESTARTED, detail=f"instance {instance}, was {self.instance}")
        stamps, back = self._stamps(inputs), None
        for source, (seq, t) in stamps.items():
            last = self._last.get(source)
            if last is None or seq > last[0]:
                if last is not None and t < last[1] and back is None:
                    back = f"{source} {seq} stamped {(last[1] - t) / 1e6:.0f} ms before {source} {last[0]}"
                self._last[source] = (seq, t)
        if back is not None:
            return Cause(CauseKind.CLOCK_JUMP, "back", detail=back)
        if not stamps:
            return None
        newest = max(t for _, t in stamps.values())
        report = inputs.state or inputs.status
        if report is not None and report.mode == DriverMode.LOCKSTEP:
            if self._first is None:
                self._first = (tick, newest)
            ran, ticks = newest - self._first[1], tick - self._first[0]
            if ran > (ticks + 1) * self.period_ns:
                return Cause(CauseKind.CLOCK_JUMP, "ahead", detail=f"sim clock {ran / 1e6:.0f} ms on in {ticks} ticks")
        elif newest - inputs.tick_ns > CLOCK_AHEAD_TOLERANCE_MS * 1e6:
            return Cause(
                CauseKind.CLOCK_JUMP, "ahead", detail=f"stamped {(newest - inputs.tick_ns) / 1e6:.0f} ms ahead"
            )
        return None


@dataclass(frozen=True, eq=False)
class Decision:
    mode: Mode  # the arm's mode, or HOLD
    action: np.ndarray  # filtered action; empty for a hold
    causes: frozenset[Cause]  # this tick's hold causes
    state: State  # the safety state after this tick


@dataclass
class GuardCounts:
    commands_sent: int = 0
    holds_sent: int = 0
    clipped: dict[str, int] = field(default_factory=dict)  # by limit that changed an action
    rejected: dict[str, int] = field(default_factory=dict)  # by the filter's rejection


class Guard:
    def __init__(
        self,
        limits: SafetyLimits,
        watchdogs: WatchdogConfig,
        cameras: tuple[str, ...],
        fk: Callable[[np.ndarray], np.ndarray] | None = None,
        *,
        objects: bool = False,
        session: str | None = None,
    ):
        self.limits, self.watchdogs, self.cameras = limits, watchdogs, cameras
        # This runtime's session fingerprint: whose acknowledgements are ours. None only for a loop on a link
        # without sessions (unit tests' fake drivers); pac-run and pac-eval always pass their client's.
        self.session = session
        self._rejected_seen = -1  # the driver's last rejected seq already turned into a cause
        self.objects = objects  # the policy reads object poses: the `objects` topic's age is watched too
        self.fk = fk  # joint mode: TCP position of a joint target, for the filter's workspace check
        self.safety = SafetyStateMachine()
        self.acks = AckTracker(watchdogs.ack_timeout_ms)
        self.clock = DriverClock(round(limits.period_s * 1e9))  # the driver's identity and clock
        self._transitions_seen = 0
        self.counts = GuardCounts()
        self._max_age = (
            {"state": watchdogs.max_state_age_ms}
            | {f"image/{c}": watchdogs.max_image_age_ms for c in cameras}
            | ({"objects": watchdogs.max_objects_age_ms} if objects else {})
        )
        self._previous: np.ndarray | None = None  # the last action sent (None after a hold)

    def ready(self, t_ns: int) -> None:
        self.safety.ready(0, t_ns)

    def watch(self, inputs: Inputs, tick: int) -> frozenset[Cause]:
        """This tick's hold causes from its inputs; latches ESTOP or FAULT when the driver says so or is lost."""
        now = inputs.tick_ns
        status, state = inputs.status, inputs.state
        if status is not None and DriverFault.ESTOP in status.faults:
            self.safety.latch(Cause(CauseKind.ESTOP, "driver"), tick, now)
        if driver_lost(inputs.silent_ns, self.watchdogs):
            detail = f"nothing from the driver for {inputs.silent_ns / 1e6:.0f} ms"
            self.safety.latch(Cause(CauseKind.DRIVER_LOST, detail=detail), tick, now)
        if self._reset_since_last_tick():
            self.clock = DriverClock(self.clock.period_ns)
        if (wrong := self.clock.check(inputs, tick)) is not None:  # restarted, or its clock jumped
            self.safety.latch(wrong, tick, now)
        now = self.clock.now(inputs)  # ages on the driver's newest time (lockstep: not just the state's stamp)
        causes = stale_sources(now, inputs.captures(self.cameras, self.objects), self._max_age)
        if heartbeat_lost(now, status.t_capture_ns if status is not None else None, self.watchdogs):
            causes.add(Cause(CauseKind.HEARTBEAT))
        causes |= self._session_causes(inputs, tick)
        if state is not None:
            if self.session is None or state.holder == self.session:
                self.acks.acknowledged(state.last_cmd_seq)
            if beyond_workspace(state.tcp_pose[:3], self.limits, WORKSPACE_TOLERANCE_M):
                causes.add(Cause(CauseKind.WORKSPACE))
        if self.acks.overdue(now):
            causes.add(Cause(CauseKind.NO_ACK))
        return frozenset(causes)

    def _reset_since_last_tick(self) -> bool:
        """Whether an operator reset the state machine out of FAULT or ESTOP since the last `watch`."""
        new = self.safety.transitions[self._transitions_seen :]
        self._transitions_seen = len(self.safety.transitions)
        return any(t.source in LATCHED and t.target is State.READY for t in new)

    def _session_causes(self, inputs: Inputs, tick: int) -> set[Cause]:
        """Whether this session still holds the arm, and whether the driver refused one of its commands."""
        causes: set[Cause] = set()
        if self.session is None:
            return causes
        for report in (inputs.status, inputs.state):
            if report is None:
                continue
            if report.holder not in ("", self.session):
                label = getattr(inputs.status, "holder_label", "") if inputs.status is not None else ""
                detail = f"held by {label or 'another session'} ({report.holder})"
                self.safety.latch(Cause(CauseKind.ARM_TAKEN, detail=detail), tick, inputs.tick_ns)
            elif report.holder == "":
                causes.add(Cause(CauseKind.LEASE_LOST))
        status = inputs.status
        if status is not None and status.holder == self.session and status.last_rejected_seq > self._rejected_seen:
            self._rejected_seen = status.last_rejected_seq
            causes.add(Cause(CauseKind.COMMAND_REJECTED, status.last_rejection))
        return causes

    def may_infer(self, inputs: Inputs, causes: frozenset[Cause]) -> bool:
        """Whether running the policy is worth it: a state, every input fresh, nothing latched."""
        fresh = not any(c.kind is CauseKind.STALE for c in causes)
        return inputs.state is not None and fresh and self.safety.state not in LATCHED

    def decide(self, inputs: Inputs, causes: frozenset[Cause], output: PolicyOutput | None, tick: int) -> Decision:
        """The command for this tick: the filtered action while RUNNING, otherwise a hold."""
        action, more = self._filtered(inputs, output)
        for cause in more:
            if cause.latches:
                self.safety.latch(cause, tick, inputs.tick_ns)
        causes = causes | {c for c in more if not c.latches}
        state = self.safety.update(causes, tick, inputs.tick_ns)
        if action is None or not self.safety.may_move:
            self._previous = None
            self.counts.holds_sent += 1
            return Decision(Mode.HOLD, NO_ACTION, causes, state)
        self._previous = action
        self.counts.commands_sent += 1
        return Decision(self.limits.mode, action, causes, state)

    def sent(self, seq: int, t_ns: int) -> None:
        """A command left for the driver at `t_ns` (driver clock): it must be acknowledged in time."""
        self.acks.sent(seq, t_ns)

    def _filtered(self, inputs: Inputs, output: PolicyOutput | None) -> tuple[np.ndarray | None, set[Cause]]:
        if output is None:
            return None, set()
        if output.action is None:
            return None, {output.cause} if output.cause is not None else set()
        state = inputs.state
        result = filter_action(output.action, self._previous, state.tcp_pose[:3], self.limits, q=state.q, fk=self.fk)
        for name in result.clipped:
            self.counts.clipped[name] = self.counts.clipped.get(name, 0) + 1
        if result.action is None:
            self.counts.rejected[result.rejected] = self.counts.rejected.get(result.rejected, 0) + 1
            if result.rejected in NON_FINITE_REJECTIONS:
                return None, {Cause(CauseKind.NON_FINITE, NON_FINITE_REJECTIONS[result.rejected])}
            return None, {Cause(CauseKind.FILTER, result.rejected)}
        if not np.isfinite(result.action).all():  # the filter guarantees this; never trust, check
            return None, {Cause(CauseKind.NON_FINITE, "filtered_action")}
        return result.action, set()

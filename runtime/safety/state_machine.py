"""The loop's safety state machine (DESIGN §4): STARTING → READY → RUNNING ⇄ HOLD → FAULT, plus ESTOP.

HOLD is entered while any watchdog cause is active and left by itself when the last cause clears. FAULT
and ESTOP are latched: only `reset()` (an operator) leaves them. Every transition is logged with its cause
and kept, so the run summary can count holds by cause. The machine only records; the loop asks
`may_move` before sending anything but a hold.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class State(enum.Enum):
    STARTING = "STARTING"
    READY = "READY"
    RUNNING = "RUNNING"
    HOLD = "HOLD"
    FAULT = "FAULT"
    ESTOP = "ESTOP"


LATCHED = (State.FAULT, State.ESTOP)


@dataclass(frozen=True)
class Transition:
    tick: int
    t_ns: int
    source: State
    target: State
    cause: str


@dataclass
class SafetyStateMachine:
    state: State = State.STARTING
    transitions: list[Transition] = field(default_factory=list)
    hold_causes: frozenset[str] = frozenset()
    holds_by_cause: dict[str, int] = field(default_factory=dict)  # HOLD entries (and added causes) per cause
    fault_cause: str = ""

    def _go(self, target: State, cause: str, tick: int, t_ns: int) -> None:
        if target is self.state:
            return
        t = Transition(tick, t_ns, self.state, target, cause)
        self.transitions.append(t)
        level = logging.ERROR if target in LATCHED else logging.WARNING if target is State.HOLD else logging.INFO
        log.log(level, "safety %s → %s at tick %d: %s", t.source.value, t.target.value, tick, cause)
        self.state = target

    @property
    def may_move(self) -> bool:
        return self.state is State.RUNNING

    def ready(self, tick: int = 0, t_ns: int = 0) -> None:
        """Pre-flight passed."""
        if self.state is State.STARTING:
            self._go(State.READY, "preflight passed", tick, t_ns)

    def update(self, causes: set[str] | frozenset[str], tick: int, t_ns: int) -> State:
        """Apply this tick's active watchdog causes: HOLD while any, RUNNING when none (from READY or HOLD)."""
        if self.state in LATCHED or self.state is State.STARTING:
            return self.state
        causes = frozenset(causes)
        for cause in sorted(causes - self.hold_causes):
            self.holds_by_cause[cause] = self.holds_by_cause.get(cause, 0) + 1
        if causes:
            self._go(State.HOLD, ", ".join(sorted(causes)), tick, t_ns)
        elif self.state in (State.READY, State.HOLD):
            cleared = ", ".join(sorted(self.hold_causes)) or "first tick"
            self._go(State.RUNNING, f"cleared: {cleared}", tick, t_ns)
        self.hold_causes = causes
        return self.state

    def fault(self, cause: str, tick: int, t_ns: int) -> None:
        """Latch FAULT (an ESTOP stays ESTOP)."""
        if self.state is not State.ESTOP and self.state is not State.FAULT:
            self.fault_cause = cause
            self._go(State.FAULT, cause, tick, t_ns)

    def estop(self, cause: str, tick: int, t_ns: int) -> None:
        self.fault_cause = cause
        self._go(State.ESTOP, cause, tick, t_ns)

    def reset(self, operator: str, tick: int, t_ns: int) -> None:
        """Operator reset out of FAULT or ESTOP: back to READY, watchdogs decide the rest."""
        if self.state in LATCHED:
            self.fault_cause = ""
            self.hold_causes = frozenset()
            self._go(State.READY, f"reset by {operator}", tick, t_ns)

    def counts(self) -> dict[str, int]:
        """Transitions into each state, for the run summary."""
        out: dict[str, int] = {}
        for t in self.transitions:
            out[t.target.value] = out.get(t.target.value, 0) + 1
        return out

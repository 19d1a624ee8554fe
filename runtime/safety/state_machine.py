"""The loop's safety state machine (DESIGN §4): STARTING → READY → RUNNING ⇄ HOLD → FAULT, plus ESTOP.

HOLD is entered while any hold cause is active and left by itself when the last cause clears. FAULT and
ESTOP are latched: only `reset()` (an operator) leaves them. Causes are typed (runtime/safety/causes.py);
every transition is logged with its cause and kept, so the run summary can count holds by cause. The
machine only records; the guard asks `may_move` before letting anything but a hold out.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from runtime.safety.causes import Cause, CauseKind

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
    cause: str  # what made it: the causes, "cleared: ...", "preflight passed" or "reset by ..."


@dataclass
class SafetyStateMachine:
    state: State = State.STARTING
    transitions: list[Transition] = field(default_factory=list)
    hold_causes: frozenset[Cause] = frozenset()
    holds_by_cause: dict[Cause, int] = field(default_factory=dict)  # HOLD entries (and added causes) per cause
    fault_cause: Cause | None = None  # what latched FAULT or ESTOP

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

    def update(self, causes: set[Cause] | frozenset[Cause], tick: int, t_ns: int) -> State:
        """Apply this tick's active hold causes: HOLD while any, RUNNING when none (from READY or HOLD)."""
        if self.state in LATCHED or self.state is State.STARTING:
            return self.state
        causes = frozenset(causes)
        for cause in sorted(causes - self.hold_causes):
            self.holds_by_cause[cause] = self.holds_by_cause.get(cause, 0) + 1
        if causes:
            self._go(State.HOLD, ", ".join(str(c) for c in sorted(causes)), tick, t_ns)
        elif self.state in (State.READY, State.HOLD):
            cleared = ", ".join(str(c) for c in sorted(self.hold_causes)) or "first tick"
            self._go(State.RUNNING, f"cleared: {cleared}", tick, t_ns)
        self.hold_causes = causes
        return self.state

    def latch(self, cause: Cause, tick: int, t_ns: int) -> None:
        """Latch ESTOP for an ESTOP cause, FAULT for any other (an ESTOP stays ESTOP, a FAULT its first cause)."""
        if cause.kind is CauseKind.ESTOP:
            if self.state is not State.ESTOP:
                self.fault_cause = cause
                self._go(State.ESTOP, str(cause), tick, t_ns)
        elif self.state not in LATCHED:
            self.fault_cause = cause
            self._go(State.FAULT, str(cause), tick, t_ns)

    def reset(self, operator: str, tick: int, t_ns: int) -> None:
        """Operator reset out of FAULT or ESTOP: back to READY, watchdogs decide the rest."""
        if self.state in LATCHED:
            self.fault_cause = None
            self.hold_causes = frozenset()
            self._go(State.READY, f"reset by {operator}", tick, t_ns)

"""Why the arm holds or stops, as a typed value (kind + source) instead of a string to parse.

Watchdogs, the policy step and the filter each return `Cause`s; the guard and the state machine decide on
their kinds, and the summary counts them by `str(cause)` ("stale:image/front_left", "inference_deadline").
A kind either holds (HOLD while active, cleared by itself) or latches FAULT or ESTOP (DESIGN §4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CauseKind(enum.Enum):
    # HOLD: active while the condition lasts
    STALE = "stale"  # an input older than its limit; source: "state", "image/<camera>" or "objects"
    HEARTBEAT = "heartbeat"  # no driver status within heartbeat_timeout_ms
    NO_ACK = "no_ack"  # a command not applied by the driver within ack_timeout_ms
    WORKSPACE = "workspace"  # the TCP is outside its box beyond the tolerance
    INFERENCE_DEADLINE = "inference_deadline"  # a result too late to send
    BAD_OBSERVATION = "bad_observation"  # a reading the model's spec cannot take; source: what was wrong
    FILTER = "filter"  # the safety filter refused the action; source: the filter's rejection
    COMMAND_REJECTED = "command_rejected"  # the driver refused this session's command; source: its reason
    LEASE_LOST = "lease_lost"  # the arm is free: this session's lease ran out (its next command claims it again)
    # latched until an operator reset
    NON_FINITE = "non_finite"  # NaN/inf where a number must be; source: policy_output, action, state or fk
    DRIVER_LOST = "driver_lost"  # nothing from the driver for driver_lost_ms, or it stopped answering
    ESTOP = "estop"  # the driver reports a pressed emergency stop
    ARM_TAKEN = "arm_taken"  # another session holds the arm: this one must not go on as if it commanded it
    DRIVER_RESTARTED = "driver_restarted"  # another driver instance answers: its arm state is not the one we had
    CLOCK_JUMP = "clock_jump"  # the driver's clock went back, or ahead of what time allows: no age can be trusted


FAULT_KINDS = frozenset(
    {CauseKind.NON_FINITE, CauseKind.DRIVER_LOST, CauseKind.ARM_TAKEN, CauseKind.DRIVER_RESTARTED, CauseKind.CLOCK_JUMP}
)
ESTOP_KINDS = frozenset({CauseKind.ESTOP})


@dataclass(frozen=True)
class Cause:
    kind: CauseKind
    source: str = ""
    detail: str = field(default="", compare=False)  # for people: not part of the cause's identity

    def __str__(self) -> str:
        text = f"{self.kind.value}:{self.source}" if self.source else self.kind.value
        return f"{text} ({self.detail})" if self.detail else text

    def __lt__(self, other: Cause) -> bool:  # sortable, for stable logs: by kind, then source
        return (self.kind.value, self.source) < (other.kind.value, other.source)

    @property
    def latches(self) -> bool:
        return self.kind in FAULT_KINDS or self.kind in ESTOP_KINDS


def stale(source: str) -> Cause:
    return Cause(CauseKind.STALE, source)


def names(causes) -> list[str]:
    """Sorted text of a set of causes, for records and logs."""
    return [str(c) for c in sorted(causes)]

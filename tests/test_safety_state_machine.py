"""The safety state machine: HOLD follows the causes, FAULT and ESTOP latch, every transition is logged."""

from __future__ import annotations

import logging

import pytest

from runtime.safety.causes import Cause, CauseKind, stale
from runtime.safety.state_machine import SafetyStateMachine, State

A, B = stale("image/a"), stale("image/b")
HEARTBEAT = Cause(CauseKind.HEARTBEAT)
NAN = Cause(CauseKind.NON_FINITE, "policy_output")
LOST = Cause(CauseKind.DRIVER_LOST, detail="nothing for 1000 ms")


def test_starting_ignores_watchdogs_until_preflight_passes():
    sm = SafetyStateMachine()
    assert sm.update(set(), 0, 0) is State.STARTING and not sm.may_move
    sm.ready()
    assert sm.state is State.READY and not sm.may_move
    assert sm.update(set(), 1, 0) is State.RUNNING and sm.may_move


@pytest.mark.parametrize(
    "sequence, expected",
    [
        ([set()], [State.RUNNING]),
        ([{A}], [State.HOLD]),
        ([set(), {HEARTBEAT}, set()], [State.RUNNING, State.HOLD, State.RUNNING]),
        ([{A}, {A, B}, {B}, set()], [State.HOLD, State.HOLD, State.HOLD, State.RUNNING]),
    ],
)
def test_hold_lasts_exactly_while_a_cause_is_active(sequence, expected):
    sm = SafetyStateMachine()
    sm.ready()
    got = [sm.update(causes, i, 0) for i, causes in enumerate(sequence)]
    assert got == expected


def test_fault_latches_until_an_operator_reset():
    sm = SafetyStateMachine()
    sm.ready()
    sm.update(set(), 0, 0)
    sm.latch(NAN, 1, 0)
    assert sm.update({A}, 2, 0) is State.FAULT and not sm.may_move and sm.fault_cause == NAN
    sm.latch(LOST, 2, 0)
    assert sm.fault_cause == NAN  # the first cause is the one that counts
    sm.reset("operator", 3, 0)
    assert sm.state is State.READY and sm.fault_cause is None
    assert sm.update(set(), 4, 0) is State.RUNNING


def test_estop_latches_and_wins_over_fault():
    sm = SafetyStateMachine()
    sm.ready()
    sm.latch(NAN, 1, 0)
    button = Cause(CauseKind.ESTOP, "driver")
    sm.latch(button, 2, 0)
    sm.latch(LOST, 3, 0)
    assert sm.state is State.ESTOP and sm.fault_cause == button
    assert sm.update(set(), 4, 0) is State.ESTOP


def test_every_transition_is_logged_and_kept_with_its_cause(caplog):
    sm = SafetyStateMachine()
    with caplog.at_level(logging.INFO, logger="runtime.safety.state_machine"):
        sm.ready(0, 0)
        sm.update(set(), 1, 10)
        sm.update({stale("image/front_left")}, 2, 20)
        sm.update(set(), 3, 30)
        sm.latch(LOST, 4, 40)
    assert [(t.source, t.target, t.cause) for t in sm.transitions] == [
        (State.STARTING, State.READY, "preflight passed"),
        (State.READY, State.RUNNING, "cleared: first tick"),
        (State.RUNNING, State.HOLD, "stale:image/front_left"),
        (State.HOLD, State.RUNNING, "cleared: stale:image/front_left"),
        (State.RUNNING, State.FAULT, "driver_lost (nothing for 1000 ms)"),
    ]
    assert len(caplog.records) == 5 and "stale:image/front_left" in caplog.records[2].getMessage()
    assert sm.holds_by_cause == {stale("image/front_left"): 1}


def test_holds_are_counted_per_cause_when_a_cause_joins_an_ongoing_hold():
    sm = SafetyStateMachine()
    sm.ready()
    sm.update({A}, 0, 0)
    sm.update({A, B}, 1, 0)
    sm.update({A, B}, 2, 0)
    assert sm.holds_by_cause == {A: 1, B: 1}


def test_causes_read_as_their_kind_and_source_and_detail_is_not_identity():
    assert str(stale("image/a")) == "stale:image/a" and str(HEARTBEAT) == "heartbeat"
    assert LOST == Cause(CauseKind.DRIVER_LOST, detail="other words") and LOST.latches and not A.latches
    assert sorted([HEARTBEAT, B, A]) == [HEARTBEAT, A, B]

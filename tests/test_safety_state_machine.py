"""The safety state machine: HOLD follows the causes, FAULT and ESTOP latch, every transition is logged."""

from __future__ import annotations

import logging

import pytest

from runtime.safety.state_machine import SafetyStateMachine, State


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
        ([{"stale:image/a"}], [State.HOLD]),
        ([set(), {"heartbeat"}, set()], [State.RUNNING, State.HOLD, State.RUNNING]),
        ([{"a"}, {"a", "b"}, {"b"}, set()], [State.HOLD, State.HOLD, State.HOLD, State.RUNNING]),
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
    sm.fault("non_finite_policy_output", 1, 0)
    assert sm.update(set(), 2, 0) is State.FAULT and not sm.may_move
    sm.reset("operator", 3, 0)
    assert sm.state is State.READY
    assert sm.update(set(), 4, 0) is State.RUNNING


def test_estop_latches_and_wins_over_fault():
    sm = SafetyStateMachine()
    sm.ready()
    sm.estop("button", 1, 0)
    sm.fault("later fault", 2, 0)
    assert sm.state is State.ESTOP and sm.fault_cause == "button"
    assert sm.update(set(), 3, 0) is State.ESTOP


def test_every_transition_is_logged_and_kept_with_its_cause(caplog):
    sm = SafetyStateMachine()
    with caplog.at_level(logging.INFO, logger="runtime.safety.state_machine"):
        sm.ready(0, 0)
        sm.update(set(), 1, 10)
        sm.update({"stale:image/front_left"}, 2, 20)
        sm.update(set(), 3, 30)
        sm.fault("driver lost", 4, 40)
    assert [(t.source, t.target, t.cause) for t in sm.transitions] == [
        (State.STARTING, State.READY, "preflight passed"),
        (State.READY, State.RUNNING, "cleared: first tick"),
        (State.RUNNING, State.HOLD, "stale:image/front_left"),
        (State.HOLD, State.RUNNING, "cleared: stale:image/front_left"),
        (State.RUNNING, State.FAULT, "driver lost"),
    ]
    assert len(caplog.records) == 5 and "stale:image/front_left" in caplog.records[2].getMessage()
    assert sm.holds_by_cause == {"stale:image/front_left": 1}
    assert sm.counts() == {"READY": 1, "RUNNING": 2, "HOLD": 1, "FAULT": 1}


def test_holds_are_counted_per_cause_when_a_cause_joins_an_ongoing_hold():
    sm = SafetyStateMachine()
    sm.ready()
    sm.update({"a"}, 0, 0)
    sm.update({"a", "b"}, 1, 0)
    sm.update({"a", "b"}, 2, 0)
    assert sm.holds_by_cause == {"a": 1, "b": 1}

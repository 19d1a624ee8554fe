"""One owner per arm: the driver's session gate, per-session acknowledgements, and the driver's own checks
(workspace wall, observation age, control arguments), against a real lockstep `pac-sim` over loopback.

Each adversarial case of issue 12 is here: a second process that commands the arm with a higher seq, an extreme
seq, a second pac-run against a driver in use, a reset with a bad argument.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from robots.contract import messages as msg
from robots.contract.client import ArmHeld, DriverClient
from robots.contract.link import Mode
from robots.contract.session import (
    DEFAULT_LEASE_MS,
    MAX_LEASE_MS,
    MIN_LEASE_MS,
    SessionGate,
    fingerprint,
    new_session_token,
)
from robots.contract.wire import encode
from robots.spec import load_spec
from runtime.cli import EXIT_REFUSED
from runtime.cli import main as pac_run
from runtime.guard import Guard
from runtime.link import Inputs
from runtime.safety.causes import Cause, CauseKind
from runtime.safety.limits import SafetyLimits
from runtime.safety.state_machine import State
from runtime.safety.watchdogs import WatchdogConfig

ARM = load_spec("sawyer")
SPACE = ARM.action_spaces[Mode.CARTESIAN_VELOCITY]
MS = 1_000_000


def _twist(**axes: float) -> np.ndarray:
    action = np.zeros(SPACE.size)
    for dim, value in axes.items():
        action[SPACE.dims.index(dim)] = value
    return action


class FakeClock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


# ------------------------------------------------------------------------------------ the gate, as a table
def test_the_gate_grants_one_session_at_a_time_until_its_lease_lapses_or_it_releases():
    clock = FakeClock()
    gate = SessionGate(lease_ms=100, clock=clock)
    a, b = new_session_token(), new_session_token()
    assert gate.admit(a, "a").new_holder and gate.holder_fingerprint == fingerprint(a)
    refused = gate.admit(b, "b")
    assert not refused.admitted and "a (" in refused.holder and gate.refused == 1
    clock.t = 99 * MS
    assert gate.admit(a).admitted and not gate.admit(a).new_holder  # each message renews: 100 ms from now
    clock.t = 198 * MS
    assert not gate.admit(b).admitted  # a renewed at 99 ms: its lease runs to 199 ms
    clock.t = 200 * MS
    assert gate.holder_fingerprint == "" and gate.admit(b, "b").new_holder  # lapsed: b takes the arm
    assert not gate.release(a) and gate.release(b) and gate.admit(a).new_holder  # only the holder releases
    assert gate.claims == 3


@pytest.mark.parametrize(
    "asked, granted", [(5.0, MIN_LEASE_MS), (1e9, MAX_LEASE_MS), (float("nan"), DEFAULT_LEASE_MS), (250, 250)]
)
def test_a_claimed_lease_is_clamped_into_its_bounds(asked, granted):
    clock = FakeClock()
    gate = SessionGate(clock=clock)
    gate.admit(new_session_token(), lease_ms=asked)
    assert gate.remaining_ms() == pytest.approx(granted)


# ------------------------------------------------------------------------------- against a lockstep pac-sim
@pytest.fixture
def clients(lockstep_sim):
    made: list[DriverClient] = []

    def make(label: str) -> DriverClient:
        client = DriverClient(lockstep_sim.pub, lockstep_sim.cmd, source=label)
        client.wait_ready(timeout_s=30)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_a_second_session_can_neither_move_the_arm_nor_lock_the_holder_out(clients):
    runtime, rogue = clients("pac-run"), clients("rogue")
    start = runtime.reset().state.tcp_pose.copy()
    runtime.claim()
    rogue.poll(100)
    rogue.seq = 10**12  # "a higher seq": it used to win the driver's one global order
    for _ in range(20):
        rogue.send_command(Mode.CARTESIAN_VELOCITY, _twist(vz=-0.2), deadline_ns=2**62)
    with pytest.raises(ArmHeld, match="held by pac-run"):
        rogue.claim(timeout_s=2)
    for _ in range(5):
        latest = runtime.step(Mode.CARTESIAN_VELOCITY, np.zeros(SPACE.size))
    assert runtime.mine(latest.state) and not rogue.mine(latest.state)
    assert latest.state.last_cmd_seq == runtime.seq  # the holder's commands are applied, in its own order
    assert np.abs(latest.state.tcp_pose[:3] - start[:3]).max() < 1e-3  # the rogue moved nothing
    status = runtime.poll(100).status
    assert status.not_owner >= 20 and status.holder_label == "pac-run"


def test_a_client_that_only_listened_closes_without_a_refused_release(clients):
    """A client that only watched the driver (a monitor, a pre-flight that gave up before claiming): closing it
    must not count at the driver as a stranger trying to give back an arm it never held."""
    listener, watcher = clients("listener"), clients("watcher")
    before = watcher.poll(100).status
    listener.close()
    time.sleep(0.3)  # what it would have sent has reached the driver by now
    end = time.monotonic() + 10
    while watcher.poll(100).status.seq <= before.seq and time.monotonic() < end:
        pass  # the driver's next heartbeat
    after = watcher.latest.status
    assert after.seq > before.seq and after.not_owner == before.not_owner


def test_an_extreme_seq_does_not_wedge_the_driver_and_a_lapsed_lease_frees_the_arm(clients):
    first, second = clients("first"), clients("second")
    first.claim(lease_ms=MIN_LEASE_MS)
    first.seq = 2**62
    assert first.step(Mode.HOLD).state.last_cmd_seq == 2**62 + 1
    time.sleep(3 * MIN_LEASE_MS / 1000)  # longer than the lease: first is gone
    second.claim()
    latest = second.step(Mode.CARTESIAN_VELOCITY, np.zeros(SPACE.size))
    assert second.mine(latest.state) and latest.state.last_cmd_seq == second.seq  # a fresh order: seq 3 applies
    with pytest.raises(ArmHeld, match="second"):
        first.step(Mode.HOLD, timeout_s=3)
    second.release()
    first.claim(timeout_s=3)  # given back: no need to wait for the lease to end


def test_a_command_from_an_observation_older_than_the_bound_is_refused_by_the_driver(clients):
    runtime = clients("pac-run")
    state = runtime.reset().state
    runtime.claim()
    ahead = state.t_capture_ns + 1000 * MS  # "computed" from an observation a jumped clock stamped in the future
    for obs_t_ns, applied in (
        (state.t_capture_ns - 200 * MS, False),
        (-1, False),
        (ahead, False),
        (state.t_capture_ns, True),
    ):
        latest = runtime.step(Mode.CARTESIAN_VELOCITY, _twist(vx=0.01), obs_t_ns=obs_t_ns)
        status = runtime.poll(100).status
        if applied:
            assert latest.state.last_cmd_seq == runtime.seq
        else:
            assert status.last_rejected_seq == runtime.seq and status.last_rejection == "stale_observation"
    assert runtime.step(Mode.HOLD, obs_t_ns=-1).state.last_cmd_seq == runtime.seq  # a hold needs no observation


def test_the_driver_stops_the_tcp_at_its_workspace_box_whatever_it_is_told(clients):
    runtime = clients("runtime-without-a-filter")
    runtime.reset()
    high = np.asarray(ARM.limits.workspace.high)
    for _ in range(60):  # 3 s up at the arm's top speed: 0.6 m past the top if nothing stopped it
        latest = runtime.step(Mode.CARTESIAN_VELOCITY, _twist(vz=SPACE.high[SPACE.dims.index("vz")]))
    z = latest.state.tcp_pose[2]
    assert z <= high[2] + 0.005 and z > high[2] - 0.01, (z, high[2])
    assert runtime.poll(100).status.workspace_stops > 0


def _raw(topic: str, fields: dict) -> list[bytes]:
    return encode(topic, seq=1, source="fuzzer", t_capture_ns=1, fields=fields)


def test_bad_control_arguments_are_dropped_and_counted_and_the_driver_goes_on(lockstep_sim, clients):
    runtime = clients("pac-run")
    token = new_session_token()
    bad = [
        _raw(msg.RESET, {"session": token, "seed": -1}),
        _raw(msg.RESET, {"session": token, "seed": "7"}),
        _raw(msg.RESET, {"session": token, "seed": 1.5}),
        _raw(msg.RESET, {"session": token, "seed": True}),
        _raw(msg.RESET, {"session": token, "seed": 2**63}),
        _raw(msg.CLAIM, {"session": token, "lease_ms": "forever"}),
        _raw(msg.TICK, {"session": token, "seed": 3}),  # a seed on a tick
        _raw(msg.TICK, {}),  # no session field at all: malformed
        _raw(msg.TICK, {"session": "short"}),  # a session field that is no token
    ]
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(lockstep_sim.cmd)
    try:
        time.sleep(0.3)  # PUB/SUB: let the connection form before sending
        for frames in bad:
            sock.send_multipart(frames)
        end = time.monotonic() + 10
        dropped: dict[str, int] = {}
        while time.monotonic() < end and sum(dropped.values()) < len(bad):
            status = runtime.poll(100).status
            dropped = dict(status.messages_dropped) if status is not None else {}
    finally:
        sock.close(0)
    assert dropped.get("malformed", 0) == 8 and dropped.get("no_session", 0) == 1, dropped
    assert runtime.step(Mode.HOLD).state.last_cmd_seq == runtime.seq  # alive, and nobody else took the arm


def test_a_second_pac_run_is_refused_at_start_up_naming_the_holder(lockstep_sim, clients, exported_policy, capsys):
    holder = clients("operator-console")
    holder.claim(lease_ms=MAX_LEASE_MS)
    applied = holder.poll(100).status.commands_applied
    code = pac_run(
        ["--robot", "sawyer", "--policy", str(exported_policy("sawyer"))]
        + ["--pub", lockstep_sim.pub, "--cmd", lockstep_sim.cmd, "--ticks", "5"]
    )
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED and "held by operator-console" in err, err
    assert holder.step(Mode.HOLD).status.commands_applied == applied + 1  # pac-run sent nothing that applied


# ------------------------------------------------------------------------- the runtime's side: the guard
def _inputs(holder: str, rejected_seq: int = -1, rejection: str = "", label: str = "") -> Inputs:
    t = 10**12
    pose = np.concatenate([ARM.chain().fk(ARM.home)[0], [1.0, 0.0, 0.0, 0.0]])
    state = msg.StateMsg(1, "sim", t, ARM.home.copy(), np.zeros(7), 0.0, 0.0, 0.0, pose, "realtime", 5, holder=holder)
    status = msg.StatusMsg(
        1, "sim", t, "sawyer", "realtime", False, "", 5, rejected_seq, rejection, 5, holder=holder, holder_label=label
    )
    return Inputs(t, state, status, {}, 0)


def _guard() -> Guard:
    limits = SafetyLimits.from_arm(ARM, Mode.CARTESIAN_VELOCITY)
    return Guard(limits, WatchdogConfig(), (), session=fingerprint("mine" * 8))


def test_another_holder_latches_fault_a_free_arm_holds_and_a_refused_command_holds_once():
    mine, other = fingerprint("mine" * 8), fingerprint("other" * 8)
    guard = _guard()
    assert {c.kind for c in guard.watch(_inputs(mine), 0)} == set()
    assert {c.kind for c in guard.watch(_inputs(""), 1)} == {CauseKind.LEASE_LOST}
    causes = guard.watch(_inputs(mine, rejected_seq=7, rejection="late"), 2)
    assert causes == {Cause(CauseKind.COMMAND_REJECTED, "late")}
    assert guard.watch(_inputs(mine, rejected_seq=7, rejection="late"), 3) == frozenset()  # counted once
    guard.watch(_inputs(other, label="rogue"), 4)
    assert guard.safety.state is State.FAULT and guard.safety.fault_cause.kind is CauseKind.ARM_TAKEN
    assert "rogue" in str(guard.safety.fault_cause)

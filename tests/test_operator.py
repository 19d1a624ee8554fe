"""The operator's path (DESIGN §4): pac-ctl's verbs reach a running pac-run between ticks, each logged with who
and why and listed in the run summary; FAULT and ESTOP stay latched until a reset the state of the cell allows.

The first tests drive the control server with a stand-in for the loop (its state machine is the real one); the
end-to-end tests run pac-run as a child process against a lockstep pac-sim behind the wire proxy (conftest), so
what reached the driver is checked at the wire. Waits poll pac-run's own status, never a wall-clock threshold.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

from robots.contract.link import DriverFault
from robots.sim.process import free_loopback_endpoint
from runtime import control
from runtime.cli import EXIT_ESTOP, EXIT_OK
from runtime.ctl import EXIT_DONE, EXIT_REFUSED
from runtime.ctl import main as pac_ctl
from runtime.link import Inputs
from runtime.safety.causes import Cause, CauseKind
from runtime.safety.state_machine import SafetyStateMachine, State
from runtime.safety.watchdogs import WatchdogConfig

GIVE_UP_S = 120  # only so a broken run fails instead of hanging; no assertion depends on it

# --------------------------------------------------------------------------- requests and endpoints (pure)


def _frames(body) -> list[bytes]:
    return [json.dumps(body).encode()]


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([b"x" * (control.MAX_REQUEST_BYTES + 1)], "oversized"),
        ([b"{}", b"{}"], "multipart"),
        ([b"\xff\xfe"], "not_utf8"),
        ([b'{"verb": "status"'], "not_json"),
        ([b"[" * 1020 + b"]" * 1020], "not_json"),  # nested past the recursion limit, within the size bound
        ([b"[]"], "not_an_object"),
        (_frames({"verb": "dance"}), "unknown_verb"),
        (_frames({"verb": ["status"]}), "unknown_verb"),
        (_frames({"verb": "status", "operator": "ana"}), "unknown_field"),
        (_frames({"verb": "reset", "reason": "why"}), "no_operator"),
        (_frames({"verb": "estop", "operator": "ana"}), "no_reason"),
        (_frames({"verb": "stop", "operator": "  ", "reason": "why"}), "no_operator"),
        (_frames({"verb": "reset", "operator": "ana\nINFO forged log line", "reason": "why"}), "bad_operator"),
        (_frames({"verb": "reset", "operator": "a" * 65, "reason": "why"}), "bad_operator"),
        (_frames({"verb": "reset", "operator": "ana", "reason": 7}), "no_reason"),
    ],
)
def test_a_malformed_request_is_refused_with_its_reason(frames, reason):
    with pytest.raises(control.BadRequest) as err:
        control.decode_request(frames)
    assert err.value.reason == reason


def test_a_well_formed_request_round_trips():
    raw = control.encode_request("reset", "ana", "driver cable re-seated")
    assert control.decode_request([raw]) == control.Request("reset", "ana", "driver cable re-seated")
    assert control.decode_request([control.encode_request("status", "ignored", "ignored")]) == control.Request("status")


@pytest.mark.parametrize(
    "endpoint", ["ipc:///tmp/pac-run.ctl", "tcp://127.0.0.1:5599", "tcp://localhost:5599", "tcp://[::1]:5599"]
)
def test_control_endpoints_on_this_host_only_are_accepted(endpoint):
    control.check_endpoint(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://0.0.0.0:5599", "tcp://*:5599", "tcp://10.1.2.3:5599", "tcp://eth0:5599", "tcp://127.0.0.1", "ipc://@pac"]
    + ["inproc://pac", "udp://127.0.0.1:5599", "127.0.0.1:5599", "ipc://" + "x" * 120],
)
def test_control_endpoints_others_could_reach_are_refused(endpoint):
    with pytest.raises(control.ControlError):
        control.check_endpoint(endpoint)


@pytest.fixture
def private_runtime_dir(monkeypatch) -> Iterator[Path]:
    """XDG_RUNTIME_DIR at a short fresh directory (ipc paths are short), so no other run's sockets are seen."""
    xdg = Path(tempfile.mkdtemp(prefix="pacx"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    yield xdg
    shutil.rmtree(xdg, ignore_errors=True)


def test_the_default_endpoint_is_a_socket_in_a_directory_only_this_user_can_enter(private_runtime_dir):
    endpoint = control.default_endpoint()
    d = private_runtime_dir / "pac-runtime"
    assert endpoint == f"ipc://{d}/pac-run-{os.getpid()}.ctl"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == os.getuid()
    d.chmod(0o750)
    with pytest.raises(control.ControlError, match="open to group or others"):
        control.default_endpoint()


# ------------------------------------------------------------------- the server, with a stand-in for the loop


@dataclass
class _Loop:
    """What ControlServer reads of a ControlLoop: the guard's state machine, watchdogs and session, the tick
    count, the last tick's inputs, the driver clock and stop()."""

    await_reset: bool = True
    ticks: int = 0
    last_inputs: Inputs | None = None
    stop_reason: str = ""
    guard: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(safety=SafetyStateMachine(), watchdogs=WatchdogConfig(), session="me")
    )
    link: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(now_ns=lambda: 123))

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def heard(self, silent_ms: float = 0.0, **status) -> None:
        """The last tick's inputs: the driver silent for `silent_ms`, its status fields as given."""
        report = SimpleNamespace(**({"holder": "me", "faults": []} | status))
        self.last_inputs = Inputs(0, None, report, {}, round(silent_ms * 1e6))


@pytest.fixture
def server(tmp_path) -> Iterator[control.ControlServer]:
    srv = control.ControlServer(free_loopback_endpoint())
    yield srv
    srv.close()


def _ask(srv: control.ControlServer, loop: _Loop, frames: list[bytes]) -> dict:
    """Send a request and serve ticks until it is answered (at most a few: the server answers at its next poll)."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.endpoint)
    try:
        sock.send_multipart(frames)
        for _ in range(500):
            srv.serve(loop)
            if sock.poll(10, zmq.POLLIN):
                return json.loads(sock.recv())
        raise AssertionError("no reply")
    finally:
        sock.close(0)


def _verb(srv, loop, verb, operator="ana", reason="testing") -> dict:
    return _ask(srv, loop, [control.encode_request(verb, operator, reason)])


def test_reset_is_refused_unless_latched_and_estop_latches_at_once(server):
    loop = _Loop()
    safety = loop.guard.safety
    safety.ready()
    safety.update(set(), 1, 0)
    assert safety.state is State.RUNNING
    reply = _verb(server, loop, "reset")
    assert not reply["ok"] and "nothing to reset" in reply["detail"] and safety.state is State.RUNNING
    loop.ticks = 7
    reply = _verb(server, loop, "estop", "ana", "person in the cell")
    assert reply["ok"] and reply["tick"] == 7 and safety.state is State.ESTOP and not safety.may_move
    assert str(safety.fault_cause) == "estop:operator (ana: person in the cell)"
    assert safety.transitions[-1].cause == "estop:operator (ana: person in the cell)"
    verbs = [(a.verb, a.operator, a.reason, a.accepted, a.tick, a.t_ns) for a in server.actions]
    assert verbs == [("reset", "ana", "testing", False, 0, 123), ("estop", "ana", "person in the cell", True, 7, 123)]


def test_a_fault_is_reset_only_once_its_condition_is_gone(server):
    loop = _Loop()
    safety = loop.guard.safety
    safety.ready()
    safety.latch(Cause(CauseKind.DRIVER_LOST), 3, 0)
    loop.heard(silent_ms=5000)
    status = _verb(server, loop, "status")
    assert status["state"] == "FAULT" and status["fault_cause"] == "driver_lost"
    assert status["still_holds"] == ["the driver is still lost: nothing from it for 5000 ms"]
    reply = _verb(server, loop, "reset", "ana", "cable re-seated")
    assert not reply["ok"] and "driver is still lost" in reply["detail"] and safety.state is State.FAULT
    loop.heard(silent_ms=10)
    reply = _verb(server, loop, "reset", "ana", "cable re-seated")
    assert reply["ok"] and safety.state is State.READY and safety.fault_cause is None
    assert safety.transitions[-1].cause == "reset by ana (cable re-seated)"


def test_a_driver_estop_or_another_session_on_the_arm_refuses_the_reset(server):
    loop = _Loop()
    safety = loop.guard.safety
    safety.ready()
    safety.latch(Cause(CauseKind.ESTOP, "driver"), 3, 0)
    loop.heard(faults=[DriverFault.ESTOP.value])
    reply = _verb(server, loop, "reset")
    assert not reply["ok"] and "emergency stop pressed" in reply["detail"]
    loop.heard(holder="someone-else")
    reply = _verb(server, loop, "reset")
    assert not reply["ok"] and "another session still holds the arm (someone-else)" in reply["detail"]
    loop.heard()
    assert _verb(server, loop, "reset")["ok"] and safety.state is State.READY


def test_a_run_that_exits_on_fault_refuses_a_reset_racing_it(server):
    loop = _Loop(await_reset=False)
    loop.guard.safety.latch(Cause(CauseKind.NON_FINITE, "policy_output"), 3, 0)
    reply = _verb(server, loop, "reset")
    assert not reply["ok"] and "--await-reset" in reply["detail"] and loop.guard.safety.state is State.FAULT


def test_stop_asks_the_loop_to_stop_with_who_and_why(server):
    loop = _Loop()
    assert _verb(server, loop, "stop", "ana", "end of shift")["ok"]
    assert loop.stop_reason == "operator stop by ana (end of shift)"


def test_a_tick_answers_a_bounded_number_of_requests_and_counts_malformed_ones(server):
    loop = _Loop()
    ctx = zmq.Context.instance()
    socks = [ctx.socket(zmq.REQ) for _ in range(control.MAX_REQUESTS_PER_TICK + 2)]
    per_tick = []
    try:
        for s in socks:
            s.setsockopt(zmq.LINGER, 0)
            s.connect(server.endpoint)
            s.send(b"not json")
        for _ in range(1000):
            if sum(per_tick) == len(socks):
                break
            server._sock.poll(10, zmq.POLLIN)  # this test's idle between ticks
            before = server.rejected.get("not_json", 0)
            server.serve(loop)
            per_tick.append(server.rejected.get("not_json", 0) - before)
        assert all(s.poll(1000, zmq.POLLIN) for s in socks)  # each got its error reply
        replies = [json.loads(s.recv()) for s in socks]
    finally:
        for s in socks:
            s.close(0)
    assert sum(per_tick) == len(socks) and max(per_tick) <= control.MAX_REQUESTS_PER_TICK
    assert all(r == {"ok": False, "error": "not_json", "detail": replies[0]["detail"]} for r in replies)
    assert server.rejected == {"not_json": len(socks)} and server.actions == []


def test_an_ipc_endpoint_in_use_is_refused_and_its_socket_is_private(private_runtime_dir):
    endpoint = control.default_endpoint()
    srv = control.ControlServer(endpoint)
    try:
        path = Path(endpoint[len("ipc://") :])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(control.ControlError, match="in use"):
            control.ControlServer(endpoint)
        assert control.running_endpoints() == [endpoint]
    finally:
        srv.close()


def test_pac_ctl_names_what_it_cannot_reach(private_runtime_dir, capsys):
    assert pac_ctl(["status"]) == 2
    assert "no running pac-run found" in capsys.readouterr().err
    assert pac_ctl(["--control", "tcp://10.0.0.1:5599", "status"]) == 2
    assert "tcp only on loopback" in capsys.readouterr().err


# ------------------------------------------------------------------------------- pac-run end to end (lockstep)


@pytest.fixture(scope="module")
def policy(exported_policy) -> Path:
    return exported_policy("sawyer")


@dataclass
class _Run:
    proc: subprocess.Popen
    record: Path
    log: Path
    control: str

    def status(self) -> dict:
        return control.request(self.control, "status")

    def until(self, done: Callable[[dict], bool]) -> dict:
        """Poll status until `done(status)`; fails (with pac-run's log) if pac-run exits or never gets there."""
        end = time.monotonic() + GIVE_UP_S
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                status = self.status()
            except control.ControlError:  # not serving yet (pre-flight)
                continue
            if done(status):
                return status
            time.sleep(0.02)
        raise AssertionError(f"pac-run never got there:\n{self.log.read_text()[-3000:]}")

    def finish(self) -> tuple[int, dict, list[dict]]:
        code = self.proc.wait(timeout=GIVE_UP_S)
        summary = json.loads((self.record / "summary.json").read_text())
        ticks = [json.loads(line) for line in (self.record / "ticks.jsonl").read_text().splitlines()]
        return code, summary, ticks


@pytest.fixture
def pac_run(policy, tmp_path) -> Iterator[Callable[..., _Run]]:
    """`pac_run(proxy, *args, control=ENDPOINT)`: pac-run as a child process, its output in a file (a pipe nobody
    reads could fill and block it); killed at teardown if still running."""
    runs: list[_Run] = []

    def start(proxy, *args: str, control_endpoint: str | None = None) -> _Run:
        record, log = tmp_path / "rec", tmp_path / "pac-run.log"
        cmd = [sys.executable, "-m", "runtime.cli", "--robot", "sawyer", "--policy", str(policy)]
        cmd += ["--pub", proxy.pub_endpoint, "--cmd", proxy.cmd_endpoint, "--record", str(record), *args]
        cmd += ["--control", control_endpoint] if control_endpoint else []
        with log.open("w") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
            )
        runs.append(_Run(proc, record, log, control_endpoint or ""))
        return runs[-1]

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def _ctl(capsys, *argv: str) -> tuple[int, dict]:
    """pac-ctl in this process, its JSON reply parsed."""
    capsys.readouterr()
    code = pac_ctl(["--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_estop_from_pac_ctl_latches_only_holds_follow_and_the_run_exits_with_the_estop_code(
    lockstep_sim, wire_proxy, pac_run, capsys
):
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    endpoint = free_loopback_endpoint()
    run = pac_run(proxy, "--await-reset", control_endpoint=endpoint)
    run.until(lambda s: s["state"] == "RUNNING" and s["ticks"] >= 10)
    code, reply = _ctl(capsys, "--control", endpoint, "estop", "--operator", "ana", "--reason", "person in the cell")
    assert code == EXIT_DONE and reply["ok"] and reply["state"] == "ESTOP", reply
    estop_tick = reply["tick"]
    status = run.until(lambda s: s["ticks"] >= estop_tick + 10)  # the run goes on, holding, latched
    assert status["state"] == "ESTOP" and status["fault_cause"] == "estop:operator (ana: person in the cell)"
    code, reply = _ctl(capsys, "--control", endpoint, "stop", "--operator", "ana", "--reason", "end of test")
    assert code == EXIT_DONE and reply["ok"]

    code, summary, ticks = run.finish()
    assert code == EXIT_ESTOP and summary["exit_code"] == EXIT_ESTOP and summary["final_state"] == "ESTOP"
    assert any(t["mode"] != "hold" for t in ticks if t["tick"] < estop_tick)  # it was moving
    after = [t for t in ticks if t["tick"] >= estop_tick]
    assert len(after) >= 10 and all(t["mode"] == "hold" and t["safety"] == "ESTOP" for t in after)
    first_seq = after[0]["cmd_seq"]  # and at the wire: every command from the estop's tick on is a hold
    assert [c.mode for c in proxy.commands if c.seq >= first_seq] and all(
        c.mode == "hold" for c in proxy.commands if c.seq >= first_seq
    )
    assert ("RUNNING", "ESTOP") in [(t["from"], t["to"]) for t in summary["transitions"]]
    actions = [(a["verb"], a["operator"], a["reason"], a["accepted"]) for a in summary["operator_actions"]]
    assert actions == [("estop", "ana", "person in the cell", True), ("stop", "ana", "end of test", True)]
    assert summary["operator_actions"][0]["tick"] == estop_tick and summary["operator_actions"][0]["time"]
    assert summary["stop_reason"] == "operator stop by ana (end of test)" and summary["control"] == endpoint
    assert summary["final_hold_confirmed"]


def test_a_fault_stays_latched_until_an_operator_reset_and_running_resumes_once_its_cause_is_gone(
    lockstep_sim, wire_proxy, pac_run, capsys
):
    lost = threading.Event()  # while set, nothing from the driver reaches pac-run: driver_lost latches FAULT
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd, drop=lambda env: lost.is_set())
    endpoint = free_loopback_endpoint()
    run = pac_run(proxy, "--await-reset", control_endpoint=endpoint)
    run.until(lambda s: s["state"] == "RUNNING" and s["ticks"] >= 10)
    lost.set()
    status = run.until(lambda s: s["state"] == "FAULT")
    assert status["fault_cause"].startswith("driver_lost")
    code, reply = _ctl(capsys, "--control", endpoint, "reset", "--operator", "ana", "--reason", "too early")
    assert code == EXIT_REFUSED and not reply["ok"] and "the driver is still lost" in reply["detail"], reply
    lost.clear()
    status = run.until(lambda s: not s["still_holds"])  # the driver is heard again ...
    latched = run.until(lambda s: s["ticks"] >= status["ticks"] + 5)
    assert latched["state"] == "FAULT"  # ... and still nothing but an operator leaves FAULT
    code, reply = _ctl(capsys, "--control", endpoint, "reset", "--operator", "ana", "--reason", "driver back")
    assert code == EXIT_DONE and reply["ok"] and reply["state"] == "READY", reply
    reset_tick = reply["tick"]
    run.until(lambda s: s["state"] == "RUNNING" and s["ticks"] >= reset_tick + 10)
    code, _ = _ctl(capsys, "--control", endpoint, "stop", "--operator", "ana", "--reason", "end of test")
    assert code == EXIT_DONE

    code, summary, ticks = run.finish()
    assert code == EXIT_OK and summary["final_state"] == "RUNNING" and summary["fault_cause"] == ""
    fault_tick = next(t["tick"] for t in summary["transitions"] if t["to"] == "FAULT")
    assert all(t["mode"] == "hold" for t in ticks if fault_tick <= t["tick"] < reset_tick)
    assert any(t["mode"] != "hold" for t in ticks if t["tick"] > reset_tick)  # moving again
    reset = next(t for t in summary["transitions"] if t["from"] == "FAULT")
    assert reset["to"] == "READY" and reset["cause"] == "reset by ana (driver back)" and reset["tick"] == reset_tick
    actions = [(a["verb"], a["reason"], a["accepted"]) for a in summary["operator_actions"]]
    assert actions == [("reset", "too early", False), ("reset", "driver back", True), ("stop", "end of test", True)]
    assert "driver is still lost" in summary["operator_actions"][0]["detail"]


def test_malformed_requests_get_an_error_reply_and_the_loop_goes_on(
    lockstep_sim, wire_proxy, pac_run, private_runtime_dir, capsys
):
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    run = pac_run(proxy)  # the default endpoint, in this test's private runtime directory
    sockets = private_runtime_dir / "pac-runtime"
    end = time.monotonic() + GIVE_UP_S
    while not (sockets / f"pac-run-{run.proc.pid}.ctl").exists() and time.monotonic() < end:
        assert run.proc.poll() is None, run.log.read_text()
        time.sleep(0.02)
    run.control = f"ipc://{sockets}/pac-run-{run.proc.pid}.ctl"
    assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
    before = run.until(lambda s: s["state"] == "RUNNING")
    bad = [[b"\xff"], [b"x" * 5000], [b'{"verb": "reset"}'], [b"{}", b"{}"], [b'{"verb": "launch"}']]
    replies = [control.send_raw(run.control, frames) for frames in bad]
    assert [r["error"] for r in replies] == ["not_utf8", "oversized", "no_operator", "multipart", "unknown_verb"]
    assert all(not r["ok"] and r["detail"] for r in replies)
    run.until(lambda s: s["state"] == "RUNNING" and s["ticks"] >= before["ticks"] + 10)  # not even a hold
    code, reply = _ctl(capsys, "estop", "--operator", "bo", "--reason", "done")  # found without --control
    assert code == EXIT_DONE and reply["ok"]

    code, summary, ticks = run.finish()  # without --await-reset, ESTOP ends the run
    assert code == EXIT_ESTOP and summary["stop_reason"] == "estop"
    assert summary["control_rejected"] == {"not_utf8": 1, "oversized": 1, "no_operator": 1, "multipart": 1} | {
        "unknown_verb": 1
    }
    assert [(a["verb"], a["operator"]) for a in summary["operator_actions"]] == [("estop", "bo")]
    assert [t["to"] for t in summary["transitions"]][-1] == "ESTOP" and len(ticks) == summary["ticks"]
    assert not (sockets / f"pac-run-{run.proc.pid}.ctl").exists()  # the socket goes with the run

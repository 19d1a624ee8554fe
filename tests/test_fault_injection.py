"""Fault injection (issue 12): each scenario of benchmarks/fault_scenarios.py, run through pac-run and the fault
injector against real `pac-sim` drivers, must keep its safety property; the injector and the two new
detections (a restarted driver, a jumped clock) are tested on their own first.

What each scenario test checks: the safety state and causes pac-run reports (summary.json, ticks.jsonl), the
exit code, and that no command computed from stale data reached the arm. The last is judged from the
injector's log, not from what pac-run believes: `faults.audit` takes each command as it reached the driver and
the observations pac-run had been given, on the driver's true clock (before any clock rewrite), and the
driver's own reports say which commands it applied. In lockstep those ages are exact: the sim waits for the
command. Only the runtime-killed scenario runs in real time (the driver's dead-man needs a clock), and it
checks no timing: what the driver reports, and that nothing was applied after the kill.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from benchmarks import fault_scenarios as fs
from robots.contract import faults
from robots.contract.faults import DOWN, UP, FaultInjector
from robots.contract.messages import STATE, STATUS, StateMsg, StatusMsg
from robots.contract.receiver import LatestReceiver
from robots.contract.wire import decode, encode
from robots.spec import load_spec
from runtime.cli import EXIT_FAULT, EXIT_OK
from runtime.guard import CLOCK_AHEAD_TOLERANCE_MS, Guard
from runtime.link import Inputs
from runtime.safety.causes import CauseKind
from runtime.safety.limits import SafetyLimits
from runtime.safety.state_machine import State
from runtime.safety.watchdogs import WatchdogConfig
from tests.state_policy import export_state_policy

MS = 1_000_000
ARM = load_spec("sawyer")


# ---------------------------------------------------------------------------------------- the injector alone
class FakeEnds:
    """A fake driver (PUB + SUB, bound) and a fake runtime (SUB + PUB) with an injector between them."""

    def __init__(self, rules: list[faults.Rule], seed: int = 0):
        self.ctx = zmq.Context()
        self.driver_pub, self.driver_sub = self.ctx.socket(zmq.PUB), self.ctx.socket(zmq.SUB)
        pub = f"tcp://127.0.0.1:{self.driver_pub.bind_to_random_port('tcp://127.0.0.1')}"
        cmd = f"tcp://127.0.0.1:{self.driver_sub.bind_to_random_port('tcp://127.0.0.1')}"
        self.driver_sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.injector = FaultInjector(pub, cmd, rules, seed=seed, context=self.ctx)
        self.runtime_sub, self.runtime_pub = self.ctx.socket(zmq.SUB), self.ctx.socket(zmq.PUB)
        self.runtime_sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.runtime_sub.connect(self.injector.pub_endpoint)
        self.runtime_pub.connect(self.injector.cmd_endpoint)
        self._connect()

    def _connect(self, timeout_s: float = 5.0) -> None:
        """Probe both ways until each end hears the other (PUB/SUB subscriptions take a moment)."""
        end, heard = time.monotonic() + timeout_s, {DOWN: False, UP: False}
        while not all(heard.values()):
            assert time.monotonic() < end, "the injector did not connect"
            self.driver_pub.send_multipart(encode("probe", seq=1, source="sim", t_capture_ns=1))
            self.runtime_pub.send_multipart(encode("probe", seq=1, source="runtime", t_capture_ns=1))
            for sock, direction in ((self.runtime_sub, DOWN), (self.driver_sub, UP)):
                while sock.poll(20):
                    sock.recv_multipart()
                    heard[direction] = True

    def publish(self, topic: str, seq: int, step: int) -> None:
        self.driver_pub.send_multipart(
            encode(topic, seq=seq, source="sim", t_capture_ns=1000 * MS + step * 50 * MS, fields={"step": step})
        )

    def received(self, sock: zmq.Socket | None = None) -> list[tuple[str, int, int, list[bytes]]]:
        """(topic, seq, t_capture_ns, frames) of every message up to the end marker, in arrival order."""
        sock = sock or self.runtime_sub
        (self.driver_pub if sock is self.runtime_sub else self.runtime_pub).send_multipart(
            encode("end", seq=1, source="x", t_capture_ns=1)
        )
        got = []
        while sock.poll(3000):
            frames = sock.recv_multipart()
            env = decode(frames)
            if env.topic == "end":
                return got
            if env.topic != "probe":
                got.append((env.topic, env.seq, env.t_capture_ns, frames))
        raise AssertionError("the end marker never came")

    def close(self) -> None:
        self.injector.close()
        self.ctx.destroy(linger=0)


@pytest.fixture
def fake_ends() -> Iterator:
    made: list[FakeEnds] = []

    def make(*rules: faults.Rule, seed: int = 0) -> FakeEnds:
        made.append(FakeEnds(list(rules), seed))
        return made[-1]

    yield make
    for ends in made:
        ends.close()


def _stream(ends: FakeEnds, steps: int = 10) -> list[tuple[str, int, int, list[bytes]]]:
    """Each step an image then a state (seq = step + 1), as a lockstep driver publishes; what arrived."""
    for step in range(steps):
        ends.publish("image/a", step + 1, step)
        ends.publish("state", step + 1, step)
    return ends.received()


def _seqs(got, topic: str) -> list[int]:
    return [seq for t, seq, _, _ in got if t == topic]


@pytest.mark.parametrize(
    "rule, topic, expected",
    [
        (None, "state", list(range(1, 11))),
        (faults.drop("image/", steps=range(3, 5)), "image/a", [1, 2, 3, 6, 7, 8, 9, 10]),
        (faults.duplicate("state", steps=range(2, 3)), "state", [1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10]),
        (faults.reorder("state", steps=range(4, 6)), "state", [1, 2, 3, 4, 6, 5, 7, 8, 9, 10]),
        (faults.delay("image/", messages=2, steps=range(6, 7)), "image/a", [1, 2, 3, 4, 5, 6, 8, 7, 9, 10]),
        (faults.freeze("image/", steps=range(7, 9), repeat=False), "image/a", [1, 2, 3, 4, 5, 6, 7, 10]),
        (faults.freeze("image/", steps=range(7, 9)), "image/a", [1, 2, 3, 4, 5, 6, 7, 7, 7, 10]),
        (faults.freeze("image/", steps=range(7, 9), new_seq=True), "image/a", list(range(1, 11))),
    ],
    ids=["none", "drop", "duplicate", "reorder", "delay", "freeze-stop", "freeze-repeat", "freeze-new-seq"],
)
def test_each_fault_does_to_the_stream_what_it_says(fake_ends, rule, topic, expected):
    ends = fake_ends(*([rule] if rule else []))
    got = _stream(ends)
    assert _seqs(got, topic) == expected
    if rule is not None and rule.fault is faults.Fault.FREEZE and rule.new_seq:
        stamps = [t for top, _, t, _ in got if top == topic]
        assert stamps[7] == stamps[8] == stamps[6]  # the frame of step 6, under seqs 8 and 9


def test_a_clock_shift_rewrites_capture_times_and_the_log_keeps_the_true_ones(fake_ends):
    ends = fake_ends(faults.shift_clock(-0.5, "state", start_step=5))
    got = _stream(ends)
    stamps = {seq: t for topic, seq, t, _ in got if topic == STATE}
    assert all(stamps[s] == 1000 * MS + (s - 1) * 50 * MS for s in range(1, 6))
    assert all(stamps[s] == 1000 * MS + (s - 1) * 50 * MS - 500 * MS for s in range(6, 11))
    out = [e for e in ends.injector.events() if e.kind == "out" and e.topic == STATE]
    assert [e.true_t_capture_ns - e.t_capture_ns for e in out] == [0] * 5 + [500 * MS] * 5


def test_random_faults_are_the_same_for_the_same_seed_whatever_the_timing(fake_ends):
    rules = (faults.drop("image/", p=0.5), faults.corrupt("state", n_bytes=3, part="payload"))
    runs = []
    for i, seed in enumerate((7, 7, 8)):
        ends = fake_ends(*rules, seed=seed)
        for step in range(40):
            ends.publish("image/a", step + 1, step)
            ends.driver_pub.send_multipart(
                encode(
                    "state",
                    seq=step + 1,
                    source="sim",
                    t_capture_ns=1,
                    fields={"step": step},
                    arrays={"q": np.zeros(4)},
                )
            )
            time.sleep(0.001 * (i % 2))  # another pace: the draws must not depend on it
        got = ends.received()
        runs.append((_seqs(got, "image/a"), [frames[2] for topic, _, _, frames in got if topic == STATE]))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    kept = len(runs[0][0])
    assert 10 < kept < 30  # about half of 40
    assert all(buffer != bytes(32) for buffer in runs[0][1])  # every state's array was corrupted


def test_a_cut_stops_both_ways_until_healed(fake_ends):
    ends = fake_ends()
    ends.injector.cut()
    ends.publish("state", 1, 0)
    ends.runtime_pub.send_multipart(encode("command", seq=1, source="runtime", t_capture_ns=1))
    end = time.monotonic() + 5
    while len([e for e in ends.injector.events() if e.kind == "drop"]) < 2:
        assert time.monotonic() < end, ends.injector.events()
        time.sleep(0.01)
    ends.injector.heal()
    ends.publish("state", 2, 1)
    ends.runtime_pub.send_multipart(encode("command", seq=2, source="runtime", t_capture_ns=1))
    assert _seqs(ends.received(), "state") == [2]
    assert _seqs(ends.received(ends.driver_sub), "command") == [2]
    assert Counter((e.topic, e.seq, e.kind) for e in ends.injector.events() if e.topic in (STATE, "command")) == {
        (topic, seq, kind): 1
        for topic in (STATE, "command")
        for seq, kind in ((1, "in"), (1, "drop"), (2, "in"), (2, "out"))
    }


# ------------------------------------------------------------------------ the two detections, on their own
def _state(seq: int, t_ns: int, instance: str = "a", mode: str = "realtime") -> StateMsg:
    pose = np.concatenate([ARM.chain().fk(ARM.home)[0], [1.0, 0.0, 0.0, 0.0]])
    return StateMsg(seq, "sim", t_ns, ARM.home.copy(), np.zeros(7), 0, 0, 0, pose, mode, -1, instance=instance)


def _status(seq: int, t_ns: int, instance: str = "a", mode: str = "realtime") -> StatusMsg:
    return StatusMsg(seq, "sim", t_ns, "sawyer", mode, False, "", -1, -1, "", 0, instance=instance)


def _guard() -> Guard:
    return Guard(SafetyLimits.from_arm(ARM, "cartesian_velocity"), WatchdogConfig(), ())


def _watch(guard: Guard, tick: int, now_ns: int, state: StateMsg, status: StatusMsg) -> None:
    guard.watch(Inputs(now_ns, state, status, {}, 0), tick)


T0 = 10**12


@pytest.mark.parametrize(
    "second, cause",
    [
        ((_state(2, T0 + 10 * MS), _status(2, T0 + 10 * MS)), None),
        ((_state(2, T0 + 10 * MS, "b"), _status(2, T0 + 10 * MS)), "driver_restarted"),
        ((_state(1, T0 + 10 * MS, "b"), _status(1, T0 + 10 * MS, "b")), "driver_restarted"),
        ((_state(2, T0 - 5 * MS), _status(2, T0 + 10 * MS)), "clock_jump:back"),
        ((_state(2, T0 + 10 * MS + round(CLOCK_AHEAD_TOLERANCE_MS * MS) + MS), _status(2, T0)), "clock_jump:ahead"),
    ],
    ids=["fine", "new-instance-state", "new-instance-both", "back", "ahead"],
)
def test_real_time_guard_faults_on_a_new_driver_instance_or_a_jumped_clock(second, cause):
    guard = _guard()
    _watch(guard, 0, T0, _state(1, T0), _status(1, T0))
    _watch(guard, 1, T0 + 10 * MS, *second)
    if cause is None:
        assert guard.safety.state is not State.FAULT
    else:
        assert guard.safety.state is State.FAULT and str(guard.safety.fault_cause).startswith(cause)


def test_after_an_operator_reset_the_run_goes_on_with_the_driver_as_it_is_then():
    guard = _guard()
    _watch(guard, 0, T0, _state(1, T0), _status(1, T0))
    _watch(guard, 1, T0 + 10 * MS, _state(1, T0 + 10 * MS, "b"), _status(1, T0 + 10 * MS, "b"))
    assert guard.safety.state is State.FAULT
    guard.safety.reset("operator (checked the new driver)", 2, T0 + 20 * MS)
    _watch(guard, 2, T0 + 20 * MS, _state(2, T0 + 20 * MS, "b"), _status(2, T0 + 20 * MS, "b"))
    assert guard.safety.state is State.READY and guard.clock.instance == "b"
    _watch(guard, 3, T0 + 30 * MS, _state(3, T0 + 30 * MS, "a"), _status(3, T0 + 30 * MS, "a"))
    assert guard.safety.state is State.FAULT  # and any other instance after that is a restart again


@pytest.mark.parametrize("advance_periods, faults_", [(1, False), (2, False), (3, True)])
def test_lockstep_guard_lets_the_sim_clock_run_one_period_per_tick_and_no_more(advance_periods, faults_):
    guard, period = _guard(), 50 * MS
    _watch(guard, 0, T0, _state(1, T0, mode="lockstep"), _status(1, T0, mode="lockstep"))
    t = T0 + advance_periods * period  # one period per command sent, with one period of slack
    _watch(guard, 1, t, _state(2, t, mode="lockstep"), _status(2, t, mode="lockstep"))
    assert (guard.safety.state is State.FAULT) is faults_
    if faults_:
        assert guard.safety.fault_cause.kind is CauseKind.CLOCK_JUMP


def test_lockstep_ages_run_on_the_newest_driver_stamp_when_the_state_stalls():
    guard = Guard(SafetyLimits.from_arm(ARM, "cartesian_velocity"), WatchdogConfig(), ())
    state = _state(1, T0, mode="lockstep")
    causes = guard.watch(Inputs(T0, state, _status(1, T0 + 50 * MS, mode="lockstep"), {}, 0), 0)
    assert {str(c) for c in causes} == {"stale:state"}  # the heartbeat is a period on: the state is 50 ms old


def test_the_receiver_takes_a_restarted_sources_messages_instead_of_dropping_them_as_out_of_order():
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.bind("inproc://restart")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect("inproc://restart")
    receiver = LatestReceiver(sub)
    try:
        end, probe = time.monotonic() + 5, 0
        while receiver.latest("probe") is None:  # until the subscription is through; probes never repeat a seq
            assert time.monotonic() < end, "no connection"
            probe += 1
            pub.send_multipart(encode("probe", seq=probe, source="probe", t_capture_ns=1))
            receiver.poll(10)
        first = [_status(50, T0, "a").to_frames(), _state(50, T0, "a").to_frames()]
        restarted = [_status(1, T0 + 1, "b").to_frames(), _state(1, T0 + 1, "b").to_frames()]
        for frames in first + restarted:
            pub.send_multipart(frames)
        while receiver.latest(STATE) is None or receiver.latest(STATE).fields["instance"] != "b":
            assert time.monotonic() < end, receiver.drops.by_reason
            receiver.poll(10)
        assert receiver.latest(STATUS).fields["instance"] == "b" and receiver.instances == {"sim": "b"}
        pub.send_multipart(_state(1, T0 + 1, "b").to_frames())  # the new instance's own order still holds
        time.sleep(0.05)
        receiver.poll(10)
        assert receiver.drops.by_reason.get("out_of_order") == 1
    finally:
        ctx.destroy(linger=0)


# ------------------------------------------------------------------------------- the scenarios, end to end
@pytest.fixture(scope="module")
def rig(exported_policy, tmp_path_factory) -> Iterator[fs.Rig]:
    out = tmp_path_factory.mktemp("fault_scenarios")
    rig = fs.Rig(out, exported_policy("sawyer"), export_state_policy(out))
    yield rig
    assert rig.close() == {}, "a pac-sim did not stop cleanly"


def _fresh_commands_only(run: fs.Run) -> None:
    """The runtime never sent a motion command computed from stale data, and the driver applied none."""
    sent = [v for v in run.verdicts if v.motion and v.stale]
    assert sent == [], sent[:3]
    assert run.stale_applied == []


def _tick_steps(run: fs.Run, cause: str) -> list[int]:
    return [t["step"] for t in run.ticks if cause in t["causes"]]


def test_camera_freeze_holds_from_the_first_stale_frame_and_resumes(rig):
    run = fs.camera_freeze(rig)
    assert run.code == EXIT_OK and run.summary["final_state"] == "RUNNING"
    assert run.summary["holds_by_cause"] == {"stale:image/front_left": 1}
    # The frame of step 29 is re-sent under new seqs; at step 31 it is 100 ms > 90 ms old, and fresh again at 45.
    assert _tick_steps(run, "stale:image/front_left") == list(range(fs.FREEZE.start + 1, fs.FREEZE.stop))
    assert "out_of_order" not in run.summary["messages_dropped"]  # the repeats got through: only ages tell
    _fresh_commands_only(run)
    stale = [v for v in run.verdicts if v.stale]
    assert len(stale) == len(fs.FREEZE) - 1 and all("image/front_left" in v.stale[0] for v in stale)


def test_proprio_stall_holds_and_never_commands_from_the_old_state(rig):
    run = fs.proprio_stall(rig)
    assert run.code == EXIT_OK and run.summary["final_state"] == "RUNNING"
    # Each stalled step waits out the ack timeout. The lockstep link dates a command's deadline from the newest
    # state it has, so the third hold sent on the old state arrives late and is refused: harmless (the arm
    # holds already), and the only other cause allowed here.
    assert "stale:state" in run.summary["holds_by_cause"]
    assert set(run.summary["holds_by_cause"]) <= {"stale:state", "command_rejected:late"}
    _fresh_commands_only(run)
    assert len([v for v in run.verdicts if v.stale]) == len(fs.STALL)
    assert run.ticks[-1]["safety"] == "RUNNING"


def test_burst_loss_holds_exactly_while_an_input_is_older_than_its_bound(rig):
    run = fs.burst_loss(rig)
    assert run.code == EXIT_OK and run.summary["final_state"] == "RUNNING"
    assert run.summary["holds_by_cause"] and all(
        cause.startswith("stale:") or cause == "command_rejected:late" for cause in run.summary["holds_by_cause"]
    )
    _fresh_commands_only(run)
    assert [v for v in run.verdicts if v.stale], "the burst never made an input stale: it tested nothing"
    assert len([e for e in run.events if e.kind == "drop"]) >= 10


def test_reordered_messages_never_replace_newer_ones(rig):
    run = fs.reordering(rig)
    assert run.code == EXIT_OK and run.summary["final_state"] == "RUNNING"
    assert run.summary["holds_by_cause"] == {}  # a frame one step late is 50 ms old: inside its bound
    assert run.summary["messages_dropped"].get("out_of_order", 0) >= 20  # the late one of each swapped pair
    obs = [v.obs_seq for v in run.verdicts]
    assert obs == sorted(obs) and len(set(obs)) == len(obs)  # never computed from an older state again
    _fresh_commands_only(run)
    assert max(v.ages_ms["image/front_left"] for v in run.verdicts) == pytest.approx(50.0)


def test_duplicated_and_replayed_commands_are_applied_once(rig):
    run = fs.duplicated_commands(rig)
    assert run.code == EXIT_OK and run.summary["final_state"] == "RUNNING" and run.summary["holds_by_cause"] == {}
    assert run.notes["applied"] == run.notes["distinct_commands"] == len(run.verdicts)  # once each, final hold too
    assert run.notes["copies_refused"] >= len(run.verdicts)  # every immediate copy refused
    replays = [e for e in run.events if e.direction == UP and e.kind == "out" and "duplicate" in e.faults]
    assert len(replays) >= 2 * len(run.verdicts) - 4  # the copies and (but the last few) the late replays
    assert all(v.applied for v in run.verdicts)
    _fresh_commands_only(run)


def test_an_inference_stall_holds_instead_of_sending_a_late_result(rig):
    run = fs.inference_stall(rig)
    assert run.code == EXIT_OK and run.summary["final_state"] == "RUNNING"
    assert run.notes["stalled_steps"] == list(fs.INFERENCE_STALL)
    assert run.summary["holds_by_cause"] == {"inference_deadline": 1}
    stalled = [t for t in run.ticks if t["step"] in fs.INFERENCE_STALL]
    assert [t["mode"] for t in stalled] == ["hold"] * len(fs.INFERENCE_STALL)
    by_obs = {v.obs_seq: v for v in run.verdicts}
    assert all(not by_obs[t["obs_seq"]].motion for t in stalled)  # what reached the driver was a hold
    assert any(t["mode"] == "cartesian_velocity" for t in run.ticks if t["step"] >= fs.INFERENCE_STALL.stop)
    _fresh_commands_only(run)


def test_a_restarted_driver_is_detected_and_gets_nothing_computed_from_the_old_one(rig):
    run = fs.driver_restart(rig)
    assert run.code == EXIT_FAULT and run.summary["fault_cause"].startswith("driver_restarted"), run.summary
    new = [v for v in run.verdicts if v.upstream == 1]
    assert any("another driver instance" in " ".join(v.stale) for v in new if v.motion)  # one was in flight ...
    assert all(not v.motion for v in new if v.applied)  # ... and refused: only holds moved the new sim
    # Refused as late (its deadline is on the old driver's clock) or, when that is not past, as computed from an
    # observation the new driver never published: either way, once.
    rejected = run.notes["new_driver_rejected"]
    assert sum(rejected.values()) == 1 and set(rejected) <= {"late", "stale_observation"}, rejected
    assert run.summary["final_hold_confirmed"]  # by the new driver
    assert run.stale_applied == []


@pytest.mark.parametrize("offset_s", [fs.CLOCK_JUMP_S, -fs.CLOCK_JUMP_S], ids=["forward", "back"])
def test_a_clock_jump_faults_at_the_first_jumped_stamp(rig, offset_s):
    run = fs.clock_jump(rig, offset_s)
    direction = "ahead" if offset_s > 0 else "back"
    assert run.code == EXIT_FAULT and run.summary["fault_cause"].startswith(f"clock_jump:{direction}"), run.summary
    fault = next(t for t in run.ticks if t["safety"] == "FAULT")
    assert fault["step"] == fs.FAULT_STEP  # the first tick that saw a jumped stamp
    jumped = [v for v in run.verdicts if any("off the driver's clock" in s for s in v.stale)]
    assert jumped and all(not v.motion for v in jumped)  # no command computed with a wrong age was even sent
    assert run.stale_applied == []
    # A backward jump dates the final hold's deadline on the jumped clock: the driver refuses it as late (the
    # arm holds anyway: lockstep moves only on a command, real time has the dead-man).
    assert run.summary["final_hold_confirmed"] is (offset_s > 0)


def test_a_rogue_commander_moves_nothing_and_taking_the_arm_faults_pac_run(rig):
    run = fs.rogue_commander(rig)
    assert run.code == EXIT_FAULT and run.summary["fault_cause"].startswith("arm_taken"), run.summary
    assert run.notes["claim_while_held"] == "refused"
    states = [e.fields for e in run.events if e.direction == DOWN and e.kind == "in" and e.topic == STATE]
    rogue, pac_run = run.notes["fingerprint"], run.verdicts[0].session
    assert all(s["last_cmd_seq"] < 10**12 for s in states)  # none of the rogue's commands was ever applied
    taken = next(i for i, s in enumerate(states) if s["holder"] == rogue)
    assert all(s["holder"] == pac_run for s in states[:taken])  # pac-run held the arm until it lapsed ...
    assert all(s["holder"] != pac_run for s in states[taken:])  # ... and never took it back
    refused = run.statuses()[-1].fields["not_owner"] - run.statuses()[0].fields["not_owner"]
    assert refused >= fs.ROGUE_COMMANDS
    assert not run.summary["final_hold_confirmed"]  # the rogue holds the arm: pac-run's hold is refused
    assert run.stale_applied == []


def test_a_killed_runtime_leaves_the_arm_held_by_the_driver_and_free_for_the_next_session(rig):
    run = fs.runtime_killed(rig)
    assert run.code == -signal.SIGKILL
    assert run.notes["hold_cause"] == "command_timeout" and run.notes["lease_freed"]
    assert run.notes["next_session_claimed"]
    assert run.notes["commands_applied_after_kill"] == 0
    assert any(v.motion and v.applied for v in run.verdicts), "pac-run never moved the arm: killed it at rest"
    assert run.stale_applied == []

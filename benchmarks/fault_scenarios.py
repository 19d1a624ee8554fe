"""Fault scenarios against the sim driver, through pac-run and the fault injector (robots/contract/faults.py).

    python -m benchmarks.fault_scenarios [--only camera_freeze,clock_jump_back] [--json FILE]

Each scenario breaks the driver link one way and reports what the safety design promises: the safety state
the runtime should end in, what it did, how many commands computed from stale data (or data of no true age)
the driver applied, and the exit code. "Stale" is judged from the injector's log on the driver's true clock
(`faults.audit`): a motion command is stale when the state it names, or the newest frame the runtime had been
given, was older than the runtime's own bound when the command reached the driver; when it names a state of
another driver instance; or when its observation time is not the true capture time (a rewritten clock).

Lockstep wherever the scenario allows (the sim waits for each command, so ages are exact and runs repeat
step for step); real time only for the runtime killed mid-motion, where the driver's dead-man needs a clock.
tests/test_fault_injection.py runs every scenario here and asserts its safety property.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

from policies.provenance import git_commit  # noqa: E402
from robots.contract import faults  # noqa: E402
from robots.contract.client import ArmHeld, DriverClient, DriverUnavailable  # noqa: E402
from robots.contract.faults import UP, FaultInjector, Verdict  # noqa: E402
from robots.contract.link import DEFAULT_LINK, Mode  # noqa: E402
from robots.contract.messages import STATUS  # noqa: E402
from robots.sim.process import start_sim, stop_sim, wait_heartbeat  # noqa: E402
from robots.spec import load_spec  # noqa: E402
from runtime.cli import main as pac_run  # noqa: E402
from runtime.config import CONFIG_DIR  # noqa: E402
from runtime.inference.loader import LoadedPolicy, read_metadata  # noqa: E402
from runtime.safety.watchdogs import WatchdogConfig  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "fault_scenarios.json"
ROBOT = "sawyer"
CAMERAS = "front_left,front_right"
RUNTIME = "pac-run"  # pac-run's `source`: its commands in the injector's log
SEED = 12
FAULT_STEP = 30  # most faults begin at this sim step: pac-run is well into its run by then


@dataclass
class Sim:
    proc: subprocess.Popen
    pub: str
    cmd: str


class Rig:
    """What the scenarios share: the policies, one lockstep sim (reset before each scenario) and any other
    driver a scenario starts, stopped at `close`."""

    def __init__(self, out: Path, vision_policy: Path, state_policy: Path):
        self.out, self.vision_policy, self.state_policy = Path(out), Path(vision_policy), Path(state_policy)
        self._sims: list[Sim] = []
        self._shared: Sim | None = None

    def start_sim(self, *args: str) -> Sim:
        proc, pub, cmd = start_sim(ROBOT, *args)
        self._sims.append(Sim(proc, pub, cmd))
        wait_heartbeat(pub)
        return self._sims[-1]

    def lockstep_sim(self) -> Sim:
        """The shared lockstep sim with both cameras, reset: arm home, step 0, nobody holding it."""
        if self._shared is None:
            self._shared = self.start_sim("--lockstep", "--cameras", CAMERAS)
        client = DriverClient(self._shared.pub, self._shared.cmd, source="rig-reset")
        try:
            end = time.monotonic() + 10
            while True:
                try:
                    client.reset()
                    break
                except ArmHeld:  # the last scenario's session has not lapsed yet
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.1)
        finally:
            client.close()
        return self._shared

    def stop(self, sim: Sim) -> None:
        """Stop a driver a scenario started for itself, now rather than at `close`."""
        if sim.proc.poll() is None:
            out = stop_sim(sim.proc)
            if sim.proc.returncode != 0:
                raise RuntimeError(f"pac-sim did not stop cleanly: {out}")

    def close(self) -> dict[int, str]:
        """Stop every driver started; returns the output of those that did not exit cleanly, by pid."""
        bad = {}
        for sim in self._sims:
            if sim.proc.poll() is None:
                out = stop_sim(sim.proc)
                if sim.proc.returncode != 0:
                    bad[sim.proc.pid] = out
        self._sims.clear()
        self._shared = None
        return bad

    def config(self, name: str, **top: Any) -> Path:
        """The shipped config with top-level keys (and `watchdogs` entries) replaced."""
        raw = yaml.safe_load((CONFIG_DIR / f"{ROBOT}.yaml").read_text())
        raw.setdefault("watchdogs", {}).update(top.pop("watchdogs", {}))
        raw.update(top)
        path = self.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def pac_run(self, name: str, injector: FaultInjector, ticks: int, *extra: str, policy: Path | None = None):
        """pac-run in this process (lockstep: the driver's mode), through `injector`; (exit code, summary, ticks)."""
        record = self.out / name
        argv = ["--robot", ROBOT, "--policy", str(policy or self.vision_policy), "--device", "cpu"]
        argv += ["--pub", injector.pub_endpoint, "--cmd", injector.cmd_endpoint, "--ticks", str(ticks)]
        code = pac_run([*argv, "--record", str(record), *extra])
        return code, json.loads((record / "summary.json").read_text()), read_ticks(record)


def read_ticks(record: Path) -> list[dict]:
    path = record / "ticks.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def bounds_ms(policy: Path) -> dict[str, float]:
    """The runtime's age bound for each input the policy reads (WatchdogConfig, as pac-run's shipped config)."""
    w, obs = WatchdogConfig(), read_metadata(policy).observation
    out = {"state": w.max_state_age_ms} | {f"image/{c}": w.max_image_age_ms for c in obs.cameras}
    return out | ({"objects": w.max_objects_age_ms} if obs.objects else {})


@dataclass
class Run:
    """One scenario's outcome: the run's record and the audit of pac-run's commands."""

    scenario: str
    expected: str
    code: int
    summary: dict | None
    ticks: list[dict]
    events: list[faults.Event]
    verdicts: list[Verdict]  # pac-run's commands, as they reached the driver
    notes: dict[str, Any] = field(default_factory=dict)
    observed_text: str = ""

    @property
    def stale_applied(self) -> list[Verdict]:
        return faults.stale_applied(self.verdicts, RUNTIME)

    def statuses(self, upstream: int | None = None) -> list[faults.Event]:
        """The driver's heartbeats as they arrived at the injector (all drivers, or one)."""
        return [
            e
            for e in self.events
            if e.direction == faults.DOWN and e.kind == "in" and e.topic == STATUS and upstream in (None, e.upstream)
        ]

    @property
    def observed(self) -> str:
        return self.observed_text or observed(self.summary)

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "expected": self.expected,
            "observed": self.observed,
            "stale_commands_applied": len(self.stale_applied),
            "commands_audited": len(self.verdicts),
            "exit_code": self.code,
            **({"notes": self.notes} if self.notes else {}),
        }


def observed(summary: dict | None) -> str:
    """The safety states a run went through, with the causes: "HOLD (stale:state) → RUNNING"."""
    if summary is None:
        return "no summary"
    short = lambda cause: cause.split(" (")[0]  # noqa: E731
    parts = []
    if summary["holds_by_cause"]:
        parts.append(f"HOLD ({', '.join(sorted({short(c) for c in summary['holds_by_cause']}))})")
    final = summary["final_state"]
    parts.append(f"{final} ({short(summary['fault_cause'])})" if summary["fault_cause"] else final)
    return " → ".join(parts)


def _run(rig: Rig, name: str, expected: str, rules: list, ticks: int, *extra: str, sim: Sim | None = None) -> Run:
    sim = sim or rig.lockstep_sim()
    with FaultInjector(sim.pub, sim.cmd, rules, seed=SEED) as injector:
        code, summary, record = rig.pac_run(name, injector, ticks, *extra)
        events = injector.events()
    return _audited(name, expected, code, summary, record, events, rig.vision_policy)


def _audited(name, expected, code, summary, record, events, policy: Path, bounds=None) -> Run:
    verdicts = [v for v in faults.audit(events, bounds or bounds_ms(policy)) if v.source == RUNTIME]
    return Run(name, expected, code, summary, record, events, verdicts)


# ------------------------------------------------------------------------------------------------- scenarios
FREEZE = range(FAULT_STEP, FAULT_STEP + 15)


def camera_freeze(rig: Rig) -> Run:
    """front_left keeps sending its last frame, each time under a new seq (a stuck publisher): the receiver
    takes them, only their capture time shows the camera froze."""
    rules = [faults.freeze("image/front_left", steps=FREEZE, new_seq=True)]
    run = _run(rig, "camera_freeze", "HOLD (stale:image/front_left) → RUNNING; exit 0", rules, 60)
    repeats = [e for e in run.events if e.kind == "out" and "freeze" in e.faults]
    run.notes["frozen_frames_sent"] = len(repeats)
    run.observed_text = f"{observed(run.summary)}; {len(repeats)} repeated frames taken, held on their age"
    return run


STALL = range(FAULT_STEP, FAULT_STEP + 3)


def proprio_stall(rig: Rig) -> Run:
    """No state for three sim steps; frames and heartbeats go on (each stalled step waits the ack timeout)."""
    rules = [faults.drop("state", steps=STALL)]
    return _run(rig, "proprio_stall", "HOLD (stale:state) → RUNNING; exit 0", rules, 45)


BURST = range(FAULT_STEP, FAULT_STEP + 20)


def burst_loss(rig: Rig) -> Run:
    """For 20 steps half of the frames and a quarter of the states are lost (seeded; heartbeats pass)."""
    rules = [faults.drop("image/", steps=BURST, p=0.5), faults.drop("state", steps=BURST, p=0.25)]
    run = _run(rig, "burst_loss", "HOLD (stale:…) where an input missed its bound → RUNNING; exit 0", rules, 60)
    lost = [e for e in run.events if e.kind == "drop"]
    run.notes["messages_lost"] = len(lost)
    run.observed_text = f"{observed(run.summary)}; {len(lost)} messages lost"
    return run


def reordering(rig: Rig) -> Run:
    """Adjacent frames of each camera swapped for 30 steps, adjacent states for 4: the late one of each pair
    is older than what the runtime already has."""
    window = range(20, 50)
    rules = [faults.reorder(f"image/{c}", steps=window) for c in CAMERAS.split(",")]
    rules.append(faults.reorder("state", steps=range(FAULT_STEP, FAULT_STEP + 4)))
    run = _run(rig, "reordering", "RUNNING (late ones dropped as out_of_order); exit 0", rules, 60)
    late = run.summary["messages_dropped"].get("out_of_order", 0)
    run.notes["out_of_order"] = late
    run.observed_text = f"{observed(run.summary)}; {late} late messages dropped as out_of_order"
    return run


def duplicated_commands(rig: Rig) -> Run:
    """Every command arrives twice at once and once more three commands later (a replay); states arrive
    twice."""
    rules = [
        faults.duplicate("command", direction=UP),
        faults.duplicate("command", direction=UP, messages=3),
        faults.duplicate("state"),
    ]
    run = _run(rig, "duplicated_commands", "RUNNING, each command applied once; exit 0", rules, 40)
    first, last = run.statuses()[0].fields, run.statuses()[-1].fields  # the driver's counters since its start
    run.notes["applied"] = last["commands_applied"] - first["commands_applied"]
    run.notes["distinct_commands"] = len(run.verdicts)
    run.notes["copies_refused"] = last["messages_dropped"].get("duplicate", 0) - first["messages_dropped"].get(
        "duplicate", 0
    )
    run.observed_text = (
        f"{observed(run.summary)}; {run.notes['applied']} applied for {len(run.verdicts)} commands, "
        f"{run.notes['copies_refused']} copies refused"
    )
    return run


INFERENCE_STALL = range(FAULT_STEP, FAULT_STEP + 3)
INFERENCE_DEADLINE_MS = 300.0  # far above an XS model's inference on a loaded CPU, far below the stall
STALL_S = 0.6


@contextlib.contextmanager
def stalled_inference(injector: FaultInjector, steps: range, seconds: float) -> Iterator[list[int]]:
    """Inference takes `seconds` longer while the driver is at one of `steps`; yields those steps as they stall."""
    original, stalled = LoadedPolicy.infer, []

    def infer(self, inputs):
        if injector.step in steps:
            stalled.append(injector.step)
            time.sleep(seconds)
        return original(self, inputs)

    LoadedPolicy.infer = infer
    try:
        yield stalled
    finally:
        LoadedPolicy.infer = original


def inference_stall(rig: Rig) -> Run:
    sim = rig.lockstep_sim()
    config = rig.config("inference_stall", watchdogs={"inference_deadline_ms": INFERENCE_DEADLINE_MS})
    with FaultInjector(sim.pub, sim.cmd, seed=SEED) as injector:
        with stalled_inference(injector, INFERENCE_STALL, STALL_S) as stalled:
            code, summary, record = rig.pac_run("inference_stall", injector, 45, "--config", str(config))
        events = injector.events()
    run = _audited(
        "inference_stall",
        "HOLD (inference_deadline) → RUNNING; exit 0",
        code,
        summary,
        record,
        events,
        rig.vision_policy,
    )
    run.notes["stalled_steps"] = stalled
    return run


RESTART_STEP = FAULT_STEP


def driver_restart(rig: Rig) -> Run:
    """At step 30 the driver is replaced by a fresh pac-sim (its own instance, seqs and sim time from the start),
    behind the same endpoints: a restart faster than the driver-lost watchdog."""
    sim = rig.lockstep_sim()
    fresh = rig.start_sim("--lockstep", "--cameras", CAMERAS)
    try:
        with FaultInjector(sim.pub, sim.cmd, seed=SEED) as injector:
            injector.retarget(fresh.pub, fresh.cmd, at_step=RESTART_STEP)
            code, summary, record = rig.pac_run("driver_restart", injector, 60)
            events = injector.events()
    finally:
        rig.stop(fresh)
    run = _audited(
        "driver_restart", "FAULT (driver_restarted); exit 3", code, summary, record, events, rig.vision_policy
    )
    after = run.statuses(upstream=1)
    run.notes["new_driver_rejected"] = after[-1].fields.get("commands_rejected", {}) if after else {}
    run.notes["new_driver_applied"] = after[-1].fields.get("commands_applied", 0) if after else 0
    return run


CLOCK_JUMP_S = 5.0


def clock_jump(rig: Rig, offset_s: float) -> Run:
    """From step 30 every stamp the driver sends is `offset_s` off (its clock jumped); its real clock runs on."""
    name = f"clock_jump_{'forward' if offset_s > 0 else 'back'}"
    rules = [faults.shift_clock(offset_s, start_step=FAULT_STEP)]
    return _run(rig, name, "FAULT (clock_jump); exit 3", rules, 50)


def rogue_commander(rig: Rig) -> Run:
    """A second session on the same link: while pac-run holds the arm it sends motion commands (a higher seq)
    and claims; then pac-run's uplink is cut at step 30 (a partition), its lease lapses, the rogue takes the
    arm and the link comes back. pac-run must not move while the rogue holds it, nor go on as if it did."""
    sim = rig.lockstep_sim()
    partition = faults.drop(direction=UP, source=RUNTIME, start_step=FAULT_STEP)
    notes: dict[str, Any] = {}
    done = threading.Event()
    with FaultInjector(sim.pub, sim.cmd, [partition], seed=SEED) as injector:
        rogue = threading.Thread(target=_rogue, args=(injector, partition, notes, done), daemon=True)
        rogue.start()
        try:
            code, summary, record = rig.pac_run("rogue_commander", injector, 200)
        finally:
            done.set()
            rogue.join(timeout=15)
        events = injector.events()
    run = _audited(
        "rogue_commander",
        "RUNNING while it holds the arm (rogue refused); FAULT (arm_taken) once the rogue has it; exit 3",
        code,
        summary,
        record,
        events,
        rig.vision_policy,
    )
    run.notes.update(notes)
    return run


ROGUE_COMMANDS = 20


def _rogue(injector: FaultInjector, partition: faults.Rule, notes: dict, done: threading.Event) -> None:
    injector.wait_for_step(10)
    rogue = DriverClient(injector.pub_endpoint, injector.cmd_endpoint, source="rogue")
    try:
        rogue.wait_ready(10)
        rogue.seq = 10**12  # a higher seq than pac-run's: it used to win the driver's one global order
        push = _twist_down()
        _until_heard(rogue, push)  # a PUB socket drops what it sends before its connection is up (slow joiner)
        for _ in range(ROGUE_COMMANDS):
            rogue.send_command(Mode.CARTESIAN_VELOCITY, push, deadline_ns=2**62)
        try:
            rogue.claim(timeout_s=1)
            notes["claim_while_held"] = "granted"
        except ArmHeld:
            notes["claim_while_held"] = "refused"
        injector.wait_for_step(FAULT_STEP)
        end = time.monotonic() + 20
        while not done.is_set() and time.monotonic() < end:
            try:
                rogue.claim(timeout_s=0.5)
                notes["took_arm_at_step"] = injector.step
                notes["fingerprint"] = rogue.fingerprint
                break
            except DriverUnavailable:  # ArmHeld included: pac-run's lease has not lapsed yet
                time.sleep(0.05)
        injector.end(partition)  # the link comes back: pac-run's messages reach the driver again
        done.wait(30)
    finally:
        rogue.close()


def _until_heard(rogue: DriverClient, push: np.ndarray, timeout_s: float = 10.0) -> None:
    """Send one command every 100 ms until the driver's status has counted a refusal after it: from then on
    the rogue's uplink is connected and every message it sends reaches the driver."""
    base = rogue.poll(100).status
    counted = base.not_owner if base is not None else 0
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        rogue.send_command(Mode.CARTESIAN_VELOCITY, push, deadline_ns=2**62)
        resend_at = time.monotonic() + 0.1
        while time.monotonic() < resend_at:
            status = rogue.poll(10).status
            if status is not None and status.not_owner > counted:
                return
    raise TimeoutError(f"the driver did not count the rogue's commands within {timeout_s} s")


def _twist_down() -> np.ndarray:
    space = load_spec(ROBOT).action_spaces[Mode.CARTESIAN_VELOCITY]
    action = np.zeros(space.size)
    action[space.dims.index("vz")] = -0.2
    return action


KILL_AFTER_TICKS = 20


def runtime_killed(rig: Rig) -> Run:
    """pac-run (a separate process, real time, state policy) is SIGKILLed mid-run: the driver's dead-man holds
    the arm within its command timeout, and the lease lapses so the next session can take the arm."""
    sim = rig.start_sim("--cameras", "none")  # real time: the dead-man runs on the driver's clock
    record = rig.out / "runtime_killed"
    config = rig.config("runtime_killed", max_clock_offset_ms=50.0)  # the injector's own latency is no offset
    with FaultInjector(sim.pub, sim.cmd, seed=SEED) as injector:
        argv = ["--robot", ROBOT, "--policy", str(rig.state_policy), "--device", "cpu", "--config", str(config)]
        argv += ["--pub", injector.pub_endpoint, "--cmd", injector.cmd_endpoint, "--record", str(record)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        run = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            _wait_ticks(record, KILL_AFTER_TICKS, run)
            run.send_signal(signal.SIGKILL)
            killed_ns = time.monotonic_ns()
            run.wait(10)
            held = _wait_status(injector, lambda f: f["holding"] and not f["holder"], timeout_s=10)
            claimed = _try_claim(injector)
        finally:
            run.kill()
            rig.stop(sim)
        events = injector.events()
    bounds = dict.fromkeys(bounds_ms(rig.state_policy), DEFAULT_LINK.max_observation_age_ms)  # real time: e2e
    result = _audited(
        "runtime_killed",
        "driver HOLD (command_timeout), lease freed; exit -9 (SIGKILL)",
        run.returncode,
        None,
        read_ticks(record),
        events,
        rig.state_policy,
        bounds,
    )
    after_kill = [v for v in result.verdicts if v.t_ns > killed_ns and v.applied]
    result.notes.update(
        {
            "hold_cause": held.get("hold_cause") if held else None,
            "lease_freed": held is not None,
            "next_session_claimed": claimed,
            "commands_applied_after_kill": len(after_kill),
        }
    )
    result.observed_text = (
        f"driver {'HOLD (' + held['hold_cause'] + ')' if held else 'not holding'}, "
        f"lease {'freed' if held else 'still held'}, next session {'took the arm' if claimed else 'refused'}"
    )
    return result


def _wait_ticks(record: Path, n: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if len(read_ticks(record)) >= n:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"pac-run exited with {proc.returncode}: {proc.stdout.read()}")
        time.sleep(0.05)
    raise TimeoutError(f"pac-run did not reach {n} ticks in {timeout_s} s")


def _wait_status(injector: FaultInjector, ok: Callable[[dict], bool], timeout_s: float) -> dict | None:
    """The first heartbeat arriving from now on whose fields satisfy `ok`; None if none within `timeout_s`."""
    start = len(injector.events())
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        events = injector.events()
        for e in events[start:]:
            if e.topic == STATUS and e.kind == "in" and ok(e.fields):
                return dict(e.fields)
        start = len(events)
        time.sleep(0.05)
    return None


def _try_claim(injector: FaultInjector) -> bool:
    client = DriverClient(injector.pub_endpoint, injector.cmd_endpoint, source="next-session")
    try:
        client.wait_ready(10)
        client.claim(timeout_s=5)
        return True
    except DriverUnavailable:
        return False
    finally:
        client.close()


SCENARIOS: dict[str, Callable[[Rig], Run]] = {
    "camera_freeze": camera_freeze,
    "proprio_stall": proprio_stall,
    "burst_loss": burst_loss,
    "reordering": reordering,
    "duplicated_commands": duplicated_commands,
    "inference_stall": inference_stall,
    "driver_restart": driver_restart,
    "clock_jump_forward": lambda rig: clock_jump(rig, +CLOCK_JUMP_S),
    "clock_jump_back": lambda rig: clock_jump(rig, -CLOCK_JUMP_S),
    "rogue_commander": rogue_commander,
    "runtime_killed": runtime_killed,
}


# ------------------------------------------------------------------------------------------------------ main
def export_policies(out: Path) -> tuple[Path, Path]:
    """An untrained XS vision actor (both cameras) and an XS state actor (proprio + object poses)."""
    from policies.export.onnx_export import export_policy
    from policies.model.config import size_config
    from policies.model.perceiver import build_model
    from policies.spec import action_spec, observation_spec, scene_objects
    from policies.tokenizer.language import InstructionTokenizer
    from robots.spec import load_spec

    arm, paths = load_spec(ROBOT), []
    for name, obs in (
        ("vision", observation_spec(arm)),
        ("state", observation_spec(arm, (), objects=scene_objects(arm))),
    ):
        model = build_model(size_config("XS"), obs, action_spec(arm, Mode.CARTESIAN_VELOCITY), seed=4)
        paths.append(export_policy(model, out / f"{ROBOT}_{name}_XS.onnx", InstructionTokenizer.default())[0].path)
    return paths[0], paths[1]


def table(rows: list[dict]) -> str:
    head = ("scenario", "expected", "observed", "stale applied", "exit")
    cells = [
        (r["scenario"], r["expected"], r["observed"], str(r["stale_commands_applied"]), str(r["exit_code"]))
        for r in rows
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fault_scenarios", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated scenarios (default: all of {', '.join(SCENARIOS)})")
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fault_scenarios_") as tmp:
        out = Path(tmp)
        rig = Rig(out, *export_policies(out))
        try:
            for name in names:
                started = time.monotonic()
                run = SCENARIOS[name](rig)
                rows.append(run.row() | {"seconds": round(time.monotonic() - started, 1)})
                print(f"{name}: {rows[-1]['observed']}; stale applied {rows[-1]['stale_commands_applied']}", flush=True)
        finally:
            rig.close()
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"commit": git_commit(), "date": date.today().isoformat(), "cpus": os.cpu_count(), "seed": SEED}
    args.json.write_text(json.dumps(meta | {"scenarios": rows}, indent=1) + "\n")
    print(f"written to {args.json}")
    return 0 if all(r["stale_commands_applied"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

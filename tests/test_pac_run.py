"""pac-run end to end: real pac-sim drivers in lockstep, real ONNX Runtime sessions, real loopback sockets.

A wire proxy (conftest) sits between pac-run and the driver: it records every command as the driver would receive
it (so "no non-finite command reaches the driver" is checked at the wire) and can freeze a camera.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from policies.tokenizer.language import InstructionTokenizer
from robots.contract.link import Mode
from robots.sim.process import free_loopback_endpoint
from robots.spec import load_spec
from runtime.cli import EXIT_FAULT, EXIT_OK, EXIT_REFUSED
from runtime.cli import main as pac_run
from runtime.config import CONFIG_DIR
from runtime.safety.limits import SafetyLimits
from tests.wire_proxy import WireProxy

TOKENIZER = InstructionTokenizer.default()


@pytest.fixture(scope="module")
def policies(exported_policy, tmp_path_factory) -> dict[str, Path]:
    files = {robot: exported_policy(robot) for robot in ("sawyer", "panda")}
    nan = tmp_path_factory.mktemp("nan") / "nan.onnx"
    files["nan"] = _nan_when_instruction_starts_with(files["sawyer"], nan, "lift")
    return files


def _nan_when_instruction_starts_with(src: Path, dst: Path, word: str) -> Path:
    """The sawyer actor, edited to output NaN logits whenever the instruction's first token is `word`.

    The golden pair (instruction "stack ...") still passes, so the file loads; it misbehaves only at run time.
    """
    proto = onnx.load(str(src))
    word_id = int(TOKENIZER.encode(word, 1)[0])
    graph = proto.graph
    producer = next(n for n in graph.node if "action_logits" in n.output)
    producer.output[list(producer.output).index("action_logits")] = "logits_raw"
    graph.initializer.extend(
        [
            helper.make_tensor("nan_word", TensorProto.INT64, [1, 1], [word_id]),
            helper.make_tensor("nan_value", TensorProto.FLOAT, [], [float("nan")]),
            helper.make_tensor("zero_value", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("first", TensorProto.INT64, [1], [0]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Slice", ["instruction", "first", "one", "one"], ["first_token"]),
            helper.make_node("Equal", ["first_token", "nan_word"], ["is_word"]),
            helper.make_node("Where", ["is_word", "nan_value", "zero_value"], ["poison"]),
            helper.make_node("Add", ["logits_raw", "poison"], ["action_logits"]),
        ]
    )
    onnx.save(proto, str(dst))
    return dst


def _run(robot: str, policy: Path, proxy: WireProxy, tmp: Path, *extra: str) -> tuple[int, dict, list[dict]]:
    code = pac_run(
        [
            "--robot",
            robot,
            "--policy",
            str(policy),
            "--pub",
            proxy.pub_endpoint,
            "--cmd",
            proxy.cmd_endpoint,
            "--record",
            str(tmp / "rec"),
            *extra,
        ]
    )
    summary = json.loads((tmp / "rec" / "summary.json").read_text())
    ticks = [json.loads(line) for line in (tmp / "rec" / "ticks.jsonl").read_text().splitlines()]
    return code, summary, ticks


def _config(tmp: Path, robot: str, top: dict | None = None, **watchdogs: float) -> Path:
    """The shipped config for `robot` with top-level keys and watchdog thresholds replaced."""
    raw = yaml.safe_load((CONFIG_DIR / f"{robot}.yaml").read_text())
    raw.update(top or {})
    raw.setdefault("watchdogs", {}).update(watchdogs)
    path = tmp / f"{robot}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("lockstep_sim", ["sawyer", "panda"], indirect=True)
def test_policy_drives_each_arm_for_200_ticks_with_every_command_inside_the_limits(
    lockstep_sim, wire_proxy, policies, tmp_path
):
    robot = lockstep_sim.robot
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    code, summary, ticks = _run(robot, policies[robot], proxy, tmp_path, "--ticks", "200")
    assert code == EXIT_OK and summary["ticks"] == 200 and summary["final_state"] == "RUNNING"
    moving = [c for c in proxy.commands if c.mode == "cartesian_velocity"]
    assert len(moving) >= 190  # all but start-up ticks move
    limits = SafetyLimits.from_arm(load_spec(robot), "cartesian_velocity")
    previous = np.zeros(len(limits.dims))
    for c in proxy.commands:
        assert np.all(np.isfinite(c.action))
        if c.mode == "hold":
            previous = np.zeros(len(limits.dims))
            continue
        assert np.all(c.action >= limits.low - 1e-12) and np.all(c.action <= limits.high + 1e-12)
        assert np.linalg.norm(c.action[limits.linear]) <= limits.max_linear_speed + 1e-12  # a norm, not per axis
        # More than a step from the previous command only where a motion bound (speed norm, workspace) braked
        # the axis: toward zero, never past it (the filter's precedence, runtime/safety/limits.py).
        beyond = np.abs(c.action - previous) > limits.max_step + 1e-9
        braked = (c.action * previous >= 0) & (np.abs(c.action) < np.abs(previous))
        assert np.all(braked[beyond]), (c.action, previous)
        previous = c.action
    seqs = [c.obs_seq for c in moving]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # each from a new observation, in order
    assert summary["driver_rejected"] == {}  # no command arrived late or malformed
    lo, hi = (np.asarray(b) for b in (load_spec(robot).limits.workspace.low, load_spec(robot).limits.workspace.high))
    for t in ticks:
        tcp = np.asarray(t["tcp_pose"][:3])
        assert np.all(tcp >= lo - 0.01) and np.all(tcp <= hi + 0.01)  # servo tracking error only


def test_frozen_camera_holds_within_one_period_and_running_resumes(lockstep_sim, wire_proxy, policies, tmp_path):
    robot = lockstep_sim.robot
    freeze = range(40, 60)  # sim steps whose front_left frames never reach pac-run
    frozen = lambda env: env.topic == "image/front_left" and env.fields["step"] in freeze  # noqa: E731
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd, drop=frozen)
    code, summary, ticks = _run(robot, policies[robot], proxy, tmp_path, "--ticks", "90")
    assert code == EXIT_OK
    sent = {c.obs_seq: c.mode for c in proxy.commands}
    max_age_steps = 90 / 50  # max_image_age_ms / period in the shipped config
    for t in ticks:
        step = t["step"]
        frame_age_steps = step - (freeze.start - 1) if step in freeze else 0
        if frame_age_steps > max_age_steps:  # the frame is stale at this tick: the command must be a hold
            assert sent[t["obs_seq"]] == "hold", t
            assert "stale:image/front_left" in t["causes"]
        elif step >= freeze.stop + 1 or step < freeze.start:
            assert sent[t["obs_seq"]] == "cartesian_velocity", t
    first_hold = next(t for t in ticks if sent[t["obs_seq"]] == "hold")
    assert first_hold["step"] == freeze.start + 1  # frame last captured at step 39: stale 100 ms > 90 ms later
    assert summary["holds_by_cause"] == {"stale:image/front_left": 1}
    states = [(tr["from"], tr["to"]) for tr in summary["transitions"]]
    assert ("RUNNING", "HOLD") in states and ("HOLD", "RUNNING") in states


def test_nan_policy_output_never_reaches_the_driver_and_faults(lockstep_sim, wire_proxy, policies, tmp_path):
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    args = ("--ticks", "50", "--instruction", "lift the red object")
    code, summary, _ = _run(lockstep_sim.robot, policies["nan"], proxy, tmp_path, *args)
    assert code == EXIT_FAULT and summary["final_state"] == "FAULT"
    assert summary["fault_cause"] == "non_finite:policy_output"
    assert proxy.commands and all(np.all(np.isfinite(c.action)) for c in proxy.commands)
    assert all(c.mode == "hold" for c in proxy.commands)
    assert summary["final_hold_confirmed"]


def test_inference_slower_than_its_deadline_holds_instead_of_sending_late(lockstep_sim, wire_proxy, policies, tmp_path):
    robot = lockstep_sim.robot
    config = _config(tmp_path, robot, inference_deadline_ms=0.001)  # no real inference is that fast
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    code, summary, _ = _run(robot, policies[robot], proxy, tmp_path, "--ticks", "20", "--config", str(config))
    assert code == EXIT_OK and summary["inferences"] == 20
    assert summary["commands_sent"] == 0 and all(c.mode == "hold" for c in proxy.commands)
    assert summary["holds_by_cause"] == {"inference_deadline": 1} and summary["final_state"] == "HOLD"


def test_model_for_the_other_arm_is_refused_at_start_up(policies, capsys):
    code = pac_run(["--robot", "panda", "--policy", str(policies["sawyer"]), "--sim", "--lockstep"])
    assert code == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "refused" in err and "robot: model has 'sawyer', robot expects 'panda'" in err


def test_a_real_time_priority_out_of_range_is_refused_before_a_driver_is_started(policies, capsys):
    code = pac_run(["--robot", "sawyer", "--policy", str(policies["sawyer"]), "--sim", "--rt-priority", "100"])
    assert code == EXIT_REFUSED
    assert "refused: a real-time priority is 1 to 99, got 100" in capsys.readouterr().err


def test_an_instruction_longer_than_the_model_takes_is_refused_before_any_motion(policies, capsys):
    too_long = " ".join(["stack the red object on the blue object"] * 4)
    code = pac_run(["--robot", "sawyer", "--policy", str(policies["sawyer"]), "--sim", "--instruction", too_long])
    assert code == EXIT_REFUSED
    assert "shorten --instruction" in capsys.readouterr().err


def test_missing_driver_is_a_clear_error_naming_the_endpoint(policies, tmp_path, capsys):
    config = _config(tmp_path, "sawyer", {"driver_wait_s": 0.5})
    pub = free_loopback_endpoint()
    code = pac_run(["--robot", "sawyer", "--policy", str(policies["sawyer"]), "--config", str(config), "--pub", pub])
    assert code == EXIT_REFUSED
    err = capsys.readouterr().err
    assert pub in err and "pac-sim --robot sawyer" in err and "--sim" in err


def _pac_run_process(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for_ticks(record: Path, n: int, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    path = record / "ticks.jsonl"
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise TimeoutError(f"pac-run did not reach {n} ticks")


def test_killed_driver_faults_and_exits_non_zero_with_a_summary(lockstep_sim, policies, tmp_path):
    sim, pub, cmd = lockstep_sim.proc, lockstep_sim.pub, lockstep_sim.cmd
    run = _pac_run_process(
        "--robot",
        "sawyer",
        "--policy",
        str(policies["sawyer"]),
        "--pub",
        pub,
        "--cmd",
        cmd,
        "--record",
        str(tmp_path / "rec"),
    )
    try:
        _wait_for_ticks(tmp_path / "rec", 20)
        sim.kill()
        out, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == EXIT_FAULT, out
    summary = json.loads((tmp_path / "rec" / "summary.json").read_text())
    assert summary["final_state"] == "FAULT" and summary["fault_cause"].startswith("driver_lost"), summary
    assert not summary["final_hold_confirmed"]  # nobody left to confirm it
    assert "pac-run summary" in out


def test_sigint_holds_waits_for_the_driver_and_exits_zero(policies, tmp_path):
    run = _pac_run_process(
        "--robot",
        "sawyer",
        "--policy",
        str(policies["sawyer"]),
        "--sim",
        "--lockstep",
        "--record",
        str(tmp_path / "rec"),
    )
    try:
        _wait_for_ticks(tmp_path / "rec", 20)
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == EXIT_OK, out
    summary = json.loads((tmp_path / "rec" / "summary.json").read_text())
    assert summary["stop_reason"] == "signal SIGINT" and summary["final_hold_confirmed"]


def test_joint_position_policy_stays_inside_joint_limits_and_step_limits(
    lockstep_sim, wire_proxy, exported_policy, tmp_path
):
    arm = load_spec("sawyer")
    policy = exported_policy("sawyer", Mode.JOINT_POSITION, seed=5)
    config = _config(tmp_path, "sawyer", {"mode": "joint_position"})
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    code, summary, _ = _run("sawyer", policy, proxy, tmp_path, "--ticks", "60", "--config", str(config))
    assert code == EXIT_OK, summary
    limits = SafetyLimits.from_arm(arm, "joint_position")
    moving = [c for c in proxy.commands if c.mode == "joint_position"]
    assert moving, summary["holds_by_cause"]
    for c in moving:
        assert np.all(c.action >= limits.low - 1e-12) and np.all(c.action <= limits.high + 1e-12)
    previous = None  # after a hold the filter steps from the measured joints instead
    for c in proxy.commands:
        if c.mode == "joint_position" and previous is not None:
            assert np.all(np.abs(c.action - previous) <= limits.max_step + 1e-9)
        previous = c.action if c.mode == "joint_position" else None

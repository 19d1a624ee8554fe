"""`pac-driver --dry-run`: the real adapters' code with only the SDK boundary replaced by the MuJoCo arm.

Over real loopback sockets and in lockstep: the same Cartesian command moves the TCP as `pac-sim` does; the
Panda's 1 kHz commands stay inside its rated limits; stale commands hold; joint offsets from calibration are
applied; the SDKs' error states are status faults, refused motion and a recovery; pac-run runs against it as
against pac-sim; and without an SDK the command says what to install.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from robots.contract.client import DriverClient
from robots.contract.link import DEFAULT_LINK, DriverFault
from robots.contract.security import private_endpoint
from robots.driver.server import DriverConfig
from robots.real import cli as pac_driver
from robots.real.driver import RealDriver
from robots.real.dryrun import DryRunArm, DryRunFranka, DryRunIntera
from robots.real.faults import franka_health, intera_health
from robots.real.franka import FrankaBackend
from robots.real.hardware import franka_settings, intera_settings
from robots.real.intera import InteraBackend
from robots.real.process import start_dry_run
from robots.sim.process import start_sim, stop_sim
from robots.spec import load_spec
from runtime.cli import EXIT_OK
from runtime.cli import main as pac_run

ARMS = ["sawyer", "panda"]


def _action(robot: str, **axes: float) -> np.ndarray:
    space = load_spec(robot).action_spaces["cartesian_velocity"]
    action = np.zeros(space.size)
    for dim, value in axes.items():
        action[space.dims.index(dim)] = value
    return action


def _client(pub: str, cmd: str) -> DriverClient:
    client = DriverClient(pub, cmd)
    client.wait_ready(timeout_s=30)
    client.claim()
    return client


def _tcp_path(client: DriverClient, action: np.ndarray, periods: int = 20, settle: int = 5) -> np.ndarray:
    """TCP positions at every period: at rest, `periods` of the command (1 s), then holding."""
    path = [client.step("hold").state.tcp_pose[:3].copy()]
    path += [client.step("cartesian_velocity", action).state.tcp_pose[:3].copy() for _ in range(periods)]
    path += [client.step("hold").state.tcp_pose[:3].copy() for _ in range(settle)]
    return np.array(path)


def _run(proc_and_endpoints, fn):
    proc, pub, cmd = proc_and_endpoints
    client = _client(pub, cmd)
    try:
        return fn(client)
    finally:
        client.close()
        out = stop_sim(proc)
        assert proc.returncode == 0, out


@pytest.mark.parametrize("robot", ARMS)
def test_the_same_cartesian_command_moves_the_tcp_as_pac_sim_within_2mm(robot, capsys):
    action = _action(robot, vx=0.05, vy=-0.02, vz=-0.03)
    sim = _run(start_sim(robot, "--lockstep", "--cameras", "none"), lambda c: _tcp_path(c, action))
    dry = _run(start_dry_run(robot, "--lockstep"), lambda c: _tcp_path(c, action))
    diff_mm = np.linalg.norm(sim - dry, axis=1) * 1e3
    moved_mm = np.linalg.norm(sim[-1] - sim[0]) * 1e3
    with capsys.disabled():
        print(f"\n{robot}: TCP moved {moved_mm:.1f} mm in 1 s; dry run vs pac-sim max {diff_mm.max():.2f} mm")
    assert moved_mm == pytest.approx(1e3 * np.linalg.norm([0.05, 0.02, 0.03]), abs=3)
    assert diff_mm.max() <= 2.0


# ----------------------------------------------------------------- in-process
class InProcess:
    """A lockstep dry-run RealDriver on a thread, its SDK stand-in in reach (to make it fail), and a client."""

    def __init__(self, robot: str, encoder_offsets=None, offsets=None) -> None:
        spec = load_spec(robot)
        if robot == "panda":
            settings = franka_settings()
            self.arm = DryRunArm(spec, (), timestep=1.0 / settings.control_rate_hz)
            self.link = DryRunFranka(self.arm, settings)
            backend = FrankaBackend(self.link, settings, threaded=False, clock=self.arm.time_s)
        else:
            settings = intera_settings()
            self.arm = DryRunArm(spec, ())
            self.link = DryRunIntera(self.arm, settings.gripper_max_position)
            backend = InteraBackend(self.link, settings, spec, clock=self.arm.time_s)
        if encoder_offsets is not None:
            self.arm.encoder_offsets = np.asarray(encoder_offsets)
        pub, cmd = private_endpoint("t-pub"), private_endpoint("t-cmd")
        link = DEFAULT_LINK.__class__(pub_endpoint=pub, cmd_endpoint=cmd)
        self.driver = RealDriver(DriverConfig(robot, lockstep=True, cameras=(), link=link), backend, spec, "t", offsets)
        self.thread = threading.Thread(target=self.driver.run, daemon=True)
        self.thread.start()
        self.client = _client(pub, cmd)
        self.robot = robot

    def close(self) -> None:
        self.client.close()
        self.driver.stop()
        self.thread.join(5)
        self.arm.close()


@pytest.fixture(params=ARMS)
def arm(request) -> Iterator[InProcess]:
    inproc = InProcess(request.param)
    yield inproc
    inproc.close()


def test_stale_commands_hold_the_arm(arm):
    c = arm.client
    for _ in range(10):
        obs = c.step("cartesian_velocity", _action(arm.robot, vy=0.05))
    assert not obs.status.holding
    timeout_periods = round(DEFAULT_LINK.command_timeout_ms / 1e3 / DEFAULT_LINK.period_s)
    for _ in range(timeout_periods + 2):  # ticks, no commands: the dead-man fires
        obs = c.step()
    assert obs.status.holding and obs.status.hold_cause == DriverFault.COMMAND_TIMEOUT
    assert DriverFault.COMMAND_TIMEOUT in obs.status.faults
    before = obs.state.tcp_pose[:3].copy()
    for _ in range(20):  # a second more of silence: the arm stays where it stopped
        obs = c.step()
    assert np.linalg.norm(obs.state.tcp_pose[:3] - before) < 1e-3


def test_the_panda_never_gets_a_command_beyond_its_rated_limits_and_a_jump_is_a_reflex():
    arm = InProcess("panda")
    try:
        for axes in ({"vx": 0.1}, {"vx": -0.1, "wz": 1.0}, {"vz": -0.1}, {}):  # reversals at full speed
            for _ in range(6):
                arm.client.step("cartesian_velocity", _action("panda", **axes))
        seen = arm.link.max_seen
        assert all(0 < fraction <= 1.0 for fraction in seen.values()), seen
        assert arm.client.latest.status.faults == []
        arm.driver.backend.interp.velocity = arm.driver.backend.interp.velocity + 0.5  # a jump libfranka would refuse
        status = arm.client.step().status
        assert DriverFault.ARM_ERROR in status.faults  # the commanding side's error, as libfranka names it
        assert "joint_motion_generator_acceleration_discontinuity" in status.arm_errors
    finally:
        arm.close()


FAULTS = {
    "panda": [
        (lambda link: link.inject(("cartesian_reflex",)), [DriverFault.REFLEX], "cartesian_reflex"),
        (lambda link: link.inject(("communication_constraints_violation",)), [DriverFault.ARM_ERROR], "communication"),
        (lambda link: link.press_stop(), [DriverFault.ESTOP], "user_stopped"),
    ],
    "sawyer": [
        (lambda link: link.inject(collision=True), [DriverFault.REFLEX], "collision_detected"),
        (lambda link: link.inject(error=True), [DriverFault.ARM_ERROR], "robot_error"),
        (lambda link: link.inject(estop_pressed=True), [DriverFault.ESTOP], "estop_button"),
    ],
}


@pytest.mark.parametrize("case", range(3))
def test_sdk_error_states_are_status_faults_refuse_motion_and_a_reset_recovers(arm, case):
    fail, faults, error = FAULTS[arm.robot][case]
    c = arm.client
    c.step("cartesian_velocity", _action(arm.robot, vx=0.05))
    fail(arm.link)
    status = c.step("cartesian_velocity", _action(arm.robot, vx=0.05)).status
    status = c.step("cartesian_velocity", _action(arm.robot, vx=0.05)).status
    assert [f for f in status.faults if f != DriverFault.COMMAND_TIMEOUT] == faults
    assert any(error in e for e in status.arm_errors), status.arm_errors
    assert status.holding and status.last_rejection == "arm_fault"
    held = c.step("cartesian_velocity", _action(arm.robot, vx=0.05)).state.tcp_pose[:3].copy()
    assert np.linalg.norm(c.step().state.tcp_pose[:3] - held) < 1e-3  # the arm does not move
    if DriverFault.ESTOP in faults:  # no recovery while the stop is pressed
        assert DriverFault.ESTOP in c.reset().status.faults
        arm.link.press_stop(False) if arm.robot == "panda" else arm.link.inject(estop_pressed=False)
    obs = c.reset()
    assert obs.status.faults == [] and obs.status.recoveries == 1
    obs = c.step("cartesian_velocity", _action(arm.robot, vx=0.05))
    assert obs.status.last_applied_seq == c.seq and not obs.status.holding


@pytest.mark.parametrize(
    "mode, errors, exception, faults",
    [
        ("move", (), "", []),
        ("reflex", ("joint_reflex",), "", ["reflex"]),
        ("reflex", ("joint_motion_generator_velocity_discontinuity",), "", ["arm_error"]),
        ("reflex", ("cartesian_reflex", "communication_constraints_violation"), "", ["reflex", "arm_error"]),
        ("user_stopped", (), "", ["estop"]),
        ("idle", (), "libfranka: UDP receive: Timeout", ["arm_error"]),
    ],
)
def test_franka_states_map_to_faults(mode, errors, exception, faults):
    assert list(franka_health(mode, errors, exception).faults) == faults


@pytest.mark.parametrize(
    "flags, faults",
    [
        ((True, False, False, False, False), []),
        ((True, True, False, True, False), ["estop"]),
        ((True, False, False, False, True), ["reflex"]),
        ((False, False, False, False, False), ["arm_error"]),
        ((True, False, True, False, False), ["arm_error"]),
    ],
)
def test_intera_states_map_to_faults(flags, faults):
    assert list(intera_health(*flags).faults) == faults


@pytest.mark.parametrize("robot", ARMS)
def test_joint_offsets_from_calibration_are_applied_to_reads_and_commands(robot, tmp_path):
    spec = load_spec(robot)
    error = np.linspace(-0.01, 0.01, spec.dof)  # rad: what the encoders read off
    path = tmp_path / "joints.yaml"  # as pac-calibrate joints writes it: true = read + offset
    offsets = dict(zip(spec.joint_names, map(float, error), strict=True))
    path.write_text(yaml.safe_dump({"kind": "joint_offsets", "robot": robot, "offsets_rad": offsets}))
    from robots.real.offsets import load_joint_offsets

    corrected = InProcess(robot, encoder_offsets=error, offsets=load_joint_offsets(path, spec))
    try:
        obs = corrected.client.step("cartesian_velocity", _action(robot, vx=0.05))
        assert np.allclose(obs.state.q, corrected.arm.sim.state().q, atol=1e-9)  # published = true joints
        assert np.allclose(obs.state.tcp_pose[:3], corrected.arm.sim.state().tcp_pose[:3], atol=5e-4)
    finally:
        corrected.close()
    raw = InProcess(robot, encoder_offsets=error)
    try:
        obs = raw.client.step("hold")
        assert np.allclose(obs.state.q, raw.arm.sim.state().q - error, atol=1e-9)  # uncorrected: off by the error
    finally:
        raw.close()


@pytest.mark.parametrize("robot", ARMS)
def test_a_pac_run_session_against_the_dry_run_behaves_as_against_pac_sim(robot, exported_policy, tmp_path):
    proc, pub, cmd = start_dry_run(robot, "--lockstep", "--cameras", "front_left,front_right")
    try:
        argv = ["--robot", robot, "--policy", str(exported_policy(robot)), "--pub", pub, "--cmd", cmd]
        code = pac_run([*argv, "--ticks", "40", "--record", str(tmp_path / "rec")])
        summary = json.loads((tmp_path / "rec" / "summary.json").read_text())
    finally:
        out = stop_sim(proc)
    assert proc.returncode == 0, out
    assert code == EXIT_OK and summary["ticks"] == 40 and summary["final_state"] == "RUNNING"
    assert summary["final_hold_confirmed"] and summary["driver_rejected"] == {}


@pytest.mark.parametrize("robot, extra", [("panda", "pac-runtime[panda]"), ("sawyer", "pac-runtime[sawyer]")])
def test_without_the_sdk_it_says_what_to_install_and_exits_non_zero(robot, extra, capsys):
    assert pac_driver.main(["--robot", robot]) == pac_driver.EXIT_NO_SDK
    err = capsys.readouterr().err
    assert extra in err and "--dry-run" in err


def test_flags_that_need_a_dry_run_are_refused_on_a_real_arm(capsys):
    assert pac_driver.main(["--robot", "panda", "--lockstep"]) == pac_driver.EXIT_USAGE
    assert pac_driver.main(["--robot", "panda", "--backend", "intera", "--dry-run"]) == pac_driver.EXIT_USAGE


def test_offsets_for_another_arm_are_refused(tmp_path: Path, capsys):
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump({"kind": "joint_offsets", "robot": "sawyer", "offsets_rad": {}}))
    assert pac_driver.main(["--robot", "panda", "--dry-run", "--joint-offsets", str(path)]) == pac_driver.EXIT_USAGE
    assert "'sawyer'" in capsys.readouterr().err

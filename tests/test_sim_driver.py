"""`pac-sim` in lockstep over real loopback sockets: motion accuracy, hold on silence, late commands."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from robots.contract import messages as msg
from robots.contract.client import DriverClient
from robots.contract.link import Mode
from robots.rotations import quat_to_mat
from robots.spec import load_spec


def _axis_action(robot: str, dim: str, value: float) -> np.ndarray:
    space = load_spec(robot).action_spaces["cartesian_velocity"]
    action = np.zeros(space.size)
    action[space.dims.index(dim)] = value
    return action


def _move(client: DriverClient, robot: str, dim: str, value: float, periods: int = 20):
    """Command one axis for `periods` (1 s), then hold and let it settle; returns start and end TCP poses."""
    start = client.reset().state.tcp_pose.copy()
    for _ in range(periods):
        client.step("cartesian_velocity", _axis_action(robot, dim, value))
    client.step("hold")
    for _ in range(4):
        obs = client.step()
    return start, obs.state.tcp_pose.copy()


@pytest.mark.parametrize("dim, value", [("vx", 0.05), ("vz", -0.05)])  # down: home is 2 cm below the box top
def test_linear_velocity_moves_50mm_in_one_second(lockstep_driver, dim, value):
    robot, client = lockstep_driver
    start, end = _move(client, robot, dim, value)
    delta_mm = (end[:3] - start[:3]) * 1000
    axis = {"vx": 0, "vz": 2}[dim]
    assert delta_mm[axis] == pytest.approx(1000 * value, abs=5)
    assert np.all(np.abs(np.delete(delta_mm, axis)) < 5), delta_mm


def test_yaw_velocity_turns_about_z_without_drift(lockstep_driver):
    robot, client = lockstep_driver
    start, end = _move(client, robot, "wz", 0.5)
    r = quat_to_mat(end[3:]) @ quat_to_mat(start[3:]).T
    assert np.degrees(np.arctan2(r[1, 0], r[0, 0])) == pytest.approx(np.degrees(0.5), abs=np.degrees(0.05))
    assert np.all(np.abs(end[:3] - start[:3]) < 5e-3)


def test_arm_holds_when_commands_stop(lockstep_driver):
    robot, client = lockstep_driver
    obs = client.reset()
    status = obs.status
    for _ in range(10):
        obs = client.step("cartesian_velocity", _axis_action(robot, "vy", 0.05))
    assert not obs.status.holding
    # Silence: ticks advance the sim without a command, for command_timeout + one period after the last.
    periods = round((status.command_timeout_ms / 1000 + status.period_s) / status.period_s)
    for _ in range(periods):
        obs = client.step()
    p0 = obs.state.tcp_pose[:3].copy()
    obs = client.step()
    speed = np.linalg.norm(obs.state.tcp_pose[:3] - p0) / status.period_s
    assert speed < 1e-3, f"TCP still moving at {speed * 1000:.2f} mm/s"
    assert obs.status.holding and obs.status.hold_cause == "command_timeout"
    assert "command_timeout" in obs.status.faults


def test_late_command_is_refused_and_reported(lockstep_driver):
    robot, client = lockstep_driver
    obs = client.reset()
    start = obs.state.tcp_pose[:3].copy()
    late = obs.state.t_capture_ns - 1
    rejected_before = obs.status.commands_rejected.get("late", 0)
    obs = client.step("cartesian_velocity", _axis_action(robot, "vx", 0.05), deadline_ns=late)
    seq = client.seq
    assert obs.status.last_rejected_seq == seq and obs.status.last_rejection == "late"
    assert obs.status.commands_rejected.get("late", 0) == rejected_before + 1
    assert obs.state.last_cmd_seq != seq
    obs = client.step()
    assert np.linalg.norm(obs.state.tcp_pose[:3] - start) < 1e-4


def test_non_finite_command_never_moves_the_arm(lockstep_driver):
    robot, client = lockstep_driver
    start = client.reset().state.tcp_pose[:3].copy()
    obs = client.step("cartesian_velocity", _axis_action(robot, "vx", np.nan))
    assert obs.status.last_rejection == "non_finite"
    assert np.linalg.norm(obs.state.tcp_pose[:3] - start) < 1e-4


def test_malformed_messages_are_counted_and_the_driver_goes_on(lockstep_driver):
    robot, client = lockstep_driver
    client.reset()
    rogue = zmq.Context.instance().socket(zmq.PUB)  # a second peer on the command port, sending garbage
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(client.cmd_endpoint)
    try:
        for _ in range(50):  # PUB/SUB drops what is sent before the connection is up: resend until counted
            rogue.send_multipart([msg.COMMAND.encode(), b"\xc1 not msgpack"])
            rogue.send_multipart([msg.COMMAND.encode()])
            if client.step(Mode.HOLD).status.messages_dropped.get("malformed", 0) >= 2:
                break
    finally:
        rogue.close()
    obs = client.step("cartesian_velocity", _axis_action(robot, "vx", 0.01))
    assert obs.state.last_cmd_seq == client.seq
    assert obs.status.messages_dropped.get("malformed", 0) >= 2


def test_cameras_publish_jpeg_frames_each_period(start_driver):
    sim = start_driver("sawyer", "--lockstep", "--cameras", "front_left,front_right")
    client = DriverClient(sim.pub, sim.cmd)
    try:
        client.wait_ready(timeout_s=30)
        obs = client.step("hold")
        step = obs.state.step
        assert set(obs.images) == {"front_left", "front_right"}
        for image in obs.images.values():
            assert image.image.shape == (128, 128, 3) and image.image.dtype == np.uint8
            assert image.step == step
            assert image.image.std() > 5  # a scene, not a blank frame
    finally:
        client.close()


def test_binding_a_non_loopback_address_is_refused(start_driver):
    sim = start_driver("sawyer", "--lockstep", "--cameras", "none", "--pub", "tcp://0.0.0.0:5599")
    out, _ = sim.proc.communicate(timeout=60)
    assert sim.proc.returncode == 2 and "CURVE" in out


def test_realtime_driver_applies_commands_then_holds_on_silence(start_driver):
    sim = start_driver("panda", "--cameras", "none")
    client = DriverClient(sim.pub, sim.cmd)
    try:
        status = client.wait_ready(timeout_s=30)
        assert status.mode == "realtime" and status.holding
        client.poll(200)
        start = client.latest.state.tcp_pose[:3].copy()
        seq = -1
        for _ in range(200):  # bounded: a command with a generous deadline, resent until applied
            seq = client.send_command(
                "cartesian_velocity", _axis_action("panda", "vx", 0.05), time.monotonic_ns() + 10**9
            )
            client.poll(20)
            if client.latest.state.last_cmd_seq == seq:
                break
        assert client.latest.state.last_cmd_seq == seq
        for _ in range(500):  # then silence: the driver must end up holding by its own timeout
            client.poll(20)
            if client.latest.status.hold_cause == "command_timeout":
                break
        assert client.latest.status.holding and client.latest.status.hold_cause == "command_timeout"
        assert client.latest.state.tcp_pose[0] > start[0]
    finally:
        client.close()

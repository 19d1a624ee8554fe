"""The command servo on real MuJoCo physics, checked at every physics step (500 Hz), not just per period."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robots.contract.link import DEFAULT_LINK, Mode
from robots.servo import Command, CommandServo, Rejection, ServoConfig, twist_from_action
from robots.sim.physics import SimArm
from robots.spec import ARMS, load_spec

PERIOD_NS = 50_000_000


class Rig:
    """Servo + sim stepped together with a fake clock; records the worst limit ratios seen."""

    def __init__(self, arm: str, scene: bool = True) -> None:
        self.spec = load_spec(arm)
        self.sim = SimArm(self.spec, cameras=(), scene=scene)
        self.config = ServoConfig()
        self.now = 0
        self.servo = CommandServo(self.spec, self.config, self.spec.home, self.now)
        self.seq = 0
        self.worst_speed_ratio = 0.0  # measured |dq| / published max
        self.worst_range_excess = -np.inf  # rad past the published joint range (negative: inside)
        self.worst_tcp_speed = 0.0

    def send(self, mode: Mode | str, action, deadline_ns: int | None = None) -> Rejection | None:
        self.seq += 1
        deadline = self.now + PERIOD_NS if deadline_ns is None else deadline_ns
        return self.servo.submit(Command(self.seq, mode, np.asarray(action, dtype=float), deadline), self.now)

    def run(self, periods: int = 1) -> None:
        dt_ns = round(self.config.dt * 1e9)
        for _ in range(periods * round(self.config.period_s / self.config.dt)):
            q, qd, g = self.servo.step(self.now)
            self.sim.set_targets(q, qd, g)
            self.sim.step()
            self.now += dt_ns
            s = self.sim.state()
            self.worst_speed_ratio = max(self.worst_speed_ratio, np.max(np.abs(s.dq) / self.spec.max_joint_speed))
            excess = np.maximum(self.spec.joint_lower - s.q, s.q - self.spec.joint_upper)
            self.worst_range_excess = max(self.worst_range_excess, float(np.max(excess)))
            self.worst_tcp_speed = max(self.worst_tcp_speed, float(np.linalg.norm(s.tcp_vel)))

    def tcp(self) -> np.ndarray:
        return self.sim.state().tcp_pose[:3].copy()


@pytest.fixture(scope="module", params=ARMS)
def rig_factory(request):
    return lambda: Rig(request.param)


def test_servo_timing_defaults_come_from_the_link():
    config = ServoConfig()
    assert config.period_s == DEFAULT_LINK.period_s
    assert config.command_timeout_s == DEFAULT_LINK.command_timeout_ms / 1000


def test_late_command_is_not_applied(rig_factory):
    rig = rig_factory()
    n = rig.spec.action_spaces[Mode.CARTESIAN_VELOCITY].size
    action = np.zeros(n)
    action[0] = 0.05
    assert rig.send(Mode.CARTESIAN_VELOCITY, action, deadline_ns=rig.now - 1) is Rejection.LATE
    before = rig.tcp()
    rig.run(10)
    assert np.linalg.norm(rig.tcp() - before) < 1e-4
    assert rig.servo.status.rejected == {"late": 1}
    assert rig.servo.status.last_applied_seq == -1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_command_is_refused(rig_factory, bad):
    rig = rig_factory()
    action = np.zeros(rig.spec.action_spaces[Mode.CARTESIAN_VELOCITY].size)
    action[1] = bad
    assert rig.send(Mode.CARTESIAN_VELOCITY, action) is Rejection.NON_FINITE
    assert rig.send(Mode.CARTESIAN_VELOCITY, np.zeros(3)) is Rejection.BAD_SHAPE
    assert rig.send("dance", action) is Rejection.BAD_MODE  # a wire string that names no Mode
    rig.run(5)
    assert np.all(np.isfinite(rig.servo.q_des))
    assert rig.servo.status.holding


def test_twist_is_clipped_to_the_speed_limits():
    spec = load_spec("panda")
    twist, gripper = twist_from_action(spec, np.array([5, 5, 5, 9, 9, 9, 3.0]))
    assert np.linalg.norm(twist[:3]) == pytest.approx(spec.limits.max_linear_speed)
    assert np.linalg.norm(twist[3:]) == pytest.approx(spec.limits.max_angular_speed)
    assert gripper == 1.0
    sawyer = load_spec("sawyer")
    twist, _ = twist_from_action(sawyer, np.array([0.01, 0, 0, 0.5, 0]))
    np.testing.assert_allclose(twist, [0.01, 0, 0, 0, 0, 0.5])  # Sawyer's 4-D twist: yaw only
    twist, _ = twist_from_action(sawyer, np.array([0.07, 0.07, 0.07, 0, 0]))  # 0.12 m/s: a norm, not per axis
    np.testing.assert_allclose(twist[:3], [0.07 / np.sqrt(3)] * 3)


@pytest.mark.parametrize("mode", ["cartesian_velocity", Mode.CARTESIAN_VELOCITY])
def test_wire_string_and_mode_are_the_same_command(mode):
    rig = Rig("panda", scene=False)
    action = np.array([0.05, 0, 0, 0, 0, 0, 1.0])
    assert rig.send(mode, action) is None
    assert not rig.servo.status.holding and rig.servo.gripper == 1.0
    np.testing.assert_array_equal(rig.servo.twist_goal, [0.05, 0, 0, 0, 0, 0])
    assert rig.send("hold", []) is None and rig.servo.status.hold_cause == "hold_command"


cartesian_step = st.tuples(st.just(Mode.CARTESIAN_VELOCITY), st.lists(st.floats(-2, 2), min_size=7, max_size=7))
joint_step = st.tuples(st.just(Mode.JOINT_POSITION), st.lists(st.floats(-6, 6), min_size=8, max_size=8))
hold_step = st.tuples(st.just(Mode.HOLD), st.just([]))
sequences = st.lists(st.one_of(cartesian_step, joint_step, hold_step), min_size=1, max_size=12)


@pytest.mark.parametrize("arm", ARMS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=sequences)
def test_random_commands_never_pass_a_joint_or_speed_limit(arm, commands):
    # The arm alone: hitting the table makes speed spikes no driver can prevent (the runtime's workspace
    # filter keeps the TCP above it).
    rig = Rig(arm, scene=False)
    for mode, values in commands:
        size = 0 if mode is Mode.HOLD else rig.spec.action_spaces[mode].size
        rig.send(mode, np.array(values[:size]))
        rig.run(2)
    rig.run(6)  # and after the command timeout
    assert rig.worst_range_excess <= 0.0, f"joint past its range by {rig.worst_range_excess} rad"
    assert rig.worst_speed_ratio <= 1.0, f"joint at {rig.worst_speed_ratio:.2f}× its published max speed"

"""The Sawyer through Rethink's Intera SDK (ROS 1): joint position commands at the servo's 100 Hz.

The driver's servo turns the runtime's Cartesian velocity into joint targets through the project's IK
(robots/servo.py, the same code as the sim) and this adapter sends each one with `set_joint_positions`.
Intera's `set_command_timeout` is set (spec `hardware.intera.command_timeout`): it drops a velocity or
torque mode when commands stop, but an arm in position mode simply stays on its last target, so stopping on
a silent runtime is the servo's own dead-man (the command timeout: it ramps the target to rest). Intera's
position mode runs its own 1 kHz joint loop, limited by `set_joint_position_speed` (set to the spec's joint
speed fraction, so Intera never slows what the servo already bounds).

The SDK boundary is `InteraLink`: `RosInteraLink` is the real one (rospy and intera_interface, which come
with a ROS 1 Noetic/Melodic workspace on the Intera workstation, not from the package index);
robots/real/dryrun.py's is a MuJoCo Sawyer behind the same methods.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robots.real.backend import ArmBackend, ArmHealth, ArmReading, SdkMissing
from robots.real.faults import intera_health
from robots.real.hardware import InteraSettings
from robots.spec import ArmSpec

log = logging.getLogger("pac-driver")

INSTALL = (
    "pip install 'pac-runtime[sawyer]' inside a sourced ROS 1 workspace with intera_sdk built "
    "(rospy and intera_interface come from ROS, not from the package index; see the README)"
)


@dataclass(frozen=True)
class InteraState:
    """`RobotEnable.state()` and the limb's collision detection state."""

    enabled: bool
    stopped: bool
    error: bool
    estop_pressed: bool
    collision: bool = False


class InteraLink(ABC):
    """The part of intera_interface the adapter uses; joints in the spec's order."""

    @abstractmethod
    def configure(self, command_timeout_s: float, position_speed_ratio: float) -> None:
        """Enable the arm; set the command timeout and the position mode's speed ratio."""

    @abstractmethod
    def joint_angles(self) -> np.ndarray: ...

    @abstractmethod
    def joint_velocities(self) -> np.ndarray: ...

    @abstractmethod
    def set_joint_positions(self, q: np.ndarray) -> None: ...

    @abstractmethod
    def robot_state(self) -> InteraState: ...

    @abstractmethod
    def reset_and_enable(self) -> None:
        """`RobotEnable.reset()` then `enable()`; RuntimeError when the arm will not enable (a stop pressed)."""

    @abstractmethod
    def gripper_set_position(self, position: float) -> None: ...

    @abstractmethod
    def gripper_state(self) -> tuple[float, bool]:
        """(opening in m, whether it grips something)."""

    def elapse(self, seconds: float) -> None:  # noqa: B027 (a default: nothing to do for a real arm)
        """Let the arm run for `seconds` (a real arm: time passes by itself)."""

    def close(self) -> None: ...  # noqa: B027


class RosInteraLink(InteraLink):
    """rospy + intera_interface, imported only when a real Sawyer is driven."""

    def __init__(self, spec: ArmSpec) -> None:
        try:
            import intera_interface
            import rospy
        except ImportError as exc:
            raise SdkMissing(f"the Sawyer adapter needs rospy and intera_interface: {INSTALL}") from exc
        rospy.init_node("pac_driver", anonymous=True, disable_signals=True)
        self.names = list(spec.joint_names)  # right_j0 ... right_j6, as Intera names them
        self.enable = intera_interface.RobotEnable(intera_interface.CHECK_VERSION)
        self.limb = intera_interface.Limb("right")
        self.hand = intera_interface.Gripper("right_gripper")
        self._collision = False
        try:
            from intera_core_msgs.msg import CollisionDetectionState

            rospy.Subscriber(
                "/robot/limb/right/collision_detection_state",
                CollisionDetectionState,
                lambda m: setattr(self, "_collision", bool(m.collision_state)),
                queue_size=1,
            )
        except ImportError:
            log.warning("intera_core_msgs not found: collisions will not be reported as reflexes")

    def configure(self, command_timeout_s: float, position_speed_ratio: float) -> None:
        self.enable.enable()
        self.limb.set_command_timeout(command_timeout_s)
        self.limb.set_joint_position_speed(position_speed_ratio)

    def joint_angles(self) -> np.ndarray:
        angles = self.limb.joint_angles()
        return np.array([angles[n] for n in self.names])

    def joint_velocities(self) -> np.ndarray:
        speeds = self.limb.joint_velocities()
        return np.array([speeds[n] for n in self.names])

    def set_joint_positions(self, q: np.ndarray) -> None:
        self.limb.set_joint_positions(dict(zip(self.names, map(float, q), strict=True)))

    def robot_state(self) -> InteraState:
        s = self.enable.state()
        return InteraState(bool(s.enabled), bool(s.stopped), bool(s.error), bool(s.estop_button), self._collision)

    def reset_and_enable(self) -> None:
        self.enable.reset()
        self.enable.enable()

    def gripper_set_position(self, position: float) -> None:
        self.hand.set_position(position)

    def gripper_state(self) -> tuple[float, bool]:
        return float(self.hand.get_position()), bool(self.hand.is_gripping())

    def close(self) -> None:
        self.limb.exit_control_mode()


class InteraBackend(ArmBackend):
    """The Sawyer adapter: each servo target sent as a joint position command."""

    def __init__(
        self, link: InteraLink, settings: InteraSettings, spec: ArmSpec, clock: Callable[[], float] | None = None
    ) -> None:
        super().__init__(clock)
        self.link, self.settings, self.spec = link, settings, spec
        self.servo_rate_hz = settings.servo_rate_hz
        self._grip: float | None = None

    def start(self) -> None:
        self.link.configure(self.settings.command_timeout_s, self.spec.limits.joint_speed_fraction)
        self.link.set_joint_positions(self.link.joint_angles())  # position mode, holding where the arm is

    def read(self) -> ArmReading:
        width, gripping = self.link.gripper_state()
        closed = 1.0 - min(max(width / self.settings.gripper_max_position, 0.0), 1.0)
        return ArmReading(self.link.joint_angles(), self.link.joint_velocities(), closed, 0.0, float(gripping))

    def command(self, q: np.ndarray, qd: np.ndarray) -> None:
        self.link.set_joint_positions(q)

    def gripper(self, closing: float) -> None:
        position = self.settings.gripper_max_position * (1.0 - min(max(closing, 0.0), 1.0))
        if self._grip is None or abs(position - self._grip) > 1e-4:  # a changed goal only: each call is a message
            self._grip = position
            self.link.gripper_set_position(position)

    def health(self) -> ArmHealth:
        s = self.link.robot_state()
        return intera_health(s.enabled, s.stopped, s.error, s.estop_pressed, s.collision)

    def recover(self) -> bool:
        if self.health().ok:
            return True
        try:
            self.link.reset_and_enable()
        except RuntimeError as exc:
            log.error("Intera reset/enable failed: %s", exc)
            return False
        self.link.set_joint_positions(self.link.joint_angles())
        self.recoveries += 1
        return self.health().ok

    def elapse(self, seconds: float) -> None:  # noqa: B027 (a default: nothing to do for a real arm)
        self.link.elapse(seconds)

    def close(self) -> None:
        self.link.close()

"""SDK error states → driver faults: what the runtime and an operator see of a real arm's trouble.

Pure tables, one function per SDK, so each mapping is read (and tested) in one place. A pressed stop is
`estop` (the runtime latches ESTOP); an arm that stopped itself (collision, a limit reflex) is `reflex`;
any other error, a disabled arm or a lost link is `arm_error`. The SDK's own error names travel beside them
(status `arm_errors`), so the operator knows which reflex fired.
"""

from __future__ import annotations

from collections.abc import Iterable

from robots.contract.link import DriverFault
from robots.real.backend import ArmHealth

# libfranka's franka::Errors flags that are the arm stopping itself for a contact or a limit (a reflex); every
# other flag (motion generator discontinuities, communication, start pose, ...) is an error of the commanding side.
FRANKA_REFLEXES = frozenset(
    {
        "joint_reflex",
        "cartesian_reflex",
        "joint_position_limits_violation",
        "cartesian_position_limits_violation",
        "self_collision_avoidance_violation",
        "joint_velocity_violation",
        "cartesian_velocity_violation",
        "force_control_safety_violation",
        "power_limit_violation",
        "tau_j_range_violation",
        "instability_detected",
    }
)
FRANKA_STOPPED = "user_stopped"  # franka::RobotMode::kUserStopped: the external activation device is pressed
FRANKA_REFLEX_MODE = "reflex"  # franka::RobotMode::kReflex


def franka_health(robot_mode: str, errors: Iterable[str], exception: str = "") -> ArmHealth:
    """Faults from a Franka state: its robot mode (snake case), its active error flags, and the message of a
    control exception that ended the control loop ("" for none; an error only when the state does not already
    say why, as a reflex or a pressed stop do)."""
    errors = tuple(sorted(set(errors)))
    faults: list[str] = []
    if robot_mode == FRANKA_STOPPED:
        faults.append(DriverFault.ESTOP.value)
    # libfranka enters its Reflex mode on any error: the flags say whether it was a reflex or the commanding side
    if any(e in FRANKA_REFLEXES for e in errors) or (robot_mode == FRANKA_REFLEX_MODE and not errors):
        faults.append(DriverFault.REFLEX.value)
    if any(e not in FRANKA_REFLEXES for e in errors) or (exception and not faults):  # an unexplained end: an error
        faults.append(DriverFault.ARM_ERROR.value)
    names = errors + ((f"control_exception: {exception}",) if exception else ())
    return ArmHealth(tuple(faults), names + ((robot_mode,) if faults and robot_mode else ()))


def intera_health(enabled: bool, stopped: bool, error: bool, estop_pressed: bool, collision: bool) -> ArmHealth:
    """Faults from Intera's robot state (`RobotEnable.state()`: enabled, stopped, error, estop_button) and the
    limb's collision detection state."""
    faults: list[str] = []
    errors: list[str] = []
    if stopped or estop_pressed:
        faults.append(DriverFault.ESTOP.value)
        errors.append("estop_button" if estop_pressed else "stopped")
    if collision:
        faults.append(DriverFault.REFLEX.value)
        errors.append("collision_detected")
    if error or not (enabled or stopped or estop_pressed):  # a stopped arm is disabled by the stop: that is the estop
        faults.append(DriverFault.ARM_ERROR.value)
        errors.append("robot_error" if error else "disabled")
    return ArmHealth(tuple(faults), tuple(errors))

"""`pac-driver --dry-run`: the SDK boundary of each adapter replaced by the MuJoCo arm, nothing else.

Everything above the boundary is the real driver's code: the servo and IK, the joint offsets, the 100 Hz
position commands (Sawyer) or the 1 kHz interpolation (Panda), the hold logic, the fault mapping and error
recovery. Below it, these classes answer as the SDK would, from the sim arm:

- `DryRunFranka` follows joint velocity commands at 1 kHz (physics at 1 ms) and, as the arm does, refuses a
  command beyond the Panda's rated velocity, acceleration or jerk with a reflex (libfranka's
  `joint_motion_generator_*` errors), so a dry run fails where the arm would stop;
- `DryRunIntera` follows joint position commands as Intera's position mode does (interpolated over the
  command period) and ignores the command timeout in that mode, as Intera does.

Both can be told to fail (`inject`, `press_stop`) and to read their encoders off by given offsets
(`encoder_offsets`: what a calibration corrects), so tests reach each error path and the offsets' round trip.
Time is the sim's: in lockstep it is the driver's clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robots.real.franka import FrankaControlError, FrankaLink, FrankaReading
from robots.real.hardware import FRANKA_DT, FrankaSettings
from robots.real.intera import InteraLink, InteraState
from robots.sim.physics import SimArm
from robots.spec import ArmSpec

RATED_TOLERANCE = 1e-6  # relative: what the dry run lets pass over a rated limit (rounding)


class DryRunArm:
    """The sim arm a dry run commands, with encoders that read `encoder_offsets` off the truth."""

    def __init__(self, spec: ArmSpec, cameras: Sequence[str] | None, timestep: float | None = None) -> None:
        self.spec = spec
        self.sim = SimArm(spec, cameras)
        if timestep is not None:
            self.sim.model.opt.timestep = timestep
        self.dt = float(self.sim.model.opt.timestep)
        self.encoder_offsets = np.zeros(spec.dof)  # true = read + offset
        self.q_cmd = self.sim.state().q  # true joint target
        self.qd_cmd = np.zeros(spec.dof)
        self.grip = 0.0

    def step(self) -> None:
        self.sim.set_targets(self.q_cmd, self.qd_cmd, self.grip)
        self.sim.step()

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.sim.state()
        return s.q - self.encoder_offsets, s.dq

    def hold(self) -> None:
        """Stop where the arm is (what a real arm's brakes or hold do after a stop)."""
        self.q_cmd, self.qd_cmd = self.sim.state().q, np.zeros(self.spec.dof)

    def time_s(self) -> float:
        return self.sim.time

    def close(self) -> None:
        self.sim.close()


class DryRunFranka(FrankaLink):
    def __init__(self, arm: DryRunArm, settings: FrankaSettings) -> None:
        self.arm, self.settings = arm, settings
        self.mode, self.errors = "idle", ()
        self.stop_pressed = False
        self._controlling = False
        self._pending: tuple[str, ...] = ()  # errors to raise at the next tick
        self._pending_mode = ""  # ... and the robot mode they leave
        self._last = np.zeros(arm.spec.dof)
        self._last_acc = np.zeros(arm.spec.dof)
        self.configured: FrankaSettings | None = None
        self.max_seen = {"velocity": 0.0, "acceleration": 0.0, "jerk": 0.0}  # fractions of the rated limits

    # -------------------------------------------------------------- failures
    def inject(self, errors: tuple[str, ...], mode: str = "reflex") -> None:
        """The arm stops itself with these franka::Errors flags at the next tick."""
        self._pending, self._pending_mode = errors, mode

    def press_stop(self, pressed: bool = True) -> None:
        self.stop_pressed = pressed
        if pressed:
            self._pending, self._pending_mode = (), "user_stopped"

    # --------------------------------------------------------------- the SDK
    def configure(self, settings: FrankaSettings) -> None:
        self.configured = settings

    def _reading(self) -> FrankaReading:
        q, dq = self.arm.read()
        return FrankaReading(q, dq, self.mode, self.errors, FRANKA_DT)

    def read_state(self) -> FrankaReading:
        return self._reading()

    def start_velocity_control(self) -> None:
        if self.mode != "idle":
            raise FrankaControlError(f"cannot start a motion in robot mode {self.mode}")
        self.mode, self._controlling = "move", True
        self._last, self._last_acc = np.zeros(self.arm.spec.dof), np.zeros(self.arm.spec.dof)

    def _stop(self, errors: tuple[str, ...], mode: str, why: str) -> None:
        self.mode, self.errors, self._controlling = mode, errors, False
        self.arm.hold()
        raise FrankaControlError(why)

    def read_once(self) -> FrankaReading:
        if not self._controlling:
            raise FrankaControlError("no control loop running")
        if self._pending or self._pending_mode:
            errors, mode = self._pending, self._pending_mode
            self._pending, self._pending_mode = (), ""
            self._stop(errors, mode, f"motion aborted by reflex! [{', '.join(errors) or mode}]")
        self.arm.q_cmd = self.arm.q_cmd + self._last * self.arm.dt
        self.arm.qd_cmd = self._last
        self.arm.step()
        return self._reading()

    def write_once(self, dq: np.ndarray, finished: bool = False) -> None:
        dq = np.asarray(dq, dtype=float)
        lim = self.settings.rate_limits
        rated_v = lim.velocity + 1e-3 + 3 * FRANKA_DT * lim.acceleration  # back to the rated figures
        acc = (dq - self._last) / FRANKA_DT
        jerk = (acc - self._last_acc) / FRANKA_DT
        for name, value, bound in (
            ("velocity", dq, rated_v),
            ("acceleration", acc, lim.acceleration + 1e-3),
            ("jerk", jerk, lim.jerk + 1e-3),
        ):
            self.max_seen[name] = max(self.max_seen[name], float(np.max(np.abs(value) / bound)))
        errors = []
        if not np.all(np.isfinite(dq)) or np.any(np.abs(dq) > rated_v * (1 + RATED_TOLERANCE)):
            errors.append("joint_motion_generator_velocity_limits_violation")
        if np.any(np.abs(acc) > (lim.acceleration + 1e-3) * (1 + RATED_TOLERANCE)):
            errors.append("joint_motion_generator_velocity_discontinuity")
        if np.any(np.abs(jerk) > (lim.jerk + 1e-3) * (1 + RATED_TOLERANCE)):
            errors.append("joint_motion_generator_acceleration_discontinuity")
        if errors:
            self._pending, self._pending_mode = tuple(errors), "reflex"
            return
        self._last, self._last_acc = dq, acc
        if finished:
            self._controlling, self.mode = False, "idle"
            self.arm.hold()

    def recover(self) -> None:
        if self.stop_pressed:
            raise FrankaControlError("automatic error recovery: the user stop is pressed")
        self.mode, self.errors = "idle", ()

    def idle(self, seconds: float) -> None:
        for _ in range(max(1, round(seconds / self.arm.dt))):
            self.arm.step()

    def grasp(self, speed: float, force: float) -> None:
        self.arm.grip = 1.0

    def open(self, width: float, speed: float) -> None:
        self.arm.grip = 1.0 - min(width / self.settings.gripper_max_width, 1.0)

    def gripper_state(self) -> tuple[float, bool]:
        s = self.arm.sim.state()
        return self.settings.gripper_max_width * (1.0 - s.gripper_pos), bool(s.gripper_grasp)


class DryRunIntera(InteraLink):
    """Intera's position mode on the sim arm: each command is reached over one command period."""

    def __init__(self, arm: DryRunArm, gripper_max_position: float) -> None:
        self.arm = arm
        self.gripper_max = gripper_max_position
        self.state = InteraState(enabled=False, stopped=False, error=False, estop_pressed=False)
        self.command_timeout_s: float | None = None
        self.speed_ratio: float | None = None
        self._from = self._to = self.arm.q_cmd.copy()  # true-frame targets: the last two commands
        self._since = 0.0  # s since the newest command
        self._period = 0.01

    def inject(self, **flags: bool) -> None:
        """Set InteraState flags (enabled, stopped, error, estop_pressed, collision); the arm holds if any is bad."""
        state = {**self.state.__dict__, **flags}
        if flags.get("estop_pressed"):  # as Intera: the stop disables the arm, which stays stopped until a reset
            state |= {"stopped": True, "enabled": False}
        self.state = InteraState(**state)
        if not self._ok():
            self.arm.hold()
            self._from = self._to = self.arm.q_cmd.copy()

    def _ok(self) -> bool:
        s = self.state
        return s.enabled and not (s.stopped or s.error or s.estop_pressed or s.collision)

    def configure(self, command_timeout_s: float, position_speed_ratio: float) -> None:
        self.command_timeout_s, self.speed_ratio = command_timeout_s, position_speed_ratio
        self.state = InteraState(enabled=True, stopped=False, error=False, estop_pressed=False)

    def joint_angles(self) -> np.ndarray:
        return self.arm.read()[0]

    def joint_velocities(self) -> np.ndarray:
        return self.arm.read()[1]

    def set_joint_positions(self, q: np.ndarray) -> None:
        if not self._ok():
            return  # Intera ignores commands while the arm is disabled or stopped
        true_q = np.asarray(q, dtype=float) + self.arm.encoder_offsets
        self._period = max(self._since, self.arm.dt) if self._since > 0 else self._period
        self._from, self._to, self._since = self._current(), true_q, 0.0

    def _current(self) -> np.ndarray:
        f = min(self._since / self._period, 1.0)
        return self._from + (self._to - self._from) * f

    def elapse(self, seconds: float) -> None:
        for _ in range(max(1, round(seconds / self.arm.dt))):
            if self._ok():
                self._since += self.arm.dt
                moving = self._since <= self._period + 1e-12
                self.arm.q_cmd = self._current()
                self.arm.qd_cmd = (self._to - self._from) / self._period if moving else np.zeros(self.arm.spec.dof)
            self.arm.step()

    def robot_state(self) -> InteraState:
        return self.state

    def reset_and_enable(self) -> None:
        if self.state.estop_pressed:
            raise RuntimeError("the e-stop is pressed: the robot will not enable")
        self.state = InteraState(enabled=True, stopped=False, error=False, estop_pressed=False)

    def gripper_set_position(self, position: float) -> None:
        self.arm.grip = 1.0 - min(max(position / self.gripper_max, 0.0), 1.0)

    def gripper_state(self) -> tuple[float, bool]:
        s = self.arm.sim.state()
        return self.gripper_max * (1.0 - s.gripper_pos), bool(s.gripper_grasp)

"""Turns the runtime's 20 Hz commands into joint targets at the physics rate, inside the arm's limits.

This is the driver-side half of the safety contract and does not depend on MuJoCo, so the sim driver and
real-arm adapters share it: a command is refused after its deadline or when it is not finite; an accepted
command is interpolated over one control period (twists ramp, joint targets move at bounded speed); when
no valid command came for `command_timeout_s` the arm ramps to a hold. A motion command computed from an
observation older than `max_observation_age_s` is refused (its capture time travels with it), and the
Cartesian goal never crosses the arm's workspace box: the driver's own wall, behind the runtime's filter.
Every joint target stays inside the joint range less the margin, every joint speed below the published
maximum times the speed fraction, and every twist within the TCP speed norms by `robots.limits.limit_twist`,
the function the runtime's filter applies too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from robots import limits as _limits
from robots.contract.link import DEFAULT_LINK, DriverFault, Mode
from robots.contract.messages import CommandMsg
from robots.kinematics import dls_solve
from robots.rotations import axis_angle_to_mat, rotation_error
from robots.spec import GRIPPER, ArmSpec


class Rejection(str, Enum):
    """Why a command was not applied; the values are the status counters' keys."""

    LATE = "late"  # arrived after its deadline
    NON_FINITE = "non_finite"
    BAD_MODE = "bad_mode"
    BAD_SHAPE = "bad_shape"
    OUT_OF_ORDER = "out_of_order"
    STALE_OBSERVATION = "stale_observation"  # computed from an observation older than the bound (or of no stated age)
    WORKSPACE = "workspace"  # a joint target whose TCP lies outside the workspace box
    ARM_FAULT = "arm_fault"  # a real arm in a reflex, an error or a pressed stop: no motion until it is recovered


@dataclass(frozen=True)
class ServoConfig:
    period_s: float = DEFAULT_LINK.period_s  # control period the commands are meant for
    dt: float = 0.002  # physics / interpolation step
    command_timeout_s: float = DEFAULT_LINK.command_timeout_ms / 1000  # no valid command for this long: ramp to hold
    ik_damping: float = 0.02
    ik_every: int = 5  # physics steps per IK solve (100 Hz); the joint targets still move every step
    stop_ramp_s: float = 0.02  # twist ramp to zero on a command timeout
    reanchor_error: float = 0.01  # m or rad of tracking error past which the Cartesian target is reset
    max_observation_age_s: float = DEFAULT_LINK.max_observation_age_ms / 1000
    workspace_tolerance: float = 0.01  # m a joint target's TCP may lie outside the box (the filter's own margin)


@dataclass(frozen=True)
class Command:
    """A command as the driver sees it (decoded from the wire)."""

    seq: int
    mode: Mode | str  # a Mode; a string off the wire that names none is refused (Rejection.BAD_MODE)
    action: np.ndarray
    deadline_ns: int
    obs_seq: int = -1
    obs_t_ns: int | None = None  # capture time of the observation it came from; None: an in-process caller

    @classmethod
    def of(cls, message: CommandMsg) -> Command:
        """The servo's view of a command decoded from the wire (every driver submits through this)."""
        return cls(
            message.seq,
            message.mode,
            np.asarray(message.action),
            message.deadline_ns,
            message.obs_seq,
            message.obs_t_ns,
        )


@dataclass
class ServoStatus:
    last_applied_seq: int = -1
    last_rejected_seq: int = -1
    last_rejection: str = ""
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    holding: bool = True
    hold_cause: str = "startup"
    workspace_stops: int = 0  # physics steps in which the goal was stopped at the workspace box


def twist_from_action(spec: ArmSpec, action: np.ndarray) -> tuple[np.ndarray, float]:
    """6-D base-frame twist and gripper command from a cartesian_velocity action, clipped to the limits.

    Each axis is clipped to the action space, then `limit_twist` scales the linear and angular parts down
    to the arm's TCP speed norms, so the direction of motion is kept.
    """
    space = spec.action_spaces[Mode.CARTESIAN_VELOCITY]
    a = np.clip(action, space.low, space.high)
    twist = _limits.limit_twist(
        _limits.twist_of(space.dims, a), spec.limits.max_linear_speed, spec.limits.max_angular_speed
    )
    return twist, float(a[space.dims.index(GRIPPER)])


class CommandServo:
    """Holds the active command and produces the joint target for each physics step."""

    def __init__(self, spec: ArmSpec, config: ServoConfig, q_start: np.ndarray, now_ns: int) -> None:
        self.spec = spec
        self.config = config
        self.chain = spec.chain()
        margin = spec.limits.joint_margin
        self.q_low = spec.joint_lower + margin
        self.q_high = spec.joint_upper - margin
        self.qd_max = spec.max_joint_speed * spec.limits.joint_speed_fraction
        self.qdd_max = spec.limits.max_joint_accel
        self.ws_low = np.asarray(spec.limits.workspace.low, dtype=float)
        self.ws_high = np.asarray(spec.limits.workspace.high, dtype=float)
        self.status = ServoStatus()
        self.reset(q_start, now_ns)

    def reset(self, q: np.ndarray, now_ns: int, gripper: float = 0.0) -> None:
        """Hold at q (clipped into the limits), forgetting any active command."""
        self.q_des = np.clip(np.asarray(q, dtype=float), self.q_low, self.q_high)
        self.qd_des = np.zeros_like(self.q_des)
        self.pos_des, self.rot_des = self.chain.fk(self.q_des)
        self._anchor_stale = False
        self._ik_countdown = 0
        self._ik_qd = np.zeros_like(self.q_des)
        self.twist = np.zeros(6)  # applied twist (ramping)
        self.twist_goal = np.zeros(6)
        self.twist_step = np.zeros(6)  # twist change per step while ramping
        self.joint_goal: np.ndarray | None = None
        self.joint_speed = np.zeros_like(self.q_des)
        self.gripper = gripper
        self.last_valid_ns = now_ns
        self.status.holding, self.status.hold_cause = True, "reset"
        self.last_seq = -1

    # ----------------------------------------------------------------- commands
    def submit(self, cmd: Command, now_ns: int) -> Rejection | None:
        """Accept a command (returns None) or refuse it with the reason; a refused command changes nothing."""
        mode = Mode.parse(cmd.mode)
        reason = self._check(cmd, mode, now_ns)
        if reason is not None:
            return self.refuse(cmd.seq, reason)
        self.last_seq = cmd.seq
        self.last_valid_ns = now_ns
        self.status.last_applied_seq = cmd.seq
        self.status.applied += 1
        steps = max(1, round(self.config.period_s / self.config.dt))
        if mode is Mode.CARTESIAN_VELOCITY:
            twist, self.gripper = twist_from_action(self.spec, cmd.action)
            self._ramp_twist_to(twist, steps)
            self.joint_goal = None
        elif mode is Mode.JOINT_POSITION:
            space = self.spec.action_spaces[Mode.JOINT_POSITION]
            a = np.clip(cmd.action, space.low, space.high)
            self.joint_goal, self.gripper = np.clip(a[:-1], self.q_low, self.q_high), float(a[-1])
            self.joint_speed = (self.joint_goal - self.q_des) / self.config.period_s
            self._ramp_twist_to(np.zeros(6), 1)
        else:  # hold: stop where we are, keep the gripper as it is
            self._ramp_twist_to(np.zeros(6), steps)
            self.joint_goal = None
        self.status.holding = mode is Mode.HOLD
        self.status.hold_cause = "hold_command" if self.status.holding else ""
        return None

    def refuse(self, seq: int, reason: Rejection) -> Rejection:
        """Count command `seq` as refused for `reason` (the driver's own reasons too, e.g. a faulted arm)."""
        self.status.last_rejected_seq = seq
        self.status.last_rejection = reason.value
        self.status.rejected[reason.value] = self.status.rejected.get(reason.value, 0) + 1
        return reason

    def _check(self, cmd: Command, mode: Mode | None, now_ns: int) -> Rejection | None:
        if cmd.seq <= self.last_seq:
            return Rejection.OUT_OF_ORDER
        if now_ns > cmd.deadline_ns:
            return Rejection.LATE
        if mode is None:
            return Rejection.BAD_MODE
        action = np.asarray(cmd.action)
        if mode is not Mode.HOLD and action.shape != (self.spec.action_spaces[mode].size,):
            return Rejection.BAD_SHAPE
        if not np.all(np.isfinite(action.astype(float, copy=False))):
            return Rejection.NON_FINITE
        if mode is not Mode.HOLD and cmd.obs_t_ns is not None:
            age_ns = now_ns - cmd.obs_t_ns
            if cmd.obs_t_ns < 0 or not 0 <= age_ns <= self.config.max_observation_age_s * 1e9:  # or from the future
                return Rejection.STALE_OBSERVATION
        if mode is Mode.JOINT_POSITION:
            goal = np.clip(action[:-1], self.spec.action_spaces[mode].low[:-1], self.spec.action_spaces[mode].high[:-1])
            tcp = self.chain.fk(np.clip(goal, self.q_low, self.q_high))[0]
            tol = self.config.workspace_tolerance
            if np.any(tcp < self.ws_low - tol) or np.any(tcp > self.ws_high + tol):
                return Rejection.WORKSPACE
        return None

    def new_session(self) -> None:
        """A new session holds the arm: its commands are ordered and acknowledged afresh (seq is per session);
        the cumulative counters carry on."""
        self.last_seq = -1
        self.status.last_applied_seq = self.status.last_rejected_seq = -1
        self.status.last_rejection = ""

    def _ramp_twist_to(self, goal: np.ndarray, steps: int) -> None:
        self.twist_goal = goal
        self.twist_step = (goal - self.twist) / steps

    # ------------------------------------------------------------------- stepping
    def step(self, now_ns: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Advance one physics step; returns (joint target, joint target speed, gripper command 0..1)."""
        cfg = self.config
        if not self.status.holding and now_ns - self.last_valid_ns > cfg.command_timeout_s * 1e9:
            self.status.holding, self.status.hold_cause = True, DriverFault.COMMAND_TIMEOUT.value
            self._ramp_twist_to(np.zeros(6), max(1, round(cfg.stop_ramp_s / cfg.dt)))
            self.joint_goal = None
        if self.joint_goal is not None:
            qd, reanchor = self._joint_velocity_towards_goal(), False
            self._anchor_stale = True
        else:
            qd, err = self._cartesian_velocity()
            reanchor = err > cfg.reanchor_error
        qd = self._limit_velocity(qd)
        q_new = self.q_des + qd * cfg.dt
        clipped = np.clip(q_new, self.q_low, self.q_high)
        at_limit = clipped != q_new
        if np.any(at_limit):  # last resort; braking in _limit_velocity normally stops short of this
            qd, q_new, reanchor = np.where(at_limit, 0.0, qd), clipped, True
        self.q_des, self.qd_des = q_new, qd
        if reanchor:  # the Cartesian goal follows the joints: no wind-up at limits
            self._anchor_stale = True
        return self.q_des, self.qd_des, self.gripper

    def _joint_velocity_towards_goal(self) -> np.ndarray:
        """Move at the speed that reaches the goal in one control period, braking to stop on it."""
        remaining = self.joint_goal - self.q_des
        cap = np.minimum(np.sqrt(2.0 * self.qdd_max * np.abs(remaining)), np.abs(remaining) / self.config.dt)
        return np.sign(remaining) * np.minimum(np.abs(self.joint_speed), cap)

    def _cartesian_velocity(self) -> tuple[np.ndarray, float]:
        """Joint speed tracking the integrated Cartesian goal, and the tracking error (m or rad).

        One DLS step every `ik_every` physics steps, aimed at where the goal will be by the next solve.
        """
        cfg = self.config
        if np.any(self.twist != self.twist_goal):
            nxt = self.twist + self.twist_step
            passed = (self.twist_goal - nxt) * self.twist_step <= 0
            self.twist = np.where(passed, self.twist_goal, nxt)
        if self._anchor_stale:
            self.pos_des, self.rot_des = self.chain.fk(self.q_des)
            self._anchor_stale, self._ik_countdown = False, 0
        if not np.any(self.twist) and not np.any(self.qd_des):
            return np.zeros_like(self.q_des), 0.0
        self._stop_at_workspace()
        self.pos_des = self.pos_des + self.twist[:3] * cfg.dt
        self.rot_des = axis_angle_to_mat(self.twist[3:] * cfg.dt) @ self.rot_des
        if self._ik_countdown > 0:
            self._ik_countdown -= 1
            return self._ik_qd, 0.0
        horizon = cfg.ik_every * cfg.dt
        pos, rot, jac = self.chain.fk_and_jacobian(self.q_des)
        goal_pos = self.pos_des + self.twist[:3] * (horizon - cfg.dt)
        goal_rot = axis_angle_to_mat(self.twist[3:] * (horizon - cfg.dt)) @ self.rot_des
        err = np.concatenate([goal_pos - pos, rotation_error(goal_rot, rot)])
        self._ik_qd = dls_solve(jac, err, cfg.ik_damping) / horizon
        self._ik_countdown = cfg.ik_every - 1
        return self._ik_qd, float(np.max(np.abs(err))) - float(np.max(np.abs(self.twist))) * horizon

    def _stop_at_workspace(self) -> None:
        """Zero every linear twist part that would carry the goal further out of the box; a goal inside stays
        inside (clamped onto the wall it reaches). Motion back in, or along a wall, is untouched."""
        v = self.twist[:3]
        nxt = self.pos_des + v * self.config.dt
        outward = ((nxt > self.ws_high) & (v > 0)) | ((nxt < self.ws_low) & (v < 0))
        if not np.any(outward):
            return
        self.status.workspace_stops += 1
        inside = (self.pos_des >= self.ws_low) & (self.pos_des <= self.ws_high)
        self.pos_des = np.where(outward & inside, np.clip(self.pos_des, self.ws_low, self.ws_high), self.pos_des)
        for twist in (self.twist, self.twist_goal, self.twist_step):
            twist[:3] = np.where(outward, 0.0, twist[:3])

    def _limit_velocity(self, qd: np.ndarray) -> np.ndarray:
        """Joint speeds under the speed limit (direction kept), braking before joint limits, accel-bounded."""
        cfg = self.config
        scale = np.max(np.abs(qd) / self.qd_max)
        if scale > 1.0:
            qd = qd / scale
        # Never faster towards a joint limit than lets the joint stop on it at max deceleration. The whole
        # vector is scaled, not each joint clipped: clipping one joint bends the Cartesian path (the TCP
        # drifts where nobody commanded it); scaling keeps the direction and stops the arm when a joint
        # at its limit would have to go further.
        room = np.where(qd > 0, self.q_high - self.q_des, self.q_des - self.q_low)
        allowed = np.sqrt(2.0 * self.qdd_max * np.maximum(room, 0.0))
        moving = np.abs(qd) > 1e-12
        if np.any(moving):
            qd = qd * min(1.0, float(np.min(allowed[moving] / np.abs(qd[moving]))))
        max_dv = self.qdd_max * cfg.dt
        return self.qd_des + np.clip(qd - self.qd_des, -max_dv, max_dv)

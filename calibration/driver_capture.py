"""Board views through the driver contract: what `pac-calibrate capture` and `check` do against a running driver
(a real arm's `pac-driver`, or `pac-sim --board`), the same way for both.

The arm is claimed as a session (robots/contract/session.py) and each pose is one joint-position target, sent
every control period until the arm has reached it and been still for a while: the driver's servo moves there
inside its joint speed, acceleration and workspace limits, as for any target (the poses' joint-space paths
mostly swing the TCP out of the workspace box, so interpolated targets of our own would be refused). Every
driver runs the same servo (robots/servo.py), so the path it will take is predicted by running it here and
checked against the cell's table first; a move that would graze the table goes by way of a configuration the
arm has already been at. A pose with no clear way there, that the driver refuses or that the arm does not
reach is reported and skipped. Once the arm is still, a frame is taken from
each camera captured after that moment, with the joints the arm reports there (not the ones commanded). In
lockstep (pac-sim --lockstep: tests) each command advances the driver one period; in real time commands go
out once a period by the wall clock. At the end the arm goes back to where it started and holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from robots.contract import messages as msg
from robots.contract.client import DriverClient
from robots.contract.link import DriverFault, DriverMode, Mode
from robots.servo import Command, CommandServo, Rejection, ServoConfig
from robots.sim.clearance import Clearance
from robots.spec import ArmSpec

SERVO_DT = 0.01  # s: the real drivers' servo step (100 Hz); the sim's 2 ms step takes the same path within 12 mrad
SERVO_PATH_S = 30.0  # s: longer than any move the servo makes at its speed limits
LEASE_MS = 5000.0  # the arm stays this session's while it plans the next way round the table (well under 1 s)
PASSING_REJECTIONS = (Rejection.LATE.value, Rejection.STALE_OBSERVATION.value)  # a slow period: the next one goes
STOPPING_FAULTS = (DriverFault.ESTOP.value, DriverFault.REFLEX.value, DriverFault.ARM_ERROR.value)


class CaptureError(RuntimeError):
    """The driver cannot be used for a capture: the wrong arm, a fault, no frames from a camera."""


class Unreachable(RuntimeError):
    """One pose cannot be reached (the driver refused it, or the arm did not get there); the capture skips it."""


@dataclass(frozen=True)
class Motion:
    """When the arm counts as arrived and still; times are the driver's (sim time in lockstep)."""

    arrived_rad: float = 0.01  # reported joints within this of the target: arrived (the board is where planned)
    still_rad_s: float = 0.005  # every joint slower than this ...
    still_s: float = 0.3  # ... for this long: still, so a frame shows the arm where it reports itself
    move_timeout_s: float = 15.0  # to arrive and be still; the longest move at the servo's speed limit takes ~3 s
    frame_timeout_s: float = 2.0  # for a frame from each camera captured after the arm came to rest
    connect_timeout_s: float = 10.0


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest joint move between two configurations, rad: what the servo's speed limit makes take time."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def wait_for_driver(client: DriverClient, arm: ArmSpec, timeout_s: float) -> msg.StatusMsg:
    """The driver's heartbeat, once it arrives, checked to be from a driver of `arm`: how every capture through a
    driver starts, whether it then claims the arm (CaptureSession) or only watches the cameras (a hand-held
    capture). DriverUnavailable or CaptureError name the endpoint."""
    status = client.wait_ready(timeout_s)
    if status.robot != arm.name:
        raise CaptureError(f"the driver on {client.pub_endpoint} drives a {status.robot}, not a {arm.name}")
    return status


class CaptureSession:
    """A claimed arm behind the contract, moved pose by pose; images and reported joints out."""

    def __init__(self, client: DriverClient, arm: ArmSpec, motion: Motion = Motion()) -> None:
        self.client, self.arm, self.motion = client, arm, motion
        self.cell = Clearance(arm)
        self.visited = [arm.home]  # configurations the arm has been at: ways round the table go through them
        self.lockstep = False
        self.period_s = 0.0
        self.start = arm.home
        self._action = np.zeros(0)  # the joint-position command sent each period: target joints + gripper
        self._next_tick = 0.0
        self._first_seq = 0

    # ----------------------------------------------------------------- session
    def __enter__(self) -> CaptureSession:
        """Wait for the driver's heartbeat, check it drives this arm, and claim the arm: from here its lease
        lasts as long as a command goes every period. On failure the client is closed; the error
        (DriverUnavailable, ArmHeld, CaptureError) names the endpoint."""
        try:
            status = wait_for_driver(self.client, self.arm, self.motion.connect_timeout_s)
            self.lockstep = status.mode == DriverMode.LOCKSTEP.value
            self.period_s = status.period_s
            self.client.claim(lease_ms=LEASE_MS)
            self._check_faults()
        except BaseException:
            self.client.close()
            raise
        state = self.state
        self.start = state.q.copy()
        self.visited.append(self.start)
        self._action = np.append(state.q, state.gripper_pos)  # hold where it is; the gripper stays as it is
        self._next_tick = time.monotonic()
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        """Back to where the arm started (after a clean capture), then a hold, and the arm released."""
        try:
            if exc_type is None:
                try:
                    self.move_to(self.start)
                except Unreachable as err:
                    print(f"pac-calibrate: the arm stays at the last pose, not back at the start: {err}")
        finally:
            state = self.client.latest.state
            if state is not None:  # best effort, not waited for: the driver also holds once commands stop
                self.client.send_command(Mode.HOLD, np.zeros(0), state.t_capture_ns + round(2 * self.period_s * 1e9))
            self.client.close()

    @property
    def state(self) -> msg.StateMsg:
        state = self.client.latest.state
        if not self.client.mine(state):
            raise CaptureError(f"no state from the driver on {self.client.pub_endpoint} for this session")
        return state

    # ----------------------------------------------------------------- motion
    def tour(self, poses: Sequence[np.ndarray]) -> Iterator[tuple[int, Unreachable | None]]:
        """Visit every pose once, each time the nearest left (largest joint move) that the servo's path from here
        reaches clear of the cell, else the nearest by way of one already visited: yields (index, None) with the
        arm still at each pose reached, (index, error) for one skipped. Nearest first sweeps the arm through
        less space than the order the poses were generated in."""
        left = list(range(len(poses)))
        while left:
            here = self.state.q
            left.sort(key=lambda j: _distance(here, poses[j]))
            i = next((j for j in left if self._clear_way(here, poses[j])), left[0])
            left.remove(i)
            try:
                self.move_to(poses[i])
            except Unreachable as err:
                yield i, err
                continue
            yield i, None

    def round_trip(self, q: np.ndarray) -> bool:
        """Whether there is a clear way from here to `q` and from `q` back to the start (the servo's paths are
        not reversible: the way back can graze the table where the way there did not)."""
        try:
            self._route(self.state.q, q)
            self._route(q, self.start)
        except Unreachable:
            return False
        return True

    def move_to(self, q: np.ndarray) -> None:
        """Go to `q` directly, or by way of one configuration the arm has been at (home, the start, a pose
        reached) where the servo's path there would bring a link within the clearance of the table
        (robots/sim/clearance.py); Unreachable when no such way is clear, the driver refuses a target, or the
        arm is not there within `move_timeout_s`."""
        for target in self._route(self.state.q, np.asarray(q, float)):
            self._go(target)
        self.visited.append(np.asarray(q, float))

    def _route(self, here: np.ndarray, goal: np.ndarray) -> list[np.ndarray]:
        if self._clear_way(here, goal):
            return [goal]
        for via in sorted(self.visited, key=lambda v: _distance(here, v) + _distance(v, goal)):
            if self._clear_way(here, via) and self._clear_way(via, goal):
                return [via, goal]
        raise Unreachable(
            f"no way there keeps {self.cell.clearance * 1e3:.0f} mm clear of the cell (directly, or by home, the "
            "start or a pose reached)"
        )

    def _clear_way(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether the path the driver's servo takes from rest at `a` to `b` keeps the arm clear of the cell."""
        return self.cell.path_clear(servo_path(self.arm, a, b, self.period_s))

    def _go(self, q: np.ndarray) -> None:
        """Command `q` every period until the arm reports it has arrived and been still for `still_s`."""
        m = self.motion
        q = np.asarray(q, float)
        self._action = np.append(q, self._action[-1])
        self._first_seq = self.client.seq + 1
        started = still_since = None
        while True:
            self._command(self._action)
            s = self.state
            started = s.t_capture_ns if started is None else started
            error, speed = float(np.max(np.abs(s.q - q))), float(np.max(np.abs(s.dq)))
            if error < m.arrived_rad and speed < m.still_rad_s:
                still_since = s.t_capture_ns if still_since is None else still_since
                if s.t_capture_ns - still_since >= m.still_s * 1e9:
                    return
            else:
                still_since = None
            if s.t_capture_ns - started > m.move_timeout_s * 1e9:
                raise Unreachable(
                    f"after {m.move_timeout_s:g} s the joints are {error:.3f} rad from the target"
                    + (f" and moving at {speed:.3f} rad/s" if speed >= m.still_rad_s else "")
                )

    def capture(self, cameras: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A frame from each camera captured after the arm came to rest, and the joints the arm reports."""
        rest = self.state.t_capture_ns
        while True:
            images = self.client.latest.images
            fresh = {c: images[c] for c in cameras if c in images and images[c].t_capture_ns >= rest}
            if len(fresh) == len(cameras):
                return {c: image.image.copy() for c, image in fresh.items()}, self.state.q.copy()
            if self.state.t_capture_ns - rest > self.motion.frame_timeout_s * 1e9:
                missing = ", ".join(c for c in cameras if c not in fresh)
                raise CaptureError(
                    f"no frame from camera {missing} within {self.motion.frame_timeout_s:g} s of the arm stopping: "
                    "does the driver publish it (pac-sim --cameras, pac-driver --camera)?"
                )
            self._command(self._action)  # stay, and (lockstep) let the driver render

    # ----------------------------------------------------------------- commands
    def _command(self, action: np.ndarray) -> None:
        """One joint-position command for one period: lockstep advances the driver by it; real time sends it
        at the next period, taking in what the driver published meanwhile."""
        if self.lockstep:
            self.client.step(Mode.JOINT_POSITION, action)
        else:
            self._wait_period()
            deadline_ns = self.state.t_capture_ns + round(2 * self.period_s * 1e9)
            self.client.send_command(Mode.JOINT_POSITION, action, deadline_ns)
        self._check_faults()
        status = self.client.latest.status
        refused = status is not None and status.last_rejected_seq >= self._first_seq  # one of this move's commands
        if refused and status.last_rejection not in PASSING_REJECTIONS:
            raise Unreachable(f"the driver refused the target ({status.last_rejection})")

    def _wait_period(self) -> None:
        """Real time: take in what the driver publishes until the next period starts (resynchronised when late)."""
        self._next_tick = max(self._next_tick + self.period_s, time.monotonic())
        while (left := self._next_tick - time.monotonic()) > 0:
            self.client.poll(max(1, int(left * 1e3)))

    def _check_faults(self) -> None:
        status = self.client.latest.status
        faults = [f for f in (status.faults if status else ()) if f in STOPPING_FAULTS]
        if faults:
            raise CaptureError(f"the driver reports {', '.join(faults)}: the arm holds; recover it and capture again")


def servo_path(arm: ArmSpec, start: np.ndarray, goal: np.ndarray, period_s: float, dt: float = SERVO_DT) -> np.ndarray:
    """The joint targets the driver's servo steps through when `goal` is commanded every period from rest at
    `start`: the path the arm will follow, to within its tracking error. Every driver runs this servo
    (robots/servo.py), and it does not move the joints along a straight line (each brakes on its own), so
    the path is predicted by running it. Unreachable if the servo refuses the goal (e.g. outside the
    workspace box)."""
    servo = CommandServo(arm, ServoConfig(period_s=period_s, dt=dt), start, 0)
    action, steps, dt_ns = np.append(goal, 0.0), max(1, round(period_s / dt)), round(dt * 1e9)
    path, now = [servo.q_des.copy()], 0
    for seq in range(1, int(SERVO_PATH_S / period_s)):
        refused = servo.submit(Command(seq, Mode.JOINT_POSITION, action, now + steps * dt_ns), now)
        if refused is not None:
            raise Unreachable(f"the driver's servo refuses it ({refused.value})")
        for _ in range(steps):
            q, qd, _ = servo.step(now)
            now += dt_ns
            path.append(q.copy())
        if np.max(np.abs(q - servo.joint_goal)) < 1e-4 and np.max(np.abs(qd)) < 1e-3:  # arrived, at rest
            break
    return np.array(path)

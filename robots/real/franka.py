"""The Panda through libfranka: the driver's servo feeds joint targets at 100 Hz, a 1 kHz loop turns them into
joint velocity commands inside libfranka's rate limits for the Panda (robots/real/interpolation.py).

libfranka stops the arm when a command is late or jumps, so the 20 Hz runtime and the 100 Hz servo never
drive it directly: the 1 kHz callback extrapolates the newest servo target, closes on it with a critically
damped law, and passes the result through the rate limiter. A servo target older than `reference_hold_s`
is stale and the callback brakes to rest on its own, whatever the rest of the driver is doing.

The SDK boundary is `FrankaLink`: `PylibfrankaLink` is the real one (pylibfranka's external control loop:
`start_joint_velocity_control`, then `readOnce`/`writeOnce` every millisecond), robots/real/dryrun.py's
is a MuJoCo Panda that checks every command against the same limits as the arm would. Versions: pylibfranka
on the package index bundles libfranka >= 0.20, which talks only to a Franka Research 3 (robot system >= 5);
a Panda (Franka Emika Robot, system <= 4.x) needs libfranka <= 0.9.x (README: hardware set-up).

Collision thresholds and the joint impedance of libfranka's internal controller come from the spec's
`hardware.franka` section. The gripper (the Franka hand) moves by blocking calls, so they run on their own
thread, newest request only.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robots.real.backend import ArmBackend, ArmHealth, ArmReading, SdkMissing
from robots.real.faults import franka_health
from robots.real.hardware import FRANKA_DT, FrankaSettings
from robots.real.interpolation import JointInterpolator

log = logging.getLogger("pac-driver")

INSTALL = "pip install 'pac-runtime[panda]' (pylibfranka, libfranka >= 0.20: a Franka Research 3; see the README)"
GRIP_CLOSE, GRIP_OPEN = 0.6, 0.4  # closing command above/below which the hand grasps/opens (hysteresis)
STOP_SPEED = 1e-4  # rad/s: below this on every joint, braking ends with a zero command and motion_finished


@dataclass(frozen=True)
class FrankaReading:
    q: np.ndarray
    dq: np.ndarray
    robot_mode: str  # snake case: idle, move, reflex, user_stopped, automatic_error_recovery, guiding, other
    errors: tuple[str, ...]  # the active franka::Errors flags
    dt_s: float = FRANKA_DT  # time since the previous control tick (libfranka's Duration)


class FrankaControlError(RuntimeError):
    """The control loop ended: libfranka's ControlException (a reflex, a discontinuity, a lost packet run)."""


class FrankaLink(ABC):
    """The part of libfranka the adapter uses; everything else in the adapter is SDK-free."""

    @abstractmethod
    def configure(self, settings: FrankaSettings) -> None:
        """Collision thresholds and joint impedance."""

    @abstractmethod
    def read_state(self) -> FrankaReading:
        """The arm's state outside a control loop."""

    @abstractmethod
    def start_velocity_control(self) -> None: ...

    @abstractmethod
    def read_once(self) -> FrankaReading:
        """Block until the next control tick; FrankaControlError when the loop ended."""

    @abstractmethod
    def write_once(self, dq: np.ndarray, finished: bool = False) -> None: ...

    @abstractmethod
    def recover(self) -> None:
        """libfranka's automatic error recovery; FrankaControlError when it cannot (a stop still pressed)."""

    @abstractmethod
    def grasp(self, speed: float, force: float) -> None:
        """Close until something is held (blocking)."""

    @abstractmethod
    def open(self, width: float, speed: float) -> None:
        """Move the fingers to `width` (blocking)."""

    @abstractmethod
    def gripper_state(self) -> tuple[float, bool]:
        """(opening in m, whether it holds something)."""

    def idle(self, seconds: float) -> None:  # noqa: B027 (a default: nothing to do for a real arm)
        """Time passes with no control loop running (a real arm: by itself)."""

    def close(self) -> None: ...  # noqa: B027


class PylibfrankaLink(FrankaLink):
    """pylibfranka, imported only when a real arm is driven."""

    def __init__(self, host: str) -> None:
        try:
            import pylibfranka
        except ImportError as exc:
            raise SdkMissing(f"the Panda adapter needs pylibfranka: {INSTALL}") from exc
        self._lib = pylibfranka
        self.robot = pylibfranka.Robot(host)
        self.hand = pylibfranka.Gripper(host)
        self.control = None

    def configure(self, settings: FrankaSettings) -> None:
        c = settings.collision
        self.robot.set_collision_behavior(
            list(c.torque_lower), list(c.torque_upper), list(c.force_lower), list(c.force_upper)
        )
        self.robot.set_joint_impedance(list(settings.joint_impedance))

    def _reading(self, state, dt_s: float = FRANKA_DT) -> FrankaReading:
        mode = str(state.robot_mode).rsplit(".", 1)[-1].lstrip("k")  # RobotMode.kUserStopped -> UserStopped
        snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in mode).lstrip("_")
        errors = tuple(name for name in dir(state.current_errors) if _flag(state.current_errors, name))
        return FrankaReading(np.array(state.q), np.array(state.dq), snake, errors, dt_s)

    def read_state(self) -> FrankaReading:
        return self._reading(self.robot.read_once())

    def start_velocity_control(self) -> None:
        self.control = self.robot.start_joint_velocity_control(self._lib.ControllerMode.JointImpedance)

    def read_once(self) -> FrankaReading:
        try:
            state, duration = self.control.readOnce()
        except Exception as exc:  # pylibfranka raises libfranka's ControlException / NetworkException
            raise FrankaControlError(str(exc)) from exc
        return self._reading(state, duration.to_sec())

    def write_once(self, dq: np.ndarray, finished: bool = False) -> None:
        command = self._lib.JointVelocities(list(map(float, dq)))
        command.motion_finished = finished
        try:
            self.control.writeOnce(command)
        except Exception as exc:
            raise FrankaControlError(str(exc)) from exc

    def recover(self) -> None:
        try:
            self.robot.automatic_error_recovery()
        except Exception as exc:
            raise FrankaControlError(str(exc)) from exc

    def grasp(self, speed: float, force: float) -> None:
        self.hand.grasp(0.0, speed, force, 0.08, 0.08)  # width 0 with wide epsilons: whatever it closes on

    def open(self, width: float, speed: float) -> None:
        self.hand.move(width, speed)

    def gripper_state(self) -> tuple[float, bool]:
        state = self.hand.read_once()
        return float(state.width), bool(state.is_grasped)

    def close(self) -> None:
        self.robot.stop()


def _flag(errors: object, name: str) -> bool:
    return not name.startswith("_") and getattr(errors, name, False) is True


class LatestOnly:
    """Runs blocking calls one at a time on a thread, the newest request only (inline when `threaded` is False)."""

    def __init__(self, threaded: bool) -> None:
        self.threaded = threaded
        self._pending: Callable[[], None] | None = None
        self._wake = threading.Event()
        self._closed = False
        if threaded:
            threading.Thread(target=self._run, name="franka-gripper", daemon=True).start()

    def submit(self, call: Callable[[], None]) -> None:
        if not self.threaded:
            call()
            return
        self._pending = call
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            call, self._pending = self._pending, None
            if call is not None:
                try:
                    call()
                except Exception as exc:  # a failed grasp (nothing there) is not the arm's fault
                    log.warning("gripper: %s", exc)

    def close(self) -> None:
        self._closed = True
        self._wake.set()


class FrankaBackend(ArmBackend):
    """The Panda adapter: servo targets in, 1 kHz joint velocities out, on a thread of its own (`threaded`) or,
    in a dry run, synchronously in `elapse`."""

    def __init__(
        self,
        link: FrankaLink,
        settings: FrankaSettings,
        threaded: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock)
        self.link, self.settings, self.threaded = link, settings, threaded
        self.servo_rate_hz = settings.servo_rate_hz
        self.dt = 1.0 / settings.control_rate_hz
        self.interp = JointInterpolator(settings.rate_limits, self.dt, settings.bandwidth, settings.reference_hold_s)
        self.gripper_worker = LatestOnly(threaded)
        self._closing: bool | None = None
        self._latest: FrankaReading | None = None
        self._exception = ""
        self._running = False
        self._finishing = False
        self._thread: threading.Thread | None = None
        self.ticks = 0

    # ------------------------------------------------------------- control loop
    def start(self) -> None:
        self.link.configure(self.settings)
        self._start_control()

    def _start_control(self) -> None:
        reading = self.link.read_state()
        self._latest = reading
        self.interp.start(reading.q, self.interp.t_s)
        self.link.start_velocity_control()
        self._exception = ""
        self._running = True
        if self.threaded:
            self._thread = threading.Thread(target=self._loop, name="franka-1khz", daemon=True)
            self._thread.start()

    def tick(self) -> None:
        """The 1 kHz callback: read the tick's state, step the interpolation, write the velocity."""
        try:
            reading = self.link.read_once()
            self._latest = reading
            dq = self.interp.step(reading.dt_s)
            done = self._finishing and float(np.max(np.abs(dq))) < STOP_SPEED
            self.link.write_once(np.zeros_like(dq) if done else dq, finished=done)
            self.ticks += 1
            self._running = not done
        except FrankaControlError as exc:
            self._running = False
            self._exception = str(exc) or "control loop ended"
            log.error("Franka control loop ended: %s", self._exception)

    def _loop(self) -> None:
        while self._running:
            self.tick()

    def elapse(self, seconds: float) -> None:  # noqa: B027 (a default: nothing to do for a real arm)
        if self.threaded:
            return  # the thread keeps the 1 kHz by itself
        for _ in range(round(seconds / self.dt)):
            if self._running:
                self.tick()
            else:
                self.link.idle(self.dt)  # the arm stands; its time still passes

    # ----------------------------------------------------------------- adapter
    def read(self) -> ArmReading:
        reading = self._latest if self._running and self._latest is not None else self.link.read_state()
        width, grasped = self.link.gripper_state()
        closed = 1.0 - min(max(width / self.settings.gripper_max_width, 0.0), 1.0)
        return ArmReading(reading.q, reading.dq, closed, 0.0, float(grasped))

    def command(self, q: np.ndarray, qd: np.ndarray) -> None:
        self.interp.set_reference(q, qd)

    def gripper(self, closing: float) -> None:
        threshold = GRIP_OPEN if self._closing else GRIP_CLOSE
        want = closing > threshold
        if want == self._closing:
            return
        self._closing = want
        s = self.settings
        if want:
            self.gripper_worker.submit(lambda: self.link.grasp(s.gripper_speed, s.gripper_force))
        else:
            self.gripper_worker.submit(lambda: self.link.open(s.gripper_max_width, s.gripper_speed))

    def health(self) -> ArmHealth:
        reading = self._latest if self._running and self._latest is not None else self.link.read_state()
        return franka_health(reading.robot_mode, reading.errors, "" if self._running else self._exception)

    def recover(self) -> bool:
        if self._running and self.health().ok:
            return True
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        try:
            self.link.recover()
        except FrankaControlError as exc:
            log.error("Franka error recovery failed: %s", exc)
            return False
        self._start_control()
        self.recoveries += 1
        return True

    def close(self) -> None:
        """Brake to rest inside the limits, end the motion (motion_finished), disconnect."""
        if self._running:
            self.interp.set_reference(self.interp.q, np.zeros_like(self.interp.q))
            self._finishing = True
            if self.threaded and self._thread is not None:
                self._thread.join(timeout=2.0)
            for _ in range(round(2.0 / self.dt)):
                if not self._running or self.threaded:
                    break
                self.tick()
        self.gripper_worker.close()
        self.link.close()

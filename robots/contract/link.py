"""The link between a driver and the runtime, as data: endpoints, control period, timeouts, image encoding.

Every value a driver and the runtime must agree on is defined here once; `pac-sim`, the runtime config,
the client, the servo and the task environments take their defaults from `LinkConfig`, never from a
literal of their own. `Mode` is the command vocabulary the driver, the safety filter and the runtime share;
`DriverMode` and `DriverFault` are what a driver reports about itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from robots.contract.security import NO_KEYS, LinkSecurity


class Mode(str, enum.Enum):
    """What a command asks of the arm (DESIGN §2). A str enum: it compares and hashes as its wire value."""

    CARTESIAN_VELOCITY = "cartesian_velocity"  # TCP twist in the base frame plus a gripper command
    JOINT_POSITION = "joint_position"  # absolute joint targets plus a gripper command
    HOLD = "hold"  # stop where the arm is; carries no action

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> Mode | None:
        """The mode named by `value`, or None when it names none (a driver rejects such a command)."""
        try:
            return cls(value)
        except ValueError:
            return None


MOTION_MODES = (Mode.CARTESIAN_VELOCITY, Mode.JOINT_POSITION)  # the modes a policy can output


class DriverMode(str, enum.Enum):
    """How a driver advances: one period per command (sim, tests) or by the wall clock (`state.mode`)."""

    LOCKSTEP = "lockstep"
    REALTIME = "realtime"

    def __str__(self) -> str:
        return self.value


class DriverFault(str, enum.Enum):
    """What a driver lists in `status.faults`."""

    COMMAND_TIMEOUT = "command_timeout"  # no valid command for command_timeout_ms: holding (not an error by itself)
    REALTIME_OVERRUN = "realtime_overrun"  # physics or I/O fell behind the wall clock
    ESTOP = "estop"  # an emergency stop is pressed: the runtime latches ESTOP
    REFLEX = "reflex"  # a real arm stopped itself (collision, a limit): it refuses motion until an error recovery
    ARM_ERROR = "arm_error"  # a real arm's SDK reports an error or a lost link: it refuses motion until recovered

    def __str__(self) -> str:
        return self.value


# Faults a driver clears by itself once their cause passes, so a pre-flight may wait for them; the others latch
# until a person or a recovery acts. (The dead-man's hold clears with the first valid command.)
SELF_CLEARING_FAULTS = frozenset({DriverFault.REALTIME_OVERRUN})


@dataclass(frozen=True)
class LinkConfig:
    """One driver link: where it is and the timing both ends assume."""

    # "" (the default): the robot's ipc sockets in this user's private directory, `security.local_endpoints`
    # (ipc://$XDG_RUNTIME_DIR/pac-runtime/<robot>-pub and -cmd), which no other local user can reach. A driver on
    # another host: tcp://HOST:PORT, which the link refuses without CURVE keys in `security`.
    pub_endpoint: str = ""  # driver → runtime: state, images, status
    cmd_endpoint: str = ""  # runtime → driver: commands (and, in the sim, tick and reset)
    security: LinkSecurity = NO_KEYS  # CURVE key files (robots/contract/security.py); none: ipc and loopback only
    period_s: float = 0.05  # control period: 20 Hz (DESIGN §5)
    command_timeout_ms: float = 200.0  # driver holds when no valid command came for this long (DESIGN §2)
    # The driver refuses a motion command computed from an observation older than this (its capture time, on the
    # driver's clock, travels in the command): an end-to-end bound on stale data that holds even if the runtime
    # is wrong. The runtime's own watchdogs allow frames 90 ms old; 150 ms leaves room for inference and transport.
    max_observation_age_ms: float = 150.0
    lease_ms: float = 1000.0  # a session's lease on the arm, renewed by each of its messages (session.py)
    jpeg_quality: int = 90  # camera frames on the wire; 128² frames at 90 decode in ~0.1 ms
    # Messages a subscriber queues per connection. Small, because the runtime drains to the newest (DESIGN §2);
    # large enough for two periods of a real-time driver's traffic (state 100 Hz + 2 cameras + status ≈ 150/s).
    receive_hwm: int = 32

    @property
    def period_ns(self) -> int:
        return round(self.period_s * 1e9)


DEFAULT_LINK = LinkConfig()

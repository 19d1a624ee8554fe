"""What the real driver asks of an arm, whatever its SDK: the adapter interface between `RealDriver` and an SDK.

An adapter reads the joints, takes joint targets (position and velocity) from the driver's servo at its
`servo_rate_hz`, drives the gripper, and reports its health as driver faults plus the SDK's own error names.
Everything an adapter sends or reads is in the SDK's joint frame; the driver applies the calibration's joint
offsets on its side (robots/real/offsets.py). `elapse` is where time passes: nothing to do for a real arm, whose
time passes by itself; a dry run's sim arm steps its physics there.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmReading:
    """The arm's joints and gripper as its SDK reports them."""

    q: np.ndarray  # rad, SDK frame
    dq: np.ndarray  # rad/s
    gripper_pos: float  # 0 open ... 1 closed
    gripper_vel: float  # 1/s
    gripper_grasp: float  # 1 when the gripper holds something


@dataclass(frozen=True)
class ArmHealth:
    faults: tuple[str, ...] = ()  # DriverFault values: what the runtime and the operator act on
    errors: tuple[str, ...] = ()  # the SDK's own names for what is wrong, for the operator

    @property
    def ok(self) -> bool:
        return not self.faults


class SdkMissing(RuntimeError):
    """The arm's SDK is not installed; the message says what to install."""


class ArmBackend(ABC):
    servo_rate_hz: float
    recoveries: int = 0

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        t0 = time.monotonic()
        self._clock = clock or (lambda: time.monotonic() - t0)

    @abstractmethod
    def start(self) -> None:
        """Connect, configure the SDK's limits and timeouts, and start commanding (holding where the arm is)."""

    @abstractmethod
    def read(self) -> ArmReading: ...

    @abstractmethod
    def command(self, q: np.ndarray, qd: np.ndarray) -> None:
        """The servo's joint target for now (SDK frame): positions and their velocities."""

    @abstractmethod
    def gripper(self, closing: float) -> None:
        """0 open ... 1 closed."""

    @abstractmethod
    def health(self) -> ArmHealth: ...

    @abstractmethod
    def recover(self) -> bool:
        """Clear a reflex or an error and hold where the arm is; False when the arm cannot be recovered now
        (a stop still pressed). Never moves the arm."""

    def elapse(self, seconds: float) -> None:  # noqa: B027 (a default: nothing to do for a real arm)
        """Let the arm run for `seconds`: a real arm's time passes by itself."""

    def time_s(self) -> float:
        """Seconds since the adapter was made (a dry run: its sim's time)."""
        return self._clock()

    def close(self) -> None:  # noqa: B027 (a default)
        """Stop commanding (the arm holds) and disconnect."""

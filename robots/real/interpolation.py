"""From the servo's 100 Hz joint reference to the Panda's 1 kHz joint velocity commands, inside its rate limits.

libfranka stops the arm (a reflex) when a command jumps: every commanded joint velocity, its change per
millisecond (acceleration) and that change's change (jerk) must stay inside the rate limits
(robots/real/hardware.py, libfranka's values for the Panda). libfranka's own `limitRate` clamps the jerk and
then the acceleration, and the second clamp can break the first; here one feasible interval per joint is
computed instead, so no output ever exceeds any of the three:

- the jerk bound and the acceleration bound give a window for the next acceleration;
- the velocity bound allows a next acceleration only while the velocity it leads to, plus what is added
  while that acceleration is brought back to zero at the jerk limit (a²/2J), stays inside the bound.

From a state this function produced (or rest), the interval is never empty (an acceleration of zero meets
the velocity bound, and the jerk window always reaches a value that keeps it), so the invariant carries on
(tests/test_interpolation.py checks it by hypothesis). `limit_rate` is the pure step, as libfranka's
rate_limiting.h; `JointInterpolator` is the state around it that the 1 kHz callback owns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robots.real.hardware import RateLimits

ROUNDING = 1e-12  # rad/s: velocity room lost to rounding in the step before, still taken as none rather than negative


def _acceleration_room(margin: np.ndarray, jerk: np.ndarray, dt: float) -> np.ndarray:
    """The largest next acceleration a' >= 0 with a'·dt + a'²/(2·jerk) <= margin (velocity room); where the
    room is already negative (a state from outside), the acceleration that gives it back within one step."""
    safe = np.maximum(margin, 0.0)
    grow = jerk * (np.sqrt(dt * dt + 2.0 * safe / jerk) - dt)
    return np.where(margin >= -ROUNDING, grow, margin / dt)


def limit_rate(
    limits: RateLimits, dt: float, velocity: np.ndarray, acceleration: np.ndarray, wanted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The next commanded (velocity, acceleration) after one step of `dt`: the acceleration closest to `wanted`
    that keeps velocity, acceleration and jerk inside `limits`, per joint.

    `wanted` must be finite (the caller computes it from finite references). Where the state came from outside
    (a velocity above its bound), jerk and acceleration are kept and the velocity brought back as fast as they
    allow.
    """
    v, a = np.asarray(velocity, float), np.asarray(acceleration, float)
    jerk_step = limits.jerk * dt
    low = np.maximum(a - jerk_step, -limits.acceleration)
    high = np.minimum(a + jerk_step, limits.acceleration)
    up = _acceleration_room(limits.velocity - v, limits.jerk, dt)
    down = -_acceleration_room(limits.velocity + v, limits.jerk, dt)
    feasible_low, feasible_high = np.maximum(low, down), np.minimum(high, up)
    empty = feasible_low > feasible_high
    chosen = np.clip(wanted, feasible_low, feasible_high)
    if np.any(empty):  # only from a state this function did not produce: the jerk and acceleration bounds win
        chosen = np.where(empty, np.clip(np.clip(wanted, down, up), low, high), chosen)
    return v + chosen * dt, chosen


@dataclass(frozen=True)
class Reference:
    """A joint target from the servo: position and velocity at `t_s` on the interpolator's clock."""

    q: np.ndarray
    qd: np.ndarray
    t_s: float


class JointInterpolator:
    """Follows the newest `Reference` with joint velocities inside `limits`, one `step` per control tick.

    Between references it extrapolates the reference at its velocity; a reference older than `hold_after_s`
    is stale: extrapolation stops there and the arm brakes to a stop on it (`stale` is then True), whatever
    the servo that should have fed it is doing. Its commanded position is the integral of what it commanded,
    re-anchored on the measured joints by `start`.
    """

    def __init__(self, limits: RateLimits, dt: float, bandwidth: float, hold_after_s: float) -> None:
        self.limits, self.dt = limits, dt
        self.kp, self.kd = bandwidth * bandwidth, 2.0 * bandwidth  # critically damped
        self.hold_after_s = hold_after_s
        n = np.shape(limits.velocity)[0]
        self.start(np.zeros(n))

    def start(self, q: np.ndarray, t_s: float = 0.0) -> None:
        """At rest on `q` (the measured joints), holding there."""
        self.t_s = t_s
        self.q = np.array(q, dtype=float)
        self.velocity = np.zeros_like(self.q)
        self.acceleration = np.zeros_like(self.q)
        self.reference = Reference(self.q.copy(), np.zeros_like(self.q), t_s)
        self.stale = False

    def set_reference(self, q: np.ndarray, qd: np.ndarray) -> None:
        """A new target from the servo, taken as of now (one attribute store: safe from another thread)."""
        self.reference = Reference(np.array(q, dtype=float), np.array(qd, dtype=float), self.t_s)

    def target(self) -> tuple[np.ndarray, np.ndarray]:
        """The reference extrapolated to now; frozen, with zero velocity, once it is stale."""
        ref = self.reference
        age = self.t_s - ref.t_s
        self.stale = age > self.hold_after_s
        if self.stale:
            return ref.q + ref.qd * self.hold_after_s, np.zeros_like(ref.qd)
        return ref.q + ref.qd * age, ref.qd

    def step(self, dt: float | None = None) -> np.ndarray:
        """Advance one tick (`dt`: the tick's length, libfranka's period; default the nominal one) and return the
        joint velocity to command."""
        self.t_s += self.dt if dt is None else dt
        q_ref, qd_ref = self.target()
        wanted = self.kp * (q_ref - self.q) + self.kd * (qd_ref - self.velocity)
        self.velocity, self.acceleration = limit_rate(self.limits, self.dt, self.velocity, self.acceleration, wanted)
        self.q = self.q + self.velocity * self.dt
        return self.velocity

    def at_rest(self) -> bool:
        return not np.any(self.velocity) and not np.any(self.acceleration)

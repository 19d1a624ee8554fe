"""The safety filter between the policy and the driver (DESIGN §4): no policy output reaches the arm unchecked.

A policy can emit anything: NaN, a jump to full speed, a velocity that carries the TCP out of its box. The
driver enforces its own limits, but the runtime should never send what the driver must refuse, so every action
passes `filter_action` first. As in libfranka's rate limiting, each limit is a small pure function over numpy
arrays and the limits are data (`SafetyLimits`, built from the arm's YAML), so each one is tested by a table
and by "no output violates a limit, whatever the input" properties. The TCP speed limits are norms, applied
by `robots.limits.limit_twist`, the function the driver's servo applies too: the servo never rescales what
passes here.

Precedence: where two limits conflict, the one that bounds the arm's motion wins over smoothness. Velocity
mode applies range → step → speed → workspace: each axis into its range; each axis within max_step of the
previous command (max acceleration × period); the linear and the angular part each scaled down to its speed
norm; each linear axis capped at the speed from which it can still brake before the box's wall. The speed
and workspace limits only slow an axis: every output component lies between zero and its step-limited
value. So the range, the speed norms and the box always hold, and the step limit holds on every axis they
left alone; an axis they slowed may differ from the previous command by more than a step, but then it lies
between zero and the previous command's value: it brakes harder than the max acceleration, never speeds up
or reverses. Joint mode: range → step, then a target whose TCP leaves the box is rejected.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robots.contract.link import DEFAULT_LINK, MOTION_MODES, Mode
from robots.limits import ANGULAR_DIMS, LINEAR_DIMS, TWIST_DIMS, limit_twist, twist_index, twist_of
from robots.spec import GRIPPER, ArmSpec

UNLIMITED_GRIPPER_STEP = 1.0  # the gripper command spans [0, 1], so a step of 1 never binds


def _frozen(x: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
    arr = np.array(x, dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _motion_mode(mode: object) -> Mode:
    parsed = Mode.parse(mode)
    if parsed not in MOTION_MODES:
        raise ValueError(f"unknown mode {mode!r} for the filter; expected one of {[str(m) for m in MOTION_MODES]}")
    return parsed


@dataclass(frozen=True, eq=False)  # eq on numpy fields would raise; compare fields explicitly
class SafetyLimits:
    """The filter's limits for one arm and one action mode; arrays are read-only copies."""

    mode: Mode  # a motion mode (a str naming one is accepted and parsed)
    dims: tuple[str, ...]  # action dimension names, last one is "gripper"
    low: np.ndarray  # per-dim absolute bounds after margins: m/s, rad/s (velocity) or rad (joint); gripper 0
    high: np.ndarray  # gripper 1
    max_step: np.ndarray  # per-dim max |change| between two consecutive commands (one period)
    workspace_low: np.ndarray  # (3,) TCP box in the robot base frame, m
    workspace_high: np.ndarray
    period_s: float
    max_linear_speed: float  # m/s, norm of the TCP's linear velocity (velocity mode)
    max_angular_speed: float  # rad/s, norm of its angular velocity

    def __post_init__(self) -> None:
        for name in ("low", "high", "max_step", "workspace_low", "workspace_high"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "dims", tuple(self.dims))
        object.__setattr__(self, "mode", _motion_mode(self.mode))
        n = len(self.dims)
        if n < 2 or self.dims[-1] != GRIPPER:
            raise ValueError(f"dims must end with {GRIPPER!r}, got {self.dims}")
        velocity = self.mode is Mode.CARTESIAN_VELOCITY
        if velocity and not (set(LINEAR_DIMS) <= set(self.dims) and set(self.dims[:-1]) <= set(TWIST_DIMS)):
            raise ValueError(
                f"cartesian_velocity dims must include {LINEAR_DIMS} and name twist parts, got {self.dims}"
            )
        for name in ("low", "high", "max_step"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        for name in ("workspace_low", "workspace_high"):
            if getattr(self, name).shape != (3,):
                raise ValueError(f"{name} must have shape (3,), got {getattr(self, name).shape}")
        arrays = (self.low, self.high, self.max_step, self.workspace_low, self.workspace_high)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ValueError("limits must be finite")
        if np.any(self.low > self.high):
            raise ValueError(f"low must not exceed high: {self.low} > {self.high}")
        if velocity and not np.all((self.low[:-1] <= 0) & (self.high[:-1] >= 0)):
            raise ValueError("velocity bounds must allow zero: stopping is always permitted")
        if np.any(self.max_step <= 0):
            raise ValueError(f"max_step must be positive, got {self.max_step}")
        if np.any(self.workspace_low >= self.workspace_high):
            raise ValueError(f"empty workspace box: {self.workspace_low} .. {self.workspace_high}")
        for name in ("period_s", "max_linear_speed", "max_angular_speed"):
            _positive(name, getattr(self, name))

    @functools.cached_property
    def linear(self) -> np.ndarray:
        """Indices of vx, vy, vz in the action (velocity mode)."""
        index = np.array([self.dims.index(d) for d in LINEAR_DIMS])
        index.setflags(write=False)
        return index

    @functools.cached_property
    def free_box(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(low, high) corners of the part of the workspace where the workspace limit cannot bind (velocity mode).

        Each wall moved in by twice the stopping distance of the axis's fastest command in range, plus 1 µm: from
        there the braking speed toward every wall exceeds any speed the range allows, so `limit_workspace`
        returns its input unchanged. The filter skips it there (issue 13: it is the costliest limit).
        """
        lin = self.linear
        fastest = np.maximum(np.abs(self.low[lin]), np.abs(self.high[lin]))
        free = 2.0 * stopping_distance(fastest, self.max_step[lin], self.period_s) + 1e-6
        return tuple((self.workspace_low + free).tolist()), tuple((self.workspace_high - free).tolist())

    @functools.cached_property
    def workspace_box(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The workspace box's (low, high) corners as Python floats, for the filter's fast path."""
        return tuple(self.workspace_low.tolist()), tuple(self.workspace_high.tolist())

    @functools.cached_property
    def float_bounds(self) -> tuple[tuple[float, ...], ...]:
        """(low, high, max_step, linear indices, angular indices) as Python numbers, for the filter's fast path."""
        angular = tuple(i for i, d in enumerate(self.dims) if d in ANGULAR_DIMS)
        return (
            *(tuple(a.tolist()) for a in (self.low, self.high, self.max_step)),
            tuple(self.linear.tolist()),
            angular,
        )

    @classmethod
    def from_arm(cls, arm: ArmSpec, mode: Mode | str, period_s: float = DEFAULT_LINK.period_s) -> SafetyLimits:
        """The limits for `arm` in `mode`, all from its YAML (robots/specs/<arm>.yaml `limits`).

        Velocity mode: the action space (± each speed limit per axis), the speed norms, and max_step the TCP
        acceleration times the period (m/s², rad/s²). Joint mode: the action space (joint ranges less the
        margin); max_step is the published joint speed times joint_speed_fraction times the period. The
        gripper never steps.
        """
        mode = _motion_mode(mode)
        if mode not in arm.action_spaces:
            raise ValueError(
                f"{arm.name} has no {str(mode)!r} action space; it has {sorted(map(str, arm.action_spaces))}"
            )
        _positive("period_s", period_s)
        space, lim = arm.action_spaces[mode], arm.limits
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        if mode is Mode.JOINT_POSITION:
            max_step = np.append(arm.max_joint_speed * lim.joint_speed_fraction * period_s, UNLIMITED_GRIPPER_STEP)
        else:
            max_step = np.empty(space.size)
            for i, dim in enumerate(space.dims):
                if dim in LINEAR_DIMS:
                    max_step[i] = lim.max_linear_accel * period_s
                elif dim in ANGULAR_DIMS:
                    max_step[i] = lim.max_angular_accel * period_s
                elif dim == GRIPPER:
                    max_step[i] = UNLIMITED_GRIPPER_STEP
                else:
                    raise ValueError(f"{arm.name} {mode}: no speed limit for action dim {dim!r}")
        gripper = space.dims.index(GRIPPER)
        low[gripper], high[gripper] = max(low[gripper], 0.0), min(high[gripper], 1.0)
        return cls(
            mode=mode,
            dims=space.dims,
            low=low,
            high=high,
            max_step=max_step,
            workspace_low=np.asarray(lim.workspace.low, dtype=np.float64),
            workspace_high=np.asarray(lim.workspace.high, dtype=np.float64),
            period_s=float(period_s),
            max_linear_speed=lim.max_linear_speed,
            max_angular_speed=lim.max_angular_speed,
        )


@dataclass(frozen=True, eq=False)
class FilterResult:
    """What the filter made of one action: the command to send, or None and why not."""

    action: np.ndarray | None  # None: rejected, the caller must command a hold
    rejected: str  # "" when not rejected, else the cause, e.g. "non_finite", "bad_shape", "workspace"
    clipped: tuple[str, ...]  # limits that changed the action, in order applied: "range", "step", "speed", "workspace"


# --- the limits, one pure function each ------------------------------------------------------------------


def clamp_range(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Each dim clamped to its absolute bounds."""
    return np.clip(action, low, high)


def limit_step(action: np.ndarray, previous: np.ndarray, max_step: np.ndarray) -> np.ndarray:
    """Each dim moved at most max_step away from the previous command (a bound on acceleration / speed)."""
    return np.clip(action, previous - max_step, previous + max_step)


def limit_speed(
    action: np.ndarray, dims: Sequence[str], max_linear_speed: float, max_angular_speed: float
) -> np.ndarray:
    """The action with its linear and angular parts each scaled down to its speed norm, direction kept.

    The norms are `robots.limits.limit_twist`'s, the servo's own: an action this returns passes the servo
    unscaled. Dims that are no twist part (the gripper) are left as they are.
    """
    in_action, in_twist = twist_index(tuple(dims))
    out = np.array(action, dtype=np.float64)
    out[in_action] = limit_twist(twist_of(dims, out), max_linear_speed, max_angular_speed)[in_twist]
    return out


def stopping_distance(speed: np.ndarray, max_step: np.ndarray, period_s: float) -> np.ndarray:
    """Distance covered by commanding `speed` for one period, then speed - s, speed - 2s, ... while positive.

    This is the braking model of `braking_speed`: each command holds for one period, and the filter lowers the
    speed by at most max_step (s) per period. Zero for speeds <= 0.
    """
    v = np.maximum(np.asarray(speed, dtype=np.float64), 0.0)
    s = np.asarray(max_step, dtype=np.float64)
    n = np.ceil(v / s)  # commands with a positive speed: v, v - s, ..., v - (n-1)s
    return period_s * (n * v - s * n * (n - 1) / 2)


_MAX_STEPS = 1e15  # braking distance in units of max_step * period beyond which the cap no longer matters


def braking_speed(distance: np.ndarray, max_step: np.ndarray, period_s: float) -> np.ndarray:
    """The largest speed toward a wall `distance` away from which the arm can still stop before the wall.

    The inverse of `stopping_distance`: with x = distance / (s * period) and n the number of positive
    commands (smallest n with n(n+1)/2 >= x), distance = period * (n v - s n(n-1)/2) solves to
    v = s (x + n(n-1)/2) / n. Zero at the wall or beyond it: no motion toward (further past) it.
    """
    d = np.asarray(distance, dtype=np.float64)
    s = np.asarray(max_step, dtype=np.float64)
    x = np.minimum(np.maximum(d, 0.0) / (s * period_s), _MAX_STEPS)  # capped: inf/inf would be NaN
    n = np.maximum(np.ceil((np.sqrt(1.0 + 8.0 * x) - 1.0) / 2.0), 1.0)
    return np.where(d > 0, s * (x + n * (n - 1) / 2) / n, 0.0)


def limit_workspace(
    velocity: np.ndarray,
    tcp_pos: np.ndarray,
    workspace_low: np.ndarray,
    workspace_high: np.ndarray,
    max_step: np.ndarray,
    period_s: float,
) -> np.ndarray:
    """The TCP velocity (3,) clamped so the arm can still brake to a stop inside the box, axis by axis.

    Toward each wall the speed is capped by `braking_speed` of the distance to it; on an axis where the TCP
    is already past a wall, only zero or inward motion is left. Zero is always allowed, so this never fails.
    """
    # Both walls of each axis in one call (elementwise: the same numbers as one call per wall, half the numpy calls).
    toward_high, toward_low = braking_speed(
        np.array((workspace_high - tcp_pos, tcp_pos - workspace_low)), max_step, period_s
    )
    return np.clip(velocity, -toward_low, toward_high)


def workspace_excess(tcp_pos: np.ndarray, workspace_low: np.ndarray, workspace_high: np.ndarray) -> np.ndarray:
    """Per axis, how far the TCP is outside the box (0 inside), m."""
    return np.maximum(np.maximum(workspace_low - tcp_pos, tcp_pos - workspace_high), 0.0)


def beyond_workspace(tcp_pos: np.ndarray, limits: SafetyLimits, tolerance: float) -> bool:
    """Whether the TCP lies more than `tolerance` (> 0) outside the box on some axis: the largest finite
    `workspace_excess` above it (a NaN axis counts for nothing; the filter faults on it), on Python floats (the
    guard asks every tick)."""
    low, high = limits.workspace_box
    return any(lo - x > tolerance or x - hi > tolerance for x, lo, hi in zip(tcp_pos.tolist(), low, high, strict=True))


# --- the filter --------------------------------------------------------------------------------------------


def _reject(cause: str) -> FilterResult:
    return FilterResult(None, cause, ())


def _state(x: object, shape: tuple[int, ...] | None) -> np.ndarray | str:
    """x as a float64 copy (of `shape` unless None), or the rejection cause."""
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        return "bad_state_shape"
    if shape is not None and arr.shape != shape:
        return "bad_state_shape"
    return arr if np.isfinite(arr).all() else "non_finite_state"


def filter_action(
    action: np.ndarray,
    previous: np.ndarray | None,
    tcp_pos: np.ndarray,
    limits: SafetyLimits,
    q: np.ndarray | None = None,
    fk: Callable[[np.ndarray], np.ndarray] | None = None,
) -> FilterResult:
    """The command to send for the policy's `action`, or a rejection that the caller turns into a hold.

    `previous` is the last command actually sent (None after a hold: zero velocity, or the joint positions `q`).
    Where two limits conflict, the one that bounds the arm's motion wins over smoothness (module docstring):
    Velocity mode: range → step → speed → workspace (with braking). The speed norms and the workspace only
    slow an axis (each output component lies between zero and its step-limited value) and win over the step
    limit, which an axis exceeds only by braking harder than a step toward zero: the previous command was too
    fast to stop in time, the TCP is past a wall, or a change of direction made the stepped twist longer than
    its norm. A
    previous command outside the range or the speed norms is brought inside them first, so a speed above the
    limit is never continued.
    Joint mode: range → step. Should `previous` (or `q`) lie more than one step outside the bounds, the step
    (the joint speed limit) wins and the output approaches the bounds at max_step. Then, given `fk`
    (q -> TCP position), a target whose TCP leaves the box (or, from outside, moves further out on any axis)
    is rejected with "workspace": a joint target is where the arm stops, so no braking term is needed, but the
    path between two targets is not checked.
    """
    if limits.mode is Mode.CARTESIAN_VELOCITY and (result := _velocity_fast_path(action, previous, tcp_pos, q, limits)):
        return result
    n = len(limits.dims)
    try:
        out = np.array(action, dtype=np.float64)
    except (TypeError, ValueError):
        return _reject("bad_shape")
    if out.shape != (n,):
        return _reject("bad_shape")
    if not np.isfinite(out).all():  # the method, not np.all: this runs every tick, and np.all's dispatch is most of it
        return _reject("non_finite")
    tcp = _state(tcp_pos, (3,))
    if isinstance(tcp, str):
        return _reject(tcp)
    joint_mode = limits.mode is Mode.JOINT_POSITION
    if q is not None:
        q = _state(q, (n - 1,) if joint_mode else None)  # unused in velocity mode, but a NaN means a sick driver
        if isinstance(q, str):
            return _reject(q)
    if previous is not None:
        base = _state(previous, (n,))
        if isinstance(base, str):
            return _reject(base)
        if not joint_mode:  # never continue a speed above the limits
            base = limit_speed(
                clamp_range(base, limits.low, limits.high),
                limits.dims,
                limits.max_linear_speed,
                limits.max_angular_speed,
            )
    elif not joint_mode:
        base = np.zeros(n)
    elif q is None:
        return _reject("no_joint_state")
    else:
        base = np.append(q, 0.0)  # the gripper's step is unlimited, so its baseline does not matter

    clipped: list[str] = []
    out = _apply("range", out, clamp_range(out, limits.low, limits.high), clipped)
    out = _apply("step", out, limit_step(out, base, limits.max_step), clipped)
    if not joint_mode:
        speed = limit_speed(out, limits.dims, limits.max_linear_speed, limits.max_angular_speed)
        out = _apply("speed", out, speed, clipped)
        # inside the free box the workspace limit returns `out` unchanged (SafetyLimits.free_box)
        if not _inside(tcp.tolist(), limits.free_box):
            lin = limits.linear
            moved = out.copy()
            moved[lin] = limit_workspace(
                out[lin], tcp, limits.workspace_low, limits.workspace_high, limits.max_step[lin], limits.period_s
            )
            out = _apply("workspace", out, moved, clipped)
    elif fk is not None:
        target = np.asarray(fk(out[:-1]), dtype=np.float64)
        if target.shape != (3,):
            raise ValueError(f"fk must return the TCP position (3,), got shape {target.shape}")
        if not np.all(np.isfinite(target)):
            return _reject("non_finite_fk")
        now = workspace_excess(tcp, limits.workspace_low, limits.workspace_high)
        if np.any(workspace_excess(target, limits.workspace_low, limits.workspace_high) > now):
            return _reject("workspace")
    return FilterResult(out, "", tuple(clipped))


def _clamp(x: float, low: float, high: float) -> float:
    """np.clip of one float against array bounds, to the bit (a bound equal to x is returned, as numpy does)."""
    x = x if x > low else low
    return x if x < high else high


def _finite_floats(x: object, size: int | None) -> list[float] | None:
    """A 1-d float array's values as Python floats when all are finite (and `size` of them, unless None)."""
    if type(x) is not np.ndarray or x.ndim != 1 or x.dtype.kind != "f" or (size is not None and x.size != size):
        return None
    values = x.tolist()
    return values if all(math.isfinite(v) for v in values) else None


def _velocity_fast_path(
    action: object, previous: object, tcp_pos: object, q: object, limits: SafetyLimits
) -> FilterResult | None:
    """filter_action in velocity mode on Python floats, for the common case; None where it does not apply.

    It applies when every input is a finite 1-d float array of the right size. Range and step are exact clamps on
    floats; the speed norms are checked by a sum of squares with a relative margin of 1e-9 (far more than its
    rounding against limit_norm's dot product) and, where one may bind, applied by `limit_speed` itself; the
    workspace limit, outside `free_box`, is `braking_speed`'s operations in the same order on floats. So this returns
    what the numpy path returns, to the bit (tests/test_loop_fast_path.py compares the two), with no numpy call in
    the common case: issue 13's profile found each numpy call on a 5-vector costing 5–8 µs in the loop, where the
    caches are cold after inference. Anything else takes the numpy path, which rejects what it cannot filter.
    """
    n = len(limits.dims)
    out = _finite_floats(action, n)
    tcp = _finite_floats(tcp_pos, 3)
    if out is None or tcp is None or (q is not None and _finite_floats(q, None) is None):
        return None
    low, high, step, linear, angular = limits.float_bounds
    if previous is None:
        base = [0.0] * n
    elif (prev := _finite_floats(previous, n)) is None:
        return None
    else:  # never continue a speed above the limits
        base = _speed_limited([_clamp(x, lo, hi) for x, lo, hi in zip(prev, low, high, strict=True)], limits)
    clipped = []
    ranged = [_clamp(x, lo, hi) for x, lo, hi in zip(out, low, high, strict=True)]
    if ranged != out:
        clipped.append("range")
    stepped = [_clamp(x, b - s, b + s) for x, b, s in zip(ranged, base, step, strict=True)]
    if stepped != ranged:
        clipped.append("step")
    speed = _speed_limited(stepped, limits)
    if speed != stepped:
        clipped.append("speed")
    moved = speed
    if not _inside(tcp, limits.free_box):
        moved = _workspace_limited(speed, tcp, limits)
        if moved != speed:
            clipped.append("workspace")
    return FilterResult(np.array(moved, dtype=np.float64), "", tuple(clipped))


def _braking_speed_of(distance: float, max_step: float, period_s: float) -> float:
    """`braking_speed` of one axis on Python floats: the same operations in the same order, so the same bits."""
    x = min(max(distance, 0.0) / (max_step * period_s), _MAX_STEPS)
    n = max(float(math.ceil((math.sqrt(1.0 + 8.0 * x) - 1.0) / 2.0)), 1.0)
    return max_step * (x + n * (n - 1) / 2) / n if distance > 0 else 0.0


def _workspace_limited(v: list[float], tcp: list[float], limits: SafetyLimits) -> list[float]:
    """`limit_workspace` applied to the linear part of `v` (as filter_action's numpy path does), on floats."""
    _, _, step, linear, _ = limits.float_bounds
    low, high = limits.workspace_box
    out = list(v)
    for axis, i in enumerate(linear):
        toward_high = _braking_speed_of(high[axis] - tcp[axis], step[i], limits.period_s)
        toward_low = _braking_speed_of(tcp[axis] - low[axis], step[i], limits.period_s)
        out[i] = _clamp(v[i], -toward_low, toward_high)
    return out


def _speed_limited(v: list[float], limits: SafetyLimits) -> list[float]:
    """`limit_speed` of `v`, itself where each part of the twist is within its norm by _NORM_MARGIN (a sum of
    squares: no numpy call); where a norm may bind, limit_speed itself, so the result is the same to the bit."""
    _, _, _, linear, angular = limits.float_bounds
    lin = sum([v[i] * v[i] for i in linear])
    ang = sum([v[i] * v[i] for i in angular])
    if lin <= (limits.max_linear_speed * _NORM_MARGIN) ** 2 and ang <= (limits.max_angular_speed * _NORM_MARGIN) ** 2:
        return v
    array = np.array(v, dtype=np.float64)
    return limit_speed(array, limits.dims, limits.max_linear_speed, limits.max_angular_speed).tolist()


_NORM_MARGIN = 1.0 - 1e-9  # relative: what the fast path leaves between a norm and its limit


def _inside(point: Sequence[float], box: tuple[tuple[float, ...], tuple[float, ...]]) -> bool:
    """Whether `point` lies strictly inside the box (low, high), on Python floats: no numpy call."""
    return all(lo < x < hi for x, lo, hi in zip(point, *box, strict=True))


def _apply(name: str, before: np.ndarray, after: np.ndarray, clipped: list[str]) -> np.ndarray:
    """`after`, noting `name` in `clipped` when the limit changed anything."""
    if (after != before).any():
        clipped.append(name)
    return after

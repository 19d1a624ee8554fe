"""The loop's fast paths (issue 13) compute exactly what the plain numpy code they replace computes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.spec import observation_spec
from policies.tokenizer.language import InstructionTokenizer
from policies.tokenizer.observation import ObservationTokenizer
from robots.contract.link import Mode
from robots.spec import load_spec
from runtime.safety import limits as safety_limits
from runtime.safety.limits import SafetyLimits, filter_action


def test_images_written_by_cv2_split_equal_the_transposed_frames_every_call():
    spec = observation_spec(load_spec("sawyer"))
    tok = ObservationTokenizer(spec, InstructionTokenizer.default())
    rng = np.random.default_rng(0)
    h, w = spec.image_height, spec.image_width
    for _ in range(3):  # the buffer is reused: each call must overwrite it in place
        frames = {c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c in spec.cameras}
        frames[spec.cameras[-1]] = np.asfortranarray(frames[spec.cameras[-1]])  # not C-contiguous: numpy's path
        images = tok.images(frames)
        assert images is tok.images(frames)
        for i, camera in enumerate(spec.cameras):
            np.testing.assert_array_equal(images[0, i], frames[camera].transpose(2, 0, 1))


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_filter_skipping_the_workspace_limit_inside_the_free_box_changes_no_bit(robot, monkeypatch):
    lim = SafetyLimits.from_arm(load_spec(robot), Mode.CARTESIAN_VELOCITY, 0.05)
    rng = np.random.default_rng(1)
    span = lim.workspace_high - lim.workspace_low
    cases = []
    for i in range(3000):
        action = rng.uniform(1.5 * lim.low - 0.1, 1.5 * lim.high + 0.1)
        previous = None if i % 5 == 0 else rng.uniform(1.2 * lim.low, 1.2 * lim.high)
        if i % 3 == 0:  # near a wall, on either side of the free box's edge
            tcp = rng.uniform(lim.workspace_low, lim.workspace_high)
            axis, wall = rng.integers(3), rng.integers(2)
            edge = np.array(lim.free_box[wall])[axis]
            tcp[axis] = edge + rng.uniform(-0.01, 0.01)
        else:
            tcp = rng.uniform(lim.workspace_low - 0.1 * span, lim.workspace_high + 0.1 * span)
        cases.append((action, previous, tcp))

    def run():
        out = []
        for action, previous, tcp in cases:
            r = filter_action(action, previous, tcp, lim)
            out.append((None if r.action is None else r.action.tobytes(), r.rejected, r.clipped))
        return out

    monkeypatch.setattr(safety_limits, "_velocity_fast_path", lambda *a: None)  # the numpy path, which this tests
    fast = run()
    monkeypatch.setattr(safety_limits, "_inside", lambda point, box: False)  # always the full workspace limit
    assert run() == fast
    inside = sum(all(lo < x < hi for x, lo, hi in zip(t, *lim.free_box, strict=True)) for _, _, t in cases)
    assert 0 < inside < len(cases)  # both paths were taken


def _cases(lim: SafetyLimits, count: int, seed: int):
    """Actions, previous commands and TCPs around every limit: in and out of range, fast steps, speeds at and over
    the norms, the TCP on both sides of the free box's edges, signed zeros, float32 actions as the policy emits."""
    rng = np.random.default_rng(seed)
    span = lim.workspace_high - lim.workspace_low
    for i in range(count):
        action = rng.uniform(1.5 * lim.low - 0.1, 1.5 * lim.high + 0.1)
        if i % 7 == 0:
            action[rng.integers(len(action))] = rng.choice([0.0, -0.0])
        if i % 11 == 0:  # exactly on the range's bounds
            action = np.where(rng.random(len(action)) < 0.5, lim.low, lim.high)
        if i % 4 == 0:
            action = action.astype(np.float32)
        previous = None if i % 5 == 0 else rng.uniform(1.2 * lim.low, 1.2 * lim.high)
        if i % 13 == 0 and previous is not None:  # a previous command on the linear speed norm, to the bit
            lin = lim.linear
            previous[lin] *= lim.max_linear_speed / np.sqrt(previous[lin] @ previous[lin])
        if i % 3 == 0:
            tcp = rng.uniform(lim.workspace_low, lim.workspace_high)
            axis, wall = rng.integers(3), rng.integers(2)
            tcp[axis] = np.array(lim.free_box[wall])[axis] + rng.uniform(-0.01, 0.01)
        else:
            tcp = rng.uniform(lim.workspace_low - 0.1 * span, lim.workspace_high + 0.1 * span)
        if i % 3 == 1:  # a typical tick: a modest action near the last one, the TCP well inside the box
            previous = rng.uniform(0.4 * lim.low, 0.4 * lim.high)
            action = previous + rng.uniform(-2, 2, len(action)) * lim.max_step
            tcp = lim.workspace_low + span * rng.uniform(0.3, 0.7, 3)
        q = None if i % 2 else rng.uniform(-1, 1, 7)
        yield action, previous, tcp, q


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_velocity_fast_path_returns_what_the_numpy_path_returns(robot, monkeypatch):
    """The filter's float fast path (issue 13) against the numpy path it short-cuts, bit for bit, over cases where
    every limit binds: the range, the step, the speed norms (previous commands on them to the bit), the workspace."""
    lim = SafetyLimits.from_arm(load_spec(robot), Mode.CARTESIAN_VELOCITY, 0.05)
    cases = list(_cases(lim, 4000, seed=2))

    def run():
        out = []
        for action, previous, tcp, q in cases:
            r = filter_action(action, previous, tcp, lim, q=q)
            out.append((None if r.action is None else r.action.tobytes(), r.rejected, r.clipped))
        return out

    taken = []
    real = safety_limits._velocity_fast_path
    monkeypatch.setattr(
        safety_limits,
        "_velocity_fast_path",
        lambda *a: taken.append(r := real(*a)) or r,  # noqa: B023
    )
    fast = run()
    monkeypatch.setattr(safety_limits, "_velocity_fast_path", lambda *a: None)
    assert run() == fast
    applied = sum(r is not None for r in taken)
    assert applied == len(cases)  # every case here is a finite float vector: the fast path answered them all
    clipped = {c for r in taken if r is not None for c in r.clipped}
    assert clipped == {"range", "step", "speed", "workspace"}


def test_velocity_fast_path_steps_aside_for_what_it_cannot_check():
    """Inputs that are not finite float vectors of the right size go to the numpy path, which rejects them."""
    lim = SafetyLimits.from_arm(load_spec("sawyer"), Mode.CARTESIAN_VELOCITY, 0.05)
    tcp, ok = (lim.workspace_low + lim.workspace_high) / 2, np.zeros(len(lim.dims))
    assert safety_limits._velocity_fast_path(ok, None, tcp, None, lim) is not None
    for action, previous, tcp_pos, q in [
        ([0.0] * len(lim.dims), None, tcp, None),  # a list, not an array
        (np.zeros(len(lim.dims), dtype=int), None, tcp, None),
        (np.zeros(len(lim.dims) + 1), None, tcp, None),
        (np.full(len(lim.dims), np.nan), None, tcp, None),
        (ok, np.full(len(lim.dims), np.inf), tcp, None),
        (ok, None, np.array([np.nan, 0.0, 0.0]), None),
        (ok, None, tcp, np.array([0.0, np.nan])),
    ]:
        assert safety_limits._velocity_fast_path(action, previous, tcp_pos, q, lim) is None


_FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 5e-324, 1e300])


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
@given(data=st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_velocity_fast_path_matches_the_numpy_path_for_any_finite_input(robot, data):
    lim = SafetyLimits.from_arm(load_spec(robot), Mode.CARTESIAN_VELOCITY, 0.05)
    n = len(lim.dims)
    scale = data.draw(st.sampled_from([1e-3, 0.1, 1.0]))  # near the limits' own scale, and far beyond it
    action = np.array(data.draw(st.lists(_FINITE, min_size=n, max_size=n))) * scale
    if data.draw(st.booleans()):
        action = np.clip(action, -1e30, 1e30).astype(np.float32)  # as the policy emits; still finite
    previous = data.draw(st.none() | st.lists(_FINITE, min_size=n, max_size=n).map(lambda v: np.array(v) * 1e-3))
    centre = (lim.workspace_low + lim.workspace_high) / 2
    tcp = centre + np.array(data.draw(st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3))) * data.draw(
        st.sampled_from([0.05, 0.2, 10.0])
    )
    fast = safety_limits._velocity_fast_path(action, previous, tcp, None, lim)
    assert fast is not None and np.isfinite(fast.action).all()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(safety_limits, "_velocity_fast_path", lambda *a: None)
        slow = filter_action(action, previous, tcp, lim)
    assert (fast.action.tobytes(), fast.rejected, fast.clipped) == (slow.action.tobytes(), slow.rejected, slow.clipped)

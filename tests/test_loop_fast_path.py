"""The loop's fast paths (issue 13) compute exactly what the plain numpy code they replace computes."""

from __future__ import annotations

import numpy as np
import pytest

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

    fast = run()
    monkeypatch.setattr(safety_limits, "_inside", lambda point, box: False)  # always the full workspace limit
    assert run() == fast
    inside = sum(all(lo < x < hi for x, lo, hi in zip(t, *lim.free_box, strict=True)) for _, _, t in cases)
    assert 0 < inside < len(cases)  # both paths were taken

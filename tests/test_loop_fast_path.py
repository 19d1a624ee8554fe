"""The loop's fast paths (issue 13) compute exactly what the plain numpy code they replace computes."""

from __future__ import annotations

import numpy as np

from policies.spec import observation_spec
from policies.tokenizer.language import InstructionTokenizer
from policies.tokenizer.observation import ObservationTokenizer
from robots.spec import load_spec


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

"""Instruction and observation tokenizers: the inputs serving builds are exactly those training builds."""

from __future__ import annotations

import numpy as np
import pytest

from policies.spec import observation_spec
from policies.tokenizer.instructions import corpus
from policies.tokenizer.language import DEFAULT_MODEL, PAD_ID, UNK_ID, InstructionTokenizer, InstructionTooLong
from policies.tokenizer.observation import ObservationError, ObservationTokenizer
from policies.tokenizer.train import train
from robots.contract.messages import StateMsg
from robots.spec import load_spec
from robots.tasks.tasks import TASK_INSTRUCTIONS

TOKENIZER = InstructionTokenizer.default()


def test_shipped_model_is_what_the_offline_trainer_makes_from_the_corpus():
    # A corpus change without retraining (python -m policies.tokenizer.train) fails here.
    assert train(corpus()) == DEFAULT_MODEL.read_bytes()


def test_every_corpus_instruction_fits_and_has_no_unknown_words():
    for line in corpus():
        ids = TOKENIZER.encode(line, 16)
        assert ids.dtype == np.int64 and ids.shape == (16,)
        assert UNK_ID not in ids, line
        assert TOKENIZER.decode(ids) == line


def test_task_instructions_are_in_the_corpus():
    assert set(TASK_INSTRUCTIONS.values()) <= set(corpus())


def test_case_and_spacing_do_not_change_the_ids():
    a = TOKENIZER.encode("stack the red object on the blue object", 16)
    b = TOKENIZER.encode("  Stack the RED object   on the blue object ", 16)
    np.testing.assert_array_equal(a, b)


def test_empty_instruction_is_all_padding_and_unknown_words_map_to_unk():
    assert (TOKENIZER.encode("", 8) == PAD_ID).all()
    assert UNK_ID in TOKENIZER.encode("lift the purple sphere", 8)


def test_too_long_instruction_is_refused_not_truncated():
    with pytest.raises(InstructionTooLong, match="at most 4"):
        TOKENIZER.encode("stack the red object on the blue object", 4)


# Observation tokenizer


def _state(arm, seed=0) -> StateMsg:
    rng = np.random.default_rng(seed)
    return StateMsg(
        seq=1,
        source="t",
        t_capture_ns=0,
        q=rng.normal(size=arm.dof),
        dq=rng.normal(size=arm.dof),
        gripper_pos=0.3,
        gripper_vel=-0.1,
        gripper_grasp=1.0,
        tcp_pose=np.concatenate([rng.normal(size=3), [1.0, 0.0, 0.0, 0.0]]),
        mode="lockstep",
        last_cmd_seq=0,
    )


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_proprio_from_a_state_message_follows_the_spec_order(robot):
    arm = load_spec(robot)
    spec = observation_spec(arm)
    tok = ObservationTokenizer(spec, TOKENIZER)
    state = _state(arm)
    frames = {c: np.zeros((128, 128, 3), np.uint8) for c in spec.cameras}
    obs = tok.from_messages(state, frames, TASK_INSTRUCTIONS["stack"])
    assert obs.proprio.shape == (1, arm.proprio_size) and obs.proprio.dtype == np.float32
    expected = np.concatenate(
        [state.q, state.dq, [state.gripper_grasp], [state.gripper_pos], [state.gripper_vel], state.tcp_pose]
    )
    np.testing.assert_allclose(obs.proprio[0], expected, rtol=1e-6)
    assert [f.name for f in spec.proprio] == list(state.proprio_fields())


def test_a_driver_shaped_observation_tokenizes_as_the_messages_it_came_from():
    arm = load_spec("panda")
    spec = observation_spec(arm)
    tok = ObservationTokenizer(spec, TOKENIZER)
    state = _state(arm, seed=1)
    rng = np.random.default_rng(2)
    frames = {c: rng.integers(0, 256, (128, 128, 3), np.uint8) for c in spec.cameras}
    a = {k: v.copy() for k, v in tok.from_messages(state, frames, TASK_INSTRUCTIONS["lift"]).feeds().items()}
    b = tok.from_observation({"proprio": state.proprio_fields(), "images": frames}, TASK_INSTRUCTIONS["lift"])
    for key, value in b.feeds().items():
        np.testing.assert_array_equal(a[key], value, err_msg=key)


def test_images_are_stacked_in_camera_order_as_nchw_rgb():
    spec = observation_spec(load_spec("sawyer"))
    tok = ObservationTokenizer(spec, TOKENIZER)
    frames = {c: np.full((128, 128, 3), (i + 1) * np.array([10, 20, 30]), np.uint8) for i, c in enumerate(spec.cameras)}
    images = tok.images(frames)
    assert images.shape == (1, 2, 3, 128, 128) and images.dtype == np.uint8
    for i in range(2):
        np.testing.assert_array_equal(images[0, i, :, 5, 5], (i + 1) * np.array([10, 20, 30]))


def test_frames_of_another_resolution_are_resized():
    spec = observation_spec(load_spec("sawyer"), cameras=("front_left",))
    tok = ObservationTokenizer(spec, TOKENIZER)
    images = tok.images({"front_left": np.full((480, 640, 3), 77, np.uint8)})
    assert images.shape == (1, 1, 3, 128, 128) and (images == 77).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, i: f.pop("tcp_quat"), "tcp_quat.*missing"),
        (lambda f, i: f.__setitem__("joint_pos", np.zeros(6)), "joint_pos.*6 values"),
        (lambda f, i: i.pop("front_right"), "front_right"),
        (lambda f, i: i.__setitem__("front_left", np.zeros((128, 128, 3), np.float32)), "uint8"),
    ],
)
def test_bad_readings_are_refused_with_the_field_named(change, message):
    arm = load_spec("sawyer")
    spec = observation_spec(arm)
    tok = ObservationTokenizer(spec, TOKENIZER)
    fields = _state(arm).proprio_fields()
    frames = {c: np.zeros((128, 128, 3), np.uint8) for c in spec.cameras}
    change(fields, frames)
    with pytest.raises(ObservationError, match=message):
        tok(fields, frames, "")

"""The PAC network: size ladder, FLOP count, masking of missing modalities, late-fusion critic, action bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from policies.model.config import SIZES, size_config
from policies.model.flops import actor_flops, critic_flops, parameter_count
from policies.model.perceiver import CriticGraph, PerceiverActorCritic, build_model
from policies.spec import action_spec, observation_spec
from robots.spec import load_spec

ARM = load_spec("sawyer")
OBS, ACT = observation_spec(ARM), action_spec(ARM)


def _inputs(batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    proprio = torch.randn(batch, OBS.proprio_size, generator=g)
    images = torch.randint(0, 256, (batch, *OBS.image_shape), dtype=torch.uint8, generator=g)
    instruction = torch.zeros(batch, OBS.instruction_length, dtype=torch.int64)
    instruction[:, :5] = torch.randint(2, 30, (batch, 5), generator=g)
    return proprio, images, instruction


@pytest.fixture(scope="module")
def xs() -> PerceiverActorCritic:
    return build_model(size_config("XS"), OBS, ACT).eval()


@pytest.mark.parametrize("size", list(SIZES))
def test_every_ladder_size_is_within_15_percent_of_its_target(size):
    c = SIZES[size]
    assert abs(parameter_count(c, OBS, ACT) / c.target_parameters - 1) <= 0.15


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("arm", ["sawyer", "panda"])
def test_analytic_flops_equal_torch_flop_counter(size, arm):
    spec = load_spec(arm)
    obs, act = observation_spec(spec), action_spec(spec)
    with torch.device("meta"):
        model = PerceiverActorCritic(SIZES[size], obs, act)
        proprio = torch.zeros(1, obs.proprio_size)
        images = torch.zeros(1, *obs.image_shape, dtype=torch.uint8)
        instruction = torch.zeros(1, obs.instruction_length, dtype=torch.int64)
        actions = torch.zeros(1, 16, act.size)
        with FlopCounterMode(display=False) as actor:
            model({"proprio": proprio, "images": images, "instruction": instruction})
        with FlopCounterMode(display=False) as critic:
            CriticGraph(model)(proprio, images, instruction, actions)
    assert actor.get_total_flops() == actor_flops(SIZES[size], obs, act)
    assert critic.get_total_flops() == critic_flops(SIZES[size], obs, act, 16)


def test_actor_and_critic_output_shapes(xs):
    proprio, images, instruction = _inputs(batch=3)
    with torch.no_grad():
        logits = xs({"proprio": proprio, "images": images, "instruction": instruction})
        q = xs.q_logits(
            xs.encode({"proprio": proprio, "images": images, "instruction": instruction}), torch.zeros(3, 7, ACT.size)
        )
    assert logits.shape == (3, ACT.size, ACT.bins)
    assert q.shape == (3, 7, xs.config.q_bins)
    assert torch.isfinite(logits).all() and torch.isfinite(q).all()


def test_absent_images_are_masked_not_zero_filled(xs):
    proprio, images, instruction = _inputs(batch=2)
    other = torch.randint(0, 256, images.shape, dtype=torch.uint8)
    absent = {"images": torch.tensor([False, False])}
    with torch.no_grad():
        a = xs.encode({"proprio": proprio, "images": images, "instruction": instruction}, present=absent)
        b = xs.encode({"proprio": proprio, "images": other, "instruction": instruction}, present=absent)
        zero_filled = xs.encode({"proprio": proprio, "images": torch.zeros_like(images), "instruction": instruction})
        present = xs.encode({"proprio": proprio, "images": images, "instruction": instruction})
    torch.testing.assert_close(a, b)  # image content cannot leak in when the modality is absent
    assert not torch.allclose(a, zero_filled, atol=1e-4)  # and absent is not the same as a black image
    assert not torch.allclose(a, present, atol=1e-4)


def test_padded_instruction_positions_are_ignored(xs):
    proprio, images, instruction = _inputs()
    with torch.no_grad():
        before = xs({"proprio": proprio, "images": images, "instruction": instruction})
        xs.instruction_encoder.embedding.weight[0].add_(10.0)  # the pad id's embedding
        after = xs({"proprio": proprio, "images": images, "instruction": instruction})
        xs.instruction_encoder.embedding.weight[0].sub_(10.0)
    torch.testing.assert_close(before, after)


def test_instruction_changes_the_action_distribution(xs):
    proprio, images, instruction = _inputs()
    other = instruction.clone()
    other[0, 0] = (other[0, 0] + 1) % 30 + 2
    with torch.no_grad():
        assert not torch.allclose(
            xs({"proprio": proprio, "images": images, "instruction": instruction}),
            xs({"proprio": proprio, "images": images, "instruction": other}),
            atol=1e-5,
        )


def test_critic_scores_many_candidates_in_one_call_as_if_one_at_a_time(xs):
    proprio, images, instruction = _inputs()
    actions = torch.from_numpy(np.random.default_rng(1).uniform(ACT.low, ACT.high, (1, 6, ACT.size))).float()
    with torch.no_grad():
        latents = xs.encode({"proprio": proprio, "images": images, "instruction": instruction})
        together = xs.q_logits(latents, actions)
        alone = torch.cat([xs.q_logits(latents, actions[:, i : i + 1]) for i in range(6)], dim=1)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0, 0], together[0, 1], atol=1e-5)  # the action matters


def test_batch_elements_do_not_interact(xs):
    proprio, images, instruction = _inputs(batch=3)
    with torch.no_grad():
        batched = xs({"proprio": proprio, "images": images, "instruction": instruction})
        single = xs({"proprio": proprio[1:2], "images": images[1:2], "instruction": instruction[1:2]})
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-5)


def test_build_model_is_deterministic_per_seed():
    a = build_model(size_config("XS"), OBS, ACT, seed=3)
    b = build_model(size_config("XS"), OBS, ACT, seed=3)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="ladder"):
        size_config("XXL")


# Action bins: the one mapping between continuous actions and the policy head's K bins.


def test_bin_centers_span_low_to_high():
    centers = ACT.bin_centers()
    assert centers.shape == (ACT.size, ACT.bins)
    np.testing.assert_allclose(centers[:, 0], ACT.low)
    np.testing.assert_allclose(centers[:, -1], ACT.high)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=5, max_size=5))
def test_to_bins_picks_the_nearest_center_and_clamps(values):
    action = np.asarray(values)
    idx = ACT.to_bins(action)
    assert ((idx >= 0) & (idx < ACT.bins)).all()
    centers = ACT.bin_centers()
    chosen = centers[np.arange(ACT.size), idx]
    clipped = np.clip(action, ACT.low, ACT.high)
    width = (np.asarray(ACT.high) - np.asarray(ACT.low)) / (ACT.bins - 1)
    assert np.all(np.abs(chosen - clipped) <= width / 2 + 1e-12)


def test_from_logits_decodes_argmax_and_mean():
    logits = np.full((ACT.size, ACT.bins), -1e9)
    idx = np.array([0, 50, 100, 25, 75])
    logits[np.arange(ACT.size), idx] = 0.0
    expected = ACT.bin_centers()[np.arange(ACT.size), idx]
    np.testing.assert_allclose(ACT.from_logits(logits, "argmax"), expected)
    np.testing.assert_allclose(ACT.from_logits(logits, "mean"), expected, atol=1e-12)
    uniform = ACT.from_logits(np.zeros((ACT.size, ACT.bins)), "mean")
    np.testing.assert_allclose(uniform, (np.asarray(ACT.low) + np.asarray(ACT.high)) / 2, atol=1e-12)


def test_hybrid_decoding_takes_the_mean_of_motion_and_the_mode_of_the_gripper():
    """Two peaks per dim (bins 10 and 90, the first likelier): hybrid = mean for motion, argmax for the gripper."""
    logits = np.full((ACT.size, ACT.bins), -1e9)
    logits[:, 10], logits[:, 90] = np.log(0.6), np.log(0.4)
    centers = ACT.bin_centers()
    hybrid = ACT.from_logits(logits, "hybrid")
    assert ACT.dims[-1] == "gripper"
    np.testing.assert_allclose(hybrid[:-1], 0.6 * centers[:-1, 10] + 0.4 * centers[:-1, 90], atol=1e-9)
    assert hybrid[-1] == centers[-1, 10]
    with pytest.raises(ValueError, match="unknown decoding"):
        ACT.from_logits(logits, "mode")


MEDIAN_TABLE = [  # (bin: probability, ...) → the median's bin
    ({50: 1.0}, 50),
    ({0: 0.3, 60: 0.25, 100: 0.45}, 60),  # clipped tails on both ends, the middle decides
    ({0: 0.49, 100: 0.51}, 100),  # two peaks: the one holding more than half
    ({0: 0.51, 100: 0.49}, 0),
    ({10: 0.5, 90: 0.5}, 10),  # exactly half: the first bin that reaches it
    ({20: 0.2, 30: 0.2, 40: 0.2, 100: 0.4}, 40),  # the argmax (100) is a spike on the bound; the median is not
]


@pytest.mark.parametrize(("mass", "median_bin"), MEDIAN_TABLE)
def test_median_decoding_is_the_bin_where_half_the_mass_is_reached(mass, median_bin):
    logits = np.full((ACT.size, ACT.bins), -np.inf)
    for b, prob in mass.items():
        logits[:, b] = np.log(prob)
    got = ACT.from_logits(logits, "median")
    np.testing.assert_allclose(got, ACT.bin_centers()[:, median_bin])


def test_argmax_median_decoding_opens_the_gripper_when_most_of_its_mass_is_open_however_spread():
    """Gripper: 0.4 on the closed bin (1.0), 0.6 spread evenly over ten open bins: argmax closes, the majority
    opens. The motion dims keep their most likely bin, as under argmax."""
    logits = np.full((ACT.size, ACT.bins), -np.inf)
    logits[:-1, 10], logits[:-1, 90] = np.log(0.3), np.log(0.7)  # motion: the argmax is bin 90
    logits[-1, 100] = np.log(0.4)
    logits[-1, 0:10] = np.log(0.06)
    centers = ACT.bin_centers()
    assert ACT.dims[-1] == "gripper"
    assert ACT.from_logits(logits, "argmax")[-1] == 1.0  # closed
    got = ACT.from_logits(logits, "argmax_median")
    assert got[-1] < 0.5  # open
    np.testing.assert_allclose(got[:-1], centers[:-1, 90])


def test_median_of_clipped_symmetric_noise_is_the_clipped_noise_free_action():
    """Noise around an action near the bound, clipped into the end bin: the argmax is the bound, the mean is
    pulled inwards, the median is the action itself (the case for median decoding; closed loop it did not pay,
    RESULTS "Session 24")."""
    rng = np.random.default_rng(0)
    true = np.array([0.06, -0.065, 0.0, 0.5, 0.0])
    noisy = true + rng.normal(0.0, [0.03, 0.03, 0.03, 0.6, 0.0], size=(20000, ACT.size))
    idx = ACT.to_bins(noisy)  # (N, A)
    counts = np.stack([np.bincount(idx[:, d], minlength=ACT.bins) for d in range(ACT.size)]).astype(float)
    logits = np.log(counts + 1e-12)
    width = (np.asarray(ACT.high) - np.asarray(ACT.low)) / (ACT.bins - 1)
    median = ACT.from_logits(logits, "median")
    assert np.all(np.abs(median[:3] - true[:3]) <= 2 * width[:3])
    assert np.abs(ACT.from_logits(logits, "argmax")[0] - ACT.high[0]) < 1e-12  # the clip's spike
    assert ACT.from_logits(logits, "mean")[0] < true[0] - 2 * width[0]  # pulled inwards


def test_sampled_decoding_draws_each_bin_at_its_probability():
    """Three bins per dim at 0.2 / 0.3 / 0.5 (a different three per dim): 4,000 draws land on them at those rates
    (within 4 standard errors), never elsewhere; the same seed draws the same actions."""
    logits = np.full((ACT.size, ACT.bins), -np.inf)
    bins = np.array([[0, 40, 100], [3, 50, 97], [10, 11, 12], [20, 60, 80], [0, 1, 100]])
    probs = np.array([0.2, 0.3, 0.5])
    for d in range(ACT.size):
        logits[d, bins[d]] = np.log(probs)
    rng = np.random.default_rng(0)
    drawn = np.stack([ACT.to_bins(ACT.from_logits(logits, "sample", rng)) for _ in range(4000)])
    for d in range(ACT.size):
        assert set(np.unique(drawn[:, d])) <= set(bins[d])
        rates = np.array([(drawn[:, d] == b).mean() for b in bins[d]])
        assert np.all(np.abs(rates - probs) < 4 * np.sqrt(probs * (1 - probs) / 4000)), (d, rates)
    again = [ACT.from_logits(logits, "sample", np.random.default_rng(5)) for _ in range(2)]
    np.testing.assert_array_equal(again[0], again[1])


def test_sample_median_draws_the_motion_and_keeps_the_gripper_on_its_majority_side():
    """Gripper: 0.7 closed, 0.3 open. Drawn, it opens about 30 % of the time (a held object dropped); under
    sample_median never, while the motion dims still take every bin they have mass on."""
    logits = np.full((ACT.size, ACT.bins), -np.inf)
    logits[:-1, 10], logits[:-1, 90] = np.log(0.5), np.log(0.5)
    logits[-1, 100], logits[-1, 0] = np.log(0.7), np.log(0.3)
    rng = np.random.default_rng(1)
    sampled = np.stack([ACT.from_logits(logits, "sample", rng) for _ in range(500)])
    mixed = np.stack([ACT.from_logits(logits, "sample_median", rng) for _ in range(500)])
    assert 0.2 < (sampled[:, -1] == 0.0).mean() < 0.4
    assert np.all(mixed[:, -1] == 1.0)
    centers = ACT.bin_centers()
    for d in range(ACT.size - 1):
        assert set(np.unique(mixed[:, d])) == {centers[d, 10], centers[d, 90]}


@pytest.mark.parametrize("how", ["sample", "sample_median"])
def test_a_sampled_decoding_without_a_generator_is_refused(how):
    with pytest.raises(ValueError, match="Generator"):
        ACT.from_logits(np.zeros((ACT.size, ACT.bins)), how)


STATE_OBS = observation_spec(ARM, cameras=(), objects=("red", "green", "blue"))


def _state_inputs(batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "proprio": torch.randn(batch, STATE_OBS.proprio_size, generator=g),
        "objects": torch.randn(batch, *STATE_OBS.objects_shape, generator=g),
        "instruction": torch.randint(2, 30, (batch, STATE_OBS.instruction_length), generator=g),
    }


def test_state_policy_reads_object_poses_and_has_no_image_stem():
    assert STATE_OBS.modalities == ("proprio", "objects", "instruction")
    model = build_model(size_config("XS"), STATE_OBS, ACT).eval()
    assert model.image_encoder is None and model.object_encoder is not None
    inputs = _state_inputs(batch=2)
    moved = {**inputs, "objects": inputs["objects"].clone()}
    moved["objects"][:, 0, 0] += 0.1  # the red cube 10 cm further
    with torch.no_grad():
        assert model(inputs).shape == (2, ACT.size, ACT.bins)
        assert not torch.allclose(model(inputs), model(moved), atol=1e-5)
        # masked out, the poses cannot matter
        absent = {"objects": torch.tensor([False, False])}
        torch.testing.assert_close(model.encode(inputs, present=absent), model.encode(moved, present=absent))


@pytest.mark.parametrize("size", ["XS", "S"])
def test_analytic_flops_of_a_state_policy_equal_torch_flop_counter(size):
    with torch.device("meta"):
        model = PerceiverActorCritic(SIZES[size], STATE_OBS, ACT)
        inputs = {k: v.to("meta") for k, v in _state_inputs().items()}
        with FlopCounterMode(display=False) as actor:
            model(inputs)
    assert actor.get_total_flops() == actor_flops(SIZES[size], STATE_OBS, ACT)


def test_an_object_outside_the_cell_or_no_observation_at_all_is_refused():
    with pytest.raises(ValueError, match="tracks"):
        observation_spec(ARM, cameras=(), objects=("purple",))
    with pytest.raises(ValueError, match="at least one camera or one tracked object"):
        observation_spec(ARM, cameras=())


def _silence_mixer(model: PerceiverActorCritic) -> None:
    """q_mixer adds nothing: each token leaves it as it came (residual only), so the readout token carries no
    action at all and only a head that reads the action tokens themselves can see one."""
    with torch.no_grad():
        for layer in (model.q_mixer.attn.out, model.q_mixer.mlp[2]):
            layer.weight.zero_()
            layer.bias.zero_()


@pytest.mark.parametrize(("q_readout", "sees_the_action"), [("readout", False), ("all_tokens", True)])
def test_an_all_tokens_critic_sees_every_action_dimension_whatever_its_mixer_attends_to(q_readout, sees_the_action):
    model = build_model(size_config("XS", q_readout=q_readout), STATE_OBS, ACT).eval()
    _silence_mixer(model)
    with torch.no_grad():
        z = model.encode(_state_inputs(batch=2))
        for dim in range(ACT.size):  # each dimension alone, from its low to its high end
            actions = torch.zeros(2, 2, ACT.size)
            actions[:, 0, dim], actions[:, 1, dim] = ACT.low[dim], ACT.high[dim]
            q = model.q_logits(z, actions)
            assert torch.allclose(q[:, 0], q[:, 1], atol=1e-6) != sees_the_action, ACT.dims[dim]


def test_readout_attention_weights_are_the_mixer_s_and_sum_to_one():
    model = build_model(size_config("XS"), STATE_OBS, ACT).eval()
    with torch.no_grad():
        fused = model.q_fused(model.encode(_state_inputs(batch=3)), torch.zeros(3, 2, ACT.size))
        w = model.q_mixer.attention_weights(fused)
        # the weights reproduce the block's attention output
        attn = model.q_mixer.attn
        values = attn.kv(model.q_mixer.norm_q(fused))[..., attn.out.in_features :]
        b, n, d = fused.shape
        values = values.reshape(b, n, attn.heads, d // attn.heads).transpose(1, 2)
        expected = attn.out((w @ values).transpose(1, 2).reshape(b, n, d))
        torch.testing.assert_close(expected, attn(model.q_mixer.norm_q(fused), model.q_mixer.norm_q(fused)))
    assert w.shape == (3 * 2, model.config.heads, ACT.size + 1, ACT.size + 1)
    torch.testing.assert_close(w.sum(-1), torch.ones(6, model.config.heads, ACT.size + 1))


def test_an_unknown_critic_readout_is_refused():
    with pytest.raises(ValueError, match="q_readout"):
        size_config("XS", q_readout="mean")


@pytest.mark.parametrize("size", ["XS", "S"])
@pytest.mark.parametrize("overrides", [{"q_readout": "all_tokens"}, {"position_inputs": "relative"}])
def test_analytic_flops_of_critic_variants_equal_torch_flop_counter(size, overrides):
    config = size_config(size, **overrides)
    with torch.device("meta"):
        model = PerceiverActorCritic(config, STATE_OBS, ACT)
        inputs = {k: v.to("meta") for k, v in _state_inputs().items()}
        with FlopCounterMode(display=False) as critic:
            CriticGraph(model)(*(inputs[k] for k in STATE_OBS.modalities), torch.zeros(1, 16, ACT.size))
    assert critic.get_total_flops() == critic_flops(config, STATE_OBS, ACT, 16)


def _shifted(inputs: dict[str, torch.Tensor], joints: torch.Tensor, shift: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same scene somewhere else: other joint angles, the TCP and every object moved by `shift` (xyz), every
    object turned (its quaternion replaced), so each object's offset from the TCP is unchanged."""
    proprio, objects = inputs["proprio"].clone(), inputs["objects"].clone()
    jp, tcp = STATE_OBS.proprio_offset("joint_pos"), STATE_OBS.proprio_offset("tcp_pos")
    proprio[:, jp : jp + 7] = joints
    proprio[:, tcp : tcp + 3] += shift
    objects[..., :3] += shift
    objects[..., 3:] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    return {**inputs, "proprio": proprio, "objects": objects}


@pytest.mark.parametrize(("position_inputs", "invariant"), [("absolute", False), ("relative", True)])
def test_relative_position_inputs_see_only_where_objects_are_from_the_tcp(position_inputs, invariant):
    model = build_model(size_config("XS", position_inputs=position_inputs), STATE_OBS, ACT).eval()
    inputs = _state_inputs(batch=2)
    moved = _shifted(inputs, torch.randn(2, 7), torch.tensor([0.1, -0.05, 0.02]))
    actions = torch.zeros(2, 3, ACT.size)
    with torch.no_grad():
        same_actor = torch.allclose(model(inputs), model(moved), atol=1e-5)
        q, q_moved = (model.q_logits(model.encode(x), actions) for x in (inputs, moved))
        assert same_actor == invariant and torch.allclose(q, q_moved, atol=1e-5) == invariant
        # an object's offset from the TCP is read either way
        closer = {**inputs, "objects": inputs["objects"].clone()}
        closer["objects"][:, 0, 0] += 0.05
        assert not torch.allclose(model(inputs), model(closer), atol=1e-5)


def test_relative_position_inputs_need_tracked_objects_and_no_camera():
    with pytest.raises(ValueError, match="relative position inputs"):
        build_model(size_config("XS", position_inputs="relative"), OBS, ACT)
    with pytest.raises(ValueError, match="position_inputs"):
        size_config("XS", position_inputs="polar")


def test_relative_position_inputs_keep_the_state_dict_of_an_absolute_model():
    """Checkpoints and exported weights carry the same tensors whatever a model reads (the mask is not saved)."""
    relative = build_model(size_config("XS", position_inputs="relative"), STATE_OBS, ACT)
    absolute = build_model(size_config("XS"), STATE_OBS, ACT)
    changed = {k for k, v in relative.state_dict().items() if v.shape != absolute.state_dict()[k].shape}
    assert set(relative.state_dict()) == set(absolute.state_dict()) and changed == {"object_encoder.mlp.0.weight"}

"""Prioritised sampling: transitions are drawn in proportion to their TD error, the TD loss is corrected by
importance weights, and the draws are a function of (seed, rank, step, errors) alone, so loader workers and a
resume from a checkpoint change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policies.data.collect import collect, dataset_id, write_dataset
from policies.data.priority import (
    PRIORITY_DELAY,
    PRIORITY_FLOOR,
    PrioritySampler,
    annealed_beta,
    importance_weights,
    sampling_probabilities,
)
from policies.data.transitions import TransitionConfig, TransitionDataset, transition_loader
from policies.train.cli import main as pac_train
from policies.train.config import TrainConfig
from policies.train.objective import Targets, entropy
from tests.test_data import synthetic_episode

DID = dataset_id("sawyer", "stack", "mixed")
LENGTHS = (30, 40, 25, 35)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("priority")
    write_dataset([synthetic_episode(i, n, True) for i, n in enumerate(LENGTHS)], root, "sawyer", "stack", "mixed")
    return root


@pytest.fixture(scope="module")
def data(root):
    return TransitionDataset(root, DID, TransitionConfig(batch_size=16, seed=4))


# ------------------------------------------------------------------ pure parts
def test_probabilities_follow_the_errors_and_unvisited_transitions_rank_with_the_largest():
    errors = np.array([0.0, 1.0, 3.0, np.nan])
    p = sampling_probabilities(errors, 1.0)
    expected = np.array([0.0, 1.0, 3.0, 3.0]) + PRIORITY_FLOOR
    np.testing.assert_allclose(p, expected / expected.sum())
    np.testing.assert_allclose(sampling_probabilities(errors, 0.5), np.sqrt(expected) / np.sqrt(expected).sum())
    np.testing.assert_allclose(sampling_probabilities(np.full(5, np.nan), 0.6), np.full(5, 0.2))  # nothing seen yet


@pytest.mark.parametrize(
    ("p_drawn", "p_min", "beta", "expected"),
    [
        ([0.1, 0.4], 0.1, 1.0, [1.0, 0.25]),  # β 1: weights undo the sampling exactly
        ([0.1, 0.4], 0.1, 0.5, [1.0, 0.5]),
        ([0.1, 0.4], 0.1, 0.0, [1.0, 1.0]),  # β 0: no correction
    ],
)
def test_importance_weights_are_normalised_by_the_least_likely_transition(p_drawn, p_min, beta, expected):
    np.testing.assert_allclose(importance_weights(np.array(p_drawn), p_min, beta), expected, rtol=1e-6)


def test_beta_anneals_to_one_at_the_last_step():
    assert annealed_beta(0.4, 0, 100) == 0.4 and annealed_beta(0.4, 50, 100) == pytest.approx(0.7)
    assert annealed_beta(0.4, 100, 100) == annealed_beta(0.4, 150, 100) == 1.0


def test_the_td_error_is_zero_where_the_critic_predicts_its_target():
    target = torch.tensor([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    cross_entropy = -(target * torch.log(target.clamp_min(1e-30))).sum(-1)  # Z equal to the target
    torch.testing.assert_close(cross_entropy - entropy(target), torch.zeros(2))


def test_priority_needs_a_critic_and_sane_constants():
    with pytest.raises(ValueError, match="needs a critic"):
        TrainConfig(dataset="d", algo="bc", priority=0.6)
    with pytest.raises(ValueError, match="priority_correction"):
        TrainConfig(dataset="d", priority=0.6, priority_correction=1.5)


# ------------------------------------------------------------------ the sampler
def _feed(sampler: PrioritySampler, step: int, draw, errors: np.ndarray) -> None:
    sampler.update(step, draw.indices, errors[draw.indices])


def test_draws_follow_the_errors_once_they_arrive_and_the_weights_undo_it(data):
    sampler = PrioritySampler(data, exponent=1.0, correction=1.0, steps=10_000)
    errors = np.full(len(data), 0.01)
    hot = np.arange(10)  # ten transitions the critic gets badly wrong
    errors[hot] = 5.0
    counts = np.zeros(len(data))
    for step in range(1, 2001):
        draw = sampler.draw(step)
        _feed(sampler, step, draw, errors)
        if step > 2 * PRIORITY_DELAY:  # every transition has been seen by then or ranks as the largest error
            np.add.at(counts, draw.indices, 1)
    share = counts[hot].sum() / counts.sum()
    p = sampling_probabilities(errors, 1.0)
    assert share == pytest.approx(p[hot].sum(), abs=0.02)  # 10 of 130 transitions, ~97 % of the draws
    w = sampler.draw(2001).weights
    assert w.max() <= 1.0 and w.min() == pytest.approx(p.min() / p.max(), rel=1e-5)  # β 1: (P_min / P_i)


def test_an_error_reaches_the_draws_exactly_after_the_delay(data):
    def run(update_at: int) -> list[np.ndarray]:
        sampler = PrioritySampler(data, exponent=1.0, correction=0.4, steps=1000)
        drawn = []
        for step in range(1, 60):
            draw = sampler.draw(step)
            drawn.append(draw.indices)
            errors = np.full(len(draw.indices), 10.0 if step == update_at else 0.5)
            sampler.update(step, draw.indices, errors)
        return drawn

    a, b = run(update_at=20), run(update_at=0)
    first_different = next(i + 1 for i, (x, y) in enumerate(zip(a, b, strict=True)) if not np.array_equal(x, y))
    assert first_different == 20 + PRIORITY_DELAY


def test_a_missing_update_is_an_error_not_a_silent_stale_draw(data):
    sampler = PrioritySampler(data, exponent=0.6, correction=0.4, steps=100)
    for step in range(1, PRIORITY_DELAY + 1):
        sampler.draw(step)  # never updated
    with pytest.raises(RuntimeError, match="step 1's TD errors never reached the sampler"):
        sampler.draw(PRIORITY_DELAY + 1)


def test_a_restored_sampler_draws_what_the_original_does(data):
    rng = np.random.default_rng(0)
    errors = rng.exponential(size=len(data))
    original = PrioritySampler(data, 0.6, 0.4, 500)
    for step in range(1, 41):
        _feed(original, step, original.draw(step), errors)
    restored = PrioritySampler(data, 0.6, 0.4, 500)
    restored.load_state_tensors(original.state_tensors())
    for step in range(41, 81):
        a, b = original.draw(step), restored.draw(step)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)
        _feed(original, step, a, errors)
        _feed(restored, step, b, errors)


def test_loader_workers_draw_the_same_batches_and_too_deep_a_prefetch_is_refused(data):
    rng = np.random.default_rng(1)
    errors = rng.exponential(size=len(data))

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = PrioritySampler(data, 0.6, 0.4, 100)
        loader = transition_loader(data, workers, sampler)
        out = []
        for epoch in range(3):  # 8 batches an epoch, 24 steps: past the delay
            loader.sampler.set_epoch(epoch)
            for b, batch in enumerate(loader):
                step = epoch * data.num_batches + b + 1
                sampler.update(step, batch.index.numpy(), errors[batch.index.numpy()])
                out.append(torch.cat([batch.index.float(), batch.weight]))
        return out

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 3 * data.num_batches > PRIORITY_DELAY
    for a, b in zip(serial, parallel, strict=True):
        assert a.equal(b)
    with pytest.raises(ValueError, match="draws 16 ahead"):
        transition_loader(data, 4, PrioritySampler(data, 0.6, 0.4, 100), prefetch_factor=4)


def test_the_td_loss_takes_the_importance_weights():
    """Weights of 1 are the plain mean; a zero weight removes a transition from the TD loss."""
    from policies.model.config import size_config
    from policies.model.perceiver import build_model
    from policies.spec import action_spec, observation_spec, scene_objects
    from policies.train.objective import PolicyCriticLoss
    from robots.spec import load_spec

    arm = load_spec("sawyer")
    spec = observation_spec(arm, cameras=(), objects=scene_objects(arm))
    model = build_model(size_config("XS"), spec, action_spec(arm), seed=0)
    loss = PolicyCriticLoss(model, alpha=1.0, beta=1.0)
    g = torch.Generator().manual_seed(0)
    obs = {
        "proprio": torch.randn(4, spec.proprio_size, generator=g),
        "objects": torch.randn(4, *spec.objects_shape, generator=g),
        "instruction": torch.zeros(4, spec.instruction_length, dtype=torch.int64),
    }
    action = torch.zeros(4, len(model.action_spec.dims))
    target = torch.softmax(torch.randn(4, model.config.q_bins, generator=g), dim=-1)
    t = Targets(target, None, None)
    plain = loss(obs, action, t)
    ones = loss(obs, action, t, td_weight=torch.ones(4))
    torch.testing.assert_close(plain["td"], ones["td"])
    assert (plain["td_error"] >= -1e-6).all()
    first_only = loss(obs, action, t, td_weight=torch.tensor([4.0, 0.0, 0.0, 0.0]))
    cross_entropy = plain["td_error"] + entropy(target)
    torch.testing.assert_close(first_only["td"], cross_entropy[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ pac-train
def test_a_prioritised_run_resumes_bit_for_bit(tmp_path):
    write_dataset(
        collect("sawyer", "stack", "rl_like", 3, cameras=()), tmp_path, "sawyer", "stack", "rl_like", cameras=()
    )
    common = ["--set", "log_every=10", "--set", "eval_every=50", "--set", "warmup_steps=5", "--threads", "1"]
    args = ["--algo", "pac", "--steps", "40", "--batch-size", "16", "--set", "checkpoint_every=20"]
    args += ["--set", "priority=0.6", "--set", "holdout=0"]
    source = tmp_path / dataset_id("sawyer", "stack", "rl_like")
    assert pac_train(["--dataset", str(source), "--out", str(tmp_path / "straight"), *common, *args]) == 0
    assert (
        pac_train(["--dataset", str(source), "--out", str(tmp_path / "split"), *common, *args, "--stop-at", "20"]) == 0
    )
    assert pac_train(["--resume", str(tmp_path / "split")]) == 0
    for group in ("model", "optimizer", "sampler"):
        a = load_file(str(tmp_path / "straight/checkpoints/step_0000040" / f"{group}.safetensors"))
        b = load_file(str(tmp_path / "split/checkpoints/step_0000040" / f"{group}.safetensors"))
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)  # NaN: not yet visited
    errors = load_file(str(tmp_path / "straight/checkpoints/step_0000040/sampler.safetensors"))["r0.errors"]
    assert torch.isfinite(errors).any() and (errors[torch.isfinite(errors)] >= -1e-6).all()

"""pac-train end to end on small collected datasets (state and vision), and the objective's pure parts.

The tiny runs are what CI can afford: XS, a few hundred steps. They check what a user relies on: losses fall,
a run resumed from a checkpoint is bit for bit the uninterrupted one, the run exports to a servable ONNX file
with its training provenance, and DDP (torchrun, gloo, 2 processes) computes one process's gradient.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policies.data.collect import collect, dataset_id, write_dataset
from policies.export.cli import main as pac_export
from policies.train.checkpoint import recorded_threads
from policies.train.cli import main as pac_train
from policies.train.objective import (
    action_bins,
    bin_values,
    distribution_cross_entropy,
    entropy,
    improvement_weights,
    log_likelihood,
    lower_tail_mean,
    project_distribution,
    sample_bins,
)
from policies.train.schedule import learning_rate
from runtime.inference.loader import load_policy, read_metadata
from runtime.inference.providers import SessionConfig

ROOT = Path(__file__).resolve().parents[1]
CPU_ONLY = SessionConfig(device="cpu")


# ------------------------------------------------------------------ pure parts
VALUES = torch.linspace(0.0, 1.0, 11)


@pytest.mark.parametrize(
    ("reward", "discount", "next_bin", "expected"),
    [
        (0.0, 1.0, 4, {4: 1.0}),  # nothing happens: the distribution is copied
        (0.5, 0.0, 9, {5: 1.0}),  # a terminal step: all mass on the reward
        (0.05, 1.0, 4, {4: 0.5, 5: 0.5}),  # half a bin up: split evenly
        (0.9, 1.0, 8, {10: 1.0}),  # beyond the top: clipped to the last bin
        (0.0, 0.5, 10, {5: 1.0}),  # discounting shrinks towards 0
    ],
)
def test_distributional_target_projection(reward, discount, next_bin, expected):
    probs = torch.zeros(1, 11)
    probs[0, next_bin] = 1.0
    out = project_distribution(probs, torch.tensor([reward]), torch.tensor([discount]), VALUES)[0]
    want = torch.zeros(11)
    for k, v in expected.items():
        want[k] = v
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)


def test_projection_conserves_mass_and_the_mean_when_inside_the_support():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 11, generator=g), dim=-1)
    reward, discount = torch.rand(64, generator=g) * 0.2, torch.full((64,), 0.8)
    out = project_distribution(probs, reward, discount, VALUES)
    torch.testing.assert_close(out.sum(-1), torch.ones(64))
    torch.testing.assert_close((out * VALUES).sum(-1), reward + discount * (probs * VALUES).sum(-1))


def test_action_bins_round_trip_and_sampled_actions_follow_the_policy():
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 1.0])
    idx = torch.tensor([[0, 100], [50, 37]])
    torch.testing.assert_close(action_bins(bin_values(idx, low, high, 101), low, high, 101), idx)
    logits = torch.full((1, 2, 101), -30.0)
    logits[0, 0, 7], logits[0, 1, 93] = 30.0, 30.0  # a near-deterministic policy
    bins = sample_bins(logits, 5, torch.Generator().manual_seed(0))
    assert bins.shape == (1, 5, 2) and (bins[0, :, 0] == 7).all() and (bins[0, :, 1] == 93).all()
    assert log_likelihood(logits, bins).abs().max() < 1e-6  # log 1 per dimension


def test_per_state_temperature_reweights_however_small_the_spread_of_q():
    tiny = torch.tensor([[0.300, 0.301, 0.302, 0.303]])  # Q nearly flat, as early in training
    fixed, _ = improvement_weights(tiny, 0.05, per_state=False)
    assert fixed.max() < 1.1 * fixed.min()  # a fixed η leaves the weights nearly uniform
    scaled, spread = improvement_weights(tiny, 1.0, per_state=True)
    same, _ = improvement_weights(tiny * 100, 1.0, per_state=True)  # the same ranking at another scale
    torch.testing.assert_close(scaled, same)
    assert scaled[0, 3] > 3 * scaled[0, 0] and torch.isclose(spread[0], tiny.std())
    flat, _ = improvement_weights(torch.full((1, 4), 0.5), 1.0, per_state=True)  # no spread: uniform, finite
    torch.testing.assert_close(flat, torch.full((1, 4), 0.25))


@pytest.mark.parametrize(
    ("probs", "fraction", "expected"),
    [
        ([0.0, 0.0, 1.0], 0.3, 1.0),  # all the mass at one value: every tail is that value
        ([0.5, 0.0, 0.5], 1.0, 0.5),  # fraction 1: the mean
        ([0.5, 0.0, 0.5], 0.5, 0.0),  # the lower half is all at 0
        ([0.5, 0.0, 0.5], 0.75, 1 / 3),  # 0.5 at 0 and 0.25 at 1, over 0.75
        ([0.2, 0.6, 0.2], 0.5, (0.2 * 0.0 + 0.3 * 0.5) / 0.5),  # the tail cuts a bin in part
    ],
)
def test_lower_tail_mean_is_the_mean_of_the_distributions_lowest_fraction(probs, fraction, expected):
    values = torch.tensor([0.0, 0.5, 1.0])
    logits = torch.tensor(probs).clamp_min(1e-12).log()
    assert lower_tail_mean(logits, values, fraction).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("target", "probs"),
    [
        ([0.0, 1.0, 0.0], [0.25, 0.5, 0.25]),  # a point target: −log of the prediction's mass there
        ([0.3, 0.7, 0.0], [0.3, 0.7, 0.0]),  # the prediction is the target: its entropy, no more
        ([0.5, 0.0, 0.5], [0.1, 0.8, 0.1]),
    ],
)
def test_distribution_cross_entropy_is_the_targets_entropy_plus_its_kl_to_the_prediction(target, probs):
    t, p = torch.tensor(target), torch.tensor(probs).clamp_min(1e-12)
    kl = (t * (t.clamp_min(1e-30) / p).log()).sum()
    logits = p.log() + 3.0  # a shift of the logits changes nothing
    assert distribution_cross_entropy(t, logits).item() == pytest.approx((entropy(t) + kl).item(), abs=1e-5)
    assert distribution_cross_entropy(t, logits.to(torch.bfloat16)).dtype == torch.float32  # autocast's logits


def test_lower_tail_mean_ranks_a_spread_action_below_a_sure_one_of_the_same_mean():
    values = torch.linspace(0.0, 1.0, 11)
    sure = torch.full((11,), -30.0)
    sure[6] = 0.0  # always 0.6
    spread = torch.full((11,), -30.0)
    spread[2], spread[10] = 0.0, 0.0  # 0.2 or 1.0: mean 0.6
    logits = torch.stack([sure, spread])
    mean, tail = lower_tail_mean(logits, values, 1.0), lower_tail_mean(logits, values, 0.25)
    assert mean[0].item() == pytest.approx(mean[1].item(), abs=1e-4)  # the paper's score cannot tell them apart
    assert tail[0] > tail[1] + 0.3
    with pytest.raises(ValueError, match="fraction"):
        lower_tail_mean(logits, values, 0.0)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1e-5), (50, 0.5 * (1e-5 + 1e-3)), (100, 1e-3), (550, 0.5 * (1e-3 + 1e-6)), (1000, 1e-6)],
)
def test_learning_rate_warms_up_linearly_then_follows_a_cosine(step, expected):
    assert math.isclose(learning_rate(step, 1000, 100, 1e-5, 1e-3, 1e-6), expected, rel_tol=1e-9)


# ------------------------------------------------------------------ datasets and runs
@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    state = collect("sawyer", "stack", "rl_like", 6, cameras=())
    write_dataset(state, root / "state", "sawyer", "stack", "rl_like", cameras=())
    vision = collect("sawyer", "stack", "expert", 2, cameras=("front_left",), objects=False)
    write_dataset(vision, root / "vision", "sawyer", "stack", "expert", cameras=("front_left",), objects=False)
    return {
        "state": root / "state" / dataset_id("sawyer", "stack", "rl_like"),
        "vision": root / "vision" / dataset_id("sawyer", "stack", "expert"),
    }


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _train(dataset: Path, out: Path, *extra: str) -> int:
    common = ["--set", "log_every=10", "--set", "eval_every=50", "--set", "warmup_steps=20", "--threads", "1"]
    return pac_train(["--dataset", str(dataset), "--out", str(out), *common, *extra])


def test_pac_on_state_observations_lowers_its_losses_and_exports_a_servable_policy(datasets, tmp_path):
    run = tmp_path / "pac"
    assert _train(datasets["state"], run, "--algo", "pac", "--steps", "200", "--batch-size", "32") == 0
    rows = _rows(run)
    trained, held = [r for r in rows if r.get("train/bc")], [r for r in rows if r.get("held_out/bc")]
    assert held[0]["step"] == "0" and held[-1]["step"] == "200"
    first, last = trained[0], {**trained[-1], **held[-1]}
    assert float(last["train/bc"]) < 0.8 * float(first["train/bc"])
    # The TD cross-entropy cannot fall below the target's own entropy, which starts near log(101) (a uniform
    # critic); learning shows as the held-out TD loss going below a uniform critic's.
    assert float(last["held_out/td"]) < math.log(101) - 0.02
    assert float(last["held_out/bc"]) < 0.8 * float(held[0]["held_out/bc"])
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard events written"
    info = json.loads((run / "run.json").read_text())
    assert info["dataset"]["sha256"] and info["train"]["algo"] == "pac" and info["observation_spec"]["objects"]

    assert pac_export(["--checkpoint", str(run), "--variants", "fp32", "--critic"]) == 0
    actor = run / "export" / "pac_XS_sawyer.onnx"
    meta = read_metadata(actor)
    assert meta.provenance["training"]["dataset"]["sha256"] == info["dataset"]["sha256"]
    assert meta.provenance["training"]["step"] == 200 and "pac-train" in meta.provenance["training"]["command"]
    assert meta.provenance["training"]["world_size"] == 1  # with the command's per-process batch: the global one
    policy = load_policy(actor, meta.observation, meta.action, CPU_ONLY)
    assert policy.metadata.observation.modalities == ("proprio", "objects", "instruction")
    assert (run / "export" / "pac_XS_sawyer_critic.onnx").is_file()


def test_vision_observations_train_through_the_same_code(datasets, tmp_path):
    run = tmp_path / "bc_vision"
    assert _train(datasets["vision"], run, "--algo", "bc", "--observation", "vision", "--steps", "60",
                  "--batch-size", "16") == 0  # fmt: skip
    rows = [r for r in _rows(run) if r.get("train/bc")]
    assert float(rows[-1]["train/bc"]) < float(rows[0]["train/bc"])
    info = json.loads((run / "run.json").read_text())
    assert info["observation_spec"]["cameras"] == ["front_left"] and not info["observation_spec"]["objects"]


@pytest.mark.parametrize("algo", ["bc_q", "filtered_bc"])
def test_the_baselines_run(datasets, tmp_path, algo):
    run = tmp_path / algo
    assert _train(datasets["state"], run, "--algo", algo, "--steps", "20", "--batch-size", "16") == 0
    info = json.loads((run / "run.json").read_text())
    if algo == "filtered_bc":  # successful episodes only
        assert info["dataset"]["train_episodes"] < info["dataset"]["episodes"]
    assert bool(_rows(run)[-1].get("train/td")) == (algo == "bc_q")


def test_a_resumed_run_is_bit_for_bit_the_uninterrupted_one(datasets, tmp_path):
    args = ["--algo", "pac", "--steps", "40", "--batch-size", "16", "--set", "checkpoint_every=20"]
    assert _train(datasets["state"], tmp_path / "straight", *args) == 0
    assert _train(datasets["state"], tmp_path / "split", *args, "--stop-at", "20") == 0
    # resumed without --threads, in a process now on another count: the run's own (1) is what it continues on
    torch.set_num_threads(2)
    assert pac_train(["--resume", str(tmp_path / "split")]) == 0
    assert torch.get_num_threads() == 1
    info = json.loads((tmp_path / "split" / "run.json").read_text())
    assert info["threads"] == 1 and info["resumed"][-1]["threads"] == 1
    for group in ("model", "target", "optimizer", "rng"):
        a = load_file(str(tmp_path / "straight/checkpoints/step_0000040" / f"{group}.safetensors"))
        b = load_file(str(tmp_path / "split/checkpoints/step_0000040" / f"{group}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{group}.{k} differs after resume"


def test_recorded_threads_reads_run_json_or_an_older_runs_command_line():
    assert recorded_threads({"threads": 3, "command": "pac-train --threads 1"}) == 3
    assert recorded_threads({"command": "pac-train --dataset d --threads 2 --out r"}) == 2
    assert recorded_threads({"command": "pac-train --dataset d --out r"}) is None


def test_resume_refuses_a_changed_dataset_and_a_fresh_run_refuses_an_existing_directory(datasets, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(datasets["state"], run, "--algo", "bc", "--steps", "5", "--batch-size", "8") == 0
    assert _train(datasets["state"], run, "--algo", "bc", "--steps", "5") == 2
    assert "--resume" in capsys.readouterr().err
    info = json.loads((run / "run.json").read_text())
    info["dataset"]["sha256"] = "0" * 64
    (run / "run.json").write_text(json.dumps(info))
    assert pac_train(["--resume", str(run), "--steps", "10"]) == 2
    assert "sha256" in capsys.readouterr().err


def test_ddp_on_two_processes_gives_one_process_gradient(tmp_path):
    script = str(ROOT / "tests" / "ddp_first_step.py")
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, script, str(one)], check=True, env=env, timeout=120)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, str(two)],
        check=True,
        env=env,
        timeout=180,
    )
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys() and len(a) > 10
    # Float sums in another order (two half-batch means averaged by gloo): differences of ~1e-6 on gradients of
    # ~1e-2. A missing all-reduce or a sum instead of a mean would be off by tens of percent.
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-3, msg=lambda m, k=k: f"{k}: {m}")
    assert any(float(v.abs().max()) > 0 for v in a.values())
    np.testing.assert_equal(sorted(a), sorted(b))


def test_pac_train_on_two_ddp_processes_resumes_bit_for_bit(datasets, tmp_path):
    """pac-train itself under torchrun (gloo, 2 processes): the leader's held-out losses use no collective, and a
    checkpoint holds every rank's random state and prioritised sampler, so a resumed run is the uninterrupted one."""
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    args = ["--dataset", str(datasets["state"]), "--algo", "pac", "--steps", "28", "--batch-size", "16"]
    args += ["--threads", "1", "--set", "checkpoint_every=20", "--set", "eval_every=10", "--set", "warmup_steps=4"]
    args += ["--set", "priority=0.6"]  # the priorities reach the draws from step 17 on: before and after the split

    def torchrun(*extra: str) -> None:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        subprocess.run([*command, "-m", "policies.train.cli", *extra], check=True, env=env, timeout=300)

    torchrun(*args, "--out", str(tmp_path / "straight"))
    torchrun(*args, "--out", str(tmp_path / "split"), "--stop-at", "20")
    torchrun("--resume", str(tmp_path / "split"))
    for group in ("model", "optimizer", "rng", "sampler"):
        a = load_file(str(tmp_path / "straight/checkpoints/step_0000028" / f"{group}.safetensors"))
        b = load_file(str(tmp_path / "split/checkpoints/step_0000028" / f"{group}.safetensors"))
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True, msg=f"{group}.{k} differs")
    assert {"r0.errors", "r1.errors"} <= a.keys()
    held = [r for r in _rows(tmp_path / "split") if r.get("held_out/td")]
    assert [r["step"] for r in held] == ["0", "10", "20", "28"]
    from benchmarks.priority_shares import priority_shares  # where the draws go, read back from rank 0's state

    shares = priority_shares(tmp_path / "straight")
    outcome = [shares["kinds"][k] for k in ("successful episode", "failed episode")]
    assert sum(k["rows"] for k in outcome) == shares["rows"] and 0.0 < shares["visited"] < 1.0
    assert sum(k["draw_share"] for k in outcome) == pytest.approx(1.0)
    assert sum(k["data_share"] for k in outcome) == pytest.approx(1.0)


def test_bc_can_clone_the_successful_episodes_only_while_the_critic_sees_all(datasets, tmp_path):
    """`--set bc_data=successes` (issue 11's probe): each batch says which transitions come from a successful
    episode, the α·BC term averages over those only (0 in a batch with none), and a PAC run trains with it."""
    from policies.data.dataset import locate_dataset
    from policies.data.episodes import EpisodeReader
    from policies.data.transitions import TransitionDataset
    from policies.model.config import size_config
    from policies.model.perceiver import build_model
    from policies.spec import action_spec
    from policies.train.config import TrainConfig
    from policies.train.data import observation_for
    from policies.train.learner import Learner
    from robots.spec import load_spec

    root, did = locate_dataset(datasets["state"])
    reader = EpisodeReader(root, did)
    successes = reader.successes()
    assert successes.any() and not successes.all()  # the fixture's rl_like data has both
    data = TransitionDataset(root, did)
    everything = np.arange(len(data))
    owners, _ = data.episode_of(everything)
    assert data[everything].success.numpy().tolist() == successes[owners].tolist()

    spec = observation_for("state", "sawyer", reader)
    model = build_model(size_config("XS"), spec, action_spec(load_spec("sawyer")), seed=0)
    learner = Learner(TrainConfig(dataset=str(datasets["state"]), bc_data="successes"), model, torch.device("cpu"))
    learner.model.eval()
    won_rows, lost_rows = np.flatnonzero(successes[owners])[:8], np.flatnonzero(~successes[owners])[:8]
    rows = np.concatenate([won_rows, lost_rows])
    batch, won = data[rows], data[rows[:8]]

    def bc(b, mask) -> float:
        with torch.no_grad():
            return float(learner.loss(b.observation, b.action, learner._targets(b), mask)["bc"])

    mask = learner._bc_mask(batch, learner._targets(batch))
    assert bc(batch, mask) == pytest.approx(bc(won, None), rel=1e-5)  # the successful 8 alone
    assert bc(batch, torch.zeros(16, dtype=torch.bool)) == 0.0  # none to clone: no BC term
    assert bc(batch, torch.ones(16, dtype=torch.bool)) == pytest.approx(bc(batch, None), rel=1e-6)

    run = tmp_path / "pac_bc_successes"
    assert _train(datasets["state"], run, "--algo", "pac", "--steps", "20", "--batch-size", "16",
                  "--set", "bc_data=successes") == 0  # fmt: skip
    assert json.loads((run / "run.json").read_text())["train"]["bc_data"] == "successes"


def test_bc_can_clone_the_transitions_with_a_positive_n_step_advantage(datasets, tmp_path):
    """`--set bc_data=advantage`: the α·BC term clones the transitions whose TD target's mean exceeds the target
    network's V(s) (the mean E[Z] of its sampled actions at s), computed here by hand; it needs a critic."""
    from policies.train.config import TrainConfig
    from policies.train.learner import Learner
    from policies.train.objective import Targets, expected_value, support

    model, act, batch = _untrained_xs(datasets)
    learner = Learner(TrainConfig(dataset=str(datasets["state"]), bc_data="advantage"), model, torch.device("cpu"))
    t = learner._targets(batch)
    values = support(model)
    with torch.no_grad():
        z = learner.target.encode(batch.observation)
        sampled = bin_values(t.improve_bins, model.action_low, model.action_high, act.bins)
        v = expected_value(learner.target.q_logits(z, sampled), values).mean(dim=-1)
    expected = (t.td_target * values).sum(dim=-1) - v
    torch.testing.assert_close(t.advantage, expected)
    mask = learner._bc_mask(batch, t)
    assert torch.equal(mask, expected > 0)
    kept = torch.nonzero(mask).flatten()
    bc_only = Targets(None, None, None)  # the BC term alone, on any rows
    with torch.no_grad():
        masked = learner.loss(batch.observation, batch.action, bc_only, mask)["bc"]
        alone = learner.loss({k: v[kept] for k, v in batch.observation.items()}, batch.action[kept], bc_only)["bc"]
    if len(kept):
        torch.testing.assert_close(masked, alone)
    with pytest.raises(ValueError, match="needs a critic"):
        TrainConfig(dataset="d", algo="bc", bc_data="advantage")

    run = tmp_path / "pac_bc_advantage"
    assert _train(datasets["state"], run, "--algo", "pac", "--steps", "20", "--batch-size", "16",
                  "--set", "bc_data=advantage") == 0  # fmt: skip
    with (run / "metrics.csv").open() as f:
        kept_share = [float(r["train/bc_kept"]) for r in csv.DictReader(f) if r.get("train/bc_kept")]
    assert kept_share and all(0.0 <= k <= 1.0 for k in kept_share)

    from benchmarks.advantage_filter import Filter, advantage_shares, moment_shares  # what it keeps

    shares = advantage_shares(Filter.load(run), rows=64)
    assert shares["all"]["rows"] == shares["successful"]["rows"] + shares["failed"]["rows"] == 64
    by_outcome = sum(shares[o]["kept"] * shares[o]["rows"] for o in ("successful", "failed") if shares[o]["rows"])
    assert shares["all"]["kept"] * 64 == pytest.approx(by_outcome)
    moments = moment_shares(Filter.load(run), episodes=4)  # the fixture's episodes grasp: they are found and read
    assert moments["grasp"]["rows"] > 0 and 0.0 <= moments["grasp"]["kept"] <= 1.0


def _untrained_xs(datasets: dict[str, Path]):
    """(an untrained XS model for the state dataset, the Sawyer's action spec, a batch of its first 16 transitions)."""
    from policies.data.dataset import locate_dataset
    from policies.data.episodes import EpisodeReader
    from policies.data.transitions import TransitionDataset
    from policies.model.config import size_config
    from policies.model.perceiver import build_model
    from policies.spec import action_spec
    from policies.train.data import observation_for
    from robots.spec import load_spec

    root, did = locate_dataset(datasets["state"])
    spec = observation_for("state", "sawyer", EpisodeReader(root, did))
    act = action_spec(load_spec("sawyer"))
    model = build_model(size_config("XS"), spec, act, seed=0).eval()
    return model, act, TransitionDataset(root, did)[np.arange(16)]


def test_the_improvement_scores_sampled_actions_by_the_configured_tail_of_the_critic(datasets):
    """`--set improvement_cvar=0.25` (issue 11): the same sampled actions, weighted by the mean of the lowest
    quarter of each one's return distribution rather than by its mean."""
    from policies.train.config import TrainConfig
    from policies.train.learner import Learner
    from policies.train.objective import support

    model, act, batch = _untrained_xs(datasets)

    def targets_with(cvar: float):
        config = TrainConfig(dataset=str(datasets["state"]), improvement_cvar=cvar)
        return Learner(config, model, torch.device("cpu"))._targets(batch)

    mean, tail = targets_with(1.0), targets_with(0.25)
    assert torch.equal(mean.improve_bins, tail.improve_bins)  # the same samples, scored otherwise
    with torch.no_grad():
        z = model.encode(batch.observation)
        q_logits = model.q_logits(z, bin_values(tail.improve_bins, model.action_low, model.action_high, act.bins))
    expected, _ = improvement_weights(lower_tail_mean(q_logits, support(model), 0.25), 1.0, per_state=True)
    torch.testing.assert_close(tail.improve_weights, expected)
    assert not torch.allclose(tail.improve_weights, mean.improve_weights)
    with pytest.raises(ValueError, match="improvement_cvar"):
        TrainConfig(dataset="x", improvement_cvar=0.0)


def test_a_conservative_critic_adds_the_gap_between_sampled_and_data_actions_values(datasets):
    """`--set conservative=W` (issue 11): total = policy + β·TD + W·(mean E[Z(s, a_i ~ π_target)] − E[Z(s, a_data)]),
    also for BC+Q, whose targets then sample actions though its policy loss stays pure BC."""
    from policies.train.config import TrainConfig
    from policies.train.learner import Learner
    from policies.train.objective import expected_value, support

    model, act, batch = _untrained_xs(datasets)

    def losses(algo: str, conservative: float):
        config = TrainConfig(dataset=str(datasets["state"]), algo=algo, conservative=conservative)
        learner = Learner(config, model, torch.device("cpu"))
        t = learner._targets(batch)
        with torch.no_grad():
            return t, learner.loss(batch.observation, batch.action, t, None, batch.critic_action)

    t, plain = losses("bc_q", 0.0)
    assert t.improve_bins is None and "conservative_gap" not in plain
    t, cql = losses("bc_q", 2.0)
    assert t.improve_bins is not None and "improve" not in cql  # samples for the gap, no improvement term
    with torch.no_grad():
        z = model.encode(batch.observation)
        low, high, bins = model.action_low, model.action_high, act.bins
        first = t.improve_bins[:, :4]  # TrainConfig.conservative_samples
        sampled = expected_value(model.q_logits(z, bin_values(first, low, high, bins)), support(model))
    gap = float(sampled.mean(-1).mean()) - float(cql["q"])
    assert float(cql["conservative_gap"]) == pytest.approx(gap, abs=1e-5)
    assert float(cql["total"]) == pytest.approx(float(plain["total"]) + 2.0 * gap, abs=1e-4)
    # "improved": with α 1 on the arm, the sampled actions keep the data's arm values and differ in the gripper only
    config = TrainConfig(
        dataset=str(datasets["state"]), alpha=1.0, alpha_gripper=0.5, conservative=2.0, conservative_dims="improved"
    )
    learner = Learner(config, model, torch.device("cpu"))
    t = learner._targets(batch)
    with torch.no_grad():
        gripper_only = learner.loss(batch.observation, batch.action, t, None, batch.critic_action)
        data = action_bins(batch.critic_action, low, high, bins)
        mixed = data[:, None].repeat(1, 4, 1)
        mixed[..., -1] = t.improve_bins[:, :4, -1]
        sampled = expected_value(model.q_logits(z, bin_values(mixed, low, high, bins)), support(model))
    gap = float(sampled.mean(-1).mean()) - float(gripper_only["q"])
    assert float(gripper_only["conservative_gap"]) == pytest.approx(gap, abs=1e-5)
    # "gripper": the same gap with the improvement training the arm too (the paper's α 0.75 everywhere)
    config = TrainConfig(dataset=str(datasets["state"]), conservative=2.0, conservative_dims="gripper")
    learner = Learner(config, model, torch.device("cpu"))
    t = learner._targets(batch)
    with torch.no_grad():
        arm_kept = learner.loss(batch.observation, batch.action, t, None, batch.critic_action)
        mixed = data[:, None].repeat(1, 4, 1)
        mixed[..., -1] = t.improve_bins[:, :4, -1]
        sampled = expected_value(model.q_logits(z, bin_values(mixed, low, high, bins)), support(model))
    assert float(arm_kept["conservative_gap"]) == pytest.approx(
        float(sampled.mean(-1).mean()) - float(arm_kept["q"]), abs=1e-5
    )
    with pytest.raises(ValueError, match="conservative"):
        TrainConfig(dataset="x", conservative=-1.0)
    with pytest.raises(ValueError, match="conservative_dims"):
        TrainConfig(dataset="x", conservative_dims="arm")
    with pytest.raises(ValueError, match="conservative_samples"):
        TrainConfig(dataset="x", conservative=1.0, conservative_samples=17)


def test_the_gripper_can_have_its_own_alpha_and_one_alpha_per_dim_is_the_scalar_loss(datasets):
    """`--set alpha_gripper=A` (issue 11): Σ_d α_d·BC_d + (1 − α_d)·improvement_d. With every α_d equal it is the
    scalar-α loss; lowering the gripper's α moves exactly that dimension's BC weight onto its improvement."""
    from policies.train.config import TrainConfig
    from policies.train.learner import Learner
    from policies.train.objective import PolicyCriticLoss, log_likelihood_per_dim

    model, act, batch = _untrained_xs(datasets)
    config = TrainConfig(dataset=str(datasets["state"]), alpha_gripper=0.25)
    assert config.alpha_per_dim(act.dims) == (0.75, 0.75, 0.75, 0.75, 0.25)
    assert TrainConfig(dataset="x").alpha_per_dim(act.dims) == ()
    assert TrainConfig(dataset="x", alpha=0.5).algorithm.alpha == 0.5
    from policies.train.cli import _parse_set

    assert _parse_set(["alpha_gripper=0.25", "alpha=none"]) == {"alpha_gripper": 0.25, "alpha": None}
    with pytest.raises(ValueError, match="alpha_gripper"):
        TrainConfig(dataset="x", alpha_gripper=1.5)
    for algo in ("bc", "filtered_bc"):  # an improvement term needs the critic these never train
        for setting in ({"alpha": 0.75}, {"alpha_gripper": 0.5}):
            with pytest.raises(ValueError, match="needs a critic"):
                TrainConfig(dataset="x", algo=algo, **setting)
        assert TrainConfig(dataset="x", algo=algo, alpha=1.0).algorithm.alpha == 1.0
    assert TrainConfig(dataset="x", algo="bc_q", alpha=0.75).algorithm.alpha == 0.75

    learner = Learner(config, model, torch.device("cpu"))
    assert learner.alpha_per_dim == (0.75, 0.75, 0.75, 0.75, 0.25)
    t = learner._targets(batch)

    def policy_loss(alpha_per_dim=()) -> float:
        loss = PolicyCriticLoss(model, 0.75, 0.0, alpha_per_dim)
        with torch.no_grad():
            return float(loss(batch.observation, batch.action, t)["total"])

    scalar = policy_loss()
    assert policy_loss((0.75,) * 5) == pytest.approx(scalar, rel=1e-5)
    with torch.no_grad():
        logits = model.policy_logits(model.encode(batch.observation))
        data_bins = action_bins(batch.action, model.action_low, model.action_high, act.bins)
        bc_grip = -log_likelihood_per_dim(logits, data_bins[:, None])[:, 0, -1].mean()
        improve_grip = -(t.improve_weights * log_likelihood_per_dim(logits, t.improve_bins)[..., -1]).sum(1).mean()
    expected = scalar + (0.25 - 0.75) * float(bc_grip) + (0.75 - 0.25) * float(improve_grip)
    assert policy_loss((0.75, 0.75, 0.75, 0.75, 0.25)) == pytest.approx(expected, rel=1e-5)


def test_a_critic_of_the_head_alone_leaves_the_encoder_to_the_policy(datasets):
    """`--set critic_gradient=head` (issue 11): the TD loss is the same number, but its gradient reaches only the
    critic's own parameters; with "trunk" (the paper) it shapes the shared encoder too. The BC loss is also logged
    per action dimension, so a variant that moves the gripper on purpose does not hide what happened to the arm."""
    from policies.train.config import TrainConfig
    from policies.train.learner import Learner
    from policies.train.objective import PolicyCriticLoss

    model, _, batch = _untrained_xs(datasets)
    learner = Learner(TrainConfig(dataset=str(datasets["state"]), algo="bc_q"), model, torch.device("cpu"))
    t = learner._targets(batch)
    critic = ("q_decoder", "q_mixer", "q_norm", "q_head", "action_scale", "action_offset", "readout")

    def td_gradients(critic_gradient: str) -> tuple[float, dict[str, float]]:
        model.zero_grad()
        td = PolicyCriticLoss(model, 1.0, 38.0, (), critic_gradient)(batch.observation, batch.action, t)["td"]
        td.backward()
        norms = {n: float(p.grad.norm()) if p.grad is not None else 0.0 for n, p in model.named_parameters()}
        return float(td.detach()), norms

    td_trunk, trunk = td_gradients("trunk")
    td_head, head = td_gradients("head")
    assert td_head == pytest.approx(td_trunk, rel=1e-6)
    for name in trunk:
        if name.startswith(critic):
            assert head[name] == pytest.approx(trunk[name], rel=1e-4), name  # the critic learns as before
        elif name.startswith(("policy_", "action_queries")):
            assert trunk[name] == head[name] == 0.0, name  # the TD loss never reaches the actor's head
        else:
            assert head[name] == 0.0, name  # encoder and trunk: the policy's alone
    assert trunk["latents"] > 0.0 and any(v > 0.0 for n, v in trunk.items() if n.startswith("trunk."))
    td_part, part = td_gradients("0.25")  # a quarter of the TD gradient reaches the encoder, all of it the critic
    assert td_part == pytest.approx(td_trunk, rel=1e-6)
    for name in trunk:
        share = 1.0 if name.startswith(critic) else 0.25
        assert part[name] == pytest.approx(share * trunk[name], rel=1e-3, abs=1e-9), name
    assert TrainConfig(dataset="x").critic_gradient == "trunk"
    dims = model.action_spec.dims
    with torch.no_grad():
        losses = PolicyCriticLoss(model, 1.0, 38.0, (), "head", dims)(batch.observation, batch.action, t)
    per_dim = [float(losses[f"bc_{d}"]) for d in dims]  # logged per dimension (held_out/bc_gripper, ...)
    assert sum(per_dim) == pytest.approx(float(losses["bc"]), rel=1e-5) and min(per_dim) > 0.0
    assert set(learner.evaluate(batch)) >= {f"bc_{d}" for d in dims}
    for wrong in ("encoder", "0", "1.5", "nan"):
        with pytest.raises(ValueError, match="critic_gradient"):
            TrainConfig(dataset="x", critic_gradient=wrong)


def test_held_out_losses_read_back_from_checkpoints_match_what_training_logged(datasets, tmp_path):
    """benchmarks/held_out_loss: a checkpoint read back into the run's own trainer gives the held-out losses
    training logged at that step, now per action dimension too (for runs that logged only the sum)."""
    from benchmarks.held_out_loss import held_out_at

    run = tmp_path / "bc_q"
    extra = ("--algo", "bc_q", "--steps", "40", "--batch-size", "16", "--set", "checkpoint_every=20")
    assert _train(datasets["state"], run, *extra, "--set", "eval_every=20") == 0
    logged = {int(r["step"]): r for r in _rows(run) if r.get("held_out/bc")}
    again = held_out_at(run)
    assert sorted(again) == [20, 40]
    for step, losses in again.items():
        for key in ("bc", "td", "bc_gripper"):
            assert losses[key] == pytest.approx(float(logged[step][f"held_out/{key}"]), rel=1e-4), (step, key)
        assert sum(v for k, v in losses.items() if k.startswith("bc_")) == pytest.approx(losses["bc"], rel=1e-5)
    assert again[40]["bc"] != pytest.approx(again[20]["bc"], rel=1e-4)  # each step's own weights


def test_a_critic_of_held_actions_scores_the_mean_of_the_next_actions(datasets, tmp_path):
    """`--set critic_horizon=h` (issue 11): the TD loss scores the mean of the data's next h actions; the BC
    term still clones the step's own action, and with h = 1 the critic's action is the action itself."""
    from policies.data.dataset import locate_dataset
    from policies.data.episodes import EpisodeReader
    from policies.data.nstep import gripper_horizons, held_actions
    from policies.data.transitions import TransitionConfig, TransitionDataset
    from policies.model.config import size_config
    from policies.model.perceiver import build_model
    from policies.spec import action_spec
    from policies.train.config import TrainConfig
    from policies.train.data import observation_for
    from policies.train.learner import Learner
    from robots.spec import load_spec

    root, did = locate_dataset(datasets["state"])
    reader = EpisodeReader(root, did)
    actions = reader.arrays(0).actions
    data = TransitionDataset(root, did, TransitionConfig(n_step=5, critic_horizon=5), episodes=[0])
    batch = data[np.arange(len(data))]
    np.testing.assert_allclose(batch.critic_action.numpy(), held_actions(actions, 5))
    np.testing.assert_array_equal(batch.action.numpy(), actions)
    assert not np.array_equal(batch.critic_action.numpy(), actions)  # the data's actions vary within 5 steps

    spec = observation_for("state", "sawyer", reader)
    model = build_model(size_config("XS"), spec, action_spec(load_spec("sawyer")), seed=0)
    learner = Learner(TrainConfig(dataset=str(datasets["state"])), model, torch.device("cpu"))
    rows = batch.to("cpu")
    with torch.no_grad():
        t = learner._targets(rows)
        held = learner.loss(rows.observation, rows.action, t, None, rows.critic_action)
        own = learner.loss(rows.observation, rows.action, t, None, rows.action)
        default = learner.loss(rows.observation, rows.action, t)
    assert float(held["bc"]) == float(own["bc"])  # BC clones the step's action whatever the critic scores
    assert float(held["td"]) != float(own["td"])
    assert float(own["td"]) == float(default["td"])
    with pytest.raises(ValueError, match="critic_horizon"):
        TrainConfig(dataset="x", n_step=5, critic_horizon=6)
    with pytest.raises(ValueError, match="critic_horizon_gripper"):
        TrainConfig(dataset="x", n_step=5, critic_horizon=5, critic_horizon_gripper=0)

    # the gripper scored by its own step: its column is the data's command, the arm's the held mean
    dims = model.action_spec.dims
    config = TrainConfig(dataset="x", n_step=5, critic_horizon=5, critic_horizon_gripper=1)
    assert config.critic_horizon_per_dim(dims) == tuple(1 if d == "gripper" else 5 for d in dims)
    assert TrainConfig(dataset="x", n_step=5, critic_horizon=5).critic_horizon_per_dim(dims) == 5
    split = TransitionDataset(root, did, TransitionConfig(n_step=5, critic_horizon=config.critic_horizon_per_dim(dims)),
                              episodes=[0])[np.arange(len(data))].critic_action.numpy()  # fmt: skip
    gripper = dims.index("gripper")
    np.testing.assert_array_equal(split[:, gripper], actions[:, gripper])
    assert not np.array_equal(held_actions(actions, 5)[:, gripper], actions[:, gripper])  # the episode grasps
    arm = [i for i in range(len(dims)) if i != gripper]
    np.testing.assert_allclose(split[:, arm], held_actions(actions, 5)[:, arm])

    # ... and, where its previous command was closed, over 5 steps: a release valued by what follows it
    closed = TrainConfig(
        dataset="x", n_step=5, critic_horizon=5, critic_horizon_gripper=1, critic_horizon_gripper_closed=5
    )
    assert closed.critic_horizon_closed(dims) == (gripper, 5) and config.critic_horizon_closed(dims) is None
    both = TransitionDataset(root, did, TransitionConfig(n_step=5, critic_horizon=closed.critic_horizon_per_dim(dims),
                                                         critic_horizon_closed=closed.critic_horizon_closed(dims)),
                             episodes=[0])[np.arange(len(data))].critic_action.numpy()  # fmt: skip
    per_step = gripper_horizons(actions, closed.critic_horizon_per_dim(dims), gripper, 5)
    np.testing.assert_allclose(both, held_actions(actions, per_step))
    was_closed = np.concatenate([[0.0], actions[:-1, gripper]]) >= 0.5
    np.testing.assert_array_equal(both[~was_closed, gripper], actions[~was_closed, gripper])
    np.testing.assert_allclose(both[was_closed, gripper], held_actions(actions, 5)[was_closed, gripper])

    run = tmp_path / "pac_held"
    assert _train(datasets["state"], run, "--algo", "pac", "--steps", "20", "--batch-size", "16",
                  "--set", "n_step=5", "--set", "critic_horizon=5",
                  "--set", "critic_horizon_gripper=1", "--set", "critic_horizon_gripper_closed=5") == 0  # fmt: skip
    assert json.loads((run / "run.json").read_text())["train"]["critic_horizon"] == 5
    assert json.loads((run / "run.json").read_text())["train"]["critic_horizon_gripper"] == 1
    assert json.loads((run / "run.json").read_text())["train"]["critic_horizon_gripper_closed"] == 5

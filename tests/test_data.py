"""Datasets: collection (pac-collect) stores the policy's inputs with JPEG frames, bad files fail clearly, and
the training reader gives n-step transitions, sharded across ranks, the same with or without loader workers."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.data.collect import Episode, collect, dataset_id, tokenizer, write_dataset
from policies.data.dataset import DatasetError, open_dataset
from policies.data.episodes import EpisodeReader
from policies.data.frames import FrameError
from policies.data.nstep import gripper_horizons, held_actions, n_step_targets, per_step_rewards, staged_success_rewards
from policies.data.sharding import Shard, batches_per_epoch, shard_episodes
from policies.data.transitions import TransitionConfig, TransitionDataset, TransitionSampler, transition_loader
from robots.tasks.env import PacTaskEnv

SEED = 3
DID = dataset_id("sawyer", "stack", "mixed")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    episodes = collect("sawyer", "stack", "mixed", episodes=2, seed=SEED)
    write_dataset(episodes, root, "sawyer", "stack", "mixed")
    return root, episodes, tokenizer("sawyer").spec


def test_stored_observations_are_the_tokenized_env_observations(dataset):
    """Replaying an episode's actions: every stored step is the one tokenizer applied to the env's observation."""
    _, episodes, _ = dataset
    episode = episodes[0]
    tok = tokenizer("sawyer")
    env = PacTaskEnv("sawyer", "stack")
    try:
        obs, _ = env.reset(seed=episode.seed)
        for t in range(4):
            inputs = tok.from_observation(obs, env.instruction).feeds()
            for key in ("proprio", "images", "instruction"):
                np.testing.assert_array_equal(episode.observations[key][t], inputs[key][0], err_msg=f"{key}[{t}]")
            obs, *_ = env.step(episode.actions[t])
    finally:
        env.close()
    assert episode.observations["proprio"].dtype == np.float32 and episode.observations["images"].dtype == np.uint8
    assert episode.observations["instruction"].dtype == np.int64
    n = episode.actions.shape[0]
    assert {k: v.shape[0] for k, v in episode.observations.items()} == dict.fromkeys(episode.observations, n + 1)


def assert_jpeg_close(decoded: np.ndarray, original: np.ndarray) -> None:
    """Within what JPEG at the wire's quality loses on these frames (measured: mean 0.4, PSNR ≈ 45 dB)."""
    error = decoded.astype(np.float64) - original
    assert np.abs(error).mean() < 1.0
    assert 10 * np.log10(255**2 / np.mean(error**2)) > 38


def test_dataset_round_trips_through_minari(dataset):
    """Minari's own loader opens the dataset and decodes the JPEG frames, one (H, W, 3) image per camera."""
    root, episodes, spec = dataset
    loaded = open_dataset(root, DID, spec)
    assert loaded.total_episodes == 2
    for ep, original in zip(loaded.iterate_episodes(), episodes, strict=True):
        for key in ("proprio", "instruction"):
            np.testing.assert_array_equal(ep.observations[key], original.observations[key])
        assert sorted(ep.observations["images"]) == sorted(spec.cameras)
        for i, camera in enumerate(spec.cameras):
            assert_jpeg_close(
                ep.observations["images"][camera], original.observations["images"][:, i].transpose(0, 2, 3, 1)
            )
        np.testing.assert_array_equal(ep.actions, original.actions)
        np.testing.assert_array_equal(ep.rewards, original.rewards)
        np.testing.assert_array_equal(ep.infos["shaped_reward"], original.shaped)
        assert set(ep.infos["quality"]) == {2}  # QUALITY_CODES["mixed"]


def test_missing_truncated_and_wrong_schema_datasets_are_clear_errors(dataset, tmp_path):
    root, _, spec = dataset
    did = dataset_id("sawyer", "stack", "mixed")
    with pytest.raises(DatasetError, match="not found.*pac-collect"):
        open_dataset(tmp_path, did)
    data = root / did / "data" / "main_data.hdf5"
    broken = tmp_path / did / "data"
    broken.mkdir(parents=True)
    (broken / "metadata.json").write_text((data.parent / "metadata.json").read_text())
    (broken / "main_data.hdf5").write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    with pytest.raises(DatasetError, match="cannot be read as HDF5"):
        open_dataset(tmp_path, did)
    meta = json.loads((data.parent / "metadata.json").read_text())
    meta["total_episodes"] = 5
    (broken / "metadata.json").write_text(json.dumps(meta))
    (broken / "main_data.hdf5").write_bytes(data.read_bytes())
    with pytest.raises(DatasetError, match="holds 2 episodes, its metadata says 5"):
        open_dataset(tmp_path, did)
    with pytest.raises(DatasetError, match=r"'images' has shape \(2, 3, 128, 128\), the spec expects \(2, 3, 96, 96\)"):
        open_dataset(root, did, replace(spec, image_height=96, image_width=96))


def test_an_interrupted_frame_write_is_a_clear_error(dataset, tmp_path):
    root, _, _ = dataset
    shutil.copytree(root / DID, tmp_path / DID)
    with h5py.File(tmp_path / DID / "data" / "main_data.hdf5", "a") as f:
        del f["episode_1/observations/images"]
    with pytest.raises(DatasetError, match=r"episode 1, field 'observations/images/front_left': missing"):
        open_dataset(tmp_path, DID)


# --- the training reader -----------------------------------------------------------------------------------


def test_reader_decodes_jpeg_frames_and_reads_raw_ones_exactly(dataset, tmp_path):
    root, episodes, spec = dataset
    reader = EpisodeReader(root, DID, spec)
    assert reader.layout.encoding == "jpeg" and reader.layout.cameras == spec.cameras
    for step in (0, 57, episodes[1].actions.shape[0]):
        assert_jpeg_close(reader.frames(1, step), episodes[1].observations["images"][step])
    write_dataset(episodes, tmp_path, "sawyer", "stack", "mixed", frames="raw")
    raw = EpisodeReader(tmp_path, DID, spec)
    assert raw.layout.encoding == "raw"
    np.testing.assert_array_equal(raw.frames(1, 57), episodes[1].observations["images"][57])
    assert (root / DID / "data" / "main_data.hdf5").stat().st_size * 5 < (
        tmp_path / DID / "data" / "main_data.hdf5"
    ).stat().st_size


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "checksum mismatch"),  # caught before decoding (test_dataset_integrity.py)
        (lambda b: np.r_[b[:2], b[2:-2] ^ 0x5A, b[-2:]], "checksum mismatch"),
    ],
    ids=["truncated", "scrambled"],
)
def test_reader_refuses_a_damaged_frame_naming_it(dataset, tmp_path, damage, message):
    root, _, spec = dataset
    shutil.copytree(root / DID, tmp_path / DID)
    with h5py.File(tmp_path / DID / "data" / "main_data.hdf5", "a") as f:
        frames = f["episode_0/observations/images/front_right"]
        frames[5] = damage(frames[5]).astype(np.uint8)
    with pytest.raises(DatasetError, match=rf"episode 0, field 'observations/images/front_right', step 5: {message}"):
        EpisodeReader(tmp_path, DID, spec)  # the file's CRC-32 fails on open; the full survey names the frame
    meta = tmp_path / DID / "data" / "metadata.json"  # a file without it (from before): the read names the frame
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "pac_file_crc32"}))
    reader = EpisodeReader(tmp_path, DID, spec)
    reader.frames(0, 4)
    with pytest.raises(FrameError, match=rf"episode 0, field 'observations/images/front_right', step 5: {message}"):
        reader.frames(0, 5)
    assert issubclass(FrameError, DatasetError)


# n = 3, γ = 0.5, rewards 1 2 3 4: R_t = Σ_{j<k} γ^j r_{t+j}, k = min(n, T - t); D = γ^k, 0 if the window
# reaches a termination; a time-limit truncation bootstraps from the last observation.
NSTEP_TABLE = [
    # n, terminated, reward, discount, next step
    (3, True, [2.75, 4.5, 5.0, 4.0], [0.125, 0.0, 0.0, 0.0], [3, 4, 4, 4]),
    (3, False, [2.75, 4.5, 5.0, 4.0], [0.125, 0.125, 0.25, 0.5], [3, 4, 4, 4]),
    (1, True, [1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.0], [1, 2, 3, 4]),
    (10, False, [3.25, 4.5, 5.0, 4.0], [0.0625, 0.125, 0.25, 0.5], [4, 4, 4, 4]),
]


@pytest.mark.parametrize("n, terminated, reward, discount, next_step", NSTEP_TABLE)
def test_n_step_targets_match_the_hand_computed_table(n, terminated, reward, discount, next_step):
    targets = n_step_targets(np.array([1.0, 2.0, 3.0, 4.0]), np.array([False, False, False, terminated]), n, 0.5)
    np.testing.assert_allclose(targets.reward, reward)
    np.testing.assert_allclose(targets.discount, discount)
    np.testing.assert_array_equal(targets.next_step, next_step)
    with pytest.raises(ValueError, match="termination at step 1 before the last"):
        n_step_targets(np.ones(4), np.array([False, True, False, False]), n, 0.5)


# actions 0 2 4 6 (one dimension) held for h steps: the mean of the next h, the window cut at the episode's end
HELD_TABLE = [
    (1, [0.0, 2.0, 4.0, 6.0]),
    (2, [1.0, 3.0, 5.0, 6.0]),
    (3, [2.0, 4.0, 5.0, 6.0]),
    (10, [3.0, 4.0, 5.0, 6.0]),
]


@pytest.mark.parametrize("horizon, expected", HELD_TABLE)
def test_held_actions_match_the_hand_computed_table(horizon, expected):
    actions = np.stack([np.array([0.0, 2.0, 4.0, 6.0]), -np.array([0.0, 2.0, 4.0, 6.0])], axis=1)
    held = held_actions(actions, horizon)
    np.testing.assert_allclose(held, np.stack([expected, -np.array(expected)], axis=1))
    assert held.dtype == np.float32
    with pytest.raises(ValueError, match="horizon"):
        held_actions(actions, 0)


@pytest.mark.parametrize("horizons", [(1, 3), (3, 1), (10, 2)])
def test_held_actions_take_one_horizon_per_dimension(horizons):
    """(h_arm, h_gripper): each column is the table's row for its own horizon (the gripper by its own step)."""
    ramp = np.array([0.0, 2.0, 4.0, 6.0])
    held = held_actions(np.stack([ramp, -ramp], axis=1), horizons)
    table = dict(HELD_TABLE)
    np.testing.assert_allclose(held[:, 0], table.get(horizons[0], [3.0, 4.0, 5.0, 6.0]))
    np.testing.assert_allclose(held[:, 1], -np.array(table.get(horizons[1], [3.0, 4.0, 5.0, 6.0])))
    for wrong in ((1, 2, 3), (2, 0)):  # one per dimension, each ≥ 1
        with pytest.raises(ValueError, match="horizon"):
            held_actions(np.stack([ramp, -ramp], axis=1), wrong)


# a gripper column (dimension 1) that closes at step 2 and opens at step 5: the steps after a closed command
# (3, 4, 5) take the closed horizon, the rest the open one; the first step counts as after an open command
GRIPPER = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
GRIPPER_TABLE = [  # (open h, closed h, per-step gripper horizons, held gripper column)
    (1, 1, [1, 1, 1, 1, 1, 1, 1, 1], GRIPPER),
    (1, 3, [1, 1, 1, 3, 3, 3, 1, 1], [0, 0, 1, 2 / 3, 1 / 3, 0, 0, 0]),
    (2, 4, [2, 2, 2, 4, 4, 4, 2, 2], [0, 0.5, 1, 0.5, 0.25, 0, 0, 0]),
]


@pytest.mark.parametrize("open_h, closed_h, horizons, held", GRIPPER_TABLE)
def test_the_gripper_window_depends_on_whether_it_was_closed(open_h, closed_h, horizons, held):
    """Open, a grasp is scored by a short window; closed, a release by what follows it (issue 11's probes)."""
    actions = np.stack([np.arange(8.0), GRIPPER], axis=1)
    per_step = gripper_horizons(actions, (2, open_h), dim=1, closed=closed_h)
    np.testing.assert_array_equal(per_step[:, 1], horizons)
    np.testing.assert_array_equal(per_step[:, 0], 2)  # the arm keeps its own horizon
    out = held_actions(actions, per_step)
    np.testing.assert_allclose(out[:, 1], held, rtol=1e-6)
    np.testing.assert_allclose(out[:, 0], held_actions(actions, 2)[:, 0])
    with pytest.raises(ValueError, match="dimension"):
        gripper_horizons(actions, 2, dim=2, closed=3)
    with pytest.raises(ValueError, match="horizon"):
        held_actions(actions, per_step[:-1])  # one per step means every step


def synthetic_episode(index: int, steps: int, terminated: bool) -> Episode:
    """A state-only episode whose proprio[0] is 100·index + t, so a transition's rows can be read back."""
    spec = tokenizer("sawyer").spec
    proprio = np.zeros((steps + 1, spec.proprio_size), np.float32)
    proprio[:, 0] = 100 * index + np.arange(steps + 1)
    last = np.arange(steps) == steps - 1
    return Episode(
        seed=index,
        observations={"proprio": proprio, "instruction": np.zeros((steps + 1, spec.instruction_length), np.int64)},
        actions=np.full((steps, 5), index, np.float32),
        rewards=np.arange(1, steps + 1, dtype=np.float32),
        terminations=last & terminated,
        truncations=last & (not terminated),
        shaped=np.full(steps, 10.0 * index + 7, np.float32),
        success=terminated,
        quality="mixed",
    )


LENGTHS = (4, 4, 9, 3, 6, 5, 7)  # episode 0 terminates, 1 is truncated at the time limit: NSTEP_TABLE's rows


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    episodes = [synthetic_episode(i, n, terminated=i != 1) for i, n in enumerate(LENGTHS)]
    write_dataset(episodes, root, "sawyer", "stack", "mixed", cameras=())
    return root


def test_transitions_carry_the_n_step_table_from_the_file(synthetic):
    """Episodes 0 (terminated) and 1 (truncated) hold rewards 1 2 3 4: their batches are the table's rows."""
    config = TransitionConfig(n_step=3, gamma=0.5, batch_size=1)
    data = TransitionDataset(synthetic, DID, config, episodes=[0, 1])
    for episode, (_, _, reward, discount, next_step) in zip((0, 1), NSTEP_TABLE[:2], strict=True):
        index = np.flatnonzero(data.episode_of(np.arange(len(data)))[0] == episode)
        batch = data[index]
        np.testing.assert_allclose(batch.reward, reward)
        np.testing.assert_allclose(batch.discount, discount)
        np.testing.assert_array_equal(batch.observation["proprio"][:, 0], 100 * episode + np.arange(4))
        np.testing.assert_array_equal(batch.next_observation["proprio"][:, 0], 100 * episode + np.array(next_step))
        np.testing.assert_array_equal(batch.action, np.full((4, 5), episode))
        np.testing.assert_array_equal(batch.critic_action, batch.action)  # critic_horizon 1: the action itself
        assert "images" not in batch.observation
    shaped = TransitionDataset(synthetic, DID, replace(config, reward="shaped", n_step=1), episodes=[1])
    np.testing.assert_allclose(shaped[np.arange(4)].reward, (1 - 0.5) * 17.0)  # (1 − γ)·r: truncated, no end value
    ended = TransitionDataset(synthetic, DID, replace(config, reward="shaped", n_step=1), episodes=[0])
    np.testing.assert_allclose(ended[np.arange(4)].reward, [3.5, 3.5, 3.5, 7.0])  # the terminal step keeps r
    held = TransitionDataset(synthetic, DID, replace(config, critic_horizon=3), episodes=[2])
    ramp = held[np.arange(9)]  # episode 2's actions are all 2: its held mean is 2, never mixed with episode 3's 3
    np.testing.assert_array_equal(ramp.critic_action, np.full((9, 5), 2.0))
    with pytest.raises(ValueError, match="critic_horizon"):
        replace(config, critic_horizon=4)  # a hold longer than the return the critic learns
    with pytest.raises(ValueError, match="critic_horizon"):
        replace(config, critic_horizon=(3, 3, 3, 3, 4))
    with pytest.raises(ValueError, match="critic_horizon"):
        replace(config, critic_horizon_closed=(4, 4))
    staged = TransitionDataset(synthetic, DID, replace(config, reward="staged", n_step=1), episodes=[0])
    np.testing.assert_allclose(staged[np.arange(4)].reward, [1.75, 1.75, 1.75, 7.0])  # half the stage, full end


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
    st.booleans(),
    st.floats(0.0, 0.999),
    st.integers(1, 12),
)
def test_dense_rewards_keep_every_return_on_the_critics_unit_scale(rewards, terminated, gamma, n):
    """Whatever the episode, R_t + D_t·V with V in [0, 1] stays in [0, 1]: the critic's support covers it."""
    r = np.array(rewards)
    ends = np.zeros(r.size, bool)
    ends[-1] = terminated
    for per_step in (per_step_rewards(r, ends, gamma), staged_success_rewards(r, ends, gamma)):
        t = n_step_targets(per_step, ends, n, gamma)
        for bootstrap in (0.0, 1.0):
            ret = t.reward + t.discount * bootstrap
            assert np.all(ret >= -1e-6) and np.all(ret <= 1 + 1e-5)


def test_succeeding_is_worth_more_than_hovering_one_stage_short():
    """The absorbing end value: done with r = 1 now beats 0.95 per step until the time limit."""
    gamma, hover = 0.99, np.full(300, 0.95)
    hovering = n_step_targets(per_step_rewards(hover, np.zeros(300, bool), gamma), np.zeros(300, bool), 300, gamma)
    done = per_step_rewards(np.array([1.0]), np.array([True]), gamma)
    assert done[0] == 1.0 and hovering.reward[0] + hovering.discount[0] * 0.95 < 1.0
    with pytest.raises(ValueError, match="gamma in"):
        per_step_rewards(hover, np.zeros(300, bool), 1.0)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_cover_every_episode_and_draw_equal_batches(synthetic, world_size):
    shards = shard_episodes(LENGTHS, world_size, seed=5)
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(LENGTHS)))
    sizes = [sum(LENGTHS[e] for e in s) for s in shards]
    assert max(sizes) - min(sizes) <= max(LENGTHS)
    config = TransitionConfig(batch_size=2, seed=5)
    ranks = [TransitionDataset(synthetic, DID, config, Shard(r, world_size)) for r in range(world_size)]
    assert [set(d.episodes.tolist()) for d in ranks] == [set(s.tolist()) for s in shards]
    assert {len(TransitionSampler(d)) for d in ranks} == {batches_per_epoch(LENGTHS, shards, 2)}
    for d in ranks:  # a rank's batches come from its own episodes only
        drawn = np.concatenate(list(TransitionSampler(d)))
        assert set(d.episode_of(drawn)[0].tolist()) <= set(d.episodes.tolist())
    with pytest.raises(DatasetError, match="7 episodes cannot be shared across 8 ranks"):
        shard_episodes(LENGTHS, 8, seed=5)


def test_loader_batches_are_the_same_with_two_workers_and_follow_the_seed(dataset):
    root, _, spec = dataset
    data = TransitionDataset(root, DID, TransitionConfig(batch_size=48, seed=1), episodes=[1], spec=spec)
    serial = list(transition_loader(data, num_workers=0))
    parallel = list(transition_loader(data, num_workers=2))
    assert len(serial) == len(parallel) == data.num_batches == len(data) // 48 > 2
    for a, b in zip(serial, parallel, strict=True):
        for key in ("proprio", "images", "instruction"):
            assert a.observation[key].equal(b.observation[key]) and a.next_observation[key].equal(
                b.next_observation[key]
            )
        assert a.action.equal(b.action) and a.reward.equal(b.reward) and a.discount.equal(b.discount)
    assert serial[0].observation["images"].shape == (48, *spec.image_shape)
    again = transition_loader(data)  # the same seed and epoch: the same order; the next epoch: another
    assert next(iter(again)).observation["proprio"].equal(serial[0].observation["proprio"])
    again.sampler.set_epoch(1)
    assert not next(iter(again)).observation["proprio"].equal(serial[0].observation["proprio"])

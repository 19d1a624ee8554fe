"""Reference tasks, scripted experts and dataset collection, on the real sim (in-process and over the wire)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robots.contract.client import DriverClient
from robots.sim.process import start_sim, stop_sim
from robots.spec import load_spec
from robots.tasks.collect import collect, dataset_id, run_episode, write_dataset
from robots.tasks.dataset import DatasetError, open_dataset
from robots.tasks.env import PacTaskEnv
from robots.tasks.experts import MIXED_TARGET
from robots.tasks.layout import MIN_SEPARATION, object_layout
from robots.tasks.tasks import Scene, shaped_reward, success


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_layouts_are_seeded_separated_and_inside_the_workspace(robot):
    spec = load_spec(robot)
    a = object_layout(spec, np.random.default_rng(7))
    assert a == object_layout(spec, np.random.default_rng(7))
    assert a != object_layout(spec, np.random.default_rng(8))
    for seed in range(50):
        xy = np.array(list(object_layout(spec, np.random.default_rng(seed)).values()))
        gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)[np.triu_indices(3, 1)]
        assert gaps.min() >= MIN_SEPARATION
        assert np.all(xy >= spec.limits.workspace.low[:2]) and np.all(xy <= spec.limits.workspace.high[:2])


def _scene(red, blue=(0.5, 0.2, 0.025), tcp=(0.0, 0.0, 0.5), grasped=None) -> Scene:
    return Scene(
        tcp=np.asarray(tcp, float),
        objects={"red": np.asarray(red, float), "blue": np.asarray(blue, float), "green": np.array([0.3, 0.3, 0.025])},
        half_size=0.025,
        table_z=0.0,
        grasped=grasped,
    )


@pytest.mark.parametrize(
    "task, scene, expected",
    [
        ("reach", _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.06)), True),
        ("reach", _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.10)), False),
        ("lift", _scene((0.4, 0.1, 0.08), grasped="red"), True),
        ("lift", _scene((0.4, 0.1, 0.08)), False),  # not held: falling, not lifted
        ("lift", _scene((0.4, 0.1, 0.06), grasped="red"), False),  # not high enough
        ("stack", _scene((0.5, 0.2, 0.075)), True),
        ("stack", _scene((0.5, 0.2, 0.075), grasped="red"), False),  # still held
        ("stack", _scene((0.53, 0.2, 0.075)), False),  # off centre
        ("stack", _scene((0.5, 0.2, 0.025)), False),  # beside, on the table
    ],
)
def test_success_table(task, scene, expected):
    assert success(task, scene) is expected


def test_shaped_reward_grows_through_the_stacking_stages():
    far = shaped_reward("stack", _scene((0.4, 0.1, 0.025)))
    above = shaped_reward("stack", _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.05)))
    held = shaped_reward("stack", _scene((0.4, 0.1, 0.05), tcp=(0.4, 0.1, 0.05), grasped="red"))
    carried = shaped_reward("stack", _scene((0.5, 0.2, 0.1), tcp=(0.5, 0.2, 0.1), grasped="red"))
    done = shaped_reward("stack", _scene((0.5, 0.2, 0.075)))
    assert 0 <= far < above < held < carried < done == 1.0


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value is")  # proprio is unbounded
def test_env_follows_the_gymnasium_api():
    env = PacTaskEnv("sawyer", "reach", render_images=False)
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs) and info["instruction"] == "reach the red object"
    finally:
        env.close()


def test_env_observation_equals_what_pac_run_assembles_from_the_driver():
    """Same seed, same actions: the env's observation is the one pac-run builds from pac-sim's messages."""
    env = PacTaskEnv("sawyer", "stack")
    proc, pub, cmd = start_sim("sawyer", "--lockstep")
    client = DriverClient(pub, cmd)
    try:
        client.wait_ready()
        env_obs, _ = env.reset(seed=11)
        latest = client.reset(seed=11)
        rng = np.random.default_rng(0)
        for _ in range(6):
            action = rng.uniform(env.action_space.low, env.action_space.high) * 0.5
            env_obs, *_ = env.step(action)
            latest = client.step("cartesian_velocity", action)
        frames = {c: latest.images[c].image for c in env.obs_spec.cameras}
        wire = env.tokenizer.from_messages(latest.state, frames, env.instruction)
        np.testing.assert_array_equal(env_obs["proprio"], wire.proprio[0])
        np.testing.assert_array_equal(env_obs["instruction"], wire.instruction[0])
        np.testing.assert_array_equal(env_obs["images"], wire.images[0])
        assert np.abs(env_obs["proprio"][:7] - load_spec("sawyer").home).max() > 1e-3  # the arm really moved
    finally:
        client.close()
        stop_sim(proc)
        env.close()


def _success_rate(robot: str, quality: str, seeds: range) -> float:
    """Stacking success of pac-collect's episodes, without cameras (the expert never looks at images)."""
    return float(np.mean([run_episode(robot, "stack", quality, seed, cameras=()).success for seed in seeds]))


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_expert_stacks_at_least_90_percent(robot):
    assert _success_rate(robot, "expert", range(10)) >= 0.9


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_mixed_expert_is_within_5_points_of_its_target(robot):
    assert abs(_success_rate(robot, "mixed", range(30)) - MIXED_TARGET) <= 0.05


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    episodes = collect("sawyer", "stack", "mixed", episodes=2, seed=3)
    env = PacTaskEnv("sawyer", "stack")
    try:
        write_dataset(episodes, root, "sawyer", "stack", "mixed", env)
        yield root, episodes, env.obs_spec
    finally:
        env.close()


def test_dataset_round_trips_through_minari(dataset):
    root, episodes, spec = dataset
    loaded = open_dataset(root, dataset_id("sawyer", "stack", "mixed"), spec)
    assert loaded.total_episodes == 2
    for ep, original in zip(loaded.iterate_episodes(), episodes, strict=True):
        for key in ("proprio", "images", "instruction"):
            np.testing.assert_array_equal(ep.observations[key], original.observations[key])
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

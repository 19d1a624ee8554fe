"""Dataset collection (pac-collect) and reading: what is stored is the policy's inputs, and bad files fail clearly."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from policies.data.collect import collect, dataset_id, tokenizer, write_dataset
from policies.data.dataset import DatasetError, open_dataset
from robots.tasks.env import PacTaskEnv

SEED = 3


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

"""`pac-collect`: run a scripted expert in a task environment and write a Minari dataset (HDF5).

    pac-collect --robot sawyer --task stack --episodes 100 --quality mixed --out data/ [--workers 2]
                [--cameras none] [--objects all|none]
    pac-collect --check data/pac/sawyer-stack-mixed-v0    # read every episode, name every corrupt one

Each episode is stepped in a worker process (seed = --seed + episode index, which fixes both the object
layout and the expert's knobs), then written with `minari.create_dataset_from_buffers` under
OUT/<dataset id>. The environment emits driver-shaped observations; they are stored as the policy's
inputs (proprio, images, object poses, instruction tokens) built by the one ObservationTokenizer that
`pac-run` uses;
camera frames as JPEG at the wire's quality, one dataset per camera (frames.py says why; --frames raw keeps
the uncompressed (N_cam, 3, H, W) stack).
Infos carry per-step success and shaped reward and the episode's quality label. A summary table and a
return histogram (PNG) are written beside the dataset.
"""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing as mp
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
from tqdm import tqdm

from policies.data.dataset import DatasetError, locate_dataset, survey_dataset
from policies.data.frames import FRAMES, image_space, write_frames
from policies.data.integrity import FILE_CRC_KEY, FORMAT_ATTR, file_crc32, seal
from policies.spec import ObservationSpec, observation_spec, scene_objects
from policies.tokenizer.language import InstructionTokenizer
from policies.tokenizer.observation import ObservationTokenizer
from robots.spec import ARMS, load_spec
from robots.tasks.env import PacTaskEnv, action_space
from robots.tasks.experts import QUALITIES, expert_rollout
from robots.tasks.tasks import TASKS

QUALITY_CODES = {name: i for i, name in enumerate(QUALITIES)}


@dataclass
class Episode:
    seed: int
    observations: dict[str, np.ndarray]  # each (T+1, ...)
    actions: np.ndarray  # (T, A)
    rewards: np.ndarray  # (T,) sparse
    terminations: np.ndarray
    truncations: np.ndarray
    shaped: np.ndarray
    success: bool
    quality: str


def tokenizer(robot: str, cameras: tuple[str, ...] | None = None, objects: bool = True) -> ObservationTokenizer:
    """The tokenizer of a policy for `robot` over `cameras` (None: all of the arm's cameras, (): none) and,
    with `objects`, the poses of every object in the cell."""
    arm = load_spec(robot)
    spec = observation_spec(arm, cameras, objects=scene_objects(arm) if objects else ())
    return ObservationTokenizer(spec, InstructionTokenizer.default())


def observation_space(
    spec: ObservationSpec, vocab_size: int, images: bool = True, frames: str = "jpeg"
) -> gym.spaces.Dict:
    """The space of the stored observations: the model inputs of one step, without the batch axis; JPEG
    frames are one (H, W, 3) image per camera (Minari's image layout), raw frames the model's image stack."""
    spaces = {
        "proprio": gym.spaces.Box(-np.inf, np.inf, (spec.proprio_size,), np.float32),
        "instruction": gym.spaces.Box(0, vocab_size - 1, (spec.instruction_length,), np.int64),
    }
    if spec.objects:
        spaces["objects"] = gym.spaces.Box(-np.inf, np.inf, spec.objects_shape, np.float32)
    images = images and bool(spec.cameras)
    if images and frames == "jpeg":
        spaces["images"] = image_space(spec.cameras, spec.image_height, spec.image_width)
    elif images:
        spaces["images"] = gym.spaces.Box(0, 255, spec.image_shape, np.uint8)
    return gym.spaces.Dict(spaces)


_ENVS: dict[tuple, tuple[PacTaskEnv, ObservationTokenizer]] = {}  # per process: one env (and GL context) each


def _env(
    robot: str, task: str, cameras: tuple[str, ...] | None, objects: bool
) -> tuple[PacTaskEnv, ObservationTokenizer]:
    """The process's environment and tokenizer for these arguments; cameras () means no images."""
    key = (robot, task, cameras, objects)
    if key not in _ENVS:
        env = PacTaskEnv(robot, task, cameras, render_images=cameras != ())
        atexit.register(env.close)  # a renderer left to the GC at exit prints EGL tracebacks
        _ENVS[key] = env, tokenizer(robot, cameras, objects)
    return _ENVS[key]


def run_episode(
    robot: str,
    task: str,
    quality: str,
    seed: int,
    cameras: tuple[str, ...] | None = None,
    objects: bool = True,
) -> Episode:
    env, tok = _env(robot, task, cameras, objects)
    keep = tok.spec.modalities
    observations: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    actions, rewards, terms, truncs, shaped = [], [], [], [], []
    for step in expert_rollout(env, quality, seed):
        inputs = tok.from_observation(step.observation, env.instruction).feeds()
        for k in keep:
            observations[k].append(inputs[k][0].copy())  # images: the tokenizer reuses its buffer
        if step.action is None:  # the reset
            continue
        actions.append(step.action)
        rewards.append(step.reward)
        terms.append(step.terminated)
        truncs.append(step.truncated)
        shaped.append(step.info["shaped_reward"])
    return Episode(
        seed=seed,
        observations={k: np.stack(v) for k, v in observations.items()},
        actions=np.stack(actions),
        rewards=np.asarray(rewards, np.float32),
        terminations=np.asarray(terms),
        truncations=np.asarray(truncs),
        shaped=np.asarray(shaped, np.float32),
        success=bool(terms[-1]),
        quality=quality,
    )


def _work(args: tuple) -> Episode:
    return run_episode(*args)


def dataset_id(robot: str, task: str, quality: str) -> str:
    return f"pac/{robot}-{task}-{quality}-v0"


def parse_dataset_id(did: str) -> tuple[str, str, str]:
    """(robot, task, quality) of a dataset id made by `dataset_id`; ValueError for any other id."""
    name = did.removeprefix("pac/").removesuffix("-v0")
    parts = name.split("-")
    if not did.startswith("pac/") or len(parts) != 3 or parts[0] not in ARMS or parts[1] not in TASKS:
        raise ValueError(f"{did!r} is not a pac-collect dataset id (pac/<robot>-<task>-<quality>-v0)")
    return parts[0], parts[1], parts[2]


def write_dataset(
    episodes: list[Episode],
    out: Path,
    robot: str,
    task: str,
    quality: str,
    cameras: tuple[str, ...] | None = None,
    frames: str = "jpeg",
    objects: bool = True,
):
    """A Minari dataset under `out` (MINARI_DATASETS_PATH) from episodes collected with these arguments.

    JPEG frames are written by `write_frames` after Minari has written the rest: Minari's own encoder has a
    fixed quality (75), ours is the wire's. Then every episode is sealed with its checksums (integrity.py)."""
    if frames not in FRAMES:
        raise ValueError(f"frames must be one of {FRAMES}, got {frames!r}")
    os.environ["MINARI_DATASETS_PATH"] = str(out.resolve())
    import minari
    from minari.data_collector import EpisodeBuffer

    images = "images" in episodes[0].observations
    jpeg = images and frames == "jpeg"
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=e.seed,
            observations={k: v for k, v in e.observations.items() if not (jpeg and k == "images")},
            actions=e.actions,
            rewards=list(e.rewards),
            terminations=list(e.terminations),
            truncations=list(e.truncations),
            infos={
                "shaped_reward": e.shaped,
                "success": e.terminations.copy(),
                "quality": np.full(e.actions.shape[0], QUALITY_CODES[e.quality], np.int64),
            },
        )
        for i, e in enumerate(episodes)
    ]
    did = dataset_id(robot, task, quality)
    if did in minari.list_local_datasets():
        minari.delete_dataset(did)
    warnings.filterwarnings("ignore", category=UserWarning, module="minari")  # optional-metadata nags
    tok = tokenizer(robot, cameras, objects)
    space = observation_space(tok.spec, tok.language.vocab_size, images=images, frames=frames)
    dataset = minari.create_dataset_from_buffers(
        dataset_id=did,
        buffer=buffers,
        observation_space=space,
        action_space=action_space(load_spec(robot)),
        algorithm_name=f"scripted expert, quality {quality}",
        author="pac-runtime",
        description=(
            f"{task} on the simulated {robot}; instruction {TASKS[task].instruction!r}; "
            f"infos.quality codes {json.dumps(QUALITY_CODES)}"
        ),
    )
    with h5py.File(Path(dataset.storage.data_path) / "main_data.hdf5", "a") as f:
        if jpeg:
            for i, e in enumerate(episodes):
                write_frames(f[f"episode_{i}/observations"], e.observations["images"], tok.spec.cameras)
        seal(f)
    data_file = Path(dataset.storage.data_path) / "main_data.hdf5"
    dataset.storage.update_metadata({"dataset_size": dataset.storage.get_size(), FILE_CRC_KEY: file_crc32(data_file)})
    return dataset


def _plot(returns: np.ndarray, successes: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([returns[successes], returns[~successes]], bins=20, stacked=True, label=["success", "failure"])
    ax.set_xlabel("episode return (shaped reward, sum)")
    ax.set_ylabel("episodes")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(
    robot: str,
    task: str,
    quality: str,
    episodes: int,
    workers: int = 1,
    seed: int = 0,
    cameras: tuple[str, ...] | None = None,
    objects: bool = True,
) -> list[Episode]:
    jobs = [(robot, task, quality, seed + i, cameras, objects) for i in range(episodes)]
    if workers <= 1:
        return [run_episode(*j) for j in tqdm(jobs, desc=f"{robot} {task} {quality}", unit="ep")]
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(_work, jobs), total=len(jobs), desc=f"{robot} {task} {quality}", unit="ep"))


def check(directory: Path) -> int:
    """Read every episode of the dataset in `directory` against its checksums; print each corrupt one; 0 when
    none is, 1 otherwise."""
    try:
        path, problems = survey_dataset(*locate_dataset(directory), data=True)
    except DatasetError as exc:
        print(f"corrupt: {exc}", file=sys.stderr)
        return 1
    with h5py.File(path, "r") as f:
        count = sum(1 for k in f if k.startswith("episode_"))
        unsealed = "" if FORMAT_ATTR in f.attrs else " (structure only: written before checksums, data unverified)"
    for problem in problems:
        print(f"corrupt: {problem}", file=sys.stderr)
    print(f"{path}: {count - len(problems)} of {count} episodes sound, {len(problems)} corrupt{unsealed}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pac-collect", description=__doc__.splitlines()[0])
    p.add_argument("--robot", choices=ARMS, default="sawyer")
    p.add_argument("--task", choices=list(TASKS), default="stack")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--quality", choices=list(QUALITIES), default="expert")
    p.add_argument("--out", type=Path, default=Path("data"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cameras", default=None, help="comma-separated camera names, or 'none' (default: all)")
    p.add_argument("--frames", choices=FRAMES, default="jpeg", help="camera frames as JPEG (default) or raw")
    p.add_argument("--objects", choices=("all", "none"), default="all", help="store the cell's object poses")
    p.add_argument("--check", type=Path, metavar="DIR", help="collect nothing: check every episode of a dataset")
    args = p.parse_args(argv)
    if args.check:
        return check(args.check)
    cameras = () if args.cameras == "none" else tuple(args.cameras.split(",")) if args.cameras else None
    objects = args.objects == "all"
    started = time.perf_counter()
    eps = collect(args.robot, args.task, args.quality, args.episodes, args.workers, args.seed, cameras, objects)
    elapsed = time.perf_counter() - started
    dataset = write_dataset(eps, args.out, args.robot, args.task, args.quality, cameras, args.frames, objects)
    successes = np.array([e.success for e in eps])
    returns = np.array([float(e.shaped.sum()) for e in eps])
    lengths = np.array([e.actions.shape[0] for e in eps])
    did = dataset_id(args.robot, args.task, args.quality)
    png = args.out / f"{did.replace('/', '_')}_returns.png"
    _plot(returns, successes, png, f"{did}: {successes.mean():.0%} success")
    print(f"\n{did}: {len(eps)} episodes, {dataset.total_steps} steps in {args.out / did}")
    print(f"  success rate      {successes.mean():.1%}")
    print(f"  episode length    mean {lengths.mean():.0f}, max {lengths.max()}")
    print(
        f"  shaped return     mean {returns.mean():.1f}, p10 {np.percentile(returns, 10):.1f}, "
        f"p90 {np.percentile(returns, 90):.1f}"
    )
    print(
        f"  throughput        {len(eps) / elapsed * 3600 / max(1, args.workers):.0f} episodes/hour/worker "
        f"({elapsed:.0f} s, {args.workers} worker(s))"
    )
    print(f"  return histogram  {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

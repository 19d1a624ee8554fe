"""`pac-collect`: run a scripted expert in a task environment and write a Minari dataset (HDF5).

    pac-collect --robot sawyer --task stack --episodes 100 --quality mixed --out data/ [--workers 2]

Each episode is stepped in a worker process (seed = --seed + episode index, which fixes both the object
layout and the expert's knobs), then written with `minari.create_dataset_from_buffers` under
OUT/<dataset id>. Observations are the policy's inputs (proprio, images, instruction tokens); infos carry
per-step success and shaped reward and the episode's quality label. A summary table and a return
histogram (PNG) are written beside the dataset.
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
import numpy as np
from tqdm import tqdm

from robots.spec import ARMS
from robots.tasks.env import PacTaskEnv
from robots.tasks.experts import QUALITIES, make_expert
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


_ENVS: dict[tuple, PacTaskEnv] = {}  # per process: one environment (and GL context) per configuration


def _env(robot: str, task: str, cameras: tuple[str, ...] | None) -> PacTaskEnv:
    """The process's environment for these arguments; cameras () means no images (proprio and instruction)."""
    key = (robot, task, cameras)
    if key not in _ENVS:
        _ENVS[key] = env = PacTaskEnv(robot, task, cameras or None, render_images=cameras != ())
        atexit.register(env.close)  # a renderer left to the GC at exit prints EGL tracebacks
    return _ENVS[key]


def run_episode(robot: str, task: str, quality: str, seed: int, cameras: tuple[str, ...] | None = None) -> Episode:
    env = _env(robot, task, cameras)
    obs, info = env.reset(seed=seed)
    expert = make_expert(task, env.action_space.low, env.action_space.high, quality, seed)
    keep = [k for k in obs if k != "images" or env.render_images]
    observations = {k: [obs[k]] for k in keep}
    actions, rewards, terms, truncs, shaped = [], [], [], [], []
    scene = env.scene()
    while True:
        action = expert.act(scene).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        scene = env.scene()
        for k in keep:
            observations[k].append(obs[k])
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        shaped.append(info["shaped_reward"])
        if terminated or truncated:
            break
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


def write_dataset(episodes: list[Episode], out: Path, robot: str, task: str, quality: str, env: PacTaskEnv):
    """A Minari dataset under `out` (MINARI_DATASETS_PATH) from collected episodes."""
    os.environ["MINARI_DATASETS_PATH"] = str(out.resolve())
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [
        EpisodeBuffer(
            id=i,
            seed=e.seed,
            observations=e.observations,
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
    space = env.observation_space
    if "images" not in episodes[0].observations:
        space = gym.spaces.Dict({k: v for k, v in space.spaces.items() if k != "images"})
    return minari.create_dataset_from_buffers(
        dataset_id=did,
        buffer=buffers,
        observation_space=space,
        action_space=env.action_space,
        algorithm_name=f"scripted expert, quality {quality}",
        author="pac-runtime",
        description=(
            f"{task} on the simulated {robot}; instruction {env.instruction!r}; "
            f"infos.quality codes {json.dumps(QUALITY_CODES)}"
        ),
    )


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
) -> list[Episode]:
    jobs = [(robot, task, quality, seed + i, cameras) for i in range(episodes)]
    if workers <= 1:
        return [run_episode(*j) for j in tqdm(jobs, desc=f"{robot} {task} {quality}", unit="ep")]
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(_work, jobs), total=len(jobs), desc=f"{robot} {task} {quality}", unit="ep"))


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
    args = p.parse_args(argv)
    cameras = () if args.cameras == "none" else tuple(args.cameras.split(",")) if args.cameras else None
    started = time.perf_counter()
    eps = collect(args.robot, args.task, args.quality, args.episodes, args.workers, args.seed, cameras)
    elapsed = time.perf_counter() - started
    env = PacTaskEnv(args.robot, args.task, cameras or None, render_images=cameras != ())
    try:
        dataset = write_dataset(eps, args.out, args.robot, args.task, args.quality, env)
    finally:
        env.close()
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

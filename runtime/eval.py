"""`pac-eval`: closed-loop episodes of a policy through pac-run's own loop, on held-out seeds, with a success rate.

    pac-eval --policy pac_state.onnx --robot sawyer --task stack --episodes 100 --workers 2 --out out/eval

Each episode is one pac-run session in lockstep against the task-aware sim driver (`robots.tasks.driver`):
`client.reset(seed)` lays the objects out as `PacTaskEnv.reset(seed=...)` does, then the real ControlLoop
(LockstepLink, PolicyStep, and the Guard with the safety filter and every watchdog, built by
`runtime.cli.build_loop`) ticks until the driver's `task` topic reports success, the task's episode length
elapses, or the guard latches a fault (a failure, counted by cause). Seeds start far from the collection
seeds (0..N), so the policy has never seen these layouts. `--workers W` runs W (driver, loop) pairs in
spawned processes on their own ports, each episode dealt by seed; lockstep physics and a one-thread ONNX
Runtime session make the per-episode results the same for any W (unless the one wall-clock watchdog, the
inference deadline, fires in one run and not the other: holds are reported by cause). `evaluate()` is the
Python entry point.

Exit codes: 0 evaluated; 2 refused before any episode (the policy does not fit the robot, a bad config);
1 a driver or a worker failed.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import json
import logging
import math
import multiprocessing as mp
import queue
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from policies.spec import DECODINGS
from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.security import private_endpoint
from robots.sim.process import stop_sim
from robots.spec import ARMS, load_spec
from robots.tasks.tasks import TASKS
from runtime.cli import EXIT_OK, EXIT_REFUSED, build_loop, claim_arm, open_policy
from runtime.config import ConfigError, RunConfig, load_config, with_overrides, with_own_sim
from runtime.inference.loader import LoadedPolicy, PolicyRefused
from runtime.inference.providers import ProviderUnavailable, SessionConfig
from runtime.preflight import PreflightFailed, check_driver, check_instruction, check_sensors
from runtime.safety.causes import Cause
from runtime.safety.state_machine import LATCHED

log = logging.getLogger("pac-eval")

HELD_OUT_SEED_START = 1_000_000  # collection uses seeds 0..N: evaluation layouts the policy never saw
SHEET_FRAMES = 5  # frames per episode on a contact sheet
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
PR_SET_PDEATHSIG = 1  # prctl(2)
SESSION = SessionConfig(device="cpu", threads=1)  # one intra-op thread: W workers share the cores, results exact
# The lease an evaluation claims on its own lockstep sim, which nothing else can reach and which dies with its
# worker: long enough that no pause of a loaded machine between the reset and the first tick lapses it. With the
# link's 1 s lease, a CI machine under load held an episode's first tick for LEASE_LOST in one run and not in its
# replay, so the same seeds gave different episodes (sim time stands still meanwhile: nothing physical lapsed).
EVAL_LEASE_MS = 30_000.0


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: sound at 0 and n successes, unlike p ± z·se."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 from rounding
    return low, 1.0 if successes == n else min(1.0, centre + half)


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    success: bool
    steps: int  # control periods from the reset to success, the episode's end, or the fault
    sparse_return: float  # sum of the task's sparse reward (1 on the success step)
    shaped_return: float  # sum of the staged dense reward
    fault: str = ""  # the latched cause ("non_finite:policy_output"), "" when none
    holds: dict[str, int] = field(default_factory=dict)  # HOLD entries by cause (stale inputs, filter, ...)


@dataclass(frozen=True)
class EvalSummary:
    policy: str
    model: dict[str, Any]  # size, variant, graph inputs
    provenance: dict[str, Any]  # the policy file's training provenance
    robot: str
    task: str
    instruction: str
    seeds: list[int]
    max_steps: int
    decode: str  # bins → action, as the loop decoded them
    workers: int
    episodes: int
    successes: int
    success_rate: float
    success_ci95: tuple[float, float]  # Wilson score interval
    mean_return: float
    mean_shaped_return: float
    mean_steps: float
    faults_by_cause: dict[str, int]
    holds_by_cause: dict[str, int]
    wall_s: float
    results: list[EpisodeResult]

    def table(self) -> str:
        lo, hi = self.success_ci95
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults_by_cause.items())) or "none"
        holds = ", ".join(f"{k} {v}" for k, v in sorted(self.holds_by_cause.items())) or "none"
        seeds = f"{self.seeds[0]}..{self.seeds[-1]}" if self.seeds else "none"
        rows = [
            ("episodes", f"{self.episodes} (seeds {seeds}, at most {self.max_steps} steps, {self.workers} worker(s))"),
            ("decoding", self.decode),
            ("successes", f"{self.successes}"),
            ("success rate", f"{self.success_rate:.3f}  (Wilson 95 %: {lo:.3f} – {hi:.3f})"),
            ("mean return", f"{self.mean_return:.3f} sparse, {self.mean_shaped_return:.2f} shaped"),
            ("mean length", f"{self.mean_steps:.1f} steps"),
            ("faults", faults),
            ("holds", holds),
            ("wall time", f"{self.wall_s:.1f} s"),
        ]
        head = f"pac-eval: {self.robot} {self.task}, {Path(self.policy).name} ({self.model.get('size')} "
        head += f"{self.model.get('variant')}, {self.provenance.get('weights', 'trained')})"
        return "\n".join([head] + [f"  {name:<14}{value}" for name, value in rows])

    def write(self, out: Path) -> None:
        """`out/episodes.csv` (one row per episode) and `out/summary.json` (everything)."""
        out.mkdir(parents=True, exist_ok=True)
        with (out / "episodes.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["seed", "success", "steps", "return", "shaped_return", "fault", "holds"])
            for r in self.results:
                holds = ";".join(f"{k}={v}" for k, v in sorted(r.holds.items()))
                writer.writerow([r.seed, int(r.success), r.steps, r.sparse_return, r.shaped_return, r.fault, holds])
        (out / "summary.json").write_text(json.dumps(asdict(self), indent=1, default=str))


def summarize(
    results: list[EpisodeResult], policy: LoadedPolicy, config: RunConfig, task: str, **run: Any
) -> EvalSummary:
    """The summary of `results` (sorted by seed) for the policy, robot and task they came from."""
    results = sorted(results, key=lambda r: r.seed)
    n = len(results)
    successes = sum(r.success for r in results)
    meta = policy.metadata
    return EvalSummary(
        policy=str(policy.path),
        model={"size": meta.model.get("size"), "variant": meta.variant, "inputs": list(meta.observation.modalities)},
        provenance=dict(meta.provenance),
        robot=config.robot,
        task=task,
        instruction=config.instruction,
        decode=config.decode,
        seeds=[r.seed for r in results],
        episodes=n,
        successes=successes,
        success_rate=successes / n if n else 0.0,
        success_ci95=wilson_interval(successes, n),
        mean_return=float(np.mean([r.sparse_return for r in results])) if n else 0.0,
        mean_shaped_return=float(np.mean([r.shaped_return for r in results])) if n else 0.0,
        mean_steps=float(np.mean([r.steps for r in results])) if n else 0.0,
        faults_by_cause=dict(Counter(r.fault for r in results if r.fault)),
        holds_by_cause=dict(sum((Counter(r.holds) for r in results), Counter())),
        results=results,
        **run,
    )


# ------------------------------------------------------------------------------------------------ one worker
@dataclass(frozen=True)
class _Job:
    """What a worker needs to run episodes: picklable, for spawned processes."""

    policy: Path
    config: RunConfig
    task: str
    max_steps: int
    sheet_camera: str | None  # the camera a contact sheet's frames come from; None: no sheets
    log_level: int = logging.WARNING


class EpisodeRunner:
    """One task-aware lockstep sim driver and the policy, running episodes through a fresh pac-run loop each."""

    def __init__(self, job: _Job, policy: LoadedPolicy | None = None):
        self.job = job
        self.policy = policy or open_policy(job.config, job.policy, SESSION)
        obs = self.policy.metadata.observation
        cameras = tuple(dict.fromkeys(obs.cameras + ((job.sheet_camera,) if job.sheet_camera else ())))
        pub, cmd = private_endpoint("eval-pub"), private_endpoint("eval-cmd")
        argv = [sys.executable, "-m", "robots.tasks.driver", "--task", job.task, "--robot", job.config.robot]
        argv += ["--pub", pub, "--cmd", cmd, "--lockstep", "--cameras", ",".join(cameras) or "none"]
        argv += ["--objects", "all"]
        self._driver_log = tempfile.TemporaryFile("w+")  # a pipe nobody reads could fill and stall the driver
        self.driver = subprocess.Popen(
            argv, stdout=self._driver_log, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent
        )
        own = with_own_sim(job.config, pub, cmd)
        self.config = replace(own, link=replace(own.link, lease_ms=max(own.link.lease_ms, EVAL_LEASE_MS)))
        self.client = DriverClient.for_link(self.config.link, source="pac-eval")
        try:
            _, lockstep = check_driver(self.client, self.config, timeout_s=self.config.driver_wait_s)
            if not lockstep:
                raise PreflightFailed("the evaluation driver is not in lockstep")
            check_sensors(self.client, obs.cameras, lockstep, self.config.driver_wait_s, objects=obs.objects)
            claim_arm(self.client, self.config)
        except BaseException:
            self.close()
            raise

    def episode(self, seed: int, frames: bool = False) -> tuple[EpisodeResult, list[np.ndarray]]:
        """Reset to `seed` and run the policy until success, the step limit or a latched fault."""
        latest = self.client.reset(seed=seed)
        if latest.task is None or latest.task.task != self.job.task or latest.task.step != 0:
            raise RuntimeError(f"the driver did not report task {self.job.task!r} after the reset: {latest.task}")
        loop = build_loop(self.config, self.policy, self.client, lockstep=True, recorder=None, decode_seed=seed)
        tally = _Tally(self.client, self.job.max_steps, self.job.sheet_camera if frames else None)
        tally.look()  # the frame at the reset
        state = loop.run(max_ticks=self.job.max_steps, until=tally.look)
        safety = loop.guard.safety
        fault = _key(safety.fault_cause) if state in LATCHED and safety.fault_cause is not None else ""
        result = EpisodeResult(
            seed=seed,
            success=tally.success and not fault,
            steps=tally.step,
            sparse_return=tally.sparse,
            shaped_return=tally.shaped,
            fault=fault,
            holds={_key(c): n for c, n in safety.holds_by_cause.items()},
        )
        return result, tally.sheet_frames()

    def close(self) -> None:
        self.client.close()
        stop_sim(self.driver)
        if self.driver.returncode != 0:
            self._driver_log.seek(0)
            log.warning(
                "the evaluation driver exited with %s: %s", self.driver.returncode, self._driver_log.read()[-2000:]
            )
        self._driver_log.close()

    def __enter__(self) -> EpisodeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(cause: Cause) -> str:
    """A cause without its detail, for counting: "non_finite:policy_output"."""
    return str(replace(cause, detail=""))


def _die_with_parent() -> None:
    """In the driver's child process: SIGTERM it when the worker that started it dies (Linux), so a killed
    worker leaves no lockstep driver behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class _Tally:
    """Reads the `task` topic after every tick: accumulates the rewards, keeps a few frames, says when to stop."""

    def __init__(self, client: DriverClient, max_steps: int, camera: str | None):
        self.client, self.max_steps, self.camera = client, max_steps, camera
        self.step, self.sparse, self.shaped, self.success = 0, 0.0, 0.0, False
        self.stride = max(1, max_steps // (SHEET_FRAMES - 1))
        self.frames: list[np.ndarray] = []
        self.last_frame: np.ndarray | None = None

    def look(self) -> str:
        task = self.client.latest.task
        if task is not None and task.step > self.step:  # one new period (lockstep: one per tick)
            self.step = task.step
            self.sparse += task.reward
            self.shaped += task.shaped_reward
            self.success = task.success
        if self.camera is not None and self.camera in self.client.latest.images:
            self.last_frame = self.client.latest.images[self.camera].image
            if self.step == len(self.frames) * self.stride:
                self.frames.append(self.last_frame)
        if self.success:
            return "success"
        return "episode_steps" if self.step >= self.max_steps else ""

    def sheet_frames(self) -> list[np.ndarray]:
        """Up to SHEET_FRAMES frames: every stride-th period, with the last one in place of the final slot."""
        kept = self.frames[: SHEET_FRAMES - 1]
        if self.last_frame is not None and (not kept or kept[-1] is not self.last_frame):
            kept.append(self.last_frame)
        return kept


def _worker(job: _Job, seeds: list[int], sheet_seeds: frozenset[int], results: mp.Queue) -> None:
    """A spawned worker: its own driver on its own ports; each result (or its error) goes to `results`."""
    setup_logging(job.log_level)
    try:
        with EpisodeRunner(job) as runner:
            for seed in seeds:
                results.put(("episode", runner.episode(seed, frames=seed in sheet_seeds)))
    except BaseException:  # noqa: BLE001 - the parent reports it; a worker must never die silently
        results.put(("error", traceback.format_exc()))


def _run_workers(job: _Job, seeds: list[int], sheet_seeds: frozenset[int], workers: int, bar: tqdm):
    """Deal `seeds` round-robin to `workers` spawned processes; yield (result, frames) as they finish."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(job, seeds[w::workers], sheet_seeds, results), daemon=True)
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    finished = False
    try:
        for _ in range(len(seeds)):
            while True:
                try:
                    kind, payload = results.get(timeout=1.0)
                    break
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"an evaluation worker died (exit code {dead[0].exitcode})") from None
            if kind == "error":
                raise RuntimeError(f"an evaluation worker failed:\n{payload}")
            yield payload
            bar.update()
        finished = True
    finally:
        for p in procs:  # after a failure the others stop at once; their drivers die with them
            p.join(timeout=30 if finished else 0)
            if p.is_alive():
                p.terminate()
                p.join()


# ------------------------------------------------------------------------------------------------ the API
def evaluate(
    policy_path: Path | str,
    robot: str,
    task: str,
    episodes: int,
    workers: int = 1,
    seed_start: int = HELD_OUT_SEED_START,
    max_steps: int | None = None,
    config: Path | None = None,
    out: Path | None = None,
    sheets: int = 0,
    progress: bool = False,
    decode: str | None = None,
) -> EvalSummary:
    """Run `episodes` closed-loop episodes on seeds seed_start, seed_start + 1, ... and summarise them.

    Raises PolicyRefused / ProviderUnavailable / PreflightFailed / ConfigError before any episode when the
    policy cannot be served on `robot`, and RuntimeError when a driver or worker fails. With `out`, writes
    episodes.csv, summary.json and (sheets > 0) contact_sheet.png there. `decode` (one of DECODINGS)
    overrides the config's bins → action decoding.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if episodes < 1 or workers < 1:
        raise ValueError("episodes and workers must be at least 1")
    started = time.monotonic()
    run_config = with_overrides(load_config(config, robot), instruction=TASKS[task].instruction, decode=decode)
    policy = open_policy(run_config, Path(policy_path), SESSION)  # refused here, before any driver starts
    check_instruction(policy, run_config.instruction)
    steps = max_steps or TASKS[task].episode_steps
    cameras = policy.metadata.observation.cameras or tuple(c.name for c in load_spec(robot).cameras)
    job = _Job(Path(policy_path), run_config, task, steps, cameras[0] if sheets else None, _log_level())
    seeds = [seed_start + i for i in range(episodes)]
    sheet_seeds = frozenset(seeds[:sheets])
    done: dict[int, tuple[EpisodeResult, list[np.ndarray]]] = {}
    with tqdm(total=episodes, desc=f"{task} episodes", unit="ep", disable=not progress, file=sys.stderr) as bar:
        if workers == 1:
            with EpisodeRunner(job, policy) as runner:
                for seed in seeds:
                    done[seed] = runner.episode(seed, frames=seed in sheet_seeds)
                    bar.update()
        else:
            for result, frames in _run_workers(job, seeds, sheet_seeds, min(workers, episodes), bar):
                done[result.seed] = (result, frames)
    summary = summarize(
        [done[s][0] for s in seeds],
        policy,
        run_config,
        task,
        max_steps=steps,
        workers=workers,
        wall_s=time.monotonic() - started,
    )
    if out is not None:
        summary.write(Path(out))
        if sheets:
            contact_sheet([done[s] for s in seeds[:sheets]], Path(out) / "contact_sheet.png")
    return summary


def _log_level() -> int:
    return logging.getLogger().getEffectiveLevel()


def setup_logging(level: int) -> None:
    """Warnings and up; a HOLD transition, logged by the state machine each time, only when verbose (INFO):
    the summary counts holds by cause instead."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.INFO:
        logging.getLogger("runtime.safety.state_machine").setLevel(logging.ERROR)


def contact_sheet(episodes: list[tuple[EpisodeResult, list[np.ndarray]]], path: Path) -> Path:
    """One row per episode: a label (seed, outcome, steps) and its frames, left to right; written as PNG."""
    tiles = [f for _, frames in episodes for f in frames]
    if not tiles:
        raise ValueError("no frames to put on a contact sheet")
    h, w = tiles[0].shape[:2]
    label_w = 150
    sheet = np.full((h * len(episodes), label_w + w * SHEET_FRAMES, 3), 255, np.uint8)
    for row, (result, frames) in enumerate(episodes):
        y = row * h
        outcome = "success" if result.success else (result.fault.split(":")[0] or "failure")
        for i, text in enumerate((f"seed {result.seed}", outcome, f"{result.steps} steps")):
            cv2.putText(sheet, text, (6, y + 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for i, frame in enumerate(frames[:SHEET_FRAMES]):
            sheet[y : y + h, label_w + i * w : label_w + (i + 1) * w] = cv2.resize(frame, (w, h))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------------------------------------ the CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pac-eval", description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=Path, required=True, help="exported actor (.onnx)")
    p.add_argument("--robot", choices=ARMS, required=True)
    p.add_argument("--task", choices=list(TASKS), required=True)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--workers", type=int, default=1, help="(driver, loop) pairs in parallel processes")
    p.add_argument("--seed-start", type=int, default=HELD_OUT_SEED_START, help="first seed (held out by default)")
    p.add_argument("--max-steps", type=int, default=None, help="episode length (default: the task's)")
    p.add_argument("--config", type=Path, default=None, help="runtime YAML (default: runtime/configs/ROBOT.yaml)")
    p.add_argument(
        "--decode",
        choices=DECODINGS,
        default=None,
        help="bins → action (default: the config's). A policy cloned from noisy data puts its argmax on the "
        "clipped end bins and on exact zeros; the mean follows the data's average action; sample and "
        "sample_median draw from the policy, seeded by each episode's seed",
    )
    p.add_argument("--out", type=Path, default=None, help="directory for episodes.csv, summary.json, the sheet")
    p.add_argument("--sheets", type=int, default=0, help="contact sheet of the first K episodes (needs --out)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.sheets and args.out is None:
        parser.error("--sheets needs --out")
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    try:
        summary = evaluate(
            args.policy,
            args.robot,
            args.task,
            args.episodes,
            workers=args.workers,
            seed_start=args.seed_start,
            max_steps=args.max_steps,
            config=args.config,
            decode=args.decode,
            out=args.out,
            sheets=args.sheets,
            progress=True,
        )
    except (ConfigError, PolicyRefused, ProviderUnavailable, PreflightFailed) as exc:
        print(f"pac-eval: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (RuntimeError, DriverUnavailable) as exc:
        print(f"pac-eval: {exc}", file=sys.stderr)
        return 1
    print(summary.table(), flush=True)
    if args.out is not None:
        print(f"episodes.csv and summary.json written to {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

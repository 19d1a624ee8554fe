"""A training run's directory: its config, its checkpoints as safetensors, and how to find the latest.

    RUN/run.json                     TrainConfig, model config, observation and action specs, the dataset's
                                     sha256, the command line, git commit, versions, world size
    RUN/checkpoints/step_0001000/    model.safetensors (what pac-export reads), target.safetensors,
                                     optimizer.safetensors, rng.safetensors, scaler.safetensors,
                                     progress.json (step, epoch, batch within the epoch),
                                     sampler.safetensors (a prioritised sampler's state, when the run has one)
    RUN/checkpoints/latest           the name of the newest complete checkpoint

A checkpoint is written to a temporary directory and renamed into place, and `latest` is replaced after
it, so a run killed mid-write leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

GROUPS = ("model", "target", "optimizer", "rng", "scaler")
OPTIONAL_GROUPS = ("sampler",)  # written when the run has one (a prioritised sampler's state); older runs lack it
RUN_FILE = "run.json"


class CheckpointError(ValueError):
    """A run directory or checkpoint is missing or incomplete; the message names what."""


@dataclass(frozen=True)
class Progress:
    step: int  # optimiser steps taken
    epoch: int  # the epoch the next batch comes from
    batch: int  # index within that epoch of the next batch

    def to_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch}


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_run(run: Path, info: dict[str, Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / RUN_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_run(run: Path) -> dict[str, Any]:
    path = Path(run) / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f"{run} is not a training run: no {RUN_FILE} (made by pac-train --out)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not JSON: {exc}") from exc


def recorded_threads(info: dict[str, Any]) -> int | None:
    """The torch intra-op thread count a run was started with (run.json's "threads"; a run from before that key:
    the --threads of its command line), None when it did not say."""
    if info.get("threads"):
        return int(info["threads"])
    words = shlex.split(info.get("command", ""))
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "--threads" and value.isdigit():
            return int(value)
    return None


def save_checkpoint(run: Path, groups: dict[str, dict[str, torch.Tensor]], progress: Progress) -> Path:
    """Write one checkpoint atomically and point `latest` at it; returns its directory."""
    root = Path(run) / "checkpoints"
    name = f"step_{progress.step:07d}"
    final, staging = root / name, root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for group in GROUPS:
        save_file(groups.get(group, {}), str(staging / f"{group}.safetensors"), metadata={"group": group})
    for group in OPTIONAL_GROUPS:
        if groups.get(group):
            save_file(groups[group], str(staging / f"{group}.safetensors"), metadata={"group": group})
    (staging / "progress.json").write_text(json.dumps(progress.to_dict()) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    latest = root / "latest.tmp"
    latest.write_text(name + "\n")
    os.replace(latest, root / "latest")
    return final


def latest_checkpoint(run: Path) -> Path:
    """The newest complete checkpoint of `run`, or CheckpointError."""
    root = Path(run) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run} has no checkpoint yet (no {pointer})")
    path = root / pointer.read_text().strip()
    missing = [g for g in GROUPS if not (path / f"{g}.safetensors").is_file()]
    if missing or not (path / "progress.json").is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {missing or ['progress.json']}")
    return path


def checkpoint_steps(run: Path) -> list[int]:
    """The steps at which `run` holds a checkpoint, ascending (its step_NNNNNNN folders)."""
    return sorted(int(p.name.removeprefix("step_")) for p in (Path(run) / "checkpoints").glob("step_*"))


def checkpoint_at(run: Path, step: int | None = None) -> Path:
    """The checkpoint of `run` at `step`, or its latest when `step` is None."""
    if step is None:
        return latest_checkpoint(run)
    path = Path(run) / "checkpoints" / f"step_{step:07d}"
    if not (path / "model.safetensors").is_file():
        have = sorted(p.name for p in (Path(run) / "checkpoints").glob("step_*"))
        raise CheckpointError(f"{run} has no checkpoint at step {step} (it has {have})")
    return path


def load_trained_model(run: Path, step: int | None = None):
    """(model, run info, checkpoint path): the online network of `run`'s checkpoint, in eval mode."""
    from policies.model.config import PACConfig
    from policies.model.perceiver import PerceiverActorCritic
    from policies.spec import ActionSpec, ObservationSpec

    info = read_run(run)
    path = checkpoint_at(run, step)
    model = PerceiverActorCritic(
        PACConfig.from_dict(info["model"]),
        ObservationSpec.from_dict(info["observation_spec"]),
        ActionSpec.from_dict(info["action_spec"]),
    )
    groups, _ = load_checkpoint(path, ("model",))
    model.load_state_dict(groups["model"])
    return model.eval(), info, path


def load_checkpoint(
    path: Path, groups: tuple[str, ...] = GROUPS
) -> tuple[dict[str, dict[str, torch.Tensor]], Progress]:
    try:
        tensors = {g: load_file(str(Path(path) / f"{g}.safetensors")) for g in groups}
        progress = Progress(**json.loads((Path(path) / "progress.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:  # safetensors raises its own error types, subclasses of these
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    return tensors, progress

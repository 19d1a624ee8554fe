"""pac-run's configuration: one YAML per robot (runtime/configs/<robot>.yaml), overridable from the CLI.

The arm's physical limits live in robots/specs/<robot>.yaml and are the single source; this file holds
what the runtime adds: where the driver is, the control rate, which cameras the policy uses, the safety
filter's rate limits, the watchdog thresholds, and the calibration file the pre-flight checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from runtime.safety.watchdogs import WatchdogConfig

CONFIG_DIR = Path(__file__).with_name("configs")


class ConfigError(ValueError):
    """A runtime config file is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class SafetyConfig:
    max_linear_accel: float = 1.0  # m/s², bounds the per-period change of a commanded TCP velocity
    max_angular_accel: float = 10.0  # rad/s²


@dataclass(frozen=True)
class RunConfig:
    robot: str
    mode: str = "cartesian_velocity"
    period_s: float = 0.05
    pub_endpoint: str = "tcp://127.0.0.1:5555"  # driver → runtime: state, images, status
    cmd_endpoint: str = "tcp://127.0.0.1:5556"  # runtime → driver: commands
    cameras: tuple[str, ...] = ()  # empty: all of the arm's cameras
    instruction: str = "stack the red object on the blue object"
    decode: str = "argmax"  # bins → action: "argmax" or "mean"
    calibration: str = ""  # calibration YAML; empty: none (sim)
    calibration_max_age_days: float = 30.0
    max_clock_offset_ms: float = 5.0  # cross-host clock offset the pre-flight tolerates
    driver_wait_s: float = 5.0  # how long the pre-flight waits for the driver's first heartbeat
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    watchdogs: WatchdogConfig = field(default_factory=WatchdogConfig)


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        if name == "safety":
            value = _build(SafetyConfig, value or {}, f"{where}.safety")
        elif name == "watchdogs":
            value = _build(WatchdogConfig, value or {}, f"{where}.watchdogs")
        elif name == "cameras":
            value = tuple(value or ())
        values[name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(path: Path | None = None, robot: str | None = None) -> RunConfig:
    """The config at `path`, or the shipped one for `robot`."""
    if path is None:
        if robot is None:
            raise ConfigError("give a config file or a robot name")
        path = CONFIG_DIR / f"{robot}.yaml"
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or "robot" not in raw:
        raise ConfigError(f"{path}: expected a mapping with at least 'robot'")
    config = _build(RunConfig, raw, str(path))
    if robot is not None and config.robot != robot:
        raise ConfigError(f"{path} is for robot {config.robot!r}, but --robot {robot} was given")
    return config


def with_overrides(config: RunConfig, **overrides: Any) -> RunConfig:
    """CLI overrides: None means "not given"."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})

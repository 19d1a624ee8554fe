"""pac-run's configuration: typed dataclasses, a per-robot YAML holding only what differs, CLI overrides.

The defaults live in the dataclasses, once: the link (endpoints, period, timeouts) in the contract's
`LinkConfig`, the watchdog thresholds in `WatchdogConfig`. `runtime/configs/<robot>.yaml` names the robot
and whatever that cell changes; an arm's physical limits are not here at all: they are in its robot YAML
(robots/specs/<robot>.yaml), the single source for the driver and the safety filter alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from policies.spec import DECODINGS
from robots.contract.link import DEFAULT_LINK, MOTION_MODES, LinkConfig, Mode
from robots.tasks.tasks import TASKS
from runtime.safety.watchdogs import WatchdogConfig

CONFIG_DIR = Path(__file__).with_name("configs")


class ConfigError(ValueError):
    """A runtime config file is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class RunConfig:
    robot: str
    mode: Mode = Mode.CARTESIAN_VELOCITY  # the policy's action space
    link: LinkConfig = DEFAULT_LINK  # where the driver is, control period, command timeout
    cameras: tuple[str, ...] = ()  # empty: all of the arm's cameras
    instruction: str = TASKS["stack"].instruction
    decode: str = "argmax"  # bins → action: one of DECODINGS
    calibration: str = ""  # calibration YAML; empty: none (sim)
    calibration_max_age_days: float = 30.0
    max_clock_offset_ms: float = 5.0  # cross-host clock offset the pre-flight tolerates
    driver_wait_s: float = 5.0  # how long the pre-flight waits for the driver's first heartbeat
    watchdogs: WatchdogConfig = field(default_factory=WatchdogConfig)

    def __post_init__(self) -> None:
        if self.decode not in DECODINGS:
            raise ConfigError(f"decode: {self.decode!r} is not one of {list(DECODINGS)}")

    @property
    def period_s(self) -> float:
        return self.link.period_s


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = dict(raw)
    nested = {"link": LinkConfig, "watchdogs": WatchdogConfig}
    for name, sub in nested.items():
        if name in values:
            values[name] = _build(sub, values[name] or {}, f"{where}.{name}")
    if "cameras" in values:
        values["cameras"] = tuple(values["cameras"] or ())
    if "mode" in values:
        mode = Mode.parse(values["mode"])
        if mode not in MOTION_MODES:
            raise ConfigError(f"{where}.mode: {values['mode']!r} is not one of {[m.value for m in MOTION_MODES]}")
        values["mode"] = mode
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
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML: {exc}") from exc
    if not isinstance(raw, dict) or "robot" not in raw:
        raise ConfigError(f"{path}: expected a mapping with at least 'robot'")
    config = _build(RunConfig, raw, str(path))
    if robot is not None and config.robot != robot:
        raise ConfigError(f"{path} is for robot {config.robot!r}, but --robot {robot} was given")
    return config


def with_overrides(config: RunConfig, **overrides: Any) -> RunConfig:
    """CLI overrides: None means "not given"."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def with_endpoints(config: RunConfig, pub: str | None, cmd: str | None) -> RunConfig:
    """The config with the driver's endpoints replaced where given."""
    link = replace(config.link, **{k: v for k, v in (("pub_endpoint", pub), ("cmd_endpoint", cmd)) if v is not None})
    return replace(config, link=link)

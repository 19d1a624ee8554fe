"""pac-run's configuration: typed dataclasses, a per-robot YAML holding only what differs, CLI overrides.

The defaults live in the dataclasses, once: the link (endpoints, period, timeouts) in the contract's
`LinkConfig`, the watchdog thresholds in `WatchdogConfig`. `runtime/configs/<robot>.yaml` names the robot
and whatever that cell changes; an arm's physical limits are not here at all: they are in its robot YAML
(robots/specs/<robot>.yaml), the single source for the driver and the safety filter alike.
"""

from __future__ import annotations

import reprlib
import sys
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from policies.spec import DECODINGS
from robots.contract.link import DEFAULT_LINK, MOTION_MODES, LinkConfig, Mode
from robots.contract.security import NO_KEYS, local_endpoints
from robots.sim.process import SIM_START_S
from robots.tasks.tasks import TASKS
from runtime.safety.watchdogs import WatchdogConfig

CONFIG_DIR = Path(__file__).with_name("configs")
MAX_CONFIG_BYTES = 64 * 1024  # a cell's config is a few hundred bytes; pure-Python YAML reads ~3 MB/s
MAX_FLOW_BRACKETS = 256  # PyYAML scans nested flow collections in quadratic time: 1,000 "[" take 0.3 s
_MAX_INT = 2**31 - 1  # the int fields (JPEG quality, queue lengths) end up in C ints


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # the limits as attributes: Python < 3.12 takes no keywords
    r.maxlevel, r.maxstring, r.maxother = 2, 60, 60
    return r


_show = _bounded_repr().repr  # bounded: a YAML alias bomb has a repr of billions of items


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH, before Python's recursion limit does."""

    MAX_DEPTH = 32  # a config nests two levels

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > self.MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {self.MAX_DEPTH}", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
    calibration: tuple[str, ...] = ()  # pac-calibrate result files (one name reads as a list of one); none: sim
    calibration_max_age_days: float = 30.0
    max_clock_offset_ms: float = 5.0  # cross-host clock offset the pre-flight tolerates
    driver_wait_s: float = 5.0  # how long the pre-flight waits for the driver's first heartbeat
    watchdogs: WatchdogConfig = field(default_factory=WatchdogConfig)

    def __post_init__(self) -> None:
        if self.decode not in DECODINGS:
            raise ConfigError(f"decode: {_show(self.decode)} is not one of {list(DECODINGS)}")

    @property
    def period_s(self) -> float:
        return self.link.period_s


# List fields where a single name stands for a list of one (older configs named one calibration file).
# Elsewhere a bare string is refused: `cameras: front_left` is a typo for a list, found by the config fuzzer.
ONE_NAME_READS_AS_LIST = frozenset({"calibration"})


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, raw: Any, where: str) -> Any:
    """`cls` from a YAML mapping, every value checked against the field's type: a wrong one is named here,
    not found later as a crash in the loop."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(_show(key) for key in raw if key not in known)  # keys of any YAML type, bounded
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) [{', '.join(unknown)}]; known: {sorted(known)}")
    given = {name: value for name, value in raw.items() if value is not None}  # `key:` with no value: the default
    values = {name: _value(hint, given[name], f"{where}.{name}") for name, hint in _hints(cls).items() if name in given}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _value(hint: Any, value: Any, where: str) -> Any:
    """A YAML value as the field typed `hint` holds it; numbers must be finite and positive (each is a
    duration, a rate, a size or a tolerance)."""
    if is_dataclass(hint):
        return _build(hint, value, where)
    if hint is Mode:
        mode = Mode.parse(value) if isinstance(value, str) else None
        if mode not in MOTION_MODES:
            raise ConfigError(f"{where}: {_show(value)} is not one of {[m.value for m in MOTION_MODES]}")
        return mode
    if hint == tuple[str, ...]:
        if isinstance(value, str) and where.rsplit(".", 1)[-1] in ONE_NAME_READS_AS_LIST:
            return (value,) if value else ()  # `calibration: /etc/pac/cell.yaml`: one name
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: expected a list of names, got {_show(value)}")
        return tuple(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    if hint in (int, float):
        kinds, top = ((int, float), sys.float_info.max) if hint is float else ((int,), _MAX_INT)
        if not isinstance(value, kinds) or isinstance(value, bool) or not 0 < value <= top:  # NaN fails too
            raise ConfigError(f"{where}: expected a positive {hint.__name__} up to {top:.3g}, got {_show(value)}")
        return hint(value)
    return value


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
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes: not a config")
    if data.count(b"[") + data.count(b"{") > MAX_FLOW_BRACKETS:
        raise ConfigError(f"{path} has more than {MAX_FLOW_BRACKETS} brackets: not a config")
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=_Loader) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML: {exc}") from exc
    if not isinstance(raw, dict) or "robot" not in raw:
        raise ConfigError(f"{path}: expected a mapping with at least 'robot'")
    config = _build(RunConfig, raw, str(path))
    missing = config.link.security.missing_files()
    if missing:
        raise ConfigError(f"{path}: link.security names {_show(missing[0])}, which does not exist (see `pac-keys`)")
    if robot is not None and config.robot != robot:
        raise ConfigError(f"{path} is for robot {config.robot!r}, but --robot {robot} was given")
    return config


def with_overrides(config: RunConfig, **overrides: Any) -> RunConfig:
    """CLI overrides: None means "not given"."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def with_endpoints(config: RunConfig, pub: str | None, cmd: str | None) -> RunConfig:
    """The config with the driver's endpoints replaced where given, and those left at the default ("") made the
    robot's local ones: ipc sockets only this user can reach (robots/contract/security.py)."""
    link = replace(config.link, **{k: v for k, v in (("pub_endpoint", pub), ("cmd_endpoint", cmd)) if v is not None})
    local_pub, local_cmd = local_endpoints(config.robot)
    link = replace(link, pub_endpoint=link.pub_endpoint or local_pub, cmd_endpoint=link.cmd_endpoint or local_cmd)
    return replace(config, link=link)


def with_own_sim(config: RunConfig, pub: str, cmd: str) -> RunConfig:
    """The config for a sim this process started itself on `pub`/`cmd`: private ipc sockets, no keys (the
    config's keys are for its real driver), and the pre-flight waits out its start-up (SIM_START_S: on a
    loaded 2-core machine it took more than the 5 s a running driver gets to answer)."""
    config = replace(config, driver_wait_s=max(config.driver_wait_s, SIM_START_S))
    return with_endpoints(replace(config, link=replace(config.link, security=NO_KEYS)), pub, cmd)

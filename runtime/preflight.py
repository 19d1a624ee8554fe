"""Checks before the first motion: model vs robot, the driver is there and is the right arm, clocks, calibration.

Each check yields a line for the start-up table; the first failure raises PreflightFailed with a message a
person can act on. Model-file checks (spec, provider, golden pair) happen in `load_policy` and are reported
here from what it found.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from policies.tokenizer.language import PAD_ID, InstructionTooLong
from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.link import DriverFault, DriverMode
from runtime.config import RunConfig
from runtime.inference.loader import LoadedPolicy


class PreflightFailed(RuntimeError):
    """A pre-flight check failed; nothing was commanded."""


@dataclass(frozen=True)
class Check:
    name: str
    detail: str


def check_driver(client: DriverClient, config: RunConfig, timeout_s: float = 10.0) -> tuple[Check, bool]:
    """Heartbeat from the right robot; returns the check and whether the driver runs in lockstep."""
    try:
        status = client.wait_ready(timeout_s)
    except DriverUnavailable as exc:
        raise PreflightFailed(
            f"{exc}. Start a driver for this arm (`pac-sim --robot {config.robot} --pub {config.link.pub_endpoint} "
            f"--cmd {config.link.cmd_endpoint}`) or pass --sim to start one."
        ) from exc
    if status.robot != config.robot:
        raise PreflightFailed(f"the driver on {config.link.pub_endpoint} drives a {status.robot}, not a {config.robot}")
    if status.period_s != config.link.period_s:
        raise PreflightFailed(f"driver period {status.period_s} s differs from the config's {config.link.period_s} s")
    lockstep = status.mode == DriverMode.LOCKSTEP
    if not lockstep and set(status.faults) - {DriverFault.COMMAND_TIMEOUT}:
        raise PreflightFailed(f"the driver reports faults {status.faults}; clear them before running")
    where = f"{status.robot} {status.mode} on {config.link.pub_endpoint} (source {status.source})"
    return Check("driver", where), lockstep


def check_clock(client: DriverClient, config: RunConfig, lockstep: bool, samples: int = 5) -> Check:
    """The driver's stamps are on our monotonic clock (same host) or within max_clock_offset_ms of it."""
    if lockstep:
        return Check("clock", "lockstep: ages on the driver's sim clock")
    offsets = []
    end = time.monotonic() + 2.0
    last = -1
    while len(offsets) < samples and time.monotonic() < end:
        status = client.poll(100).status
        if status is not None and status.seq != last:
            last = status.seq
            offsets.append((time.monotonic_ns() - status.t_capture_ns) / 1e6)
    if not offsets:
        raise PreflightFailed("cannot estimate the clock offset: no heartbeats")
    offset = min(offsets)  # transport delay only adds: the smallest is the best estimate
    if abs(offset) > config.max_clock_offset_ms:
        raise PreflightFailed(
            f"driver clock offset {offset:.1f} ms exceeds {config.max_clock_offset_ms} ms; "
            "observation ages cannot be trusted (is the driver on another host without clock sync?)"
        )
    return Check("clock", f"offset {offset:.2f} ms (≤ {config.max_clock_offset_ms} ms)")


def check_sensors(client: DriverClient, cameras: tuple[str, ...], lockstep: bool, timeout_s: float = 5.0) -> Check:
    """A first state and a frame from every camera the model needs, so the first tick has a whole observation."""
    end = time.monotonic() + timeout_s
    latest = client.latest
    while time.monotonic() < end:
        if lockstep:
            try:
                latest = client.step(timeout_s=max(0.1, end - time.monotonic()))  # one period, no command
            except DriverUnavailable as exc:
                raise PreflightFailed(f"the lockstep driver did not answer a tick: {exc}") from exc
        else:
            latest = client.poll(50)
        if latest.state is not None and all(c in latest.images for c in cameras):
            shapes = {c: latest.images[c].image.shape[:2] for c in cameras}
            return Check("sensors", "state and " + ", ".join(f"{c} {h}x{w}" for c, (h, w) in shapes.items()))
    missing = [c for c in cameras if c not in latest.images] + (["state"] if latest.state is None else [])
    raise PreflightFailed(
        f"no {', '.join(missing)} from the driver within {timeout_s:.0f} s; "
        f"the model needs cameras {', '.join(cameras)} (is the driver started with them?)"
    )


def check_calibration(config: RunConfig, now: _dt.datetime | None = None) -> Check:
    if not config.calibration:
        return Check("calibration", "none configured (simulation)")
    path = Path(config.calibration)
    if not path.is_file():
        raise PreflightFailed(f"calibration file {path} does not exist; run pac-calibrate")
    raw = yaml.safe_load(path.read_text()) or {}
    stamp = raw.get("date") if isinstance(raw, dict) else None
    when = (
        _dt.datetime.fromisoformat(str(stamp))
        if stamp
        else _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc)
    )
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    age_days = ((now or _dt.datetime.now(_dt.timezone.utc)) - when).total_seconds() / 86400
    if age_days > config.calibration_max_age_days:
        raise PreflightFailed(
            f"calibration {path} is {age_days:.0f} days old (limit {config.calibration_max_age_days:.0f}); recalibrate"
        )
    return Check("calibration", f"{path} ({age_days:.1f} days old)")


def check_instruction(policy: LoadedPolicy, instruction: str) -> Check:
    """The instruction fits the model's instruction length (else every tick would fail to tokenize it)."""
    try:
        ids = policy.tokenizer.instruction(instruction)
    except InstructionTooLong as exc:
        raise PreflightFailed(f"{exc}; shorten --instruction") from exc
    used = int((ids != PAD_ID).sum())
    return Check("instruction", f"{instruction!r}: {used} of {ids.shape[1]} tokens")


def policy_checks(policy: LoadedPolicy) -> list[Check]:
    meta = policy.metadata
    fallback = " (CPU fallback allowed by the operator)" if policy.fell_back else ""
    return [
        Check(
            "model spec",
            f"{meta.model.get('size')} {meta.variant}: {meta.action.robot} {meta.action.mode}, "
            f"{meta.action.size} dims, cameras {', '.join(meta.observation.cameras)}",
        ),
        Check("provider", f"{policy.provider}{fallback}"),
        Check("golden pair", f"max |error| {policy.golden_error:.2g} ≤ {meta.golden.atol:g}"),
    ]

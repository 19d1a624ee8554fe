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

from calibration.io import HANDEYE, INTRINSICS, CalibrationFileError, read_result
from policies.spec import ObservationSpec, observation_spec, scene_objects
from policies.tokenizer.language import PAD_ID, InstructionTooLong
from robots.contract.client import DriverClient, DriverUnavailable, LatestMessages
from robots.contract.link import SELF_CLEARING_FAULTS, DriverFault, DriverMode
from robots.contract.messages import IMAGE_PREFIX, OBJECTS, STATE
from robots.contract.receiver import Shapes, shape_drop_reason
from robots.spec import ArmSpec
from runtime.config import RunConfig
from runtime.inference.loader import LoadedPolicy, PolicyRefused

LOCKSTEP_SENSOR_TICKS = 10  # lockstep: periods to wait for a topic the driver would publish every period


class PreflightFailed(RuntimeError):
    """A pre-flight check failed; nothing was commanded."""


@dataclass(frozen=True)
class Check:
    name: str
    detail: str


def message_shapes(arm: ArmSpec, observation: ObservationSpec) -> Shapes:
    """The shapes the runtime takes from the driver, beyond what the wire contract fixes: a state with the arm's
    joint count, a frame per camera at the model's resolution. Given to the client's receiver before the
    pre-flight, so a message with other shapes is dropped and counted by topic and never reaches a tick."""
    frame = (observation.image_height, observation.image_width, 3)
    return {STATE: {"q": (arm.dof,), "dq": (arm.dof,)}} | {
        IMAGE_PREFIX + camera: {"image": frame} for camera in observation.cameras
    }


def check_driver(client: DriverClient, config: RunConfig, timeout_s: float = 10.0) -> tuple[Check, bool]:
    """Heartbeat from the right robot, with no fault: one that clears by itself (a sustained overrun of a driver
    starting up or of a busy host) is given `timeout_s` to clear, nothing is commanded meanwhile; one that
    latches (an e-stop, a reflex, an arm error) is refused at once. Returns the check and whether the driver
    runs in lockstep."""
    try:
        status = client.wait_settled(timeout_s)
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
    faults = set(status.faults) - {DriverFault.COMMAND_TIMEOUT}
    if not lockstep and faults:
        waited = f" (still after {timeout_s:g} s)" if faults <= SELF_CLEARING_FAULTS else ""  # else: not waited for
        raise PreflightFailed(f"the driver reports faults {status.faults}{waited}; clear them before running")
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


def _missing(latest: LatestMessages, cameras: tuple[str, ...], objects: tuple[str, ...]) -> tuple[list, list]:
    """(state and cameras never heard, objects with no pose in the newest `objects` message)."""
    sensors = (["state"] if latest.state is None else []) + [c for c in cameras if c not in latest.images]
    seen = latest.objects.names if latest.objects is not None else ()
    return sensors, [o for o in objects if o not in seen]


def check_sensors(
    client: DriverClient,
    cameras: tuple[str, ...],
    lockstep: bool,
    timeout_s: float = 5.0,
    objects: tuple[str, ...] = (),
) -> Check:
    """A first state, a frame from every camera the model needs and, for a model reading object poses, an
    `objects` message with each of its objects: so the first tick has a whole observation.

    A lockstep driver publishes every topic it has each period, so LOCKSTEP_SENSOR_TICKS periods without one
    mean it does not publish it: refused then instead of after the timeout.
    """
    end = time.monotonic() + timeout_s
    latest = client.latest
    ticks = 0
    while time.monotonic() < end and ticks < LOCKSTEP_SENSOR_TICKS:
        if lockstep:
            try:
                latest = client.step(timeout_s=max(0.1, end - time.monotonic()))  # one period, no command
            except DriverUnavailable as exc:
                raise PreflightFailed(f"the lockstep driver did not answer a tick: {exc}") from exc
            ticks += 1
        else:
            latest = client.poll(50)
        if _missing(latest, cameras, objects) == ([], []):
            sizes = [f"{c} {'x'.join(map(str, latest.images[c].image.shape[:2]))}" for c in cameras]
            poses = [f"poses of {', '.join(objects)}"] if objects else []
            return Check("sensors", ", ".join(["state", *sizes, *poses]))
    waited = f"{ticks} lockstep periods" if lockstep else f"{timeout_s:.0f} s"
    sensors, unseen = _missing(latest, cameras, objects)
    if sensors:
        needs = f"; the model needs cameras {', '.join(cameras)} (is the driver started with them?)" if cameras else ""
        topics = {"state": STATE} | {c: IMAGE_PREFIX + c for c in cameras}
        dropped = [topics[s] for s in sensors if client.dropped.get(shape_drop_reason(topics[s]))]
        if dropped:
            needs = f"; {', '.join(dropped)} came in shapes this arm and model cannot take: dropped (see the log)"
        raise PreflightFailed(f"no {', '.join(sensors)} from the driver within {waited}{needs}")
    if latest.objects is None:
        what = f"no `{OBJECTS}` topic from the driver within {waited}"
    else:
        has = ", ".join(latest.objects.names) or "none"
        what = f"the driver's `{OBJECTS}` topic has no pose of {', '.join(unseen)} (it has {has})"
    raise PreflightFailed(
        f"{what}; the model needs the poses of {', '.join(objects)} (missing: {', '.join(unseen)}). "
        f"Start pac-sim with --objects all, or run a tracker that publishes `{OBJECTS}`"
    )


def check_calibration(
    config: RunConfig, observation: ObservationSpec, now: _dt.datetime | None = None
) -> tuple[Check, dict[str, str]]:
    """The calibration files the config names: each present, a pac-calibrate result for this robot, younger
    than calibration_max_age_days, made at the model's image resolution; and, once any are named, intrinsics
    and a hand-eye pose for every camera the model reads. Returns the check and {path: sha256} for the run's
    summary and recording."""
    if not config.calibration:
        return Check("calibration", "none configured (simulation)"), {}
    now = now or _dt.datetime.now(_dt.timezone.utc)
    found = []
    for name in config.calibration:
        try:
            result = read_result(Path(name))
        except CalibrationFileError as exc:
            raise PreflightFailed(str(exc)) from exc
        if result.robot and result.robot != config.robot:
            raise PreflightFailed(f"calibration {name} is for a {result.robot}, not a {config.robot}")
        age_days = (now - result.date).total_seconds() / 86400
        if age_days > config.calibration_max_age_days:
            raise PreflightFailed(
                f"calibration {name} is {age_days:.0f} days old (limit {config.calibration_max_age_days:.0f}); "
                "recalibrate"
            )
        model_size = (observation.image_width, observation.image_height)
        if result.camera in observation.cameras and result.resolution != model_size:
            got = "x".join(map(str, result.resolution or ("?", "?")))
            raise PreflightFailed(
                f"calibration {name} was made from {got} images of {result.camera}; the model reads "
                f"{model_size[0]}x{model_size[1]}: calibrate at the resolution the model sees"
            )
        found.append(result)
    have = {(r.kind, r.camera) for r in found}
    for camera in observation.cameras:
        for kind in (INTRINSICS, HANDEYE):
            if (kind, camera) not in have:
                raise PreflightFailed(f"no {kind} calibration of camera {camera} among {', '.join(config.calibration)}")
    oldest = max((now - r.date).total_seconds() / 86400 for r in found)
    kinds = ", ".join(sorted(f"{r.kind} {r.camera}".strip() for r in found))
    return Check("calibration", f"{kinds} (oldest {oldest:.1f} days)"), {str(r.path): r.sha256 for r in found}


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
            f"{meta.action.size} dims, cameras {', '.join(meta.observation.cameras) or 'none'}"
            + (f", objects {', '.join(meta.observation.objects)}" if meta.observation.objects else ""),
        ),
        Check("provider", f"{policy.provider}{fallback}"),
        Check("golden pair", f"max |error| {policy.golden_error:.2g} ≤ {meta.golden.atol:g}"),
    ]


def expected_observation(arm: ArmSpec, cameras: tuple[str, ...], model: ObservationSpec) -> ObservationSpec:
    """The observation spec this arm serves a model with: the model's own modalities, checked against the cell.

    The model's cameras must be the arm's (and equal `cameras`, the config's, when it names any) and its
    objects must be in the arm's cell (what `pac-sim --objects all` or the cell's tracker publishes). All
    else (proprio, resolution, the action) must match exactly: `load_policy` compares the two specs field by
    field. A model for another arm gets that arm's default spec, so load_policy names the robot first.
    """
    if model.robot != arm.name:
        return observation_spec(arm, cameras or None)
    want = cameras or model.cameras
    unknown = [c for c in want if c not in {c.name for c in arm.cameras}]
    if unknown:
        raise PolicyRefused(
            f"the model reads camera(s) {', '.join(unknown)}, which the {arm.name} does not have "
            f"(it has {', '.join(c.name for c in arm.cameras)})"
        )
    scene = scene_objects(arm)
    unknown = [o for o in model.objects if o not in scene]
    if unknown:
        raise PolicyRefused(
            f"the model reads the pose(s) of {', '.join(unknown)}, which the {arm.name}'s cell does not track "
            f"(it tracks {', '.join(scene) or 'nothing'})"
        )
    try:
        return observation_spec(arm, want, model.instruction_length, model.objects)
    except ValueError as exc:  # e.g. neither a camera nor an object: no PAC policy reads that
        raise PolicyRefused(str(exc)) from exc

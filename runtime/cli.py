"""`pac-run`: drive an arm with an exported PAC policy at 20 Hz, safely.

    pac-run --robot sawyer --policy pac_S.onnx --sim            # starts the embedded MuJoCo driver
    pac-run --robot sawyer --policy pac_L.onnx --device tensorrt  # a running driver (real arm or pac-sim)
    pac-run --robot sawyer --policy pac_S.onnx --sim --record runs/today    # MCAP recording, per-tick record
    pac-run --replay runs/today --policy pac_S.onnx    # re-run it in virtual time: every command identical?

Exit codes: 0 finished or stopped by SIGINT/SIGTERM (after the driver acknowledged a hold); 2 refused at
start-up (nothing moved); 3 FAULT; 4 ESTOP. With --replay: 0 every command identical, 1 not, 2 refused.

The operator's verbs (status, reset, estop, stop) reach a running pac-run through `pac-ctl` on its control
endpoint (runtime/control.py), printed at start-up. FAULT and ESTOP end the run unless `--await-reset`: then it
holds until `pac-ctl reset` (or stop).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from pathlib import Path

from policies.spec import DECODINGS, ObservationSpec, action_spec
from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.security import LinkRefused
from robots.sim.process import SIM_NICE, start_sim, stop_sim
from robots.spec import ARMS, load_spec
from runtime.clock import MONOTONIC, Clock
from runtime.config import ConfigError, RunConfig, load_config, with_endpoints, with_overrides, with_own_sim
from runtime.control import ControlError, ControlServer, default_endpoint
from runtime.guard import Guard
from runtime.inference.loader import LoadedPolicy, PolicyRefused, load_policy, read_metadata
from runtime.inference.providers import DEVICES, ProviderUnavailable, SessionConfig
from runtime.link import DriverLink, LockstepLink, RealtimeLink
from runtime.loop import STAGES, ControlLoop
from runtime.policy_step import PolicyStep
from runtime.preflight import (
    Check,
    PreflightFailed,
    check_calibration,
    check_clock,
    check_driver,
    check_instruction,
    check_sensors,
    expected_observation,
    message_shapes,
    policy_checks,
)
from runtime.recorder import Recorder
from runtime.safety.limits import SafetyLimits
from runtime.safety.state_machine import State
from runtime.scheduling import SchedulingRefused, realtime_priority, set_realtime_priority
from runtime.summary import RunSummary
from runtime.timing import StageTimer

log = logging.getLogger("pac-run")
EXIT_OK, EXIT_REFUSED, EXIT_FAULT, EXIT_ESTOP = 0, 2, 3, 4
DEFAULT_SUMMARY = Path("out/pac-run/summary.json")


def _tcp_position(arm):
    """q → TCP position, for the filter's workspace check of joint-position targets."""
    chain = arm.chain()

    def fk(q):
        return chain.fk(q)[0]

    return fk


def sim_flags(obs: ObservationSpec, lockstep: bool) -> list[str]:
    """`pac-sim` flags publishing what the policy observes: its cameras (none for a state policy) and the
    object poses (always: a sim cell has its tracker)."""
    cameras = ",".join(obs.cameras) or "none"
    return ["--cameras", cameras, "--objects", "all"] + (["--lockstep"] if lockstep else [])


def _parser() -> argparse.ArgumentParser:
    session = SessionConfig()
    p = argparse.ArgumentParser(prog="pac-run", description="Drive an arm with a PAC policy at 20 Hz, safely.")
    p.add_argument("--robot", choices=ARMS, default=None, help="the arm (required unless --replay)")
    p.add_argument("--policy", type=Path, required=True, help="exported actor (.onnx)")
    p.add_argument("--sim", action="store_true", help="start the embedded MuJoCo driver (pac-sim) for this arm")
    p.add_argument("--lockstep", action="store_true", help="with --sim: one sim period per command (tests)")
    p.add_argument("--device", choices=DEVICES, default=session.device)
    p.add_argument("--allow-cpu-fallback", action="store_true", help="run on the CPU if the GPU asked for is missing")
    p.add_argument("--instruction", default=None)
    p.add_argument(
        "--decode",
        choices=DECODINGS,
        default=None,
        help="bins → action (default: the config's); the sampled decodings are seeded with 0",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--ticks", type=int, default=None, help="stop after this many control periods")
    p.add_argument(
        "--record", type=Path, default=None, help="directory for the run's recording (MCAP), per-tick record, summary"
    )
    p.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="re-run the recording in DIR in virtual time with --policy; exit 1 unless every command is identical",
    )
    p.add_argument("--config", type=Path, default=None, help="runtime YAML (default: runtime/configs/ROBOT.yaml)")
    p.add_argument(
        "--summary", type=Path, default=None, help="summary JSON (default: RECORD/summary.json, else out/pac-run/)"
    )
    p.add_argument("--pub", default=None, help="driver state endpoint (overrides the config's link)")
    p.add_argument("--cmd", default=None, help="driver command endpoint (overrides the config's link)")
    p.add_argument(
        "--cpu-spin",
        choices=("on", "off"),
        default="on" if session.allow_spinning else "off",
        help="ORT CPU threads spin between calls: faster inference, but they steal the CPU the rest of the loop needs",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=session.threads,
        help="ORT intra-op threads on the CPU (default 0: one per core); pac-bench recommends a value",
    )
    p.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the loop and inference at SCHED_FIFO priority N (1-99; needs CAP_SYS_NICE or an rtprio limit): "
        "refused at start if not granted. Default 0: the time-sharing scheduler",
    )
    p.add_argument(
        "--control",
        default=None,
        help="operator endpoint for pac-ctl: ipc://PATH or tcp://127.0.0.1:PORT "
        "(default: ipc, in a directory only this user can open)",
    )
    p.add_argument(
        "--await-reset",
        action="store_true",
        help="in FAULT or ESTOP hold and wait for `pac-ctl reset` instead of exiting",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def open_policy(config: RunConfig, path: Path, session: SessionConfig) -> LoadedPolicy:
    """Load `path` for the config's arm, or raise PolicyRefused / ProviderUnavailable before any motion.

    The expected observation is built from the model's own modalities (its cameras must be the arm's, its
    objects in the arm's cell); everything else must match the arm's spec exactly (load_policy).
    """
    arm = load_spec(config.robot)
    expected = expected_observation(arm, config.cameras, read_metadata(path).observation)
    return load_policy(path, expected, action_spec(arm, config.mode), session)


def claim_arm(client: DriverClient, config: RunConfig) -> Check:
    """Take the arm's lease for this run's session, or refuse to start (naming who holds it)."""
    try:
        status = client.claim(timeout_s=config.driver_wait_s, lease_ms=config.link.lease_ms)
    except DriverUnavailable as exc:  # ArmHeld included: its message names the holder
        raise PreflightFailed(str(exc)) from exc
    return Check("lease", f"session {client.fingerprint} holds {status.robot}, lease {config.link.lease_ms:.0f} ms")


def build_loop(
    config: RunConfig,
    policy: LoadedPolicy,
    client: DriverClient,
    lockstep: bool,
    recorder: Recorder | None,
    control: ControlServer | None = None,
    await_reset: bool = False,
    *,
    clock: Clock = MONOTONIC,
    decode_seed: int = 0,
) -> ControlLoop:
    """The loop's parts for this config and policy, on `clock`; `control` served between ticks; `decode_seed`
    seeds the sampled decodings."""
    arm = load_spec(config.robot)
    cameras, objects = policy.metadata.observation.cameras, bool(policy.metadata.observation.objects)
    timer = StageTimer(STAGES, clock=clock)
    parts = (client, cameras, config.link, timer, clock)
    link: DriverLink
    if lockstep:
        link = LockstepLink(*parts, step_timeout_s=config.watchdogs.driver_lost_ms / 1000, objects=objects)
    else:
        link = RealtimeLink(*parts, objects=objects)
    w = config.watchdogs
    step = PolicyStep(
        policy, config.instruction, config.decode, w.inference_deadline_ms, timer, decode_seed=decode_seed
    )
    limits = SafetyLimits.from_arm(arm, config.mode, config.period_s)
    guard = Guard(limits, w, cameras, fk=_tcp_position(arm), objects=objects, session=client.fingerprint)
    serve = control.serve if control is not None else None
    return ControlLoop(
        link, step, guard, timer, recorder=recorder, clock=clock, between_ticks=serve, await_reset=await_reset
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.replay is not None:
        from runtime.replay import verify  # here: runtime.replay builds its loop with this module's build_loop

        return verify(args.replay, args.policy)
    if args.robot is None:
        parser.error("the following arguments are required: --robot")
    sim = None
    client = None
    recorder = None
    control = None
    try:
        try:
            config = with_overrides(
                load_config(args.config, args.robot), instruction=args.instruction, decode=args.decode
            )
        except ConfigError as exc:
            print(f"pac-run: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        if args.threads < 0:
            parser.error("--threads must be 0 (one per core) or more")
        session = SessionConfig(
            device=args.device,
            allow_cpu_fallback=args.allow_cpu_fallback,
            allow_spinning=args.cpu_spin == "on",
            threads=args.threads,
        )
        if args.rt_priority:  # before the session and the client exist: their threads inherit it
            try:
                set_realtime_priority(args.rt_priority)
            except (SchedulingRefused, ValueError) as exc:
                print(f"pac-run: refused: {exc}", file=sys.stderr)
                return EXIT_REFUSED
        try:
            policy = open_policy(config, args.policy, session)
        except (PolicyRefused, ProviderUnavailable) as exc:
            print(f"pac-run: refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        try:
            instruction = check_instruction(policy, config.instruction)  # before a driver is started or asked
        except PreflightFailed as exc:
            print(f"pac-run: pre-flight failed: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        try:  # before any driver is started or claimed: an endpoint that cannot be served refuses the run
            control = ControlServer(args.control or default_endpoint())
        except ControlError as exc:
            print(f"pac-run: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"operator control: {control.endpoint}  (pac-ctl --control {control.endpoint} status)", flush=True)
        obs = policy.metadata.observation
        try:
            if args.sim:  # a sim of our own (config.with_own_sim)
                sim, pub, cmd = start_sim(config.robot, *sim_flags(obs, args.lockstep), capture=False, nice=SIM_NICE)
                config = with_own_sim(config, pub, cmd)
            config = with_endpoints(config, args.pub, args.cmd)
            client = DriverClient.for_link(config.link, source="pac-run")
        except LinkRefused as exc:  # an off-host endpoint without keys, a socket directory others can enter
            print(f"pac-run: refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        client.receiver.expect(message_shapes(load_spec(config.robot), obs))  # other shapes: dropped, counted
        if args.record:
            recorder = Recorder(args.record)
            recorder.attach(client)  # what the pre-flight receives is recorded too: it primes a replay
        # Start-up's objects parked before the lease starts to run: the loop's own collect then walks only what was
        # made since. A full collect of this process took 1.4 s on a loaded 2-core machine (pac-run inside pytest),
        # longer than the 1 s lease, and the first tick held for LEASE_LOST.
        gc.collect()
        gc.freeze()
        try:
            calibration_check, calibration = check_calibration(config, obs)
            driver, lockstep = check_driver(client, config, config.driver_wait_s)
            checks = [
                *policy_checks(policy),
                instruction,
                driver,
                claim_arm(client, config),
                check_clock(client, config, lockstep),
                check_sensors(client, obs.cameras, lockstep, config.driver_wait_s, objects=obs.objects),
                calibration_check,
            ]
        except PreflightFailed as exc:
            print(f"pac-run: pre-flight failed: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        print("pre-flight:\n" + "\n".join(f"  {c.name:<12} ok  {c.detail}" for c in checks), flush=True)

        clock = MONOTONIC
        if recorder is not None:
            recorder.begin(client, config, policy, session, lockstep, args.duration, args.ticks, calibration)
            clock = recorder.clock  # every reading traced, so a replay takes the same branches
        loop = build_loop(config, policy, client, lockstep, recorder, control, args.await_reset, clock=clock)
        if recorder is not None:
            recorder.timer = loop.timer
        previous_handlers = {
            sig: signal.signal(sig, lambda signum, _frame: loop.stop(f"signal {signal.Signals(signum).name}"))
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        final = State.FAULT
        try:
            final = loop.run(duration_s=args.duration, max_ticks=args.ticks)
        finally:
            code = {State.FAULT: EXIT_FAULT, State.ESTOP: EXIT_ESTOP}.get(final, EXIT_OK)
            summary = RunSummary.of(
                loop.stats(),
                config.robot,
                policy.path,
                policy.provider,
                code,
                control.record(),
                calibration,
                rt_priority=realtime_priority(),
            )
            print(summary.table(), flush=True)
            path = args.summary or (args.record / "summary.json" if args.record else DEFAULT_SUMMARY)
            summary.write(path)
            print(f"summary written to {path}")
            if recorder is not None:
                recorder.end(summary)
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        return code
    finally:
        if control is not None:
            control.close()
        if client is not None:
            client.close()
        if recorder is not None:
            recorder.close()
        if sim is not None:
            stop_sim(sim)


if __name__ == "__main__":
    sys.exit(main())

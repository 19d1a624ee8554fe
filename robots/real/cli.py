"""`pac-driver`: a real arm behind the driver contract (`pac-driver --robot sawyer --backend intera`,
`pac-driver --robot panda --backend franka --host 172.16.0.2`).

Same sockets, sessions, dead-man and status as `pac-sim`. `--dry-run` replaces only the SDK's boundary with
the MuJoCo arm (robots/real/dryrun.py) so the whole adapter runs without hardware (with `--lockstep`, one
control period per command, for tests). Without the SDK installed (and no --dry-run) it says what to install
and exits 3. A `reset` control message is the arm's error recovery (robots/real/driver.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
from pathlib import Path

import numpy as np

from robots.camera.publisher import default_endpoint
from robots.contract.link import DEFAULT_LINK
from robots.driver.server import DriverConfig, served_link
from robots.real import franka, intera
from robots.real.backend import ArmBackend, SdkMissing
from robots.real.driver import RealDriver
from robots.real.hardware import franka_settings, intera_settings
from robots.real.offsets import JointOffsets, OffsetsError, load_joint_offsets
from robots.sim.physics import SimArm
from robots.spec import ARMS, ArmSpec, load_spec

log = logging.getLogger("pac-driver")

BACKENDS = {"sawyer": "intera", "panda": "franka"}  # the SDK each arm is driven through
SDK_MODULES = {"intera": ("rospy", "intera_interface"), "franka": ("pylibfranka",)}
INSTALL = {"intera": intera.INSTALL, "franka": franka.INSTALL}
EXIT_OK, EXIT_USAGE, EXIT_NO_SDK, EXIT_NO_ARM = 0, 2, 3, 4
DEFAULT_FRANKA_HOST = "172.16.0.2"  # the FCI address Franka's set-up guide uses


def build_parser() -> argparse.ArgumentParser:
    link = DEFAULT_LINK
    p = argparse.ArgumentParser(prog="pac-driver", description=__doc__)
    p.add_argument("--robot", choices=ARMS, required=True)
    p.add_argument("--backend", choices=sorted(set(BACKENDS.values())), default=None, help="default: the arm's SDK")
    p.add_argument("--host", default=DEFAULT_FRANKA_HOST, help="franka: the arm's FCI address")
    p.add_argument("--dry-run", action="store_true", help="the SDK boundary replaced by the MuJoCo arm")
    p.add_argument("--lockstep", action="store_true", help="--dry-run only: one control period per command or tick")
    p.add_argument("--cameras", default="none", help="--dry-run: sim cameras to publish, comma-separated, or 'none'")
    p.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="NAME|ENDPOINT",
        help="relay a pac-camera's frames (its name, for its default socket, or its endpoint); repeat per camera",
    )
    p.add_argument("--joint-offsets", type=Path, default=None, help="joint offsets from pac-calibrate joints (YAML)")
    p.add_argument(
        "--dry-run-encoder-error-mrad",
        type=float,
        nargs="+",
        default=None,
        help="--dry-run: the sim's encoders read this far off (one value per joint), as a miscalibrated arm's would",
    )
    where = "(default: an ipc socket only this user can reach)"
    p.add_argument("--pub", default=link.pub_endpoint, help=f"endpoint for state and status {where}")
    p.add_argument("--cmd", default=link.cmd_endpoint, help=f"endpoint for commands {where}")
    p.add_argument("--keys", type=Path, default=None, metavar="DIR", help="CURVE keys (pac-keys), as pac-sim")
    p.add_argument("--command-timeout-ms", type=float, default=link.command_timeout_ms)
    p.add_argument("--jpeg-quality", type=int, default=link.jpeg_quality)
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_config(args: argparse.Namespace) -> DriverConfig:
    cameras = () if args.cameras.strip().lower() == "none" else tuple(c for c in args.cameras.split(",") if c)
    return DriverConfig(
        robot=args.robot,
        lockstep=args.lockstep,
        cameras=cameras,
        link=served_link(args.robot, args.pub, args.cmd, args.keys, args.command_timeout_ms, args.jpeg_quality),
        objects=False,
        camera_endpoints=tuple(c if "://" in c else default_endpoint(args.robot, c) for c in args.camera),
    )


def missing_sdk(backend: str) -> str | None:
    """What to install when the backend's SDK cannot be imported here; None when it can."""
    if all(importlib.util.find_spec(name) is not None for name in SDK_MODULES[backend]):
        return None
    return f"the {backend} backend needs {', '.join(SDK_MODULES[backend])}: {INSTALL[backend]}"


def make_backend(args: argparse.Namespace, spec: ArmSpec, config: DriverConfig) -> tuple[ArmBackend, SimArm | None]:
    """The adapter for the arm: over the SDK, or over the sim arm in a dry run (with its cameras)."""
    if not args.dry_run:
        if args.backend == "franka":
            return franka.FrankaBackend(franka.PylibfrankaLink(args.host), franka_settings(spec.name)), None
        return intera.InteraBackend(intera.RosInteraLink(spec), intera_settings(spec.name), spec), None
    from robots.real import dryrun  # MuJoCo only for a dry run

    for camera in config.cameras or ():
        spec.camera(camera)  # KeyError naming the arm's cameras
    if args.backend == "franka":
        settings = franka_settings(spec.name)
        arm = dryrun.DryRunArm(spec, config.cameras, timestep=1.0 / settings.control_rate_hz)
        backend: ArmBackend = franka.FrankaBackend(
            dryrun.DryRunFranka(arm, settings), settings, threaded=False, clock=arm.time_s
        )
    else:
        settings = intera_settings(spec.name)
        arm = dryrun.DryRunArm(spec, config.cameras)
        backend = intera.InteraBackend(
            dryrun.DryRunIntera(arm, settings.gripper_max_position), settings, spec, clock=arm.time_s
        )
    if args.dry_run_encoder_error_mrad is not None:
        error = np.asarray(args.dry_run_encoder_error_mrad, dtype=float) * 1e-3
        if error.shape != (spec.dof,):
            raise ValueError(f"--dry-run-encoder-error-mrad needs {spec.dof} values for the {spec.name}")
        arm.encoder_offsets = error
    return backend, arm.sim


def check_args(args: argparse.Namespace) -> str | None:
    """Why these flags cannot work together, or None."""
    args.backend = args.backend or BACKENDS[args.robot]
    if BACKENDS[args.robot] != args.backend:
        return f"the {args.robot} is driven through {BACKENDS[args.robot]}, not {args.backend}"
    if args.lockstep and not args.dry_run:
        return "--lockstep needs --dry-run: a real arm runs in real time"
    if not args.dry_run and (args.dry_run_encoder_error_mrad is not None or args.cameras.strip().lower() != "none"):
        return "--cameras and --dry-run-encoder-error-mrad are dry-run flags (real cameras: pac-camera)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s")
    problem = check_args(args)
    if problem:
        print(f"pac-driver: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if not args.dry_run and (need := missing_sdk(args.backend)):
        print(f"pac-driver: {need}. Or run the adapter without an arm: pac-driver --dry-run", file=sys.stderr)
        return EXIT_NO_SDK
    spec = load_spec(args.robot)
    try:
        config = build_config(args)
        offsets = load_joint_offsets(args.joint_offsets, spec) if args.joint_offsets else JointOffsets.none(spec.dof)
        backend, cameras = make_backend(args, spec, config)
    except (KeyError, ValueError, OffsetsError) as err:
        print(f"pac-driver: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SdkMissing as err:
        print(f"pac-driver: {err}", file=sys.stderr)
        return EXIT_NO_SDK
    except Exception as err:  # the SDK could not reach the arm: its own exception types, whatever they are
        print(f"pac-driver: cannot start the {args.robot} through {args.backend}: {err}", file=sys.stderr)
        return EXIT_NO_ARM
    kind = "dry-run" if args.dry_run else args.backend
    driver = RealDriver(config, backend, spec, f"{kind}/{args.robot}", offsets, cameras)
    signal.signal(signal.SIGINT, lambda *_: driver.stop())
    signal.signal(signal.SIGTERM, lambda *_: driver.stop())
    log.info(
        "%s driver (%s, %s) ready: %s on %s, commands on %s; offsets %s; %s",
        args.robot,
        kind,
        "lockstep" if args.lockstep else "real time",
        ", ".join(driver.topics()),
        *driver.endpoints,
        offsets.source or "none",
        driver.link_server.describe(),
    )
    try:
        driver.run(args.duration)
    finally:
        if cameras is not None:
            cameras.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

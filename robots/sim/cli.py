"""`pac-sim`: run the simulated Sawyer or Panda driver until SIGINT/SIGTERM (or --duration).

By default it serves ipc sockets only this user can reach (robots/contract/security.py); another host reaches
it only over CURVE (`--keys DIR`, keys made by `pac-keys`). `--board checkerboard:5x4:0.05` makes it the
calibration cell: that board on the gripper, the table cleared, for `pac-calibrate capture` and `check`.

`build_parser`, `build_config` and `run_driver` are shared with the task-aware driver (`pac-sim-task`,
robots/tasks/driver.py), which takes the same flags plus `--task`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from robots.board import parse_board
from robots.contract.link import DEFAULT_LINK
from robots.driver.server import served_link
from robots.sim.driver import DriverConfig, SimDriver
from robots.spec import ARMS, load_spec

log = logging.getLogger("pac-sim")


def parse_cameras(text: str | None, robot: str) -> tuple[str, ...] | None:
    """'none' → no cameras, None → all of the arm's cameras, 'a,b' → those, checked against the spec."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    spec = load_spec(robot)
    for name in names:
        spec.camera(name)  # raises KeyError naming the cameras the arm has
    return names


def build_parser(prog: str = "pac-sim", description: str | None = __doc__) -> argparse.ArgumentParser:
    d, link = DriverConfig(), DEFAULT_LINK
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--robot", choices=ARMS, default=d.robot)
    p.add_argument("--lockstep", action="store_true", help="advance one control period per command or tick")
    p.add_argument("--cameras", default=None, help="comma-separated camera names, or 'none' (default: all)")
    p.add_argument(
        "--objects",
        choices=("all", "none"),
        default="all" if d.objects else "none",
        help="publish the scene objects' poses ('none': a cell without a tracker)",
    )
    where = "(default: an ipc socket only this user can reach)"
    p.add_argument("--pub", default=link.pub_endpoint, help=f"endpoint for state, images and status {where}")
    p.add_argument("--cmd", default=link.cmd_endpoint, help=f"endpoint for commands {where}")
    p.add_argument(
        "--keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="CURVE: serve with DIR/server.key_secret and admit only the clients whose keys are in DIR/clients/ "
        "(made by pac-keys); required to bind an address off loopback",
    )
    p.add_argument("--command-timeout-ms", type=float, default=link.command_timeout_ms)
    p.add_argument("--state-rate", type=float, default=d.state_rate_hz, help="Hz, real-time mode")
    p.add_argument("--camera-rate", type=float, default=d.camera_rate_hz, help="Hz, real-time mode")
    p.add_argument("--jpeg-quality", type=int, default=link.jpeg_quality)
    p.add_argument("--raw-images", action="store_true", help="send images uncompressed")
    p.add_argument(
        "--board",
        default=None,
        metavar="checkerboard:COLSxROWS:SQUARE",
        help="the calibration cell: this board on the gripper at calibration's mount, the table cleared "
        "(pac-calibrate capture and check without --sim)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_config(args: argparse.Namespace) -> DriverConfig:
    """The driver's config from parsed flags; raises KeyError or ValueError for a bad one (e.g. a camera)."""
    return DriverConfig(
        robot=args.robot,
        lockstep=args.lockstep,
        cameras=parse_cameras(args.cameras, args.robot),
        link=served_link(args.robot, args.pub, args.cmd, args.keys, args.command_timeout_ms, args.jpeg_quality),
        state_rate_hz=args.state_rate,
        camera_rate_hz=args.camera_rate,
        raw_images=args.raw_images,
        objects=args.objects == "all",
        board=parse_board(args.board) if args.board else None,
    )


def setup_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s")


def run_driver(driver: SimDriver, args: argparse.Namespace) -> int:
    """Run `driver` until SIGINT/SIGTERM or --duration, logging what it publishes where; returns the exit code."""
    signal.signal(signal.SIGINT, lambda *_: driver.stop())
    signal.signal(signal.SIGTERM, lambda *_: driver.stop())
    board = driver.config.board
    log.info(
        "%s driver (%s) ready: %s on %s, commands on %s, cameras %s, objects %s%s; %s",
        args.robot,
        "lockstep" if args.lockstep else "real time",
        ", ".join(driver.topics()),
        *driver.endpoints,
        ",".join(driver.sim.camera_names) or "none",
        "published" if driver.config.objects else "not published",
        f", board {board.text} on the gripper (table cleared)" if board else "",
        driver.link_server.describe(),
    )
    driver.run(args.duration)
    if driver.counters.overruns:
        log.warning("physics fell behind real time %d times", driver.counters.overruns)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    try:
        driver = SimDriver(build_config(args))
    except (KeyError, ValueError) as err:
        print(f"pac-sim: {err}", file=sys.stderr)
        return 2
    return run_driver(driver, args)


if __name__ == "__main__":
    sys.exit(main())

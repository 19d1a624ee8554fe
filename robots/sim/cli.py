"""`pac-sim`: run the simulated Sawyer or Panda driver on loopback until SIGINT/SIGTERM (or --duration)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace

from robots.contract.link import DEFAULT_LINK
from robots.sim.driver import DriverConfig, SimDriver
from robots.spec import ARMS, load_spec


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


def build_parser() -> argparse.ArgumentParser:
    d, link = DriverConfig(), DEFAULT_LINK
    p = argparse.ArgumentParser(prog="pac-sim", description=__doc__)
    p.add_argument("--robot", choices=ARMS, default=d.robot)
    p.add_argument("--lockstep", action="store_true", help="advance one control period per command or tick")
    p.add_argument("--cameras", default=None, help="comma-separated camera names, or 'none' (default: all)")
    p.add_argument("--pub", default=link.pub_endpoint, help="endpoint for state, images and status")
    p.add_argument("--cmd", default=link.cmd_endpoint, help="endpoint for commands")
    p.add_argument("--command-timeout-ms", type=float, default=link.command_timeout_ms)
    p.add_argument("--state-rate", type=float, default=d.state_rate_hz, help="Hz, real-time mode")
    p.add_argument("--camera-rate", type=float, default=d.camera_rate_hz, help="Hz, real-time mode")
    p.add_argument("--jpeg-quality", type=int, default=link.jpeg_quality)
    p.add_argument("--raw-images", action="store_true", help="send images uncompressed")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s")
    try:
        config = DriverConfig(
            robot=args.robot,
            lockstep=args.lockstep,
            cameras=parse_cameras(args.cameras, args.robot),
            link=replace(
                DEFAULT_LINK,
                pub_endpoint=args.pub,
                cmd_endpoint=args.cmd,
                command_timeout_ms=args.command_timeout_ms,
                jpeg_quality=args.jpeg_quality,
            ),
            state_rate_hz=args.state_rate,
            camera_rate_hz=args.camera_rate,
            raw_images=args.raw_images,
        )
        driver = SimDriver(config)
    except (KeyError, ValueError) as err:
        print(f"pac-sim: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, lambda *_: driver.stop())
    signal.signal(signal.SIGTERM, lambda *_: driver.stop())
    logging.getLogger("pac-sim").info(
        "%s driver (%s) ready: state/images/status on %s, commands on %s, cameras %s",
        args.robot,
        "lockstep" if args.lockstep else "real time",
        args.pub,
        args.cmd,
        ",".join(driver.sim.camera_names) or "none",
    )
    driver.run(args.duration)
    if driver.counters.overruns:
        logging.getLogger("pac-sim").warning("physics fell behind real time %d times", driver.counters.overruns)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`pac-camera --device /dev/video0|realsense:SERIAL|synthetic|FILE --name front_left`: one real camera's frames as
`image/<name>` JPEG messages at `--rate`, stamped with the driver's clock (this host's monotonic clock).

It binds `--pub` (default: a private ipc socket named after the arm and camera, which `pac-driver --camera`
relays). A RealSense needs the `realsense` extra; without it the command says what to install and exits 3.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from robots.camera.publisher import CameraConfig, CameraPublisher, default_endpoint
from robots.camera.source import CameraError, RealSenseMissing, open_source

EXIT_OK, EXIT_USAGE, EXIT_NO_SDK, EXIT_NO_CAMERA = 0, 2, 3, 4
log = logging.getLogger("pac-camera")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pac-camera", description=__doc__)
    p.add_argument("--device", required=True, help="/dev/videoN, an index, realsense:SERIAL, synthetic, or a file")
    p.add_argument("--name", required=True, help="the camera's name in the robot spec (e.g. front_left)")
    p.add_argument("--robot", default="sawyer", help="the arm this camera belongs to (for the default endpoint)")
    p.add_argument("--pub", default=None, help="endpoint to publish on (default: the arm's private camera socket)")
    p.add_argument("--rate", type=float, default=20.0, help="frames per second")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.rate <= 0 or args.width <= 0 or args.height <= 0:
        print("pac-camera: --rate, --width and --height must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        source = open_source(args.device, args.width, args.height, args.rate)
    except RealSenseMissing as err:
        print(f"pac-camera: {err}", file=sys.stderr)
        return EXIT_NO_SDK
    except CameraError as err:
        print(f"pac-camera: {err}", file=sys.stderr)
        return EXIT_NO_CAMERA
    endpoint = args.pub or default_endpoint(args.robot, args.name)
    config = CameraConfig(args.name, endpoint, args.rate, args.width, args.height, args.jpeg_quality)
    publisher = CameraPublisher(config, source)
    signal.signal(signal.SIGINT, lambda *_: publisher.stop())
    signal.signal(signal.SIGTERM, lambda *_: publisher.stop())
    size = f"{args.width}x{args.height}"
    log.info("image/%s from %s at %g Hz, %s JPEG, on %s", args.name, args.device, args.rate, size, endpoint)
    try:
        publisher.run(args.frames, args.duration)
    except CameraError as err:
        print(f"pac-camera: {err}", file=sys.stderr)
        return EXIT_NO_CAMERA
    finally:
        publisher.close()
    if publisher.overruns:
        log.warning("%d frames later than a period", publisher.overruns)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

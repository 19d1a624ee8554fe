"""One camera's frames on the wire: `image/<camera>`, JPEG, at the configured rate, with absolute deadlines.

The publisher binds its own PUB socket (a camera process can die or restart without the arm's driver), and
the arm's driver relays its frames on the driver's own stream (robots/driver/relay.py), so the runtime reads
every topic from one endpoint. Frames late by more than a period are counted as overruns, never made up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from robots.camera.source import FrameSource
from robots.contract import messages as msg
from robots.contract.link import DEFAULT_LINK
from robots.contract.security import NO_KEYS, LinkServer, local_dir, private_dir


def default_endpoint(robot: str, name: str) -> str:
    """Where `pac-camera --robot R --name N` publishes unless told, and where `pac-driver --camera N` reads."""
    return f"ipc://{private_dir(local_dir())}/{robot}-camera-{name}"


@dataclass(frozen=True)
class CameraConfig:
    name: str
    endpoint: str
    rate_hz: float = 20.0
    width: int = 128
    height: int = 128
    jpeg_quality: int = DEFAULT_LINK.jpeg_quality


class CameraPublisher:
    def __init__(
        self,
        config: CameraConfig,
        source: FrameSource,
        context: zmq.Context | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config, self.source = config, source
        self.clock, self.sleep = clock, sleep
        self.pub = (context or zmq.Context.instance()).socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 4)  # a slow reader gets the newest frames, not a backlog
        self.link = LinkServer(NO_KEYS)  # frames stay on this host: ipc or loopback only
        self.link.check(config.endpoint)
        self.link.bind(self.pub, config.endpoint)
        self.seq = 0
        self.overruns = 0
        self._stop = False

    def publish_one(self) -> int:
        """Grab, encode and send one frame; returns its capture time."""
        image, t_capture = self.source.grab()
        self.seq += 1
        frame = msg.ImageMsg(self.config.name, self.seq, f"camera/{self.config.name}", t_capture, image)
        self.pub.send_multipart(frame.to_frames(jpeg=True, quality=self.config.jpeg_quality))
        return t_capture

    def stop(self) -> None:
        self._stop = True

    def run(self, frames: int | None = None, duration_s: float | None = None) -> None:
        period_ns = round(1e9 / self.config.rate_hz)
        start = deadline = self.clock()
        while not self._stop and (frames is None or self.seq < frames):
            if duration_s is not None and deadline - start >= duration_s * 1e9:
                break
            self.publish_one()
            deadline += period_ns
            late = self.clock() - deadline
            if late > period_ns:
                self.overruns += 1
                deadline = self.clock()
            elif late < 0:
                self.sleep(-late / 1e9)

    def close(self) -> None:
        self.pub.close(0)
        self.link.close()
        self.source.close()

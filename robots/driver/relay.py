"""Frames of the cell's real cameras (`pac-camera` processes) relayed on the driver's own PUB socket.

The runtime reads every topic of an arm from one endpoint (DESIGN §2), and a camera runs as its own process so
that a camera that dies or restarts does not take the arm's driver with it. The relay subscribes to each
camera's `image/` topic and forwards the frames as they are (the runtime's receiver checks them, as it checks
every message), at most a few per call, oversized ones cut off by ZeroMQ, so it can never starve the arm's loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import zmq

from robots.contract import messages as msg
from robots.contract.security import connect

MAX_FRAME_BYTES = 8 * 1024 * 1024  # a 1080p JPEG is < 1 MiB
MAX_PER_CALL = 8  # frames forwarded per driver chunk (10 ms): 800/s, far above any camera's rate


class CameraRelay:
    def __init__(self, context: zmq.Context, endpoints: Sequence[str]) -> None:
        self.endpoints = tuple(endpoints)
        self.sub = context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 4)  # per camera: the newest frames, not a backlog
        self.sub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self.sub.setsockopt(zmq.SUBSCRIBE, msg.IMAGE_PREFIX.encode())
        for endpoint in self.endpoints:
            connect(self.sub, endpoint)
        self.forwarded = 0

    def forward(self, pub: zmq.Socket, limit: int = MAX_PER_CALL) -> int:
        """Forward up to `limit` waiting frames to `pub`; returns how many."""
        n = 0
        while n < limit:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            pub.send_multipart(frames, copy=False)
            n += 1
        self.forwarded += n
        return n

    def close(self) -> None:
        self.sub.close(0)

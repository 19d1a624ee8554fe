"""Drain-to-latest receiving over a ZeroMQ SUB socket.

A control loop wants the newest state, not a backlog: each `poll` takes everything queued without blocking
and keeps only the newest valid message per topic. A malformed, oversized, wrong-version, stale or superseded
message is dropped and counted by reason; none of them ever stops the loop (DESIGN.md section 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import zmq

from robots.contract.wire import DEFAULT_LIMITS, Envelope, WireError, WireLimits, decode

# Messages taken per poll at most, so a peer sending faster than we decode cannot hold the loop in a drain.
MAX_DRAIN = 10_000


@dataclass
class DropCounts:
    """Dropped messages by reason: "malformed", "version", "oversized", "out_of_order", "superseded"."""

    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int = 1) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + n

    def total(self) -> int:
        return sum(self.by_reason.values())


class LatestReceiver:
    """Drains a SUB socket without blocking and keeps only the newest valid message per topic."""

    def __init__(self, socket: zmq.Socket, limits: WireLimits = DEFAULT_LIMITS, *, max_drain: int = MAX_DRAIN):
        self.socket = socket
        self.limits = limits
        self.max_drain = max_drain
        self.drops = DropCounts()
        self._last_seq: dict[tuple[str, str], int] = {}  # (topic, source) -> last accepted seq
        self._latest: dict[str, Envelope] = {}

    def poll(self, timeout_ms: int = 0) -> dict[str, Envelope]:
        """Wait up to `timeout_ms` for a first message, then drain the queue without blocking.

        Returns the newest valid message per topic received in this call; empty if none came.
        """
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        fresh: dict[str, Envelope] = {}
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return fresh
        for _ in range(self.max_drain):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._take(frames, fresh)
        return fresh

    def latest(self, topic: str) -> Envelope | None:
        """The newest message accepted on `topic`, across all polls."""
        return self._latest.get(topic)

    def _take(self, frames: Sequence[zmq.Frame], fresh: dict[str, Envelope]) -> None:
        try:
            env = decode(frames, self.limits)
        except WireError as err:
            self.drops.add(err.reason)
            return
        key = (env.topic, env.source)
        last = self._last_seq.get(key)
        if last is not None and env.seq <= last:
            self.drops.add("out_of_order")
            return
        self._last_seq[key] = env.seq
        if env.topic in fresh:
            self.drops.add("superseded")
        fresh[env.topic] = env
        self._latest[env.topic] = env


def make_sub_socket(ctx: zmq.Context, endpoint: str, topics: Sequence[str], rcvhwm: int = 100) -> zmq.Socket:
    """A SUB socket connected to `endpoint`, subscribed to the topic prefixes (none given: all topics)."""
    if isinstance(topics, str):
        raise TypeError("topics must be a sequence of topic strings, not one string")
    socket = ctx.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVHWM, rcvhwm)  # before connect: it applies to pipes created afterwards
    for topic in topics or [""]:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
    socket.connect(endpoint)
    return socket

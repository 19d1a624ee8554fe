"""Drain-to-latest receiving over a ZeroMQ SUB socket.

A control loop wants the newest state, not a backlog: each `poll` takes everything queued without blocking
and keeps only the newest valid message per topic. A malformed, oversized, wrong-version, stale or superseded
message is dropped and counted by reason; none of them ever stops the loop (DESIGN.md section 2). A restarted
driver (another `instance` in its state or status) begins its seqs again: its messages are taken, not dropped.

Some shapes only the reader knows: a state's joint count is the arm's, a frame's size the model's. Given them
(`expect`), the receiver drops a message with another shape as "wrong_shape:<topic>" before it can replace
the newest good one, so a bad message never reaches the loop and the watchdogs see its source go stale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import zmq

from robots.contract.wire import DEFAULT_LIMITS, Envelope, WireError, WireLimits, decode

log = logging.getLogger(__name__)

Shapes = Mapping[str, Mapping[str, tuple[int, ...]]]  # topic → array name → the exact shape it must have

# Messages taken per poll at most, so a peer sending faster than we decode cannot hold the loop in a drain.
MAX_DRAIN = 10_000


def shape_drop_reason(topic: str) -> str:
    """The drop counter's key for a message on `topic` whose arrays have shapes the reader cannot take."""
    return f"wrong_shape:{topic}"


@dataclass
class DropCounts:
    """Dropped messages by reason: "malformed", "version", "oversized", "out_of_order", "superseded" and
    "wrong_shape:<topic>"."""

    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int = 1) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + n

    def total(self) -> int:
        return sum(self.by_reason.values())


class LatestReceiver:
    """Drains a SUB socket without blocking and keeps only the newest valid message per topic."""

    def __init__(
        self,
        socket: zmq.Socket,
        limits: WireLimits = DEFAULT_LIMITS,
        *,
        max_drain: int = MAX_DRAIN,
        shapes: Shapes | None = None,
    ):
        self.socket = socket
        self.limits = limits
        self.max_drain = max_drain
        self.drops = DropCounts()
        self.expect(shapes or {})
        self._last_seq: dict[tuple[str, str], int] = {}  # (topic, source) -> last accepted seq
        self.instances: dict[str, str] = {}  # source -> the driver instance its newest state or status named
        self._latest: dict[str, Envelope] = {}
        self._warned: set[str] = set()  # drop reasons already explained in the log

    def expect(self, shapes: Shapes) -> None:
        """From now on, drop a message on one of these topics whose named array (when present) has another
        shape, counting it as `shape_drop_reason(topic)`. Replaces what was expected before."""
        self.shapes: dict[str, dict[str, tuple[int, ...]]] = {
            topic: {name: tuple(shape) for name, shape in arrays.items()} for topic, arrays in shapes.items()
        }

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
        if (wrong := self._wrong_shape(env)) is not None:  # before the seq: a bad message advances nothing
            reason = shape_drop_reason(env.topic)
            self.drops.add(reason)
            if reason not in self._warned:
                self._warned.add(reason)
                log.warning("dropping %s messages from %r: %s (counted as %s)", env.topic, env.source, wrong, reason)
            return
        self._new_instance(env)
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

    def _new_instance(self, env: Envelope) -> None:
        """A source that names another instance than before restarted: its seqs begin again, so forget the old
        ones rather than drop the new source's messages as out of order until its seqs catch up. Telling the
        loop is the guard's job (the instance travels in the state and status it reads)."""
        instance = env.fields.get("instance")
        if not isinstance(instance, str) or not instance:
            return
        known = self.instances.get(env.source)
        if known is not None and known != instance:
            log.warning(
                "%s restarted: instance %s, was %s; its sequence numbers begin again", env.source, instance, known
            )
            self._last_seq = {key: seq for key, seq in self._last_seq.items() if key[1] != env.source}
        self.instances[env.source] = instance

    def _wrong_shape(self, env: Envelope) -> str | None:
        """What is wrong with the shapes of `env`'s arrays, or None when they are as expected."""
        for name, shape in self.shapes.get(env.topic, {}).items():
            array = env.arrays.get(name)
            if array is not None and array.shape != shape:
                return f"array {name!r} has shape {array.shape}, expected {shape}"
        return None


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

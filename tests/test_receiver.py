"""Drain-to-latest receiving over real ZeroMQ PUB/SUB sockets on loopback, and the drop counts it keeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import msgpack
import numpy as np
import pytest
import zmq

from robots.contract.receiver import DropCounts, LatestReceiver, make_sub_socket
from robots.contract.wire import Envelope, WireLimits, encode

CONNECT_TIMEOUT_S = 2.0  # a bound on waiting for the subscription to reach the publisher, not a speed claim


def frames(topic: str, seq: int, source: str = "sim", **kwargs) -> list[bytes]:
    return encode(topic, seq=seq, source=source, t_capture_ns=seq, **kwargs)


def wrong_version(topic: str, seq: int) -> list[bytes]:
    good = frames(topic, seq)
    header = msgpack.unpackb(good[1], raw=False) | {"v": 2}
    return [good[0], msgpack.packb(header), *good[2:]]


@dataclass
class Link:
    pub: zmq.Socket
    sub: zmq.Socket

    def send(self, *messages: list[bytes]) -> None:
        for message in messages:
            self.pub.send_multipart(message)


def poll_until(
    receiver: LatestReceiver, done: Callable[[Envelope], bool], topic: str = "state"
) -> list[dict[str, Envelope]]:
    """Poll until a message on `topic` satisfies `done`; every poll's result, in order. Bounded in time."""
    results = []
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while time.monotonic() < deadline:
        got = receiver.poll(timeout_ms=20)
        results.append(got)
        if topic in got and done(got[topic]):
            return results
    raise AssertionError(f"no matching message on {topic!r} within {CONNECT_TIMEOUT_S} s")


@pytest.fixture
def link() -> Iterator[Link]:
    """A PUB bound on a random loopback port and a SUB (all topics) whose subscription has arrived."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = make_sub_socket(ctx, f"tcp://127.0.0.1:{port}", topics=())
    try:
        probe = LatestReceiver(sub)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        seq = 0
        while probe.latest("probe") is None and time.monotonic() < deadline:
            seq += 1
            pub.send_multipart(frames("probe", seq))
            probe.poll(timeout_ms=10)
        assert probe.latest("probe") is not None, "subscription did not connect"
        # A fence after every probe: once it arrives, no probe is left in flight to disturb the test.
        pub.send_multipart(frames("probe", seq + 1))
        poll_until(probe, lambda env: env.seq == seq + 1, topic="probe")
        yield Link(pub, sub)
    finally:
        ctx.destroy(linger=0)


def test_poll_returns_only_the_newest_and_counts_the_rest_superseded(link: Link) -> None:
    receiver = LatestReceiver(link.sub)
    link.send(*(frames("state", seq, arrays={"q": np.full(7, seq, float)}) for seq in range(1, 6)))
    results = poll_until(receiver, lambda env: env.seq == 5)
    returned = [got["state"].seq for got in results if "state" in got]
    # All five normally arrive in one drain: one message returned, four superseded. Should TCP deliver them
    # across two polls, each poll still returns only the newest of its own drain.
    assert returned == sorted(returned) and returned[-1] == 5
    assert receiver.drops.total() == receiver.drops.by_reason.get("superseded", 0) == 5 - len(returned)
    assert results[-1]["state"].arrays["q"][0] == 5.0
    assert receiver.poll() == {}


def test_bad_messages_are_counted_by_reason_and_the_next_valid_one_is_received(link: Link) -> None:
    receiver = LatestReceiver(link.sub)
    link.send([b"state", b"\xc1 garbage"], wrong_version("state", 1), [b"state"], frames("state", 2))
    poll_until(receiver, lambda env: env.seq == 2)
    assert receiver.drops.by_reason == {"malformed": 2, "version": 1}
    link.send(frames("state", 3))
    poll_until(receiver, lambda env: env.seq == 3)
    assert receiver.drops.total() == 3


def test_oversized_messages_are_counted_not_raised(link: Link) -> None:
    receiver = LatestReceiver(link.sub, WireLimits(max_buffer_bytes=64))
    link.send(frames("state", 1, arrays={"q": np.zeros(9)}), frames("state", 2, arrays={"q": np.zeros(8)}))
    poll_until(receiver, lambda env: env.seq == 2)
    assert receiver.drops.by_reason == {"oversized": 1}


def test_out_of_order_and_repeated_seq_are_dropped_per_topic_and_source(link: Link) -> None:
    receiver = LatestReceiver(link.sub)
    link.send(frames("state", 10))
    poll_until(receiver, lambda env: env.seq == 10)
    link.send(frames("state", 9), frames("state", 10), frames("status", 1), frames("state", 3, source="other"))
    poll_until(receiver, lambda env: env.source == "other")  # seq is per (topic, source)
    assert receiver.drops.by_reason.get("out_of_order") == 2
    assert receiver.latest("status").seq == 1  # and per topic
    link.send(frames("state", 2, source="other"), frames("state", 11))
    poll_until(receiver, lambda env: env.seq == 11)
    assert receiver.drops.by_reason.get("out_of_order") == 3


def test_latest_persists_across_polls(link: Link) -> None:
    receiver = LatestReceiver(link.sub)
    assert receiver.latest("state") is None
    link.send(frames("state", 1), frames("status", 1))
    poll_until(receiver, lambda env: env.seq == 1, topic="status")
    first = receiver.latest("state")
    assert first is not None and first.seq == 1
    assert receiver.poll(timeout_ms=0) == {}
    assert receiver.latest("state") is first and receiver.latest("nothing") is None
    link.send(frames("state", 2))
    poll_until(receiver, lambda env: env.seq == 2)
    assert receiver.latest("state").seq == 2 and receiver.latest("status").seq == 1


def test_subscriptions_filter_topics_and_socket_options_are_set(link: Link) -> None:
    port = link.pub.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
    ctx = zmq.Context()
    sub = make_sub_socket(ctx, f"tcp://127.0.0.1:{port}", topics=["status"], rcvhwm=7)
    try:
        assert sub.getsockopt(zmq.RCVHWM) == 7 and sub.getsockopt(zmq.LINGER) == 0
        receiver = LatestReceiver(sub)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while receiver.latest("status") is None and time.monotonic() < deadline:
            link.send(frames("state", 1), frames("status", 1))
            receiver.poll(timeout_ms=10)
        assert receiver.latest("status") is not None
        assert receiver.latest("state") is None
    finally:
        ctx.destroy(linger=0)
    with pytest.raises(TypeError):
        make_sub_socket(zmq.Context.instance(), "tcp://127.0.0.1:1", topics="status")


def test_poll_refuses_a_negative_timeout(link: Link) -> None:
    with pytest.raises(ValueError):
        LatestReceiver(link.sub).poll(timeout_ms=-1)


class QueueSocket:
    """Stands in for a SUB socket whose queue holds exactly the given messages (no network timing)."""

    def __init__(self, messages: list[list[bytes]]):
        self.messages = list(messages)

    def poll(self, timeout: int, flags: int) -> int:
        return zmq.POLLIN if self.messages else 0

    def recv_multipart(self, flags: int, copy: bool) -> list[zmq.Frame]:
        if not self.messages:
            raise zmq.Again()
        return [zmq.Frame(f) for f in self.messages.pop(0)]


def test_one_drain_of_five_returns_the_newest_and_counts_four_superseded() -> None:
    receiver = LatestReceiver(QueueSocket([frames("state", seq) for seq in range(1, 6)]))
    got = receiver.poll()
    assert list(got) == ["state"] and got["state"].seq == 5
    assert receiver.drops.by_reason == {"superseded": 4}


def test_drain_is_bounded_per_poll() -> None:
    receiver = LatestReceiver(QueueSocket([frames("state", seq) for seq in range(1, 6)]), max_drain=2)
    assert receiver.poll()["state"].seq == 2
    assert receiver.poll()["state"].seq == 4
    assert receiver.poll()["state"].seq == 5
    assert receiver.poll() == {}


def test_drop_counts_add_and_total() -> None:
    drops = DropCounts()
    assert drops.total() == 0 and drops.by_reason == {}
    drops.add("malformed")
    drops.add("superseded", 3)
    drops.add("malformed")
    assert drops.by_reason == {"malformed": 2, "superseded": 3} and drops.total() == 5

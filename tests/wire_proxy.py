"""A ZeroMQ man-in-the-middle for tests: forwards driver ↔ runtime traffic, records every command on the
wire, and can drop driver messages (a frozen camera) — real sockets on loopback, no mocks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import zmq

from robots.contract.messages import COMMAND, CommandMsg
from robots.contract.wire import Envelope, WireError, decode
from robots.sim.process import free_loopback_endpoint


class WireProxy:
    def __init__(self, driver_pub: str, driver_cmd: str, drop: Callable[[Envelope], bool] | None = None):
        self.pub_endpoint, self.cmd_endpoint = free_loopback_endpoint(), free_loopback_endpoint()
        self.drop = drop or (lambda env: False)
        self.commands: list[CommandMsg] = []  # every command pac-run sent, decoded at the wire
        self.undecodable = 0
        self.dropped = 0
        ctx = zmq.Context.instance()
        self._from_driver = ctx.socket(zmq.SUB)
        self._from_driver.setsockopt(zmq.SUBSCRIBE, b"")
        self._from_driver.connect(driver_pub)
        self._to_runtime = ctx.socket(zmq.PUB)
        self._to_runtime.bind(self.pub_endpoint)
        self._from_runtime = ctx.socket(zmq.SUB)
        self._from_runtime.setsockopt(zmq.SUBSCRIBE, b"")
        self._from_runtime.bind(self.cmd_endpoint)
        self._to_driver = ctx.socket(zmq.PUB)
        self._to_driver.connect(driver_cmd)
        for s in (self._from_driver, self._to_runtime, self._from_runtime, self._to_driver):
            s.setsockopt(zmq.LINGER, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._from_driver, zmq.POLLIN)
        poller.register(self._from_runtime, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(20):
                frames = sock.recv_multipart()
                if sock is self._from_driver:
                    try:
                        if self.drop(decode(frames)):
                            self.dropped += 1
                            continue
                    except WireError:
                        pass
                    self._to_runtime.send_multipart(frames)
                else:
                    try:
                        env = decode(frames)
                        if env.topic == COMMAND:
                            self.commands.append(CommandMsg.from_envelope(env))
                    except WireError:
                        self.undecodable += 1
                    self._to_driver.send_multipart(frames)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for s in (self._from_driver, self._to_runtime, self._from_runtime, self._to_driver):
            s.close(0)

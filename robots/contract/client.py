"""The runtime's side of the driver contract: connect, wait for the driver, send commands, read the latest.

Tests, benchmarks, the tasks and `pac-run` talk to any driver (sim or real) through this one class. In
lockstep, `step` sends a command (or a tick) and waits for the state that acknowledges it, resending the
same message when a PUB/SUB connection was still being set up (the driver ignores a repeated seq).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from robots.contract import messages as msg
from robots.contract.link import DEFAULT_LINK, LinkConfig, Mode
from robots.contract.receiver import LatestReceiver
from robots.contract.wire import WireError


class DriverUnavailable(RuntimeError):
    """No driver answered on the endpoint in time."""


@dataclass
class LatestMessages:
    """The newest state, images, status, object poses and (sim only) task outcome seen from a driver (not yet
    a model's observation). `objects` and `task` stay None from a driver that does not publish them."""

    state: msg.StateMsg | None = None
    status: msg.StatusMsg | None = None
    images: dict[str, msg.ImageMsg] = field(default_factory=dict)
    objects: msg.ObjectsMsg | None = None
    task: msg.TaskMsg | None = None


class DriverClient:
    def __init__(
        self,
        pub_endpoint: str,
        cmd_endpoint: str,
        *,
        context: zmq.Context | None = None,
        source: str = "runtime",
        receive_hwm: int = DEFAULT_LINK.receive_hwm,
    ) -> None:
        self.pub_endpoint, self.cmd_endpoint = pub_endpoint, cmd_endpoint
        self.context = context or zmq.Context.instance()
        self._sub = self.context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, receive_hwm)  # before connect: it applies to pipes made afterwards
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(pub_endpoint)
        self._cmd = self.context.socket(zmq.PUB)
        self._cmd.setsockopt(zmq.LINGER, 0)
        self._cmd.connect(cmd_endpoint)
        self.receiver = LatestReceiver(self._sub)
        self.source = source
        self.seq = 0
        self.latest = LatestMessages()

    @classmethod
    def for_link(cls, link: LinkConfig, source: str = "runtime") -> DriverClient:
        return cls(link.pub_endpoint, link.cmd_endpoint, source=source, receive_hwm=link.receive_hwm)

    # ---------------------------------------------------------------- receiving
    def wait(self, timeout_ms: int) -> bool:
        """Block up to `timeout_ms` until a message from the driver is waiting; True if one is."""
        return bool(self._sub.poll(max(0, int(timeout_ms)), zmq.POLLIN))

    def poll(self, timeout_ms: int = 0) -> LatestMessages:
        """Take everything queued; keep the newest state, status, image per camera, objects and task."""
        for topic, env in self.receiver.poll(timeout_ms).items():
            try:
                if topic == msg.STATE:
                    self.latest.state = msg.StateMsg.from_envelope(env)
                elif topic == msg.STATUS:
                    self.latest.status = msg.StatusMsg.from_envelope(env)
                elif topic.startswith(msg.IMAGE_PREFIX):
                    image = msg.ImageMsg.from_envelope(env)
                    self.latest.images[image.camera] = image
                elif topic == msg.OBJECTS:
                    self.latest.objects = msg.ObjectsMsg.from_envelope(env)
                elif topic == msg.TASK:
                    self.latest.task = msg.TaskMsg.from_envelope(env)
            except WireError as err:
                self.receiver.drops.add(err.reason)
        return self.latest

    @property
    def dropped(self) -> dict[str, int]:
        """Messages from the driver dropped so far, by reason (malformed, out_of_order, superseded, ...)."""
        return self.receiver.drops.by_reason

    def wait_ready(self, timeout_s: float = 10.0) -> msg.StatusMsg:
        """Block until the driver's heartbeat arrives, or raise DriverUnavailable naming the endpoint."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.poll(100).status is not None:
                return self.latest.status
        raise DriverUnavailable(
            f"no driver heartbeat on {self.pub_endpoint} within {timeout_s:.0f} s; "
            f"start one with `pac-sim --robot sawyer` (or use --sim)"
        )

    # ------------------------------------------------------------------ sending
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send_command(self, mode: Mode, action: np.ndarray, deadline_ns: int, obs_seq: int = -1) -> int:
        seq = self._next_seq()
        command = msg.CommandMsg(seq, mode, np.asarray(action, dtype=float), deadline_ns, obs_seq, self.source)
        self._cmd.send_multipart(command.to_frames())
        return seq

    # ----------------------------------------------------------------- lockstep
    def _send_and_wait(self, frames: list[bytes], seq: int, timeout_s: float, resend_s: float) -> LatestMessages:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._cmd.send_multipart(frames)
            resend_at = time.monotonic() + resend_s
            while time.monotonic() < resend_at:
                state = self.poll(10).state
                if state is not None and state.last_rx_seq >= seq:
                    return self.latest
        raise DriverUnavailable(f"driver on {self.cmd_endpoint} did not acknowledge message {seq} in {timeout_s} s")

    def step(
        self,
        mode: Mode | None = None,
        action: np.ndarray | None = None,
        *,
        deadline_ns: int | None = None,
        timeout_s: float = 10.0,
        resend_s: float = 0.25,
    ) -> LatestMessages:
        """Lockstep: apply a command (or none: a tick) for one period and return the acknowledging state.

        The default deadline is two periods after the newest state's capture time (the driver's clock).
        """
        seq = self._next_seq()
        if mode is None:
            frames = msg.ControlMsg(msg.TICK, seq, self.source).to_frames()
        else:
            if deadline_ns is None:
                state = self.latest.state
                base = state.t_capture_ns if state is not None else time.monotonic_ns()
                status = self.latest.status
                period = status.period_s if status is not None else DEFAULT_LINK.period_s
                deadline_ns = base + round(2 * period * 1e9)
            obs_seq = self.latest.state.seq if self.latest.state is not None else -1
            action = np.zeros(0) if action is None else np.asarray(action, dtype=float)
            frames = msg.CommandMsg(seq, mode, action, deadline_ns, obs_seq, self.source).to_frames()
        return self._send_and_wait(frames, seq, timeout_s, resend_s)

    def reset(self, timeout_s: float = 10.0, seed: int | None = None) -> LatestMessages:
        """Sim only: arm home, objects in place (or laid out from `seed`); returns the state after the reset."""
        seq = self._next_seq()
        frames = msg.ControlMsg(msg.RESET, seq, self.source, seed).to_frames()
        return self._send_and_wait(frames, seq, timeout_s, 0.25)

    def close(self) -> None:
        self._sub.close(0)
        self._cmd.close(0)

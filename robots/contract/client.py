"""The runtime's side of the driver contract: connect, wait for the driver, send commands, read the latest.

Tests, benchmarks, the tasks and `pac-run` talk to any driver (sim or real) through this one class. In
lockstep, `step` sends a command (or a tick) and waits for the state that acknowledges it, resending the
same message when a PUB/SUB connection was still being set up (the driver ignores a repeated seq).

Each client is one session (robots/contract/session.py): its messages carry its secret token, the driver
grants the arm to one session at a time, and the client counts as acknowledged only states whose `holder`
is its own fingerprint, so another session's progress is never mistaken for its own. `claim` takes the arm
explicitly (and says who holds it when it cannot); `close` gives it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from robots.contract import messages as msg
from robots.contract.link import DEFAULT_LINK, SELF_CLEARING_FAULTS, DriverFault, LinkConfig, Mode
from robots.contract.receiver import LatestReceiver
from robots.contract.security import NO_KEYS, LinkSecurity, connect
from robots.contract.session import fingerprint, new_session_token
from robots.contract.wire import WireError


class DriverUnavailable(RuntimeError):
    """No driver answered on the endpoint in time."""


class ArmHeld(DriverUnavailable):
    """Another session holds the arm; the message names it and how long its lease has left."""


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
        security: LinkSecurity = NO_KEYS,
    ) -> None:
        """`security`: CURVE keys, needed for a driver off loopback (robots/contract/security.py: the rule)."""
        self.pub_endpoint, self.cmd_endpoint = pub_endpoint, cmd_endpoint
        self.context = context or zmq.Context.instance()
        self._sub = self.context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, receive_hwm)  # before connect: it applies to pipes made afterwards
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        connect(self._sub, pub_endpoint, security)
        self._cmd = self.context.socket(zmq.PUB)
        self._cmd.setsockopt(zmq.LINGER, 0)
        connect(self._cmd, cmd_endpoint, security)
        self.receiver = LatestReceiver(self._sub)
        self.source = source
        self.session = new_session_token()
        self.fingerprint = fingerprint(self.session)
        self.seq = 0
        self.latest = LatestMessages()

    @classmethod
    def for_link(cls, link: LinkConfig, source: str = "runtime") -> DriverClient:
        return cls(
            link.pub_endpoint, link.cmd_endpoint, source=source, receive_hwm=link.receive_hwm, security=link.security
        )

    def tap(self, wrap: Callable[[zmq.Socket, str], Any]) -> None:
        """Route this client's traffic through `wrap(socket, "sub" | "cmd")`, a stand-in with the socket's
        poll/recv_multipart/send_multipart/close: the recorder logs what passes (runtime/recorder.py), a replay
        serves a recording instead (runtime/replay.py)."""
        self._sub = self.receiver.socket = wrap(self._sub, "sub")
        self._cmd = wrap(self._cmd, "cmd")

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

    def wait_settled(self, timeout_s: float = 10.0) -> msg.StatusMsg:
        """Block until the driver's heartbeat lists no fault that clears by itself (a sustained overrun: a host
        busy for a moment, a driver still starting), or one that does not (an e-stop, a reflex, an arm error:
        waiting cannot help), or `timeout_s` passed; return that status, whose faults the caller judges. Raise
        DriverUnavailable when no heartbeat came at all. The dead-man's hold is no fault here: a driver no one
        commands holds."""
        end = time.monotonic() + timeout_s
        status = self.wait_ready(timeout_s)
        while time.monotonic() < end:
            faults = set(status.faults) - {DriverFault.COMMAND_TIMEOUT}
            if not faults or faults - SELF_CLEARING_FAULTS:
                break
            status = self.poll(100).status or status
        return status

    def mine(self, state: msg.StateMsg | None) -> bool:
        """Whether `state` reports this session as the arm's holder (its seqs are then this session's)."""
        return state is not None and state.holder == self.fingerprint

    def _held_by_another(self, status: msg.StatusMsg | None) -> bool:
        """Whether `status` shows another session holding the arm on a live lease."""
        return status is not None and status.holder not in ("", self.fingerprint) and status.lease_ms_left > 0

    # ------------------------------------------------------------------ sending
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send_command(
        self, mode: Mode, action: np.ndarray, deadline_ns: int, obs_seq: int = -1, obs_t_ns: int | None = None
    ) -> int:
        """Send one command; `obs_t_ns` is the capture time of the oldest observation it came from (default: the
        newest state's), which the driver checks against its bound."""
        seq = self._next_seq()
        if obs_t_ns is None:
            obs_t_ns = self.latest.state.t_capture_ns if self.latest.state is not None else -1
        command = msg.CommandMsg(
            seq, mode, np.asarray(action, dtype=float), deadline_ns, obs_seq, self.source, 0, obs_t_ns, self.session
        )
        self._cmd.send_multipart(command.to_frames())
        return seq

    def _control(self, topic: str, seq: int, **fields) -> list[bytes]:
        return msg.ControlMsg(topic, seq, self.source, session=self.session, **fields).to_frames()

    def claim(self, timeout_s: float = 5.0, lease_ms: float = DEFAULT_LINK.lease_ms) -> msg.StatusMsg:
        """Take the arm's lease (renewed afterwards by every message this client sends); returns the status that
        shows this session holding it. ArmHeld names the holder when another session has it; DriverUnavailable
        when the driver does not answer."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._cmd.send_multipart(self._control(msg.CLAIM, self._next_seq(), lease_ms=lease_ms))
            resend_at = time.monotonic() + 0.1
            while time.monotonic() < resend_at:
                latest = self.poll(10)
                if latest.status is not None and latest.status.holder == self.fingerprint and self.mine(latest.state):
                    return latest.status  # both say so: the first tick after a claim sees its own state
            status = self.latest.status
            if self._held_by_another(status):
                raise ArmHeld(
                    f"the arm on {self.cmd_endpoint} is held by {status.holder_label} (session {status.holder}) "
                    f"for another {status.lease_ms_left:.0f} ms; stop that session first"
                )
        raise DriverUnavailable(f"driver on {self.cmd_endpoint} did not grant the arm within {timeout_s} s")

    def release(self) -> None:
        """Give the arm back now rather than at the lease's end (best effort: the lease ends anyway)."""
        self._cmd.send_multipart(self._control(msg.RELEASE, self._next_seq()))

    # ----------------------------------------------------------------- lockstep
    def _send_and_wait(self, frames: list[bytes], seq: int, timeout_s: float, resend_s: float) -> LatestMessages:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._cmd.send_multipart(frames)
            resend_at = time.monotonic() + resend_s
            while time.monotonic() < resend_at:
                state = self.poll(10).state
                if self.mine(state) and state.last_rx_seq >= seq:
                    return self.latest
                status = self.latest.status
                if self._held_by_another(status):
                    raise ArmHeld(f"the arm on {self.cmd_endpoint} is held by {status.holder_label} ({status.holder})")
        raise DriverUnavailable(f"driver on {self.cmd_endpoint} did not acknowledge message {seq} in {timeout_s} s")

    def step(
        self,
        mode: Mode | None = None,
        action: np.ndarray | None = None,
        *,
        deadline_ns: int | None = None,
        obs_t_ns: int | None = None,
        timeout_s: float = 10.0,
        resend_s: float = 0.25,
    ) -> LatestMessages:
        """Lockstep: apply a command (or none: a tick) for one period and return the acknowledging state.

        The default deadline is two periods after the newest state's capture time (the driver's clock), and the
        command is taken as computed from that state (`obs_t_ns`: its capture time) unless told otherwise.
        A refused command is acknowledged too (the driver processed it); its status says why.
        """
        seq = self._next_seq()
        if mode is None:
            frames = self._control(msg.TICK, seq)
        else:
            if deadline_ns is None:
                state = self.latest.state
                base = state.t_capture_ns if state is not None else time.monotonic_ns()
                status = self.latest.status
                period = status.period_s if status is not None else DEFAULT_LINK.period_s
                deadline_ns = base + round(2 * period * 1e9)
            state = self.latest.state
            obs_seq, newest_t_ns = (state.seq, state.t_capture_ns) if state is not None else (-1, -1)
            obs_t_ns = newest_t_ns if obs_t_ns is None else obs_t_ns
            action = np.zeros(0) if action is None else np.asarray(action, dtype=float)
            command = msg.CommandMsg(seq, mode, action, deadline_ns, obs_seq, self.source, 0, obs_t_ns, self.session)
            frames = command.to_frames()
        return self._send_and_wait(frames, seq, timeout_s, resend_s)

    def reset(self, timeout_s: float = 10.0, seed: int | None = None) -> LatestMessages:
        """Sim only: arm home, objects in place (or laid out from `seed`); returns the state after the reset."""
        seq = self._next_seq()
        frames = self._control(msg.RESET, seq, seed=seed)
        return self._send_and_wait(frames, seq, timeout_s, 0.25)

    def close(self) -> None:
        """Give the arm back (if this client ever sent anything: else it never held it) and close both sockets."""
        try:
            if self.seq:
                self.release()
            self._cmd.close(100)  # long enough for the release to leave
        finally:
            self._sub.close(0)

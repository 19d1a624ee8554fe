"""`--record DIR`: everything a run's loop saw and did, so it can be read, plotted and replayed bit for bit.

Two files, beside the run's `summary.json`:
- `ticks.jsonl`: one JSON line per tick (state, safety state and causes, the action sent, stage timings);
  line-buffered and append-only, so a crash loses at most the last line.
- `recording.mcap` (MCAP, the log format Foxglove and ROS 2 tools read): every message the driver sent, as the
  wire frames received, on `/driver/<topic>` at its receive time; every message sent to the driver
  (`/pac/command`, `/pac/control`); the per-tick record as JSON (`/pac/tick`); the loop's trace
  (`/pac/trace`); and metadata records `session` (robot, policy and its sha256, provider, config, the
  session's fingerprint) and `result`.

Why a trace and not only messages: the loop's decisions depend on time as much as on messages (observation
ages, deadlines, the pacer, the inference deadline), and on how many messages each receive found. The trace
logs, in order, every reading of the loop's clock and every poll and receive on the driver's socket, so a
replay on a virtual clock (runtime/replay.py) takes the same branch at every step, real-time runs
included, without re-measuring a duration. Sent messages are stored with the session token blanked: the
token is a credential that never leaves the client (robots/contract/session.py); the fingerprint is in
`session`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
from mcap.writer import CompressionType, Writer

from robots.contract import messages as msg
from robots.contract.client import DriverClient
from robots.contract.link import Mode
from robots.contract.messages import StateMsg
from robots.contract.wire import WireError, decode, encode
from runtime.clock import MONOTONIC, Clock
from runtime.config import RunConfig
from runtime.guard import Decision
from runtime.inference.loader import LoadedPolicy
from runtime.inference.providers import SessionConfig
from runtime.safety.causes import names
from runtime.summary import RunSummary
from runtime.timing import StageTimer

FORMAT_VERSION = 1
RECORDING = "recording.mcap"
TICKS = "ticks.jsonl"
WIRE_ENCODING = "application/x-pac-wire"  # a msgpack array of one message's frames, as bytes
TRACE_ENCODING = "application/x-pac-trace"  # msgpack {"kind": uint8 bytes, "value": little-endian int64 bytes}
DRIVER_PREFIX = "/driver/"
DRIVER_OTHER = DRIVER_PREFIX + "other"  # topics outside the contract, or past MAX_DRIVER_CHANNELS
COMMAND_CHANNEL, CONTROL_CHANNEL = "/pac/command", "/pac/control"
TRACE_CHANNEL, TICK_CHANNEL = "/pac/trace", "/pac/tick"
SESSION, RESULT = "session", "result"  # metadata record names
MAX_DRIVER_CHANNELS = 32  # a peer inventing topics cannot grow the file's channel table past this
_DRIVER_TOPICS = (msg.STATE, msg.STATUS, msg.OBJECTS, msg.TASK)
_TICK_SCHEMA = {  # for Foxglove's plots; the fields are those of Recorder.tick
    "type": "object",
    "properties": {
        "tick": {"type": "integer"},
        "safety": {"type": "string"},
        "causes": {"type": "array", "items": {"type": "string"}},
        "mode": {"type": "string"},
        "cmd_seq": {"type": "integer"},
        "obs_seq": {"type": ["integer", "null"]},
        "q": {"type": ["array", "null"], "items": {"type": "number"}},
        "tcp_pose": {"type": ["array", "null"], "items": {"type": "number"}},
        "action": {"type": ["array", "null"], "items": {"type": "number"}},
        "stages_ms": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
    },
}


class Event(enum.IntEnum):
    """One entry of the trace: what the loop asked of its clock or of the driver's socket, and the answer."""

    CLOCK = 0  # the loop read its clock: value = the reading, ns
    POLL = 1  # the driver's socket was polled: value = the events it returned (0: nothing waiting)
    RECV = 2  # a message was received: value = its index (the `sequence` of its /driver/ record)
    AGAIN = 3  # a receive found nothing queued
    SEND = 4  # a message left for the driver: value = its index (the `sequence` of its /pac/ record)


def policy_digest(path: Path) -> str:
    """sha256 of a policy file and of its external weights (`<name>.onnx.data`) when it has them."""
    h = hashlib.sha256()
    for part in (Path(path), Path(f"{path}.data")):
        if part.is_file():
            with part.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def frame_bytes(frames) -> list[bytes]:
    """Frames (zmq.Frame, bytes or buffers) as bytes."""
    return [f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in frames]


class Recorder:
    """Writes a run's recording. `attach` a client before the pre-flight (what it receives then primes a
    replay), `begin` as the loop is built (from then on `clock` and the client's socket are traced), `end`
    when the loop has stopped, `close` last."""

    def __init__(self, directory: Path, clock: Clock = MONOTONIC):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / TICKS
        self._file = self.path.open("w", buffering=1)
        self.base = clock  # receive and record times; never traced
        self.clock = TracedClock(clock, self)  # the loop's clock
        self.timer: StageTimer | None = None  # the loop's stage timer: each tick's stage timings are recorded
        self._stream = (self.directory / RECORDING).open("wb")
        self._mcap = Writer(self._stream, compression=CompressionType.LZ4)  # cheap enough for the loop's thread
        self._mcap.start(profile="", library="pac-runtime")
        self._tick_schema = self._mcap.register_schema("pac.Tick", "jsonschema", json.dumps(_TICK_SCHEMA).encode())
        self._channels: dict[str, int] = {}
        self._received = self._sent = 0
        self._kinds: list[int] = []
        self._values: list[int] = []
        self._trace_parts = 0
        self._tracing = False
        self._closed = False

    # ------------------------------------------------------------ the run's phases
    def attach(self, client: DriverClient) -> None:
        """Record every message `client` receives and sends from now on."""
        client.tap(self._wrap)

    def begin(
        self,
        client: DriverClient,
        config: RunConfig,
        policy: LoadedPolicy,
        session: SessionConfig,
        lockstep: bool,
        duration_s: float | None,
        max_ticks: int | None,
        calibration: dict[str, str] | None = None,
    ) -> None:
        """The loop is about to be built: note what a replay needs to rebuild it, and start the trace."""
        record = {
            "format": FORMAT_VERSION,
            "robot": config.robot,
            "policy": str(policy.path),
            "policy_sha256": policy_digest(policy.path),
            "provider": policy.provider,
            "inference": asdict(session),  # device, fallback, threads...: how the policy's session was built
            "config": asdict(config),
            "calibration_sha256": dict(calibration or {}),  # the calibration files the run was checked against
            "link": "lockstep" if lockstep else "realtime",
            "clock": "monotonic",
            "fingerprint": client.fingerprint,
            "source": client.source,
            "seq": client.seq,  # the client's last seq: the loop's first message is seq + 1
            "first_message": self._received,  # messages received before this prime the replay's client
            "duration_s": duration_s,
            "max_ticks": max_ticks,
        }
        self._mcap.add_metadata(SESSION, _strings(record))
        self._tracing = True

    def end(self, summary: RunSummary) -> None:
        """The loop has stopped (its final hold included): stop the trace and note how the run ended."""
        self._flush_trace()
        self._tracing = False
        if not self._closed:
            result = {
                "ticks": summary.ticks,
                "stop_reason": summary.stop_reason,
                "final_state": summary.final_state,
                "exit_code": summary.exit_code,
                "summary": asdict(summary),
            }
            self._mcap.add_metadata(RESULT, _strings(result))

    def tick(self, n: int, decision: Decision, state: StateMsg | None, cmd_seq: int) -> None:
        moving = decision.mode is not Mode.HOLD
        record = {
            "tick": n,
            "safety": decision.state.value,
            "causes": names(decision.causes),
            "mode": decision.mode.value,
            "cmd_seq": cmd_seq,
            "obs_seq": state.seq if state is not None else None,
            "step": state.step if state is not None else None,
            "t_capture_ns": state.t_capture_ns if state is not None else None,
            "q": state.q.tolist() if state is not None else None,
            "tcp_pose": state.tcp_pose.tolist() if state is not None else None,
            "action": decision.action.tolist() if moving else None,
        }
        if self.timer is not None:
            record["stages_ms"] = {s: _finite(self.timer.last(s)) for s in self.timer.stages}
        line = json.dumps(record)
        self._file.write(line + "\n")
        if not self._closed:
            now = self.base.now_ns()
            self._mcap.add_message(self._channel(TICK_CHANNEL, "json", self._tick_schema), now, line.encode(), now, n)
        self._flush_trace()

    def close(self) -> None:
        if self._closed:
            return
        self._flush_trace()
        self._tracing = False
        self._closed = True
        self._file.close()
        self._mcap.finish()
        self._stream.close()

    # ------------------------------------------------------------ the taps
    def trace(self, kind: Event, value: int) -> None:
        if self._tracing:
            self._kinds.append(kind)
            self._values.append(value)

    def received(self, frames) -> None:
        """A message from the driver, as received."""
        index = self._received
        self._received += 1
        self.trace(Event.RECV, index)
        if self._closed:
            return
        data = frame_bytes(frames)
        now = self.base.now_ns()
        channel = self._channel(self._driver_channel(data[0]), WIRE_ENCODING)
        self._mcap.add_message(channel, now, msgpack.packb(data), now, index & 0xFFFFFFFF)

    def sent(self, frames) -> None:
        """A message to the driver, as sent, its session token blanked."""
        index = self._sent
        self._sent += 1
        self.trace(Event.SEND, index)
        if self._closed:
            return
        data = _redacted(frame_bytes(frames))
        name = COMMAND_CHANNEL if data[0] == msg.COMMAND.encode() else CONTROL_CHANNEL
        now = self.base.now_ns()
        self._mcap.add_message(self._channel(name, WIRE_ENCODING), now, msgpack.packb(data), now, index & 0xFFFFFFFF)

    def _wrap(self, socket: zmq.Socket, role: str) -> _TapSocket:
        return _TapSocket(socket, self)

    def _driver_channel(self, topic: bytes) -> str:
        name = topic.decode("utf-8", "replace")
        contract = name in _DRIVER_TOPICS or (name.startswith(msg.IMAGE_PREFIX) and name.isprintable())
        if not contract:
            return DRIVER_OTHER
        channel = DRIVER_PREFIX + name
        if channel not in self._channels and len(self._channels) >= MAX_DRIVER_CHANNELS:
            return DRIVER_OTHER
        return channel

    def _channel(self, name: str, encoding: str, schema: int = 0) -> int:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = self._mcap.register_channel(name, encoding, schema)
        return channel

    def _flush_trace(self) -> None:
        if not self._kinds or self._closed:
            return
        data = {
            "kind": np.asarray(self._kinds, dtype=np.uint8).tobytes(),
            "value": np.asarray(self._values, dtype="<i8").tobytes(),
        }
        self._kinds, self._values = [], []
        now = self.base.now_ns()
        channel = self._channel(TRACE_CHANNEL, TRACE_ENCODING)
        self._mcap.add_message(channel, now, msgpack.packb(data), now, self._trace_parts)  # in order
        self._trace_parts += 1


class TracedClock:
    """The loop's clock while recording: the host's, each reading logged to the trace."""

    def __init__(self, base: Clock, recorder: Recorder):
        self.base, self.recorder = base, recorder

    def now_ns(self) -> int:
        t = self.base.now_ns()
        self.recorder.trace(Event.CLOCK, t)
        return t

    def sleep(self, seconds: float) -> None:
        self.base.sleep(seconds)  # how long it really took is the next reading's business


class _TapSocket:
    """A client's socket, every poll, receive and send logged to the recorder on the way."""

    def __init__(self, socket: zmq.Socket, recorder: Recorder):
        self.socket, self.recorder = socket, recorder

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:
        events = self.socket.poll(timeout, flags)
        self.recorder.trace(Event.POLL, int(events))
        return events

    def recv_multipart(self, flags: int = 0, copy: bool = True, track: bool = False) -> list:
        try:
            frames = self.socket.recv_multipart(flags, copy=copy, track=track)
        except zmq.Again:
            self.recorder.trace(Event.AGAIN, 0)
            raise
        self.recorder.received(frames)
        return frames

    def send_multipart(self, frames, flags: int = 0, copy: bool = True, track: bool = False):
        self.recorder.sent(frames)
        return self.socket.send_multipart(frames, flags, copy=copy, track=track)

    def __getattr__(self, name: str) -> Any:  # close, setsockopt, ...: the socket's own
        return getattr(self.socket, name)


def _redacted(frames: list[bytes]) -> list[bytes]:
    """A sent message with its `session` field blanked (re-encoded with the same header times)."""
    try:
        env = decode(frames)
    except WireError:
        return frames[:1]  # never ours; keep the topic only
    if "session" not in env.fields:
        return frames
    return encode(
        env.topic,
        seq=env.seq,
        source=env.source,
        t_capture_ns=env.t_capture_ns,
        t_send_ns=env.t_send_ns,
        fields={**env.fields, "session": ""},
        arrays=env.arrays,
    )


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _strings(record: dict[str, Any]) -> dict[str, str]:
    """An MCAP metadata record holds strings: each value as JSON (a fingerprint of digits stays a string)."""
    return {k: json.dumps(v, default=str) for k, v in record.items()}

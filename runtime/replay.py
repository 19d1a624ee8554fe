"""`pac-run --replay DIR --policy FILE`, `pac-replay DIR`: re-run a recorded run through the same loop in virtual
time and check that it sends the recorded commands bit for bit; describe or plot a recording.

The loop is built as pac-run builds it (`runtime.cli.build_loop`, with the recorded config and link) around a
`DriverClient` whose sockets are stand-ins serving the recording (`DriverClient.tap`): the messages received
before the loop prime it, then every clock reading, poll, receive and send is answered from the recording's
trace, in order (runtime/recorder.py says why a trace). Where the replay asks for something other than what
the trace holds next (a changed input, policy or code took another branch), it has diverged: it stops there
and says at which tick. Commands are compared on everything a driver reads: topic, seq, source, mode, the
action's bytes, deadline, obs_seq and obs_t_ns; not the header's send stamps (the host's time at sending)
nor the session token (never recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
from mcap.exceptions import McapError
from mcap.reader import make_reader

from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.wire import WireError, decode
from robots.spec import load_spec
from runtime.cli import build_loop, open_policy
from runtime.config import ConfigError, RunConfig, load_config
from runtime.inference.loader import PolicyRefused
from runtime.inference.providers import DEVICES, ProviderUnavailable, SessionConfig
from runtime.preflight import message_shapes
from runtime.recorder import (
    COMMAND_CHANNEL,
    CONTROL_CHANNEL,
    DRIVER_PREFIX,
    RECORDING,
    RESULT,
    SESSION,
    TICK_CHANNEL,
    TRACE_CHANNEL,
    Event,
    frame_bytes,
    policy_digest,
)

EXIT_OK, EXIT_MISMATCH, EXIT_REFUSED = 0, 1, 2
MAX_REPORTED = 5  # mismatching commands described in the report


class RecordingError(ValueError):
    """Not a recording a replay can use; the message says why."""


class ReplayDiverged(DriverUnavailable):
    """The replayed loop asked for something the recording's trace does not hold next.

    A DriverUnavailable, so the loop's own handling of a driver that stops answering ends the run (a
    lockstep step, the final hold) rather than a traceback from inside a link."""


@dataclass
class Recording:
    path: Path
    session: dict[str, Any]  # the `session` metadata record (empty: the loop never started)
    result: dict[str, Any]  # the `result` metadata record (empty: pac-run did not finish the recording)
    received: dict[int, list[bytes]]  # receive index → the message's frames
    sent: dict[int, tuple[str, list[bytes]]]  # send index → (channel, frames)
    kinds: list[int]  # the trace
    values: list[int]
    ticks: list[dict[str, Any]]  # /pac/tick records, each with "t_ns": when it was recorded (host clock)
    channels: dict[str, int] = field(default_factory=dict)  # channel → messages

    @property
    def commands(self) -> list[int]:
        """Send indices of the commands the loop sent (the trace's sends on /pac/command)."""
        traced = {v for k, v in zip(self.kinds, self.values, strict=True) if k == Event.SEND}
        return sorted(i for i, (channel, _) in self.sent.items() if channel == COMMAND_CHANNEL and i in traced)


def read_recording(path: Path) -> Recording:
    """The recording in `path` (a `pac-run --record` directory, or its .mcap file)."""
    path = Path(path)
    file = path / RECORDING if path.is_dir() else path
    if not file.is_file():
        raise RecordingError(f"no recording at {file} (pac-run --record DIR writes DIR/{RECORDING})")
    rec = Recording(file, {}, {}, {}, {}, [], [], [])
    parts: list[tuple[int, bytes]] = []
    try:
        with file.open("rb") as f:
            reader = make_reader(f)
            for _, channel, message in reader.iter_messages(log_time_order=False):
                topic = channel.topic
                rec.channels[topic] = rec.channels.get(topic, 0) + 1
                if topic.startswith(DRIVER_PREFIX):
                    rec.received[message.sequence] = msgpack.unpackb(message.data)
                elif topic in (COMMAND_CHANNEL, CONTROL_CHANNEL):
                    rec.sent[message.sequence] = (topic, msgpack.unpackb(message.data))
                elif topic == TRACE_CHANNEL:
                    parts.append((message.sequence, message.data))
                elif topic == TICK_CHANNEL:
                    rec.ticks.append(json.loads(message.data) | {"t_ns": message.log_time})
            for record in reader.iter_metadata():
                values = {k: json.loads(v) for k, v in record.metadata.items()}
                if record.name == SESSION:
                    rec.session = values
                elif record.name == RESULT:
                    rec.result = values
    except (McapError, OSError, ValueError, msgpack.UnpackException) as exc:
        raise RecordingError(f"{file} is not a readable recording: {exc}") from exc
    for _, data in sorted(parts, key=lambda p: p[0]):
        part = msgpack.unpackb(data)
        rec.kinds += np.frombuffer(part["kind"], np.uint8).tolist()
        rec.values += np.frombuffer(part["value"], "<i8").tolist()
    rec.ticks.sort(key=lambda t: t["tick"])
    return rec


# ------------------------------------------------------------------------------------------- the stand-ins


class Trace:
    """The recording's trace as a cursor: each call of the replayed loop takes the next entry, of its kind."""

    def __init__(self, kinds: list[int], values: list[int]):
        self.kinds, self.values = kinds, values
        self.at = 0
        self.diverged = ""
        self.tick: Callable[[], int] = lambda: 0  # the replayed loop's tick, for the report

    def peek(self) -> int | None:
        if self.diverged:
            raise ReplayDiverged(self.diverged)
        return self.kinds[self.at] if self.at < len(self.kinds) else None

    def take(self, kind: Event) -> int:
        found = self.peek()
        if found != kind:
            held = Event(found).name.lower() if found is not None else "nothing more"
            self.diverged = (
                f"the replay diverged at tick {self.tick()}: it asked for {kind.name.lower()}, the recording holds "
                f"{held} (trace entry {self.at} of {len(self.kinds)})"
            )
            raise ReplayDiverged(self.diverged)
        value = self.values[self.at]
        self.at += 1
        return value


class ReplayClock:
    """The loop's clock in a replay: each reading is the recorded one; a sleep passes no time of its own."""

    def __init__(self, trace: Trace):
        self.trace = trace

    def now_ns(self) -> int:
        return self.trace.take(Event.CLOCK)

    def sleep(self, seconds: float) -> None:
        """The next reading says when the recorded sleep ended."""


class _Feed:
    """The driver socket's stand-in: the pre-loop messages (priming), then what each recorded receive got."""

    def __init__(self, socket: zmq.Socket, trace: Trace, received: dict[int, list[bytes]], first: int):
        self.socket, self.trace, self.received = socket, trace, received
        self.priming: deque[list[bytes]] | None = deque(received[i] for i in sorted(received) if i < first)

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:
        if self.priming is not None:
            return zmq.POLLIN if self.priming else 0
        if self.trace.peek() != Event.POLL:
            return 0  # the recorded wait ended on the host's clock (a resend, a timeout): let this one end too
        return self.trace.take(Event.POLL)

    def recv_multipart(self, flags: int = 0, copy: bool = True, track: bool = False) -> list[bytes]:
        if self.priming is not None:
            if self.priming:
                return list(self.priming.popleft())
            raise zmq.Again
        while self.trace.peek() == Event.RECV:
            frames = self.received.get(self.trace.take(Event.RECV))
            if frames is not None:  # a message taken out of the recording was never received
                return list(frames)
        if self.trace.peek() == Event.AGAIN:
            self.trace.take(Event.AGAIN)
        raise zmq.Again

    def close(self, linger: int | None = None) -> None:
        self.socket.close(linger)


class _Sink:
    """The command socket's stand-in: keeps what the loop sends, by the send index the trace gives it."""

    def __init__(self, socket: zmq.Socket, trace: Trace):
        self.socket, self.trace = socket, trace
        self.sent: dict[int, list[bytes]] = {}
        self.finished = False  # after the loop (the client's release on close): nothing to compare with

    def send_multipart(self, frames, flags: int = 0, copy: bool = True, track: bool = False) -> None:
        if not self.finished:
            self.sent[self.trace.take(Event.SEND)] = frame_bytes(frames)

    def close(self, linger: int | None = None) -> None:
        self.socket.close(linger)


# ------------------------------------------------------------------------------------------- the replay


@dataclass
class ReplayResult:
    commands: int  # commands the recorded loop sent
    replayed: int  # commands the replayed loop sent
    identical: int
    ticks: tuple[int, int]  # recorded, replayed
    trace: tuple[int, int]  # entries the replay took, entries recorded
    mismatches: list[str]  # the first few, described
    diverged: str  # why the replay stopped early; "" when it followed the trace to its end
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return self.commands == self.replayed == self.identical and not self.diverged

    def report(self) -> str:
        lines = [f"{self.commands} commands, {self.identical} identical"]
        lines += [f"  {w}" for w in self.warnings]
        if self.replayed != self.commands:
            lines.append(f"  the replay sent {self.replayed} commands")
        lines.append(
            f"  ticks: {self.ticks[0]} recorded, {self.ticks[1]} replayed; trace: {self.trace[0]} of "
            f"{self.trace[1]} entries replayed"
        )
        lines += [f"  {m}" for m in self.mismatches]
        if self.diverged:
            lines.append(f"  {self.diverged}")
        return "\n".join(lines)


def recorded_config(recording: Recording) -> RunConfig:
    """The run's config as recorded, read back through `load_config` (so it is checked as any config is)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(json.dumps(recording.session["config"]))  # JSON is YAML
        return load_config(path)


def _session_config(recorded: dict[str, Any], device: str | None) -> SessionConfig:
    """How the recorded run built its policy's session (the device replaced when one is given)."""
    values = {k: v for k, v in recorded.items() if k in {f.name for f in fields(SessionConfig)}}
    cache = values.pop("trt_cache_dir", None)
    values |= {"trt_cache_dir": Path(cache) if cache else None} | ({"device": device} if device else {})
    return SessionConfig(**values)


def replay(path: Path, policy_path: Path, device: str | None = None) -> ReplayResult:
    """Re-run the recording at `path` with `policy_path` (on the recorded device unless `device` is given).

    Raises RecordingError for a recording without a loop, PolicyRefused/ProviderUnavailable as pac-run would.
    """
    rec = read_recording(path)
    if not rec.session:
        raise RecordingError(f"{rec.path} holds no loop: pac-run stopped before it (a refused pre-flight?)")
    s = rec.session
    try:
        config = recorded_config(rec)
    except ConfigError as exc:
        raise RecordingError(f"{rec.path}: its config does not load: {exc}") from exc
    policy = open_policy(config, policy_path, _session_config(s["inference"], device))
    warnings = []
    if policy_digest(policy_path) != s["policy_sha256"]:
        warnings.append(f"{policy_path} is not the recorded policy ({s['policy']}): commands will differ")
    if policy.provider != s["provider"]:
        warnings.append(f"provider {policy.provider}, recorded on {s['provider']}: actions may differ in the last bits")

    trace = Trace(rec.kinds, rec.values)
    parts: dict[str, Any] = {}

    def stand_in(socket: zmq.Socket, role: str) -> _Feed | _Sink:
        made = _Feed(socket, trace, rec.received, s["first_message"]) if role == "sub" else _Sink(socket, trace)
        parts[role] = made
        return made

    name = f"inproc://pac-replay-{os.getpid()}-{id(trace)}"
    client = DriverClient(f"{name}-pub", f"{name}-cmd", source=s["source"])
    client.tap(stand_in)
    feed, sink = parts["sub"], parts["cmd"]
    client.fingerprint, client.seq = s["fingerprint"], s["seq"]  # the recorded session's: its acks are ours
    client.receiver.expect(message_shapes(load_spec(config.robot), policy.metadata.observation))
    while feed.priming:
        client.poll(0)
    feed.priming = None
    loop = build_loop(config, policy, client, s["link"] == "lockstep", None, clock=ReplayClock(trace))
    trace.tick = lambda: loop.ticks
    recorded_ticks = rec.result.get("ticks", len(rec.ticks))
    stop_at, why = _stop(rec, recorded_ticks)
    until = (lambda: why if loop.ticks >= stop_at else "") if stop_at is not None else None
    diverged = ""
    try:
        loop.run(duration_s=s["duration_s"], max_ticks=s["max_ticks"], until=until)
    except ReplayDiverged as exc:
        diverged = str(exc)
    finally:
        sink.finished = True
        client.close()
    diverged = diverged or trace.diverged
    if not diverged and trace.at < len(trace.kinds):
        diverged = f"the replay stopped at tick {loop.ticks} ({loop.stop_reason}) where the recording goes on"
    elif not diverged and why.startswith("operator"):
        diverged = why
    return _compare(rec, sink.sent, diverged, warnings, (recorded_ticks, loop.ticks), (trace.at, len(trace.kinds)))


def _stop(rec: Recording, recorded_ticks: int) -> tuple[int | None, str]:
    """Where the replay must stop by itself, and why: a signal that stopped the recorded run (it came from
    outside, after that many ticks), or the first operator action (pac-ctl's verbs are not replayed)."""
    summary = rec.result.get("summary")
    listed = summary.get("operator_actions") if isinstance(summary, dict) else None
    actions = [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []
    if actions:
        first = min(actions, key=lambda a: a.get("tick", 0))
        return first.get("tick", 0), (
            f"operator {first.get('verb')} at tick {first.get('tick')}: operator verbs are not replayed, "
            "the replay stops there"
        )
    if str(rec.result.get("stop_reason", "")).startswith("signal"):
        return recorded_ticks, "signal"
    return None, ""


def _command_key(frames: list[bytes]) -> tuple | None:
    """What a driver reads of a command: all but the header's send stamps and the session token."""
    try:
        env = decode(frames)
    except WireError:
        return None
    values = {k: v for k, v in env.fields.items() if k != "session"}
    arrays = {n: (a.dtype.str, a.shape, a.tobytes()) for n, a in env.arrays.items()}
    return env.topic, env.seq, env.source, values, arrays


def _difference(recorded: list[bytes], replayed: list[bytes]) -> str:
    a, b = decode(recorded), decode(replayed)
    diffs = [
        f"{k}: {a.fields.get(k)!r} → {b.fields.get(k)!r}"
        for k in sorted(set(a.fields) | set(b.fields))
        if k != "session" and a.fields.get(k) != b.fields.get(k)
    ]
    for n in sorted(set(a.arrays) | set(b.arrays)):
        x, y = a.arrays.get(n), b.arrays.get(n)
        if x is None or y is None or x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            diffs.append(f"{n}: {None if x is None else x.tolist()} → {None if y is None else y.tolist()}")
    if (a.topic, a.seq, a.source) != (b.topic, b.seq, b.source):
        diffs.append(f"{a.topic} {a.seq} from {a.source} → {b.topic} {b.seq} from {b.source}")
    return "; ".join(diffs)


def _compare(
    rec: Recording,
    sent: dict[int, list[bytes]],
    diverged: str,
    warnings: list[str],
    ticks: tuple[int, int],
    trace: tuple[int, int],
) -> ReplayResult:
    commands = rec.commands
    replayed = [i for i, frames in sent.items() if frames[:1] == [b"command"]]
    identical, mismatches = 0, []
    for i in commands:
        mine, recorded = sent.get(i), rec.sent[i][1]
        key = _command_key(recorded)
        if mine is not None and key is not None and _command_key(mine) == key:
            identical += 1
        elif len(mismatches) < MAX_REPORTED:
            what = "not sent" if mine is None else "unreadable" if key is None else _difference(recorded, mine)
            mismatches.append(f"command {key[1] if key else '?'}: {what}")
    return ReplayResult(len(commands), len(replayed), identical, ticks, trace, mismatches, diverged, warnings)


def verify(path: Path, policy_path: Path, device: str | None = None) -> int:
    """Replay, print the report, and return the exit code: 0 every command identical, 1 not, 2 refused."""
    try:
        result = replay(path, policy_path, device)
    except (RecordingError, PolicyRefused, ProviderUnavailable) as exc:
        print(f"replay refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(result.report(), flush=True)
    return EXIT_OK if result.ok else EXIT_MISMATCH


def describe(rec: Recording) -> str:
    """A few lines on what a recording holds."""
    s, r = rec.session, rec.result
    lines = [f"{rec.path}"]
    if s:
        lines.append(
            f"  {s['robot']}, {Path(s['policy']).name} on {s['provider']}, {s['link']}; session {s['fingerprint']}"
        )
    if r:
        lines.append(
            f"  {r.get('ticks')} ticks, final state {r.get('final_state')} ({r.get('stop_reason')}), "
            f"exit code {r.get('exit_code')}"
        )
    lines.append(f"  {len(rec.commands)} commands; trace of {len(rec.kinds)} entries")
    lines += [f"  {channel:<28}{n:>8}" for channel, n in sorted(rec.channels.items())]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pac-replay", description="Check, describe or plot a pac-run recording.")
    p.add_argument("recording", type=Path, help="a `pac-run --record` directory (or its .mcap file)")
    p.add_argument("--policy", type=Path, default=None, help="replay with this policy; every command must match")
    p.add_argument("--device", choices=DEVICES, default=None, help="for --policy (default: the recorded one)")
    p.add_argument("--plot", type=Path, default=None, help="draw the run (TCP path, actions, holds, stages) as PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rec = read_recording(args.recording)
    except RecordingError as exc:
        print(f"pac-replay: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(describe(rec), flush=True)
    code = EXIT_OK
    if args.plot is not None:
        from runtime.replay_plot import plot  # matplotlib only when drawing

        print(f"plot written to {plot(rec, args.plot)}")
    if args.policy is not None:
        code = verify(args.recording, args.policy, args.device)
    return code


if __name__ == "__main__":
    sys.exit(main())

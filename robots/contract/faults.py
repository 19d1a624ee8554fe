"""Fault injection on the driver link: a ZeroMQ man in the middle that forwards driver ↔ runtime traffic and
breaks it on purpose, so each failure the safety design claims to survive can be produced on demand (CI,
benchmarks/fault_scenarios.py, a manual session: point `pac-run --pub/--cmd` at the injector's endpoints).

Rules match a direction (DOWN: driver → runtime, UP: runtime → driver), topic prefixes and a sender, and act
while their window is open: a range of the driver's sim steps (lockstep messages carry `step`; the injector
follows the newest the driver published), from a step on for some seconds, or seconds after the start. The
faults: drop, delay (by N later messages or by time), duplicate (at once, or as a late replay), reorder (swap
with the next matching message), corrupt (flip bytes), freeze (re-send the last message from before the
freeze in place of each new one, or stop the topic), shift the clock (rewrite `t_capture_ns`), and cut (all
traffic, both ways). `retarget` moves the upstream side to another driver: a restart faster than any watchdog.

Random choices (a rule's probability, the bytes to flip) are drawn from the seed and the message's identity
(rule, topic, step, occurrence), never from arrival order, so a lockstep run is reproducible on any machine.
Only headers are parsed (msgpack), not images (unless a rule's `match` predicate asks for the decoded
message), so the injector adds little delay of its own.

Everything is logged (`events`): each message in and out with its header fields and its true capture time,
before any rewrite. `audit` turns that log into one verdict per command that reached the driver: applied or
not, and how old its inputs were on the driver's true clock when it arrived.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack
import zmq

from robots.contract.messages import COMMAND, STATE, CommandMsg
from robots.contract.session import fingerprint
from robots.contract.wire import Envelope, WireError, decode

DOWN, UP, BOTH = "down", "up", "both"  # driver → runtime, runtime → driver, either
POLL_MS = 5  # the thread's longest sleep: the resolution of time-based delays and holds
MAX_BATCH = 256  # messages taken from one socket before looking at the other


class Fault(str, Enum):
    DROP = "drop"
    DELAY = "delay"
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    CORRUPT = "corrupt"
    FREEZE = "freeze"
    SHIFT_CLOCK = "shift_clock"
    CUT = "cut"


@dataclass(frozen=True)
class Rule:
    """One fault, where it applies and when; made by the functions below (`drop`, `delay`, ...)."""

    fault: Fault
    topics: tuple[str, ...] = ("",)  # topic prefixes; "" matches every topic
    direction: str = DOWN
    source: str | None = None  # only messages whose header `source` is this (e.g. "pac-run")
    steps: range | None = None  # open while the driver's current step is in this range
    start_step: int | None = None  # open from the first time the step reaches this ...
    start_s: float | None = None  # ... or from this many seconds after the injector started ...
    duration_s: float | None = None  # ... for this long (None: to the end)
    p: float = 1.0  # probability per matching message (seeded, by the message's identity)
    match: Callable[[Envelope], bool] | None = None  # a predicate on the decoded message, for what the rest cannot say
    messages: int = 0  # delay (and duplicate's copies): released after this many later arrivals on the link
    seconds: float = 0.0  # delay (and duplicate's copies): released after this long
    copies: int = 1  # duplicate
    n_bytes: int = 1  # corrupt: bytes flipped
    part: str = "any"  # corrupt: "header", "payload" (array buffers) or "any" frame but the topic
    offset_ns: int = 0  # shift_clock
    repeat: bool = True  # freeze: re-send the last message (False: the topic stops)
    new_seq: bool = False  # freeze: each repeat gets the new message's seq, as a stuck publisher would send it
    max_hold_s: float = 0.5  # reorder: a held message goes on alone after this long


def _rule(fault: Fault, topics: str | Sequence[str], **kwargs: Any) -> Rule:
    return Rule(fault, (topics,) if isinstance(topics, str) else tuple(topics), **kwargs)


def drop(topics: str | Sequence[str] = "", **when: Any) -> Rule:
    return _rule(Fault.DROP, topics, **when)


def delay(topics: str | Sequence[str] = "", *, messages: int = 0, seconds: float = 0.0, **when: Any) -> Rule:
    return _rule(Fault.DELAY, topics, messages=messages, seconds=seconds, **when)


def duplicate(
    topics: str | Sequence[str] = "", *, copies: int = 1, messages: int = 0, seconds: float = 0.0, **when: Any
) -> Rule:
    """Each matching message `copies` more times: at once, or (messages/seconds) as a late replay."""
    return _rule(Fault.DUPLICATE, topics, copies=copies, messages=messages, seconds=seconds, **when)


def reorder(topics: str | Sequence[str] = "", *, max_hold_s: float = 0.5, **when: Any) -> Rule:
    """Swap adjacent matching messages: one is held back and goes out right after the next one."""
    return _rule(Fault.REORDER, topics, max_hold_s=max_hold_s, **when)


def corrupt(topics: str | Sequence[str] = "", *, n_bytes: int = 1, part: str = "any", **when: Any) -> Rule:
    if part not in ("header", "payload", "any"):
        raise ValueError(f"part must be 'header', 'payload' or 'any', not {part!r}")
    return _rule(Fault.CORRUPT, topics, n_bytes=n_bytes, part=part, **when)


def freeze(topics: str | Sequence[str] = "", *, repeat: bool = True, new_seq: bool = False, **when: Any) -> Rule:
    """A frozen source: the last message from before the freeze is sent again instead of each new one (with
    `new_seq`, under the new message's seq, so a receiver's order check cannot see it), or nothing is."""
    return _rule(Fault.FREEZE, topics, repeat=repeat, new_seq=new_seq, **when)


def shift_clock(offset_s: float, topics: str | Sequence[str] = "", **when: Any) -> Rule:
    """The driver's clock jumps: `t_capture_ns` rewritten by `offset_s` (forward or back)."""
    return _rule(Fault.SHIFT_CLOCK, topics, offset_ns=round(offset_s * 1e9), **when)


def cut(**when: Any) -> Rule:
    """The link is cut: nothing passes, either way, while the window is open."""
    return _rule(Fault.CUT, "", direction=BOTH, **when)


@dataclass(frozen=True)
class Event:
    """One message as the injector saw it: arriving ("in"), leaving ("out"), or dropped ("drop")."""

    t_ns: int  # the injector's monotonic clock
    direction: str
    kind: str
    topic: str
    seq: int
    source: str
    t_capture_ns: int  # as it arrived ("in", "drop") or left ("out")
    true_t_capture_ns: int  # before any clock rewrite: when the driver really took it
    step: int | None  # the driver's newest step when it arrived
    upstream: int  # which driver: 0, then one more per retarget
    fields: Mapping[str, Any]
    faults: tuple[str, ...] = ()  # what acted on it


@dataclass
class _Out:
    frames: list[bytes]
    true_t: int
    faults: tuple[str, ...] = ()
    due_ns: int | None = None
    due_arrivals: int | None = None


@dataclass
class _Header:
    topic: str
    seq: int
    source: str
    t_capture_ns: int
    fields: dict[str, Any]


def _peek(frames: Sequence[bytes]) -> _Header | None:
    """Topic and header of a message without decoding its buffers; None when they do not parse."""
    try:
        header = msgpack.unpackb(frames[1], raw=False)
        fields = header.get("fields")
        return _Header(
            bytes(frames[0]).decode("utf-8"),
            int(header["seq"]),
            str(header["source"]),
            int(header["t_capture_ns"]),
            fields if isinstance(fields, dict) else {},
        )
    except Exception:  # anything at all may arrive; it is forwarded as it is, never understood
        return None


def _rewrite(frames: list[bytes], **changes: Any) -> list[bytes]:
    header = msgpack.unpackb(frames[1], raw=False)
    header.update(changes)
    return [frames[0], msgpack.packb(header, use_bin_type=True), *frames[2:]]


class FaultInjector:
    """Forwards a driver's PUB stream to the runtime and the runtime's commands to the driver, applying `rules`
    in order to each message. Runs a thread; `close` (or leaving a `with` block) stops it."""

    def __init__(
        self,
        driver_pub: str,
        driver_cmd: str,
        rules: Sequence[Rule] = (),
        *,
        seed: int = 0,
        context: zmq.Context | None = None,
    ):
        self.rules = list(rules)
        self.seed = seed
        self.commands: list[CommandMsg] = []  # every command the runtime sent, decoded as it arrived
        self.dropped = 0  # messages dropped by a rule or a cut
        self.undecodable = 0
        self._events: list[Event] = []
        self._ctx = context or zmq.Context.instance()
        self._to_runtime = self._socket(zmq.PUB)
        self.pub_endpoint = self._bind(self._to_runtime)
        self._from_runtime = self._socket(zmq.SUB)
        self._from_runtime.setsockopt(zmq.SUBSCRIBE, b"")
        self.cmd_endpoint = self._bind(self._from_runtime)
        self._upstream = 0
        self._connect(driver_pub, driver_cmd)
        self._t0 = time.monotonic_ns()
        self._lock = threading.Condition()
        self._step: int | None = None
        self._opened: dict[int, int] = {}  # rule index → when its start_step was first reached
        self._seen: Counter = Counter()  # (direction, topic, step) → arrivals, for the seeded draws
        self._identity: tuple = ()  # the message being handled: (direction, topic, step, occurrence)
        self._just_held = False
        self._arrivals = {DOWN: 0, UP: 0}
        self._pending: list[tuple[str, _Out]] = []
        self._held: dict[int, tuple[str, _Out, int]] = {}  # reorder: rule → (direction, message, held at)
        self._frozen: dict[tuple[int, str], _Out | None] = {}
        self._last_out: dict[tuple[str, str], _Out] = {}
        self._cut_until: int | None = None  # manual cut: until this time (-1: until heal)
        self._ended: set[int] = set()  # rules closed for good (`end`)
        self._retarget: tuple[str, str, int | None] | None = None  # (pub, cmd, at step) asked for, not yet done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-injector", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------- public
    @property
    def step(self) -> int | None:
        """The newest sim step the (current) driver published; None before any."""
        return self._step

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def wait_for_step(self, step: int, timeout_s: float = 30.0) -> bool:
        """Block until the driver has published `step` (or a later one); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._step is not None and self._step >= step, timeout_s)

    def cut(self, seconds: float | None = None) -> None:
        """Cut the link now, for `seconds` or until `heal`."""
        with self._lock:
            self._cut_until = -1 if seconds is None else time.monotonic_ns() + round(seconds * 1e9)

    def heal(self) -> None:
        with self._lock:
            self._cut_until = None

    def end(self, rule: Rule) -> None:
        """Close `rule`'s window for good (a partition heals, a frozen camera recovers)."""
        with self._lock:
            self._ended.add(next(i for i, r in enumerate(self.rules) if r is rule))

    def retarget(self, driver_pub: str, driver_cmd: str, at_step: int | None = None) -> None:
        """From now (or from when the driver publishes `at_step`: that message is lost), talk to another driver."""
        with self._lock:
            self._retarget = (driver_pub, driver_cmd, at_step)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for s in (self._from_driver, self._to_runtime, self._from_runtime, self._to_driver):
            s.close(0)

    def __enter__(self) -> FaultInjector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ sockets
    def _socket(self, kind: int) -> zmq.Socket:
        s = self._ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        return s

    @staticmethod
    def _bind(s: zmq.Socket) -> str:
        return f"tcp://127.0.0.1:{s.bind_to_random_port('tcp://127.0.0.1')}"

    def _connect(self, driver_pub: str, driver_cmd: str) -> None:
        self._from_driver = self._socket(zmq.SUB)
        self._from_driver.setsockopt(zmq.SUBSCRIBE, b"")
        self._from_driver.connect(driver_pub)
        self._to_driver = self._socket(zmq.PUB)
        self._to_driver.connect(driver_cmd)
        self._poller = zmq.Poller()
        self._poller.register(self._from_driver, zmq.POLLIN)
        self._poller.register(self._from_runtime, zmq.POLLIN)

    # --------------------------------------------------------------------------------------------- loop
    def _run(self) -> None:
        while not self._stop.is_set():
            self._retarget_due(at_once=True)
            ready = dict(self._poller.poll(POLL_MS))
            for sock, direction in ((self._from_driver, DOWN), (self._from_runtime, UP)):
                for _ in range(MAX_BATCH if sock in ready else 0):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._arrive(direction, frames)
                    if sock is not self._from_driver and direction == DOWN:  # retargeted: that socket is closed
                        break
            self._release(time.monotonic_ns())

    def _retarget_due(self, at_once: bool = False) -> bool:
        """Switch to the driver `retarget` named if it is time (`at_once`: only a retarget without a step)."""
        with self._lock:
            if self._retarget is None:
                return False
            pub, cmd, at_step = self._retarget
            if (at_step is None) != at_once or (at_step is not None and (self._step or 0) < at_step):
                return False
            self._retarget = None
        self._from_driver.close(0)
        self._to_driver.close(0)
        self._connect(pub, cmd)
        with self._lock:
            self._upstream += 1
            self._step = None
            self._lock.notify_all()
        return True

    # ----------------------------------------------------------------------------------------- messages
    def _arrive(self, direction: str, frames: list[bytes]) -> None:
        now = time.monotonic_ns()
        header = _peek(frames)
        if header is None:
            self.undecodable += 1
        elif direction == DOWN and isinstance(header.fields.get("step"), int):
            with self._lock:
                self._step = header.fields["step"]
                self._lock.notify_all()
            if self._retarget_due():
                self._log(now, direction, "drop", header, header.t_capture_ns, ("retarget",))
                self.dropped += 1
                return
        if direction == UP and header is not None and header.topic == COMMAND:
            try:
                self.commands.append(CommandMsg.from_envelope(decode(frames)))
            except WireError:
                self.undecodable += 1
        self._arrivals[direction] += 1
        topic = header.topic if header is not None else ""
        key = (direction, topic, header.fields.get("step", self._step) if header is not None else self._step)
        self._identity, self._just_held = (*key, self._seen[key]), False
        self._seen[key] += 1
        true_t = header.t_capture_ns if header is not None else -1
        self._log(now, direction, "in", header, true_t)
        outs = [_Out(list(frames), true_t)]
        if self._cut(now):
            outs, why = [], ("cut",)
        else:
            why = ()
            for index, rule in enumerate(self.rules):
                if outs and self._applies(index, rule, direction, header, frames, now):
                    outs = self._apply(index, rule, direction, header, outs, now)
                    why += (rule.fault.value,)
        if not outs and not self._just_held:
            self.dropped += 1
            self._log(now, direction, "drop", header, true_t, why)
        for out in outs:
            out.faults = out.faults or why
            if out.due_ns is None and out.due_arrivals is None:
                self._send(direction, out)
            else:
                self._pending.append((direction, out))
        self._release(now)

    def _cut(self, now: int) -> bool:
        with self._lock:
            until = self._cut_until
        return until is not None and (until < 0 or now < until)

    def _open(self, index: int, rule: Rule, now: int) -> bool:
        if index in self._ended:
            return False
        if rule.steps is not None:
            return self._step is not None and self._step in rule.steps
        if rule.start_step is not None:
            if index not in self._opened:
                if self._step is None or self._step < rule.start_step:
                    return False
                self._opened[index] = now
            start = self._opened[index]
        else:
            start = self._t0 + round((rule.start_s or 0.0) * 1e9)
        return now >= start and (rule.duration_s is None or now < start + rule.duration_s * 1e9)

    def _applies(
        self, index: int, rule: Rule, direction: str, header: _Header | None, frames: list[bytes], now: int
    ) -> bool:
        if rule.direction not in (direction, BOTH):
            return False
        topic = header.topic if header is not None else ""
        if not any(topic.startswith(prefix) for prefix in rule.topics):
            return False
        if rule.source is not None and (header is None or header.source != rule.source):
            return False
        if not self._open(index, rule, now):
            if rule.fault is Fault.FREEZE:
                self._frozen.pop((index, topic), None)  # a later freeze starts from what came before it
            return False
        if rule.match is not None:
            try:
                if not rule.match(decode(frames)):
                    return False
            except WireError:
                return False
        return rule.p >= 1.0 or self._draw(index, "p") < rule.p

    def _draw(self, index: int, salt: str) -> float:
        """A number in [0, 1) fixed by the seed, the rule and the message's identity: its direction, topic, the
        driver's step and how many messages of that topic came at that step before it."""
        text = "|".join(map(str, (self.seed, index, *self._identity, salt)))
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") / 2**64

    def _apply(
        self, index: int, rule: Rule, direction: str, header: _Header | None, outs: list[_Out], now: int
    ) -> list[_Out]:
        fault, topic = rule.fault, header.topic if header is not None else ""
        if fault in (Fault.DROP, Fault.CUT):
            return []
        if fault is Fault.DELAY:
            return [self._later(o, direction, rule) for o in outs]
        if fault is Fault.DUPLICATE:
            copies = [
                self._later(_Out(list(o.frames), o.true_t, ("duplicate",)), direction, rule)
                for o in outs
                for _ in range(rule.copies)
            ]
            return outs + copies
        if fault is Fault.SHIFT_CLOCK:
            return [self._shifted(o, rule.offset_ns) for o in outs]
        if fault is Fault.CORRUPT:
            return [self._corrupted(o, index, rule) for o in outs]
        if fault is Fault.FREEZE:
            key = (index, topic)
            if key not in self._frozen:
                self._frozen[key] = self._last_out.get((direction, topic))
            frozen = self._frozen[key]
            if not rule.repeat or frozen is None:
                return []
            frames = list(frozen.frames)
            if rule.new_seq and header is not None:
                frames = _rewrite(frames, seq=header.seq)
            return [_Out(frames, frozen.true_t, ("freeze",))]
        # reorder: hold this one, or send it and then the one held before it
        held = self._held.pop(index, None)
        if held is None:
            self._held[index] = (direction, outs[0], now)
            self._just_held = True
            return outs[1:]
        return outs + [held[1]]

    def _later(self, out: _Out, direction: str, rule: Rule) -> _Out:
        if rule.messages:
            out.due_arrivals = self._arrivals[direction] + rule.messages
        if rule.seconds:
            out.due_ns = time.monotonic_ns() + round(rule.seconds * 1e9)
        return out

    @staticmethod
    def _shifted(out: _Out, offset_ns: int) -> _Out:
        header = _peek(out.frames)
        if header is None:
            return out
        return _Out(_rewrite(out.frames, t_capture_ns=max(0, header.t_capture_ns + offset_ns)), out.true_t, out.faults)

    def _corrupted(self, out: _Out, index: int, rule: Rule) -> _Out:
        frames = list(out.frames)
        lo, hi = {"header": (1, 2), "payload": (2, len(frames)), "any": (1, len(frames))}[rule.part]
        if hi <= lo:
            return out
        for n in range(rule.n_bytes):
            i = lo + int(self._draw(index, f"frame{n}") * (hi - lo))
            if not frames[i]:
                continue
            data = bytearray(frames[i])
            at = int(self._draw(index, f"byte{n}") * len(data))
            data[at] ^= 1 + int(self._draw(index, f"bits{n}") * 255)
            frames[i] = bytes(data)
        return _Out(frames, out.true_t, out.faults)

    def _release(self, now: int) -> None:
        """Send what was delayed and is now due, and reordered messages held too long."""
        for index, (direction, out, since) in list(self._held.items()):
            if now - since > self.rules[index].max_hold_s * 1e9:
                del self._held[index]
                self._send(direction, out)
        due = [
            (d, o)
            for d, o in self._pending
            if (o.due_ns is None or now >= o.due_ns) and (o.due_arrivals is None or self._arrivals[d] >= o.due_arrivals)
        ]
        for item in due:
            self._pending.remove(item)
            self._send(*item)

    def _send(self, direction: str, out: _Out) -> None:
        (self._to_runtime if direction == DOWN else self._to_driver).send_multipart(out.frames)
        header = _peek(out.frames)
        if header is not None:
            self._last_out[(direction, header.topic)] = out
        self._log(time.monotonic_ns(), direction, "out", header, out.true_t, out.faults)

    def _log(
        self, now: int, direction: str, kind: str, header: _Header | None, true_t: int, faults: tuple[str, ...] = ()
    ) -> None:
        h = header or _Header("", -1, "", -1, {})
        event = Event(
            now,
            direction,
            kind,
            h.topic,
            h.seq,
            h.source,
            h.t_capture_ns,
            true_t,
            self._step,
            self._upstream,
            h.fields,
            faults,
        )
        with self._lock:
            self._events.append(event)


# ------------------------------------------------------------------------------------------------ the audit
@dataclass(frozen=True)
class Verdict:
    """One command that reached a driver: whether the driver applied it and how old its inputs were there."""

    seq: int
    source: str  # the sender's label (pac-run's is "pac-run")
    session: str  # the sender's session fingerprint (what the driver publishes as `holder`)
    t_ns: int  # when it left the injector for the driver (the injector's monotonic clock)
    mode: str
    obs_seq: int
    upstream: int
    applied: bool
    driver_now_ns: int  # the driver's true clock when it arrived: the newest capture it had published
    ages_ms: dict[str, float]  # per input source: true age of what the runtime had (state: the one it names)
    stale: tuple[str, ...]  # why its inputs were stale or of no true age ("" -free: it was fresh)

    @property
    def motion(self) -> bool:
        return self.mode != "hold"


@dataclass
class _Delivered:
    newest_true: int = -1  # the driver's clock: the newest capture seen from it
    states: dict[int, int] = field(default_factory=dict)  # state seq → true capture (delivered states)
    newest: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic → (seq, true capture), newest delivered
    stamps: dict[int, int] = field(default_factory=dict)  # delivered t_capture → true one
    applied: set[tuple[str, int]] = field(default_factory=set)  # (holder, last_cmd_seq) the driver reported


def audit(events: Sequence[Event], bounds_ms: Mapping[str, float]) -> list[Verdict]:
    """A verdict per distinct command (session, seq) that left the injector for a driver, in order.

    `bounds_ms`: the runtime's age bound per input source ("state", "image/<camera>", "objects"). A command is
    stale when, on the driver's true clock at its arrival, the state it names or the newest message of another
    source the runtime had been given is older than its bound; when it names a state of another driver
    instance (or none delivered); or when its `obs_t_ns` is not the true capture time of what it was computed
    from (a clock rewrite: its age was wrong). In lockstep these ages are exact (the sim waits for the command);
    in real time they include inference and transport.
    """
    links: dict[int, _Delivered] = defaultdict(_Delivered)
    for e in events:  # which commands each driver reported applied: known from its states, arriving later
        if e.direction == DOWN and e.kind == "in" and e.topic == STATE:
            links[e.upstream].applied.add((str(e.fields.get("holder", "")), int(e.fields.get("last_cmd_seq", -1))))
    verdicts, done = [], set()
    for e in events:
        link = links[e.upstream]
        if e.direction == DOWN and e.kind == "in":
            link.newest_true = max(link.newest_true, e.true_t_capture_ns)
        elif e.direction == DOWN and e.kind == "out":
            if e.seq > link.newest.get(e.topic, (-1, -1))[0]:  # an older one is dropped by the receiver
                link.newest[e.topic] = (e.seq, e.true_t_capture_ns)
            link.stamps[e.t_capture_ns] = e.true_t_capture_ns
            if e.topic == STATE:
                link.states[e.seq] = e.true_t_capture_ns
        elif e.direction == UP and e.kind == "out" and e.topic == COMMAND:
            holder = fingerprint(str(e.fields.get("session", "")))
            if (e.upstream, holder, e.seq) in done:
                continue
            done.add((e.upstream, holder, e.seq))
            verdicts.append(_verdict(e, holder, link, links, bounds_ms))
    return verdicts


def _verdict(
    e: Event, holder: str, link: _Delivered, links: Mapping[int, _Delivered], bounds_ms: Mapping[str, float]
) -> Verdict:
    now, obs_seq = link.newest_true, int(e.fields.get("obs_seq", -1))
    ages, stale = {}, []
    for source, bound in bounds_ms.items():
        if source == STATE:
            t = link.states.get(obs_seq)
            if t is None:
                other = any(obs_seq in other.states for up, other in links.items() if up != e.upstream)
                stale.append(f"state {obs_seq} is {'another driver instance' if other else 'none delivered'}'s")
                continue
        else:
            if source not in link.newest:
                stale.append(f"no {source} delivered")
                continue
            t = link.newest[source][1]
        ages[source] = (now - t) / 1e6
        if ages[source] > bound:
            stale.append(f"{source} {ages[source]:.0f} ms > {bound:g} ms")
    obs_t = int(e.fields.get("obs_t_ns", -1))
    if obs_t >= 0 and obs_t not in link.stamps:
        other = any(obs_t in other.stamps for up, other in links.items() if up != e.upstream)
        stale.append(f"obs_t_ns {obs_t} is {'another driver instance' if other else 'no capture delivered'}'s")
    elif obs_t >= 0 and link.stamps[obs_t] != obs_t:
        stale.append(f"obs_t_ns off the driver's clock by {(obs_t - link.stamps[obs_t]) / 1e6:+.0f} ms")
    mode = str(e.fields.get("mode", ""))
    applied = (holder, e.seq) in link.applied
    return Verdict(e.seq, e.source, holder, e.t_ns, mode, obs_seq, e.upstream, applied, now, ages, tuple(stale))


def stale_applied(verdicts: Sequence[Verdict], source: str | None = None) -> list[Verdict]:
    """Motion commands the driver applied although computed from stale data (sent by `source` only, if given)."""
    return [v for v in verdicts if v.motion and v.applied and v.stale and source in (None, v.source)]

"""The operator's path into a running pac-run (DESIGN §4): see the state, reset a latched FAULT or ESTOP,
trigger ESTOP, stop; each verb logged with who and why and kept for the run summary.

Why a socket the loop polls, not signals: a verb carries who and why and gets an answer (a refused reset says
what still holds). pac-run owns a ZeroMQ REP socket that the loop serves between ticks: one zero-timeout poll
per tick and at most MAX_REQUESTS_PER_TICK requests, so no operator (or flood) delays a command. Requests and
replies are one-frame JSON objects, easy to send from any ZeroMQ client; a request is size-checked before it is
decoded, and a malformed one gets an error reply and is counted by reason (the wire codec's discipline), never
raised into the loop. The default endpoint is an ipc:// socket in a per-user 0700 directory, named by pid so
two runs never share one; tcp binds only on loopback (off-host control would need CURVE keys, DESIGN §2).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from robots.contract.link import DriverFault
from robots.contract.security import MAX_IPC_PATH_BYTES, LinkRefused, endpoint_kind, local_dir, private_dir
from runtime.safety.causes import Cause, CauseKind, names
from runtime.safety.state_machine import LATCHED, State
from runtime.safety.watchdogs import driver_lost

if TYPE_CHECKING:
    from runtime.guard import Guard
    from runtime.link import Inputs
    from runtime.loop import ControlLoop

log = logging.getLogger(__name__)

VERBS = ("status", "reset", "estop", "stop")
ACTIONS = ("reset", "estop", "stop")  # the verbs that change something: each needs an operator and a reason
MAX_REQUEST_BYTES = 2048  # a verb, a name and a sentence; anything longer is refused before decoding
MAX_FRAME_BYTES = 65536  # libzmq drops a peer that sends a larger frame: never buffered, never answered
MAX_REQUESTS_PER_TICK = 4  # an operator types one at a time; a flood waits for later ticks instead of the arm
MAX_OPERATOR_CHARS = 64
MAX_REASON_CHARS = 500
SOCKET_PREFIX, SOCKET_SUFFIX = "pac-run-", ".ctl"  # default ipc socket: pac-run-<pid>.ctl in runtime_dir()
CLIENT_TIMEOUT_S = 5.0  # a lockstep loop whose driver is lost ticks once per driver_lost_ms (1 s by default)


class ControlError(Exception):
    """The control endpoint cannot be served or reached (a bad endpoint, an unsafe directory, no pac-run)."""


class BadRequest(ValueError):
    """A malformed request; `reason` is its counter's key in the run summary."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# ------------------------------------------------------------------------------------------- endpoints


def runtime_dir() -> Path:
    """This user's socket directory (robots.contract.security: $XDG_RUNTIME_DIR/pac-runtime, else
    <tmp>/pac-runtime-<uid>), created 0700; one that is a link, someone else's, or open to group or others is
    refused: whoever can enter it could connect to (or stand in for) pac-run."""
    try:
        return private_dir(local_dir())
    except LinkRefused as exc:
        raise ControlError(f"control socket: {exc}") from exc


def default_endpoint() -> str:
    """This process's control socket in runtime_dir()."""
    return f"ipc://{runtime_dir() / f'{SOCKET_PREFIX}{os.getpid()}{SOCKET_SUFFIX}'}"


def running_endpoints() -> list[str]:
    """Default endpoints of the pac-run processes alive now (a socket left by a killed run is skipped)."""
    found = []
    for path in sorted(runtime_dir().glob(f"{SOCKET_PREFIX}*{SOCKET_SUFFIX}")):
        pid = path.name[len(SOCKET_PREFIX) : -len(SOCKET_SUFFIX)]
        if pid.isdigit() and _alive(int(pid)):
            found.append(f"ipc://{path}")
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_endpoint(endpoint: str) -> None:
    """Only ipc://PATH or tcp on loopback (security.endpoint_kind): an operator socket others could reach would
    need authentication."""
    try:
        kind = endpoint_kind(endpoint)
    except LinkRefused as exc:
        raise ControlError(f"control endpoint {endpoint!r}: use ipc://PATH or tcp://127.0.0.1:PORT ({exc})") from exc
    if kind == "ipc":
        address = endpoint.partition("://")[2]
        if len(os.fsencode(address)) > MAX_IPC_PATH_BYTES:
            raise ControlError(f"ipc path {address} is longer than {MAX_IPC_PATH_BYTES} bytes: choose a shorter one")
        return
    if kind == "loopback" and endpoint.rpartition(":")[2].isdigit():
        return
    if kind in ("loopback", "network") and endpoint.startswith("tcp://"):
        raise ControlError(f"refusing control endpoint {endpoint!r}: tcp only on loopback (tcp://127.0.0.1:PORT)")
    raise ControlError(f"control endpoint {endpoint!r}: use ipc://PATH or tcp://127.0.0.1:PORT")


def _in_use(path: str) -> bool:
    """Whether a process listens on the ipc socket `path` (ZeroMQ's bind would silently take it over)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


# -------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    verb: str
    operator: str = ""
    reason: str = ""


def encode_request(verb: str, operator: str = "", reason: str = "") -> bytes:
    body = {"verb": verb} | ({"operator": operator, "reason": reason} if verb in ACTIONS else {})
    return json.dumps(body).encode()


def decode_request(frames: list[bytes]) -> Request:
    """One frame, at most MAX_REQUEST_BYTES of UTF-8 JSON: {verb, and for an action: operator, reason}."""
    if len(frames) != 1:
        raise BadRequest("multipart", f"{len(frames)} frames; a request is one")
    raw = frames[0]
    if len(raw) > MAX_REQUEST_BYTES:
        raise BadRequest("oversized", f"{len(raw)} bytes > {MAX_REQUEST_BYTES}")
    try:
        body = json.loads(bytes(raw).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest("not_utf8", str(exc)) from exc
    except (ValueError, RecursionError) as exc:
        raise BadRequest("not_json", str(exc)[:200]) from exc
    if not isinstance(body, dict):
        raise BadRequest("not_an_object", f"a JSON {type(body).__name__}; a request is an object")
    verb = body.get("verb")
    if verb not in VERBS:
        raise BadRequest("unknown_verb", f"verb {str(verb)[:40]!r}; one of {', '.join(VERBS)}")
    allowed = {"verb", "operator", "reason"} if verb in ACTIONS else {"verb"}
    if extra := sorted(str(k)[:40] for k in body if k not in allowed):
        raise BadRequest("unknown_field", f"{verb} takes no {extra}")
    if verb not in ACTIONS:
        return Request(verb)
    return Request(
        verb,
        _text(body.get("operator"), "operator", MAX_OPERATOR_CHARS),
        _text(body.get("reason"), "reason", MAX_REASON_CHARS),
    )


def _text(value: Any, name: str, limit: int) -> str:
    """Who or why: non-empty, bounded, one printable line (it goes into logs and the summary as given)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"no_{name}", f"{name} must be given as non-empty text")
    if len(value) > limit or not value.isprintable():
        raise BadRequest(f"bad_{name}", f"{name} must be one printable line of at most {limit} characters")
    return value.strip()


# ---------------------------------------------------------------------------------------------- server


@dataclass(frozen=True)
class OperatorAction:
    tick: int  # the first tick the action applies to (ticks completed when it was served)
    t_ns: int  # on the driver's clock (sim time in lockstep), like the transitions
    time: str  # wall clock, UTC, for the people reading the summary
    verb: str
    operator: str
    reason: str
    accepted: bool
    detail: str  # what it did, or why it was refused


@dataclass(frozen=True)
class ControlRecord:
    """What the run summary keeps of the control endpoint."""

    endpoint: str
    actions: list[OperatorAction] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # malformed requests by reason


def latching_conditions(inputs: Inputs | None, guard: Guard) -> list[str]:
    """The latching conditions the last tick still saw: a lost driver, its pressed emergency stop, another
    session holding the arm. A non-finite value (policy output, state) shows only on the next tick, so a reset
    past one re-latches FAULT there if it is still non-finite."""
    if inputs is None:
        return []
    held = []
    if driver_lost(inputs.silent_ns, guard.watchdogs):
        held.append(f"the driver is still lost: nothing from it for {inputs.silent_ns / 1e6:.0f} ms")
    if inputs.status is not None and DriverFault.ESTOP in inputs.status.faults:
        held.append("the driver still reports its emergency stop pressed")
    holders = {r.holder for r in (inputs.status, inputs.state) if r is not None} - {"", guard.session}
    if guard.session is not None and holders:
        held.append(f"another session still holds the arm ({', '.join(sorted(holders))})")
    return held


class ControlServer:
    """The REP socket and its verbs; `serve(loop)` is the loop's between-ticks call."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        check_endpoint(endpoint)
        if endpoint.startswith("ipc://") and _in_use(endpoint[len("ipc://") :]):
            raise ControlError(f"{endpoint} is in use: another pac-run serves it")
        self.endpoint = endpoint
        self.actions: list[OperatorAction] = []
        self.rejected: dict[str, int] = {}
        self._sock = (context or zmq.Context.instance()).socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise ControlError(f"cannot serve the control endpoint {endpoint}: {exc}") from exc
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://") :], 0o600)  # connecting needs write access: this user only
        self._verbs = {"status": self._status, "reset": self._reset, "estop": self._estop, "stop": self._stop}

    def close(self) -> None:
        self._sock.close(0)
        if self.endpoint.startswith("ipc://"):  # libzmq removes it only if its I/O thread gets to, before exit
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.endpoint[len("ipc://") :])

    def record(self) -> ControlRecord:
        return ControlRecord(self.endpoint, list(self.actions), dict(self.rejected))

    def serve(self, loop: ControlLoop) -> None:
        """Answer what is waiting, at most MAX_REQUESTS_PER_TICK requests; never blocks, never raises."""
        for _ in range(MAX_REQUESTS_PER_TICK):
            try:
                if not self._sock.poll(0, zmq.POLLIN):
                    return
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.error("control: receive failed: %s", exc)
                return
            reply = self._answer(frames, loop)
            try:
                self._sock.send(json.dumps(reply).encode(), zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # the client went away: REP drops the reply
                log.warning("control: reply not sent: %s", exc)

    def _answer(self, frames: list[bytes], loop: ControlLoop) -> dict[str, Any]:
        try:
            request = decode_request(frames)
        except BadRequest as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            log.warning("control: malformed request refused (%s)", exc)
            return {"ok": False, "error": exc.reason, "detail": exc.detail}
        try:
            return self._verbs[request.verb](request, loop)
        except Exception as exc:  # noqa: BLE001 - the operator hears of it; the loop goes on holding its arm
            log.exception("control: %s failed", request.verb)
            self.rejected["internal"] = self.rejected.get("internal", 0) + 1
            return {"ok": False, "error": "internal", "detail": repr(exc)[:200]}

    # --------------------------------------------------------------------------------------- verbs
    def _status(self, request: Request, loop: ControlLoop) -> dict[str, Any]:
        safety = loop.guard.safety
        return {
            "ok": True,
            "verb": "status",
            "state": safety.state.value,
            "fault_cause": str(safety.fault_cause) if safety.fault_cause is not None else "",
            "still_holds": latching_conditions(loop.last_inputs, loop.guard),
            "hold_causes": names(safety.hold_causes),
            "ticks": loop.ticks,
            "stopping": loop.stop_reason,
            "pid": os.getpid(),
        }

    def _reset(self, request: Request, loop: ControlLoop) -> dict[str, Any]:
        safety = loop.guard.safety
        if safety.state not in LATCHED:
            return self._act(request, loop, False, f"nothing to reset: {safety.state.value} is not FAULT or ESTOP")
        if not loop.await_reset:  # the run ends after this tick: a reset now would race a fault nobody saw
            return self._act(request, loop, False, "this run exits on FAULT/ESTOP; start pac-run --await-reset")
        if held := latching_conditions(loop.last_inputs, loop.guard):
            return self._act(request, loop, False, f"{safety.fault_cause} cannot be reset: {'; '.join(held)}")
        cause = safety.fault_cause
        safety.reset(f"{request.operator} ({request.reason})", loop.ticks, loop.link.now_ns())
        return self._act(request, loop, True, f"{cause} reset: READY, the watchdogs decide the rest")

    def _estop(self, request: Request, loop: ControlLoop) -> dict[str, Any]:
        safety = loop.guard.safety
        if safety.state is State.ESTOP:
            return self._act(request, loop, True, f"already ESTOP ({safety.fault_cause})")
        cause = Cause(CauseKind.ESTOP, "operator", detail=f"{request.operator}: {request.reason}")
        safety.latch(cause, loop.ticks, loop.link.now_ns())
        return self._act(request, loop, True, f"ESTOP latched: only holds from tick {loop.ticks}")

    def _stop(self, request: Request, loop: ControlLoop) -> dict[str, Any]:
        loop.stop(f"operator stop by {request.operator} ({request.reason})")
        return self._act(request, loop, True, f"stopping after tick {loop.ticks}: hold, then exit")

    def _act(self, request: Request, loop: ControlLoop, accepted: bool, detail: str) -> dict[str, Any]:
        action = OperatorAction(
            tick=loop.ticks,
            t_ns=loop.link.now_ns(),
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            verb=request.verb,
            operator=request.operator,
            reason=request.reason,
            accepted=accepted,
            detail=detail,
        )
        self.actions.append(action)
        log.log(
            logging.WARNING if accepted else logging.ERROR,
            "operator %s by %s (%s) at tick %d: %s%s",
            request.verb,
            request.operator,
            request.reason,
            action.tick,
            "" if accepted else "refused: ",
            detail,
        )
        state = loop.guard.safety.state.value
        return {"ok": accepted, "verb": request.verb, "state": state, "tick": action.tick, "detail": detail}


# ---------------------------------------------------------------------------------------------- client


def request(
    endpoint: str, verb: str, operator: str = "", reason: str = "", timeout_s: float = CLIENT_TIMEOUT_S
) -> dict:
    """Send one request to a running pac-run and return its reply; ControlError when nothing answers."""
    return send_raw(endpoint, [encode_request(verb, operator, reason)], timeout_s)


def send_raw(endpoint: str, frames: list[bytes], timeout_s: float = CLIENT_TIMEOUT_S) -> dict:
    """`frames` as one request (anything: tests send malformed ones) and the decoded reply."""
    check_endpoint(endpoint)
    if endpoint.startswith("ipc://") and not Path(endpoint[len("ipc://") :]).exists():
        raise ControlError(f"no pac-run control socket at {endpoint}")
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        if not sock.poll(round(timeout_s * 1000), zmq.POLLIN):
            raise ControlError(f"no reply from {endpoint} within {timeout_s:g} s: is pac-run still running?")
        raw = sock.recv()
    finally:
        sock.close(0)
    try:
        reply = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ControlError(f"{endpoint} answered something that is not a pac-run reply") from exc
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"{endpoint} answered something that is not a pac-run reply")
    return reply

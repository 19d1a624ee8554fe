"""Who may command an arm: one session at a time, holding a lease it renews by talking.

Before sessions, a driver took commands from anyone who could reach its command socket and kept one global
`seq`: a second local process moved the arm and locked the first out (issue 12). Now every message a client
sends to a driver (command, tick, reset, claim, release) carries the client's session token, a random secret
made per `DriverClient` (`new_session_token`), and the driver's `SessionGate` decides:

- the arm is free (no holder, or the holder's lease ran out): the sender becomes the holder, with a lease;
- the sender holds it: accepted, and the lease is renewed;
- anyone else: refused (counted as `not_owner`), and the status names who holds the arm and for how long.

`seq`, acknowledgements and duplicate detection are per session: a new holder starts from a clean slate, so
no earlier stream (however high its seq) can lock it out. The token itself never leaves the client; the
driver publishes only its `fingerprint` (a hash), so a client knows which acknowledgements are its own and
a bystander who reads the state stream learns nothing it could command with. Tokens are the link's
authentication on one host, with the endpoints only the user can reach; across hosts CURVE keys add it
(DESIGN §2).

Leases run on the driver's monotonic clock, whatever the driver's mode: a lockstep sim does not advance its
own time while the runtime is silent, but a lease must still run out when the runtime is gone.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_BYTES = 16
MIN_TOKEN_CHARS, MAX_TOKEN_CHARS = 16, 128  # what a driver accepts as a token (new_session_token: 32 hex chars)
MAX_LABEL_CHARS = 64
DEFAULT_LEASE_MS = 1000.0  # a runtime commands every period (50 ms): twenty missed periods end the lease
MIN_LEASE_MS, MAX_LEASE_MS = 100.0, 60_000.0  # a claim asking for a lease outside this is clamped into it


def new_session_token() -> str:
    """A fresh secret session token (128 random bits, hex)."""
    return secrets.token_hex(TOKEN_BYTES)


def fingerprint(token: str) -> str:
    """What a driver publishes of a token: 16 hex chars of its SHA-256; "" for no session."""
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""


def valid_token(token: object) -> bool:
    return isinstance(token, str) and MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS and token.isprintable()


def clean_label(label: object) -> str:
    """A client's self-description, as a driver logs and publishes it: printable, bounded."""
    text = label if isinstance(label, str) else ""
    return "".join(ch for ch in text if ch.isprintable())[:MAX_LABEL_CHARS] or "unnamed"


@dataclass(frozen=True)
class Admission:
    """The gate's answer to one message."""

    admitted: bool
    new_holder: bool = False  # the sender just became the holder: reset its per-session counters
    holder: str = ""  # refused: the holder's label and fingerprint, for the refusal's log and status


class SessionGate:
    """The driver's record of who holds the arm (pure bookkeeping; the driver applies the verdicts)."""

    def __init__(self, lease_ms: float = DEFAULT_LEASE_MS, clock: Callable[[], int] = time.monotonic_ns):
        self.default_lease_ns = round(_clamp_lease(lease_ms) * 1e6)
        self.clock = clock
        self.token = ""
        self.label = ""
        self.until_ns = 0
        self.lease_ns = self.default_lease_ns
        self.claims = 0  # times the arm changed hands
        self.refused = 0

    @property
    def holder_fingerprint(self) -> str:
        return fingerprint(self.token) if self.held() else ""

    def held(self, now_ns: int | None = None) -> bool:
        now = self.clock() if now_ns is None else now_ns
        return bool(self.token) and now < self.until_ns

    def remaining_ms(self) -> float:
        return max(0.0, (self.until_ns - self.clock()) / 1e6) if self.held() else 0.0

    def admit(self, token: str, label: str = "", lease_ms: float | None = None) -> Admission:
        """Whether a message from session `token` may act on the arm; renews or grants the lease if so.

        `lease_ms` (from a claim) sets the lease this holder keeps from now on; otherwise it keeps its own.
        """
        now = self.clock()
        if self.held(now) and token != self.token:
            self.refused += 1
            return Admission(False, holder=f"{self.label} ({fingerprint(self.token)})")
        new = token != self.token or not self.held(now)
        if new:
            self.token, self.label, self.claims = token, clean_label(label), self.claims + 1
            self.lease_ns = self.default_lease_ns
        if lease_ms is not None:
            self.lease_ns = round(_clamp_lease(lease_ms) * 1e6)
        self.until_ns = now + self.lease_ns
        return Admission(True, new_holder=new)

    def release(self, token: str) -> bool:
        """The holder gives the arm back (at once, not at its lease's end); True if `token` held it."""
        if not self.held() or token != self.token:
            return False
        self.until_ns = 0
        return True


def _clamp_lease(lease_ms: float) -> float:
    value = float(lease_ms)
    if value != value:  # NaN: the default
        return DEFAULT_LEASE_MS
    return min(max(value, MIN_LEASE_MS), MAX_LEASE_MS)

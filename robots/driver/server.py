"""The driver side of the ZeroMQ contract, shared by the sim (`pac-sim`) and the real arms (`pac-driver`).

A driver publishes `state` and `status` (and, for a sim, images and objects) on one PUB socket and takes
`command` plus the control topics (claim, release, reset, tick) on a SUB socket, both bound by the driver.
What an arm does with an accepted command is its subclass's business (`submit`, `step_period`,
`advance_chunk`); everything a runtime can observe about the link is here, once, so the sim and a real arm
cannot drift apart on it:

- every message in must come from the session that holds the arm (robots/contract/session.py); anyone else's
  is refused and counted (`not_owner`), so no other process can move the arm or lock the runtime out;
- input is bounded before it is decoded: messages over MAX_INPUT_BYTES are cut off by ZeroMQ itself, and
  real-time mode takes at most MAX_INPUTS_PER_STEP messages per chunk, so no flood can starve the arm's loop,
  the servo's dead-man or the state stream;
- an overrun is counted; only a sustained run of them (OverrunWindow) is a fault;
- each start draws a random `instance` id, published in state and status, so a runtime tells a restarted
  driver from the one it began with; a motion command whose observation this instance cannot have published
  (stamped before its start) is refused as of no age (`stale_observation`).

Lockstep mode advances exactly one control period per command or tick (the driver's clock is then the arm's
own simulated time); real-time mode paces the arm's loop by the wall clock with absolute deadlines.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import zmq

from robots.board import BoardSpec
from robots.contract import messages as msg
from robots.contract.link import DEFAULT_LINK, DriverFault, DriverMode, LinkConfig
from robots.contract.security import LinkSecurity, LinkServer, local_endpoints
from robots.contract.session import SessionGate, valid_token
from robots.contract.wire import WireError, decode
from robots.driver.relay import CameraRelay
from robots.servo import CommandServo, Rejection
from robots.spec import ArmSpec

MAX_INPUT_BYTES = 64 * 1024  # a command or control message is < 1 KiB; ZeroMQ drops a peer that sends more
MAX_INPUTS_PER_STEP = 8  # real time: messages handled per chunk (10 ms): 800/s, 16x the runtime's rate
OVERRUN_WINDOW_S = 1.0  # real time: overruns within this window ...
OVERRUN_FAULT_COUNT = 5  # ... at least this many: a sustained overrun, reported as a fault


def served_link(
    robot: str,
    pub: str | None,
    cmd: str | None,
    keys: Path | None,
    command_timeout_ms: float,
    jpeg_quality: int,
) -> LinkConfig:
    """The link a driver serves from its command-line flags (pac-sim and pac-driver take the same ones): the
    endpoints given, else this user's private ipc sockets for `robot`; CURVE server keys from `keys`."""
    default_pub, default_cmd = local_endpoints(robot)
    return replace(
        DEFAULT_LINK,
        pub_endpoint=pub or default_pub,
        cmd_endpoint=cmd or default_cmd,
        security=LinkSecurity.server_keys(keys) if keys else DEFAULT_LINK.security,
        command_timeout_ms=command_timeout_ms,
        jpeg_quality=jpeg_quality,
    )


@dataclass(frozen=True)
class DriverConfig:
    robot: str = "sawyer"
    lockstep: bool = False
    cameras: tuple[str, ...] | None = None  # None: every camera of the spec; () for none
    link: LinkConfig = DEFAULT_LINK  # endpoints it binds, control period (the lockstep step), command timeout
    state_rate_hz: float = 100.0  # real-time mode
    camera_rate_hz: float = 20.0  # real-time mode; lockstep renders once per period
    status_rate_hz: float = 10.0
    raw_images: bool = False  # send images uncompressed instead of JPEG
    objects: bool = True  # publish the `objects` topic (at the camera rate); False models a cell without a tracker
    camera_endpoints: tuple[str, ...] = ()  # real time: pac-camera publishers whose frames this driver relays
    board: BoardSpec | None = None  # sim: a calibration board on the gripper, the table cleared (pac-sim --board)


class OverrunWindow:
    """Overruns within the last OVERRUN_WINDOW_S: `sustained` once OVERRUN_FAULT_COUNT of them fall inside it, so
    an arm loop that cannot keep up is a fault and a lone stall (a page fault, a pause elsewhere) is only counted."""

    def __init__(self, window_s: float = OVERRUN_WINDOW_S, count: int = OVERRUN_FAULT_COUNT) -> None:
        self.window_ns, self.count = round(window_s * 1e9), count
        self.times: deque[int] = deque()

    def add(self, t_ns: int) -> None:
        self.times.append(t_ns)

    def sustained(self, now_ns: int) -> bool:
        while self.times and self.times[0] < now_ns - self.window_ns:
            self.times.popleft()
        return len(self.times) >= self.count


@dataclass
class DriverCounters:
    state_seq: int = 0
    status_seq: int = 0
    image_seq: dict[str, int] = field(default_factory=dict)
    objects_seq: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    overruns: int = 0  # real-time mode: the arm's loop fell behind the wall clock
    recent_overruns: OverrunWindow = field(default_factory=OverrunWindow)
    last_rx_seq: int = -1  # of the holding session
    steps: int = 0


class DriverServer:
    """Owns the two sockets, the session gate and the status; a subclass owns the arm and its `servo`.

    A subclass sets `self.servo` (robots/servo.py) and implements the arm hooks: `arm_time_s`, `submit`,
    `reset`, `step_period` (lockstep), `chunk_ns` and `advance_chunk` (real time), `state_msg`.
    """

    servo: CommandServo
    log_name = "pac-driver"  # the logger its messages go to

    def __init__(
        self,
        config: DriverConfig,
        spec: ArmSpec,
        source: str,
        t0_ns: int | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.source = source
        self._t0_ns = time.monotonic_ns() if t0_ns is None else t0_ns
        link = config.link
        self.mode = (DriverMode.LOCKSTEP if config.lockstep else DriverMode.REALTIME).value
        self.counters = DriverCounters()
        self.instance = secrets.token_hex(8)  # new per start: a runtime tells a restarted driver from this one
        self.sessions = SessionGate(link.lease_ms)
        default_pub, default_cmd = local_endpoints(config.robot)  # this user's private ipc sockets (security.py)
        self.endpoints = (link.pub_endpoint or default_pub, link.cmd_endpoint or default_cmd)
        self.link_server = LinkServer(link.security)  # loads and checks the CURVE keys, if any
        for endpoint in self.endpoints:
            self.link_server.check(endpoint)  # off loopback without keys: refused before anything is bound
        self.context = context or zmq.Context.instance()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 1000)
        self.link_server.bind(self.pub, self.endpoints[0])
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 1000 if config.lockstep else 16)
        self.sub.setsockopt(zmq.MAXMSGSIZE, MAX_INPUT_BYTES)
        for topic in (msg.COMMAND, *msg.CONTROL_TOPICS):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.link_server.bind(self.sub, self.endpoints[1])
        self.relay = CameraRelay(self.context, config.camera_endpoints) if config.camera_endpoints else None
        self._stop = False
        self.log = logging.getLogger(self.log_name)

    # ------------------------------------------------------------- arm hooks
    def arm_time_s(self) -> float:
        """Seconds the arm has run since the driver's start (lockstep: simulated time, the driver's clock)."""
        raise NotImplementedError

    def submit(self, command: msg.CommandMsg, now_ns: int) -> Rejection | None:
        """Hand an admitted command to the arm's servo; the reason when refused."""
        raise NotImplementedError

    def reset(self, seed: int | None = None) -> None:
        raise NotImplementedError

    def step_period(self) -> None:
        """Lockstep: run the arm for exactly one control period."""
        raise NotImplementedError

    @property
    def chunk_ns(self) -> int:
        """Real time: the arm time one `advance_chunk` covers (one state message each)."""
        raise NotImplementedError

    def advance_chunk(self) -> None:
        raise NotImplementedError

    def state_msg(self, seq: int, t_ns: int) -> msg.StateMsg:
        raise NotImplementedError

    def arm_faults(self) -> list[str]:
        """Faults the arm itself reports (reflexes, errors, a pressed stop); none for a sim."""
        return []

    def status_details(self) -> dict[str, object]:
        """Extra status fields an arm fills in (StatusMsg's optional ones)."""
        return {}

    def publish_frame(self) -> None:
        """What goes out at the camera rate (a sim's images and objects); nothing by default."""

    def topics(self) -> list[str]:
        """The topics this driver publishes, for its start-up log line."""
        return [msg.STATE, msg.STATUS]

    def frame_rate_hz(self) -> float:
        return self.config.camera_rate_hz

    # ----------------------------------------------------------------- clock
    def now_ns(self) -> int:
        """Driver clock: monotonic in real time; in lockstep, the arm's time from the driver's start."""
        if self.config.lockstep:
            return self._t0_ns + round(self.arm_time_s() * 1e9)
        return time.monotonic_ns()

    # --------------------------------------------------------------- messages in
    def handle(self, frames: Sequence[bytes]) -> bool:
        """Apply one message from a client; returns True when it advanced or reset the arm (lockstep)."""
        try:
            env = decode(frames)
            command = env.topic == msg.COMMAND
            request = msg.CommandMsg.from_envelope(env) if command else msg.ControlMsg.from_envelope(env)
        except WireError as err:
            self._drop(err.reason)
            return False
        if not valid_token(request.session):
            self._drop("no_session")
            return False
        if env.topic == msg.RELEASE:
            if self.sessions.release(request.session):
                self.log.info("arm released by %s", env.source)
            else:
                self._drop("not_owner")  # only the holder can give the arm back
            return False
        lease = request.lease_ms if env.topic == msg.CLAIM else None
        admission = self.sessions.admit(request.session, env.source, lease)
        if not admission.admitted:
            self._drop("not_owner")
            self.log.warning("%s from %s refused: the arm is held by %s", env.topic, env.source, admission.holder)
            return False
        if admission.new_holder:
            self.log.info("arm claimed by %s (%s)", env.source, self.sessions.holder_fingerprint)
            self.counters.last_rx_seq = -1
            self.servo.new_session()
        if env.topic == msg.CLAIM:
            self.publish_status()
            self.publish_state()
            return False
        if self.config.lockstep and env.seq <= self.counters.last_rx_seq:
            self._drop("duplicate")  # a resend of a message already applied: republish, do not step
            self.publish_all()
            return False
        self.counters.last_rx_seq = max(self.counters.last_rx_seq, env.seq)
        if env.topic == msg.RESET:
            self.reset(request.seed)
        elif env.topic == msg.COMMAND:
            now = self.now_ns()
            if request.obs_t_ns < self._t0_ns:  # not an observation this instance published (from before its start:
                request = replace(request, obs_t_ns=-1)  # a previous instance's): of no age, so refused; the servo
                # refuses one ahead of the clock itself
            rejection = self.submit(request, now)
            if rejection is not None:
                self.log.warning("command %d rejected: %s", request.seq, rejection.value)
        if self.config.lockstep and env.topic in (msg.COMMAND, msg.TICK):
            self.step_period()
            self.counters.steps += 1
        return True

    def _drop(self, reason: str) -> None:
        self.counters.dropped[reason] = self.counters.dropped.get(reason, 0) + 1

    # -------------------------------------------------------------- messages out
    def publish_state(self) -> None:
        self.counters.state_seq += 1
        state = self.state_msg(self.counters.state_seq, self.now_ns())
        state.instance = self.instance
        self.pub.send_multipart(state.to_frames(), copy=False)

    def faults(self) -> list[str]:
        """What `status.faults` lists now: the dead-man's hold, a sustained overrun, then the arm's own."""
        st = self.servo.status
        faults = []
        if st.holding and st.hold_cause == DriverFault.COMMAND_TIMEOUT:
            faults.append(DriverFault.COMMAND_TIMEOUT.value)
        if self._sustained_overrun():
            faults.append(DriverFault.REALTIME_OVERRUN.value)
        return faults + self.arm_faults()

    def publish_status(self) -> None:
        st = self.servo.status
        self.counters.status_seq += 1
        status = msg.StatusMsg(
            seq=self.counters.status_seq,
            source=self.source,
            t_capture_ns=self.now_ns(),
            robot=self.spec.name,
            mode=self.mode,
            holding=st.holding,
            hold_cause=st.hold_cause,
            last_applied_seq=st.last_applied_seq,
            last_rejected_seq=st.last_rejected_seq,
            last_rejection=st.last_rejection,
            commands_applied=st.applied,
            commands_rejected=dict(st.rejected),
            messages_dropped=dict(self.counters.dropped),
            faults=self.faults(),
            period_s=self.config.link.period_s,
            command_timeout_ms=self.config.link.command_timeout_ms,
            sim_time=self.arm_time_s(),
            holder=self.sessions.holder_fingerprint,
            holder_label=self.sessions.label if self.sessions.held() else "",
            lease_ms_left=self.sessions.remaining_ms(),
            not_owner=self.counters.dropped.get("not_owner", 0),
            overruns=self.counters.overruns,
            workspace_stops=st.workspace_stops,
            instance=self.instance,
            **self.status_details(),
        )
        self.pub.send_multipart(status.to_frames())

    def _overrun(self) -> None:
        self.counters.overruns += 1
        self.counters.recent_overruns.add(time.monotonic_ns())

    def _sustained_overrun(self) -> bool:
        return self.counters.recent_overruns.sustained(time.monotonic_ns())

    def publish_all(self) -> None:
        """State last: a client that sees the state acknowledging its command has that period's images, objects,
        extra topics and status."""
        self.publish_frame()
        self.publish_status()
        self.publish_state()

    # --------------------------------------------------------------------- loops
    def stop(self) -> None:
        self._stop = True

    def run(self, duration_s: float | None = None) -> None:
        try:
            if self.config.lockstep:
                self._run_lockstep(duration_s)
            else:
                self._run_realtime(duration_s)
        finally:
            self.close()

    def _run_lockstep(self, duration_s: float | None) -> None:
        heartbeat_ms = round(1000 / self.config.status_rate_hz)
        end = None if duration_s is None else time.monotonic() + duration_s
        self.publish_all()
        while not self._stop and (end is None or time.monotonic() < end):
            if self.sub.poll(heartbeat_ms):
                if self.handle(self.sub.recv_multipart(copy=False)):
                    self.publish_all()
            else:
                self.publish_status()  # heartbeat while the runtime is silent; the arm does not move

    def _run_realtime(self, duration_s: float | None) -> None:
        cfg = self.config
        chunk_ns = self.chunk_ns
        frame_every = max(1, round(1e9 / (self.frame_rate_hz() * chunk_ns)))
        status_every = max(1, round(1e9 / (cfg.status_rate_hz * chunk_ns)))
        start = time.monotonic_ns()
        deadline = start
        n = 0  # chunks of the grid since the start, missed ones included
        next_frame = next_status = 0  # the chunk each is next due at (one missed is sent late, once)
        while not self._stop and (duration_s is None or deadline - start < duration_s * 1e9):
            for _ in range(MAX_INPUTS_PER_STEP):  # bounded: a flood waits in the (small) queue, the arm does not
                if not self.sub.poll(0):
                    break
                self.handle(self.sub.recv_multipart(copy=False))
            self.advance_chunk()
            if self.relay is not None:
                self.relay.forward(self.pub)
            if n >= next_frame:
                self.publish_frame()
                next_frame = (n // frame_every + 1) * frame_every
            self.publish_state()
            if n >= next_status:
                self.publish_status()
                next_status = (n // status_every + 1) * status_every
            n += 1
            deadline += chunk_ns
            late = time.monotonic_ns() - deadline
            if late > chunk_ns:  # a whole chunk behind: count it and skip the missed chunks, not race to catch
                self._overrun()  # up; on the same grid and counting them, so the frames keep their phase (a
                missed = late // chunk_ns  # camera's free-running clock): a loop locked to them stays locked
                deadline += missed * chunk_ns
                n += missed
            elif late < 0:
                time.sleep(-late / 1e9)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
        self.pub.close(0)
        self.sub.close(0)
        self.link_server.close()

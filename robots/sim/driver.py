"""The simulated arm behind the ZeroMQ driver contract: what `pac-sim` runs.

It publishes `state`, `image/<camera>`, `objects` (ground-truth object poses; off to model a cell without a
tracker) and `status` on one PUB socket and takes `command` (plus the sim-only `tick` and `reset`) on a SUB
socket, both bound by the driver. A subclass adds topics through `publish_extra` (robots/tasks/driver.py:
`task`). Real-time mode paces physics by the wall clock (absolute deadlines, overruns counted); lockstep mode
advances exactly one control period per command or tick, so closed-loop tests are deterministic whatever the
machine's speed.

Every message in must come from the session that holds the arm (robots/contract/session.py): anyone else's is
refused and counted (`not_owner`), so no other process can move the arm or lock the runtime out. Input is
bounded before it is decoded: messages over MAX_INPUT_BYTES are cut off by ZeroMQ itself, and real-time mode
takes at most MAX_INPUTS_PER_STEP messages per physics chunk, so no flood can starve the physics, the
servo's dead-man or the state stream. An overrun is counted; only a sustained run of them is a fault.

Each start draws a random `instance` id, published in state and status, so a runtime tells a restarted driver
from the one it began with (a restart begins seqs and sim time anew). A motion command whose observation this
instance cannot have published (stamped before its start, or ahead of its clock: a runtime still acting on a
previous instance's data, or on a jumped clock) is refused as of no age (`stale_observation`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import zmq

from robots.contract import messages as msg
from robots.contract.link import DEFAULT_LINK, DriverFault, DriverMode, LinkConfig
from robots.contract.security import LinkServer, local_endpoints
from robots.contract.session import SessionGate, valid_token
from robots.contract.wire import WireError, decode
from robots.sim.cell import SimCell
from robots.sim.layout import object_layout
from robots.spec import load_spec

log = logging.getLogger("pac-sim")

MAX_INPUT_BYTES = 64 * 1024  # a command or control message is < 1 KiB; ZeroMQ drops a peer that sends more
MAX_INPUTS_PER_STEP = 8  # real time: messages handled per physics chunk (10 ms): 800/s, 16x the runtime's rate
OVERRUN_WINDOW_S = 1.0  # real time: overruns within this window ...
OVERRUN_FAULT_COUNT = 5  # ... at least this many: a sustained overrun, reported as a fault


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


class OverrunWindow:
    """Overruns within the last OVERRUN_WINDOW_S: `sustained` once OVERRUN_FAULT_COUNT of them fall inside it, so
    physics that cannot keep up is a fault and a lone stall (a page fault, a pause elsewhere) is only counted."""

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
    overruns: int = 0  # real-time mode: physics fell behind the wall clock
    recent_overruns: OverrunWindow = field(default_factory=OverrunWindow)
    last_rx_seq: int = -1  # of the holding session
    steps: int = 0


class SimDriver:
    """Owns the sim, the command servo and the two sockets."""

    def __init__(self, config: DriverConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.spec = load_spec(config.robot)
        self._t0_ns = time.monotonic_ns()
        link = config.link
        self.cell = SimCell(
            self.spec, config.cameras, link.period_s, link.command_timeout_ms, self._t0_ns, link.max_observation_age_ms
        )
        self.sim, self.servo, self.substeps = self.cell.sim, self.cell.servo, self.cell.substeps
        self.source = f"sim/{config.robot}"
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
        self._stop = False

    # ----------------------------------------------------------------- clock
    def now_ns(self) -> int:
        """Driver clock: monotonic in real time; in lockstep, sim time from the driver's start."""
        if self.config.lockstep:
            return self._t0_ns + round(self.sim.time * 1e9)
        return time.monotonic_ns()

    # ------------------------------------------------------------------ physics
    def advance(self, substeps: int) -> None:
        self.cell.advance(substeps, self.now_ns())

    # --------------------------------------------------------------- messages in
    def handle(self, frames: Sequence[bytes]) -> bool:
        """Apply one message from a client; returns True when it advanced or reset the sim (lockstep)."""
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
                log.info("arm released by %s", env.source)
            else:
                self._drop("not_owner")  # only the holder can give the arm back
            return False
        lease = request.lease_ms if env.topic == msg.CLAIM else None
        admission = self.sessions.admit(request.session, env.source, lease)
        if not admission.admitted:
            self._drop("not_owner")
            log.warning("%s from %s refused: the arm is held by %s", env.topic, env.source, admission.holder)
            return False
        if admission.new_holder:
            log.info("arm claimed by %s (%s)", env.source, self.sessions.holder_fingerprint)
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
            rejection = self.cell.submit(request, now)
            if rejection is not None:
                log.warning("command %d rejected: %s", request.seq, rejection.value)
        if self.config.lockstep and env.topic in (msg.COMMAND, msg.TICK):
            self.advance(self.substeps)
            self.counters.steps += 1
        return True

    def reset(self, seed: int | None = None) -> None:
        """Arm home; objects at the spec's places, or laid out from `seed` as the task environments do."""
        layout = None if seed is None else object_layout(self.spec, np.random.default_rng(seed))
        self.cell.reset(self.now_ns(), layout)
        self.counters.steps = 0

    def _drop(self, reason: str) -> None:
        self.counters.dropped[reason] = self.counters.dropped.get(reason, 0) + 1

    # -------------------------------------------------------------- messages out
    def publish_state(self) -> None:
        self.counters.state_seq += 1
        state = self.cell.state_msg(
            self.counters.state_seq,
            self.source,
            self.now_ns(),
            self.mode,
            self.counters.last_rx_seq,
            self.counters.steps,
            self.sessions.holder_fingerprint,
        )
        state.instance = self.instance
        self.pub.send_multipart(state.to_frames(), copy=False)

    def publish_images(self) -> None:
        for camera in self.sim.camera_names:
            seq = self.counters.image_seq.get(camera, 0) + 1
            self.counters.image_seq[camera] = seq
            image = self.cell.image_msg(camera, seq, self.source, self.now_ns(), self.counters.steps)
            frames = image.to_frames(jpeg=not self.config.raw_images, quality=self.config.link.jpeg_quality)
            self.pub.send_multipart(frames)

    def publish_objects(self) -> None:
        if not self.config.objects:
            return
        self.counters.objects_seq += 1
        objects = self.cell.objects_msg(self.counters.objects_seq, self.source, self.now_ns(), self.counters.steps)
        self.pub.send_multipart(objects.to_frames())

    def publish_extra(self) -> None:
        """Hook for a subclass's own topics, published with the images (lockstep: each period, before state)."""

    def publish_frame(self) -> None:
        """What goes out at the camera rate: images, objects, and a subclass's extra topics."""
        self.publish_images()
        self.publish_objects()
        self.publish_extra()

    def topics(self) -> list[str]:
        """The topics this driver publishes, for its start-up log line."""
        images = [msg.IMAGE_PREFIX + camera for camera in self.sim.camera_names]
        return [msg.STATE, *images, *([msg.OBJECTS] if self.config.objects else []), msg.STATUS]

    def publish_status(self) -> None:
        st = self.servo.status
        self.counters.status_seq += 1
        faults = []
        if st.holding and st.hold_cause == DriverFault.COMMAND_TIMEOUT:
            faults.append(DriverFault.COMMAND_TIMEOUT.value)
        if self._sustained_overrun():
            faults.append(DriverFault.REALTIME_OVERRUN.value)
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
            faults=faults,
            period_s=self.config.link.period_s,
            command_timeout_ms=self.config.link.command_timeout_ms,
            sim_time=self.sim.time,
            holder=self.sessions.holder_fingerprint,
            holder_label=self.sessions.label if self.sessions.held() else "",
            lease_ms_left=self.sessions.remaining_ms(),
            not_owner=self.counters.dropped.get("not_owner", 0),
            overruns=self.counters.overruns,
            workspace_stops=st.workspace_stops,
            instance=self.instance,
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
                self.publish_status()  # heartbeat while the runtime is silent; the sim does not move

    def _run_realtime(self, duration_s: float | None) -> None:
        cfg = self.config
        dt = float(self.sim.model.opt.timestep)
        chunk = max(1, round(1.0 / (cfg.state_rate_hz * dt)))  # physics steps per state message
        chunk_ns = round(chunk * dt * 1e9)
        camera_every = max(1, round(1.0 / (cfg.camera_rate_hz * chunk * dt)))
        status_every = max(1, round(1.0 / (cfg.status_rate_hz * chunk * dt)))
        start = time.monotonic_ns()
        deadline = start
        n = 0
        while not self._stop and (duration_s is None or deadline - start < duration_s * 1e9):
            for _ in range(MAX_INPUTS_PER_STEP):  # bounded: a flood waits in the (small) queue, physics does not
                if not self.sub.poll(0):
                    break
                self.handle(self.sub.recv_multipart(copy=False))
            self.advance(chunk)
            if n % camera_every == 0:
                self.publish_frame()
            self.publish_state()
            if n % status_every == 0:
                self.publish_status()
            n += 1
            deadline += chunk_ns
            late = time.monotonic_ns() - deadline
            if late > chunk_ns:  # a whole chunk behind: count it and re-anchor rather than race to catch up
                self._overrun()
                deadline = time.monotonic_ns()
            elif late < 0:
                time.sleep(-late / 1e9)

    def close(self) -> None:
        self.cell.close()
        self.pub.close(0)
        self.sub.close(0)
        self.link_server.close()

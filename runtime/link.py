"""The loop's link to a driver: when a tick starts, what it observes, and how its command goes out.

One small ABC, one implementation per way of running (openpi-client's Environment, done with time in mind):
`LockstepLink` (the sim advances one period per command: deterministic tests), `RealtimeLink` (ticks on
absolute deadlines, phase-locked just after the cameras' (or the object tracker's) frames arrive, at a lag
learned from the arrivals, which are decoded while idle). A replay link will feed a recording through the same
loop in virtual time. Links own waiting, phase alignment and deadlines; they read the driver only through
`DriverClient`'s public methods and the injected clock.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.link import DriverMode, LinkConfig, Mode
from robots.contract.messages import ImageMsg, ObjectsMsg, StateMsg, StatusMsg
from runtime.clock import Clock
from runtime.timing import ArrivalPhase, Pacer, StageTimer

NO_ACTION = np.zeros(0)
NO_ACTION.setflags(write=False)
FRAME_WAIT_MS = 12.0  # real time: longest wait for a late frame before ticking on the previous one
PHASE_OFFSET_MS = 4.0  # real time: tick at least this long after the cameras capture (transport + JPEG decode)
PHASE_CEILING = 0.5  # ... and at most this fraction of a period after: a later lag is a fault, not a phase
# real time: the pacer's last millisecond is slept in slices this long, polling between them (zmq polls whole
# ms): a frame that comes in then is decoded before the tick, not in it (issue 13: most of the overhead's tail)
LAST_MS_SLICE_NS = 200_000
LOCKSTEP_DEADLINE_PERIODS = 2  # lockstep: a command may still be applied this many periods after its state


@dataclass(frozen=True)
class Inputs:
    """What one tick sees: the newest message per topic, on the clock the driver stamps with."""

    tick_ns: int  # now, on the driver's clock (sim time in lockstep): observation ages are measured to it
    state: StateMsg | None
    status: StatusMsg | None
    frames: Mapping[str, ImageMsg]  # the policy's cameras that have sent a frame
    silent_ns: int  # local time since anything new came from the driver
    objects: ObjectsMsg | None = None  # the newest object poses; None from a driver (or cell) without a tracker

    def captures(self, cameras: tuple[str, ...], objects: bool = False) -> dict[str, int | None]:
        """Capture time per source ("state", "image/<camera>", and "objects" when the policy reads object
        poses), None for a source never heard."""
        out: dict[str, int | None] = {"state": self.state.t_capture_ns if self.state is not None else None}
        for camera in cameras:
            frame = self.frames.get(camera)
            out[f"image/{camera}"] = frame.t_capture_ns if frame is not None else None
        if objects:
            out["objects"] = self.objects.t_capture_ns if self.objects is not None else None
        return out


@dataclass(frozen=True)
class LinkStats:
    kind: DriverMode
    overruns: int
    overrun_late_ms: list[float]
    obs_age_ms: dict[str, float]  # p50, p99, n: oldest capture → command sent (real time)
    messages_dropped: dict[str, int]
    driver_rejected: dict[str, int]
    frame_lag_ms: dict[str, float] = field(default_factory=dict)  # real time: capture → frames in; tick offset


class DriverLink(abc.ABC):
    kind: DriverMode

    def __init__(
        self,
        client: DriverClient,
        cameras: tuple[str, ...],
        link: LinkConfig,
        timer: StageTimer,
        clock: Clock,
        *,
        objects: bool = False,
    ):
        self.client, self.cameras, self.link, self.timer, self.clock = client, cameras, link, timer, clock
        self.objects = objects  # the policy reads the `objects` topic: a frame-rate source like a camera
        self._heard = (-1, -1)  # (state seq, status seq) last seen
        self._heard_ns = clock.now_ns()
        self._obs_age = StageTimer(("obs_age",), clock=clock)

    # ------------------------------------------------------------- the loop's calls
    @abc.abstractmethod
    def await_tick(self) -> None:
        """Block until this tick may start (real time: its deadline; lockstep: at once)."""

    def observe(self) -> Inputs:
        """Take what arrived and return this tick's inputs."""
        self._receive()
        return self._inputs()

    @abc.abstractmethod
    def send(self, mode: Mode, action: np.ndarray, inputs: Inputs) -> int:
        """Send one command computed from `inputs`, with its deadline; returns its seq."""

    @abc.abstractmethod
    def now_ns(self) -> int:
        """Now on the driver's clock."""

    @abc.abstractmethod
    def _send_final_hold(self, timeout_s: float) -> int:
        """Send the last hold (and, in lockstep, step it); returns its seq."""

    def hold_and_confirm(self, timeout_s: float = 1.0) -> bool:
        """Command a hold and wait until the driver's state says it applied it; True when confirmed."""
        try:
            seq = self._send_final_hold(timeout_s)
            end = self.clock.now_ns() + round(timeout_s * 1e9)
            while self.clock.now_ns() < end:
                state = self.client.poll(20).state
                if self.client.mine(state) and state.last_cmd_seq >= seq:  # this session's own hold
                    return True
        except DriverUnavailable:
            pass
        return False

    def stats(self) -> LinkStats:
        p50, p99, n = self._obs_age.percentiles("obs_age")
        status = self.client.latest.status
        return LinkStats(
            kind=self.kind,
            overruns=0,
            overrun_late_ms=[],
            obs_age_ms={"p50": p50, "p99": p99, "n": n},
            messages_dropped=dict(self.client.dropped),
            driver_rejected=dict(status.commands_rejected) if status is not None else {},
        )

    # ------------------------------------------------------------------ shared parts
    def _receive(self, stage: str = "receive") -> None:
        """Take what is queued (timed under `stage`) and note when the driver was last heard from."""
        started = self.clock.now_ns()
        latest = self.client.poll(0)
        self.timer.add(stage, (self.clock.now_ns() - started) / 1e6)
        heard = (
            latest.state.seq if latest.state is not None else -1,
            latest.status.seq if latest.status is not None else -1,
        )
        if heard != self._heard:
            self._heard, self._heard_ns = heard, self.clock.now_ns()

    def _inputs(self) -> Inputs:
        latest = self.client.latest
        frames = {c: latest.images[c] for c in self.cameras if c in latest.images}
        silent_ns = self.clock.now_ns() - self._heard_ns
        return Inputs(self.now_ns(), latest.state, latest.status, frames, silent_ns, latest.objects)


class LockstepLink(DriverLink):
    """The sim steps one period per command; the acknowledging state starts the next tick."""

    kind = DriverMode.LOCKSTEP

    def __init__(self, *args, step_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_timeout_s = step_timeout_s  # a driver that does not answer for this long is lost

    def await_tick(self) -> None:
        """Nothing to wait for: the state acknowledging the last command is in, so the next period starts."""

    def now_ns(self) -> int:
        state = self.client.latest.state
        return state.t_capture_ns if state is not None else 0

    def send(self, mode: Mode, action: np.ndarray, inputs: Inputs) -> int:
        """Send and wait for the acknowledging state: the wait is the sim's step ("send_wait"), not overhead.

        A driver that does not answer is not an error here: nothing new arrives, so the next tick's
        `silent_ns` grows and the guard's driver-lost watchdog latches FAULT.
        """
        deadline = self.now_ns() + LOCKSTEP_DEADLINE_PERIODS * self.link.period_ns
        started = self.clock.now_ns()
        try:
            oldest = _oldest_capture(inputs, self.cameras, self.objects) if mode is not Mode.HOLD else -1
            self.client.step(mode, action, deadline_ns=deadline, obs_t_ns=oldest, timeout_s=self.step_timeout_s)
        except DriverUnavailable:
            pass
        self.timer.record("send_wait", (self.clock.now_ns() - started) / 1e6)
        return self.client.seq

    def _send_final_hold(self, timeout_s: float) -> int:
        self.client.step(Mode.HOLD, NO_ACTION, timeout_s=timeout_s)
        return self.client.seq


class RealtimeLink(DriverLink):
    """Ticks on absolute deadlines, phase-locked just after the cameras' capture (DESIGN §5 budgets)."""

    kind = DriverMode.REALTIME

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pacer = Pacer(self.link.period_ns, clock=self.clock, idle=self._idle)
        self._aligned = False  # the pacer has been put on the frames' phase
        period_ms = self.link.period_ns / 1e6
        self.arrival = ArrivalPhase(self.link.period_ns, PHASE_OFFSET_MS, PHASE_CEILING * period_ms)
        self._listening = False  # polled without a break since the last backlog drain: arrival time = now
        self._last_set_ns = -1  # newest capture of the last complete set of frames seen

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def await_tick(self) -> None:
        """Between ticks (off the critical path): follow the learned arrival lag, then sleep to the deadline."""
        self._follow_phase()
        self.pacer.wait()

    def observe(self) -> Inputs:
        self._receive()
        self._note_arrival()
        if not self._aligned:  # the first frames: phase-lock this very tick
            self._follow_phase()
        self._await_frames()
        return self._inputs()

    def send(self, mode: Mode, action: np.ndarray, inputs: Inputs) -> int:
        self._listening = False  # what arrives from now until the next idle poll queues: its arrival time is lost
        oldest = _oldest_capture(inputs, self.cameras, self.objects) if mode is not Mode.HOLD else -1
        with self.timer.section("send"):
            deadline = self.clock.now_ns() + self.link.period_ns
            seq = self.client.send_command(mode, action, deadline, _obs_seq(inputs), obs_t_ns=oldest)
        if oldest >= 0:
            self._obs_age.record("obs_age", (self.clock.now_ns() - oldest) / 1e6)
            self._obs_age.next_tick()
        return seq

    def _send_final_hold(self, timeout_s: float) -> int:
        return self.client.send_command(Mode.HOLD, NO_ACTION, self.clock.now_ns() + round(timeout_s * 1e9), obs_t_ns=-1)

    def stats(self) -> LinkStats:
        lags = self.arrival.lags_ms()
        frame_lag = {"p50": float(np.median(lags)), "p95": float(np.quantile(lags, 0.95))} if lags.size else {}
        frame_lag |= {"n": int(lags.size), "tick_offset": self.arrival.offset_ms}
        late_ms = list(self.pacer.late_ms)
        return replace(super().stats(), overruns=self.pacer.overruns, overrun_late_ms=late_ms, frame_lag_ms=frame_lag)

    # ------------------------------------------------------------------ waiting
    def _frame_captures(self) -> list[int] | None:
        """Capture times of the frame-rate sources the policy reads (its cameras, the objects topic if it
        reads poses); None until each has been heard."""
        latest = self.client.latest
        if not all(c in latest.images for c in self.cameras) or (self.objects and latest.objects is None):
            return None
        captures = [latest.images[c].t_capture_ns for c in self.cameras]
        return captures + [latest.objects.t_capture_ns] if self.objects else captures

    def _follow_phase(self) -> None:
        """Tick just after the cameras' frames (and object poses) are in, so observations are as young as they can be.

        Locked on the first full set of frames, at the floor offset; then wherever the learned capture phase and
        arrival lag put it (`ArrivalPhase`: jitter, a slower transport, a driver that re-phased).
        """
        moved = self.arrival.update()
        if self.arrival.phase_ns is not None and (moved or not self._aligned):
            self.pacer.align(self.arrival.phase_ns)
            self._aligned = True

    def _note_arrival(self) -> None:
        """Record each period's complete set of frames once: its newest capture and, when the link was listening
        without a break (a set that queued during a tick's compute arrived at an unknown time), when it was in."""
        captures = self._frame_captures()
        if captures is None:
            return
        newest = max(captures)
        if newest == self._last_set_ns or newest - min(captures) >= self.link.period_ns // 2:
            return  # already seen, or a set still partly from the previous period
        self._last_set_ns = newest
        self.arrival.record(newest, self.clock.now_ns() if self._listening else None)

    def _idle(self, seconds: float) -> None:
        """The pacer's sleep: decode arrivals as they come, so a tick finds only the newest few messages,
        and note when each period's frames are in (the phase follows that lag).

        This moves receive work off the critical path; it is timed as "receive_idle", outside the overhead.
        """
        end = self.clock.now_ns() + round(seconds * 1e9)
        self._receive("receive_idle")  # the backlog from the tick: drained, not timed as arrivals
        self._note_arrival()
        self._listening = True
        while (remaining_ns := end - self.clock.now_ns()) > 0:
            if remaining_ns < 1_000_000:
                self.clock.sleep(min(remaining_ns, LAST_MS_SLICE_NS) / 1e9)
                ready = self.client.wait(0)
            else:
                ready = self.client.wait(remaining_ns // 1_000_000)
            if ready:
                self._receive("receive_idle")
                self._note_arrival()

    def _await_frames(self) -> None:
        """If this period's frames are not in yet (capture jitter), wait for them up to FRAME_WAIT_MS.

        Waiting a little costs less than computing on a frame a whole period old. The wait is its own
        stage ("frame_wait"); decoding what arrives counts as receive work.
        """
        end = self.clock.now_ns() + round(FRAME_WAIT_MS * 1e6)
        fresh_ns = self.link.period_ns // 2
        while True:
            captures = self._frame_captures()
            now = self.clock.now_ns()
            if captures is not None and all(now - t < fresh_ns for t in captures):
                return
            remaining_ms = (end - now) / 1e6
            if remaining_ms <= 0:
                return
            ready = self.client.wait(max(1, int(remaining_ms)))
            self.timer.add("frame_wait", (self.clock.now_ns() - now) / 1e6)
            if ready:
                self._receive()
                self._note_arrival()


def _oldest_capture(inputs: Inputs, cameras: tuple[str, ...], objects: bool) -> int:
    """Capture time of the oldest input a command was computed from (-1 with none): the driver bounds its age."""
    captures = [t for t in inputs.captures(cameras, objects).values() if t is not None]
    return min(captures) if captures else -1


def _obs_seq(inputs: Inputs) -> int:
    return inputs.state.seq if inputs.state is not None else -1

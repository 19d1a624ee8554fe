"""The simulated arm behind the ZeroMQ driver contract: what `pac-sim` runs.

The contract itself (sockets, sessions, bounded input, dead-man, status, the lockstep and real-time loops)
is the shared `DriverServer` (robots/driver/server.py), the same code the real arms' `pac-driver` runs. This
class adds the sim: it publishes `image/<camera>` and `objects` (ground-truth object poses; off to model a cell
without a tracker) besides `state` and `status`, takes the sim-only `tick` and `reset`, and paces physics in
chunks of one state period. A subclass adds topics through `publish_extra` (robots/tasks/driver.py: `task`).
With a calibration board (`DriverConfig.board`, robots/sim/board.py) it is the calibration cell: the board on
the gripper, the table cleared.
In lockstep the driver's clock is sim time from the driver's start.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from robots.contract import messages as msg
from robots.driver.server import (  # noqa: F401  (re-exported: tests and tools import them from here)
    MAX_INPUT_BYTES,
    MAX_INPUTS_PER_STEP,
    OVERRUN_FAULT_COUNT,
    OVERRUN_WINDOW_S,
    DriverConfig,
    DriverCounters,
    DriverServer,
    OverrunWindow,
)
from robots.servo import Rejection
from robots.sim.board import cleared
from robots.sim.cell import SimCell
from robots.sim.layout import object_layout
from robots.spec import load_spec


class SimDriver(DriverServer):
    """The sim, its command servo and the contract server."""

    log_name = "pac-sim"

    def __init__(self, config: DriverConfig, context: zmq.Context | None = None) -> None:
        spec = load_spec(config.robot) if config.board is None else cleared(load_spec(config.robot))
        t0_ns = time.monotonic_ns()
        link = config.link
        self.cell = SimCell(
            spec,
            config.cameras,
            link.period_s,
            link.command_timeout_ms,
            t0_ns,
            link.max_observation_age_ms,
            config.board,
        )
        self.sim, self.servo, self.substeps = self.cell.sim, self.cell.servo, self.cell.substeps
        super().__init__(config, spec, f"sim/{config.robot}", t0_ns, context)
        dt = float(self.sim.model.opt.timestep)
        self._chunk = max(1, round(1.0 / (config.state_rate_hz * dt)))  # physics steps per state message
        self._chunk_ns = round(self._chunk * dt * 1e9)

    # ----------------------------------------------------------------- arm hooks
    def arm_time_s(self) -> float:
        return self.sim.time

    def advance(self, substeps: int) -> None:
        self.cell.advance(substeps, self.now_ns())

    def step_period(self) -> None:
        self.advance(self.substeps)

    @property
    def chunk_ns(self) -> int:
        return self._chunk_ns

    def advance_chunk(self) -> None:
        self.advance(self._chunk)

    def submit(self, command: msg.CommandMsg, now_ns: int) -> Rejection | None:
        return self.cell.submit(command, now_ns)

    def reset(self, seed: int | None = None) -> None:
        """Arm home; objects at the spec's places, or laid out from `seed` as the task environments do."""
        seeded = seed is not None and bool(self.cell.object_names)  # a cleared cell (--board) has none to lay out
        layout = object_layout(self.spec, np.random.default_rng(seed)) if seeded else None
        self.cell.reset(self.now_ns(), layout)
        self.counters.steps = 0

    def state_msg(self, seq: int, t_ns: int) -> msg.StateMsg:
        return self.cell.state_msg(
            seq,
            self.source,
            t_ns,
            self.mode,
            self.counters.last_rx_seq,
            self.counters.steps,
            self.sessions.holder_fingerprint,
        )

    # -------------------------------------------------------------- messages out
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
        images = [msg.IMAGE_PREFIX + camera for camera in self.sim.camera_names]
        return [msg.STATE, *images, *([msg.OBJECTS] if self.config.objects else []), msg.STATUS]

    def close(self) -> None:
        self.cell.close()
        super().close()

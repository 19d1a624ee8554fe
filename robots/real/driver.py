"""A real arm behind the driver contract: `RealDriver` is the `DriverServer` with the servo feeding an adapter.

The same servo as the sim (robots/servo.py: IK, workspace box, speed and joint limits, deadlines, stale
observations, the command-timeout hold) runs at the adapter's rate (100 Hz, one IK solve per step) and its
joint targets go to the adapter (Intera position commands, or the Panda's 1 kHz interpolation). Joint
offsets from calibration are applied here, between the model frame (servo, kinematics, state) and the SDK's.
The state's TCP pose is the project's forward kinematics of the corrected joints.

Faults: while the adapter reports one (a reflex, an error, a pressed stop) the servo holds on the measured
joints and motion commands are refused (`arm_fault`), so the runtime holds; the status lists the faults and
the SDK's error names. A `reset` control message is the error recovery: the adapter clears the fault and the
servo holds where the arm is. It never moves the arm home (a sim's reset does); a dry run behaves the same.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from robots.contract import messages as msg
from robots.contract.link import Mode
from robots.driver.server import DriverConfig, DriverServer
from robots.real.backend import ArmBackend, ArmHealth
from robots.real.offsets import JointOffsets
from robots.rotations import mat_to_quat
from robots.servo import Command, CommandServo, Rejection, ServoConfig
from robots.sim.physics import SimArm

ARM_FAULT_HOLD = "arm_fault"  # the servo's hold cause while the arm reports a fault


class RealDriver(DriverServer):
    def __init__(
        self,
        config: DriverConfig,
        backend: ArmBackend,
        spec,
        source: str,
        offsets: JointOffsets | None = None,
        cameras: SimArm | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.backend = backend
        self.offsets = offsets or JointOffsets.none(spec.dof)
        self.cameras = cameras  # a dry run's sim arm renders its cameras; a real cell runs pac-camera
        self.chain = spec.chain()
        t0_ns = time.monotonic_ns()
        link = config.link
        self.servo_dt = 1.0 / backend.servo_rate_hz
        self.servo_steps = max(1, round(link.period_s / self.servo_dt))  # per control period
        backend.start()
        self.servo = CommandServo(
            spec,
            ServoConfig(
                period_s=link.period_s,
                dt=self.servo_dt,
                command_timeout_s=link.command_timeout_ms / 1e3,
                ik_every=1,  # the servo's rate is the IK's: 100 Hz, as in the sim
                max_observation_age_s=link.max_observation_age_ms / 1e3,
            ),
            self.measured_q(),
            t0_ns,
        )
        self._faulted = False
        super().__init__(config, spec, source, t0_ns, context)
        self._t0_ns = t0_ns - round(backend.time_s() * 1e9)  # lockstep: the clock is the adapter's time

    # -------------------------------------------------------------- the arm
    def measured_q(self) -> np.ndarray:
        return self.offsets.to_model(self.backend.read().q)

    def arm_time_s(self) -> float:
        return self.backend.time_s()

    def health(self) -> ArmHealth:
        return self.backend.health()

    def servo_tick(self) -> None:
        """One servo step: the next joint target to the adapter, then the servo period passes."""
        now = self.now_ns()
        healthy = self.health().ok
        if not healthy and not self._faulted:
            self._faulted = True
            self.log.error("arm fault %s: holding, motion refused until recovered", self.health().faults)
            self._hold_measured(now, ARM_FAULT_HOLD)
        q, qd, grip = self.servo.step(now)
        if healthy and not self._faulted:
            self.backend.command(self.offsets.to_encoder(q), qd)
            self.backend.gripper(grip)
        self.backend.elapse(self.servo_dt)

    def _hold_measured(self, now_ns: int, cause: str) -> None:
        grip = self.servo.gripper
        self.servo.reset(self.measured_q(), now_ns, grip)
        self.servo.status.hold_cause = cause

    def submit(self, command: msg.CommandMsg, now_ns: int) -> Rejection | None:
        if self._faulted and Mode.parse(command.mode) is not Mode.HOLD:
            return self.servo.refuse(command.seq, Rejection.ARM_FAULT)
        return self.servo.submit(
            Command.of(command),
            now_ns,
        )

    def reset(self, seed: int | None = None) -> None:
        """Error recovery: clear the arm's fault and hold where it is (never a move home)."""
        recovered = self.backend.recover()
        if recovered:
            self._faulted = False
            self.log.info("arm recovered (%d recoveries)", self.backend.recoveries)
        else:
            self.log.error("error recovery failed: %s", self.health().errors)
        self._hold_measured(self.now_ns(), "reset" if recovered else ARM_FAULT_HOLD)
        self.counters.steps = 0

    def step_period(self) -> None:
        for _ in range(self.servo_steps):
            self.servo_tick()

    @property
    def chunk_ns(self) -> int:
        return round(self.servo_dt * 1e9)

    def advance_chunk(self) -> None:
        self.servo_tick()

    def arm_faults(self) -> list[str]:
        return list(self.health().faults)

    def status_details(self) -> dict[str, object]:
        return {"arm_errors": list(self.health().errors), "recoveries": self.backend.recoveries}

    # ------------------------------------------------------------- messages out
    def state_msg(self, seq: int, t_ns: int) -> msg.StateMsg:
        reading = self.backend.read()
        q = self.offsets.to_model(reading.q)
        pos, rot = self.chain.fk(q)
        return msg.StateMsg(
            seq=seq,
            source=self.source,
            t_capture_ns=t_ns,
            q=q,
            dq=np.asarray(reading.dq, dtype=float),
            gripper_pos=reading.gripper_pos,
            gripper_vel=reading.gripper_vel,
            gripper_grasp=reading.gripper_grasp,
            tcp_pose=np.concatenate([pos, mat_to_quat(rot)]),
            mode=self.mode,
            last_cmd_seq=self.servo.status.last_applied_seq,
            last_rx_seq=self.counters.last_rx_seq,
            step=self.counters.steps,
            holder=self.sessions.holder_fingerprint,
        )

    def publish_frame(self) -> None:
        """A dry run: its sim cameras' frames (a real cell's cameras are pac-camera processes)."""
        if self.cameras is None:
            return
        for camera in self.cameras.camera_names:
            seq = self.counters.image_seq.get(camera, 0) + 1
            self.counters.image_seq[camera] = seq
            frame = self.cameras.render(camera)
            image = msg.ImageMsg(camera, seq, self.source, self.now_ns(), frame, self.counters.steps)
            self.pub.send_multipart(image.to_frames(not self.config.raw_images, self.config.link.jpeg_quality))

    def topics(self) -> list[str]:
        names = self.cameras.camera_names if self.cameras is not None else ()
        return [msg.STATE, *(msg.IMAGE_PREFIX + c for c in names), msg.STATUS]

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            super().close()

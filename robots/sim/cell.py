"""One simulated arm with its command servo, stepped by physics substeps: the sim without any sockets.

`pac-sim` (driver.py) puts it behind the ZeroMQ contract; the Gymnasium task environments (robots/tasks/)
step it in-process. Both build their state, image and object messages here, so an environment's observation
is made from exactly what a driver would publish.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robots.board import BoardSpec
from robots.contract import messages as msg
from robots.contract.link import DEFAULT_LINK
from robots.servo import Command, CommandServo, Rejection, ServoConfig
from robots.sim.physics import SimArm
from robots.spec import ArmSpec


class SimCell:
    def __init__(
        self,
        spec: ArmSpec,
        cameras: Sequence[str] | None = None,
        period_s: float = DEFAULT_LINK.period_s,
        command_timeout_ms: float = DEFAULT_LINK.command_timeout_ms,
        now_ns: int = 0,
        max_observation_age_ms: float = DEFAULT_LINK.max_observation_age_ms,
        board: BoardSpec | None = None,
    ) -> None:
        self.spec = spec
        self.object_names = tuple(str(o["name"]) for o in spec.scene.get("objects", ()))
        self.sim = SimArm(spec, cameras, board=board)
        for camera in self.sim.camera_names:  # create the GL context now, not inside the first paced step
            self.sim.render(camera)
        self.dt_ns = round(self.sim.model.opt.timestep * 1e9)
        self.substeps = round(period_s / self.sim.model.opt.timestep)  # physics steps per control period
        self.servo = CommandServo(
            spec,
            ServoConfig(
                period_s=period_s,
                dt=float(self.sim.model.opt.timestep),
                command_timeout_s=command_timeout_ms / 1e3,
                max_observation_age_s=max_observation_age_ms / 1e3,
            ),
            spec.home,
            now_ns,
        )

    def submit(self, command: msg.CommandMsg, now_ns: int) -> Rejection | None:
        return self.servo.submit(
            Command.of(command),
            now_ns,
        )

    def advance(self, substeps: int, now_ns: int) -> None:
        """Step the servo and physics; the servo's clock advances one physics step per step."""
        for i in range(substeps):
            q, qd, g = self.servo.step(now_ns + i * self.dt_ns)
            self.sim.set_targets(q, qd, g)
            self.sim.step()

    def reset(self, now_ns: int, object_xy: dict[str, Sequence[float]] | None = None) -> None:
        """Arm home at rest, gripper open, objects at `object_xy` (the spec's places by default)."""
        self.sim.reset(object_xy=object_xy)
        self.servo.reset(self.spec.home, now_ns)

    def state_msg(
        self, seq: int, source: str, t_ns: int, mode: str, last_rx_seq: int, step: int, holder: str = ""
    ) -> msg.StateMsg:
        s = self.sim.state()
        return msg.StateMsg(
            seq=seq,
            source=source,
            t_capture_ns=t_ns,
            q=s.q,
            dq=s.dq,
            gripper_pos=s.gripper_pos,
            gripper_vel=s.gripper_vel,
            gripper_grasp=s.gripper_grasp,
            tcp_pose=s.tcp_pose,
            mode=mode,
            last_cmd_seq=self.servo.status.last_applied_seq,
            last_rx_seq=last_rx_seq,
            step=step,
            holder=holder,
        )

    def image_msg(self, camera: str, seq: int, source: str, t_ns: int, step: int) -> msg.ImageMsg:
        return msg.ImageMsg(camera, seq, source, t_ns, self.sim.render(camera), step)

    def objects_msg(self, seq: int, source: str, t_ns: int, step: int) -> msg.ObjectsMsg:
        """Ground-truth poses of every object of the spec's scene; the sim's world frame is the base frame."""
        poses = np.array([self.sim.object_pose(name) for name in self.object_names], dtype=np.float64)
        return msg.ObjectsMsg(seq, source, t_ns, self.object_names, poses.reshape(-1, msg.POSE_SIZE), step=step)

    def close(self) -> None:
        self.sim.close()

"""One simulated arm in its stacking scene: MuJoCo physics, servo targets in, arm state and images out.

The sim driver and the Gymnasium tasks both run on this class, so what a policy sees in training and what
the driver publishes come from one place. The position servos get velocity feed-forward
(ctrl = q_des + kv/kp · qd_des) and an inertial torque feed-forward (M · qdd_des), as a real arm's joint
controller has: without them the overdamped servos (kv/kp = 0.1 s) lag a moving target and creep for
hundreds of ms after a stop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robots.board import BoardSpec  # noqa: E402
from robots.rotations import mat_to_quat  # noqa: E402
from robots.sim.board import add_board  # noqa: E402
from robots.sim.mjcf import FINGER_JOINTS, TCP_SITE, build_mjcf  # noqa: E402
from robots.spec import ArmSpec  # noqa: E402


@dataclass(frozen=True)
class ArmState:
    """What the arm's sensors report at one instant."""

    q: np.ndarray  # joint positions, rad
    dq: np.ndarray  # joint velocities, rad/s
    gripper_pos: float  # 0 open ... 1 closed
    gripper_vel: float  # 1/s
    gripper_grasp: float  # 1 when both fingers touch the same object
    tcp_pose: np.ndarray  # position (3) + quaternion (w, x, y, z)
    tcp_vel: np.ndarray  # TCP linear velocity (3), m/s


class SimArm:
    """MuJoCo model and data of one arm with its gripper, table, objects and cameras; with a `board`, a
    calibration board mounted on the gripper (robots/sim/board.py)."""

    def __init__(
        self, spec: ArmSpec, cameras: Sequence[str] | None = None, scene: bool = True, board: BoardSpec | None = None
    ) -> None:
        self.spec = spec
        self.camera_names = tuple(c.name for c in spec.cameras) if cameras is None else tuple(cameras)
        xml = build_mjcf(spec, self.camera_names, scene)
        if board is None:
            self.model = mujoco.MjModel.from_xml_string(xml)
        else:
            mjspec = mujoco.MjSpec.from_string(xml)
            add_board(mjspec, board)
            self.model = mjspec.compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.qpos_idx = np.array([m.joint(n).qposadr[0] for n in spec.joint_names])
        self.qvel_idx = np.array([m.joint(n).dofadr[0] for n in spec.joint_names])
        self.finger_qpos = np.array([m.joint(n).qposadr[0] for n in FINGER_JOINTS])
        self.finger_qvel = np.array([m.joint(n).dofadr[0] for n in FINGER_JOINTS])
        self.arm_act = np.array([m.actuator(n).id for n in spec.joint_names])
        self.finger_act = np.array([m.actuator(n).id for n in FINGER_JOINTS])
        self.ff_gain = np.array([j.kv / j.kp for j in spec.joints])
        self.tcp_site = m.site(TCP_SITE).id
        self.finger_bodies = {m.body(n).id for n in FINGER_JOINTS}
        self.object_bodies = {o["name"]: m.body(o["name"]).id for o in spec.scene["objects"]} if scene else {}
        self.finger_open = spec.gripper.finger_range[1]
        self._renderer: mujoco.Renderer | None = None
        self._qacc = np.zeros(m.nv)  # arm joint accelerations, zero elsewhere
        self._torque = np.zeros(m.nv)
        self.reset()

    @property
    def time(self) -> float:
        return float(self.data.time)

    def reset(self, q: np.ndarray | None = None, object_xy: dict[str, Sequence[float]] | None = None) -> None:
        """Arm at q (home by default) at rest, gripper open, objects on the table at their places."""
        mujoco.mj_resetData(self.model, self.data)
        q = self.spec.home if q is None else np.asarray(q, dtype=float)
        self.data.qpos[self.qpos_idx] = q
        self.data.qpos[self.finger_qpos] = self.finger_open
        top = float(self.spec.scene["table"]["height"])
        for obj in self.spec.scene["objects"] if self.object_bodies else ():
            xy = (object_xy or {}).get(obj["name"], obj["pos"])
            adr = self.model.jnt_qposadr[self.model.body_jntadr[self.object_bodies[obj["name"]]]]
            self.data.qpos[adr : adr + 7] = [xy[0], xy[1], top + float(obj["size"]), 1, 0, 0, 0]
        self._qd_prev = np.zeros(self.spec.dof)
        self.set_targets(q, np.zeros(self.spec.dof), 0.0)
        mujoco.mj_forward(self.model, self.data)

    def set_targets(self, q_des: np.ndarray, qd_des: np.ndarray, gripper: float) -> None:
        """Servo targets: joint positions with velocity feed-forward, gripper 0 (open) ... 1 (closed)."""
        self.data.ctrl[self.arm_act] = q_des + self.ff_gain * qd_des
        qdd = (qd_des - self._qd_prev) / self.model.opt.timestep
        self._qd_prev = np.array(qd_des, dtype=float)
        self._qacc[self.qvel_idx] = qdd
        mujoco.mj_mulM(self.model, self.data, self._torque, self._qacc)
        self.data.qfrc_applied[self.qvel_idx] = self._torque[self.qvel_idx]
        self.data.ctrl[self.finger_act] = self.finger_open * (1.0 - np.clip(gripper, 0.0, 1.0))

    def step(self) -> None:
        mujoco.mj_step(self.model, self.data)

    def state(self) -> ArmState:
        d = self.data
        fingers = d.qpos[self.finger_qpos]
        tcp_vel = np.zeros(6)
        mujoco.mj_objectVelocity(self.model, d, mujoco.mjtObj.mjOBJ_SITE, self.tcp_site, tcp_vel, 0)
        return ArmState(
            q=d.qpos[self.qpos_idx].copy(),
            dq=d.qvel[self.qvel_idx].copy(),
            gripper_pos=float(1.0 - np.mean(fingers) / self.finger_open),
            gripper_vel=float(-np.mean(d.qvel[self.finger_qvel]) / self.finger_open),
            gripper_grasp=float(self.grasped_object() is not None),
            tcp_pose=np.concatenate(
                [d.site_xpos[self.tcp_site], mat_to_quat(d.site_xmat[self.tcp_site].reshape(3, 3))]
            ),
            tcp_vel=tcp_vel[3:].copy(),
        )

    def grasped_object(self) -> str | None:
        """The object both fingers touch, if any."""
        touching: dict[int, set[int]] = {}
        d, m = self.data, self.model
        for i in range(d.ncon):
            b1, b2 = m.geom_bodyid[d.contact[i].geom1], m.geom_bodyid[d.contact[i].geom2]
            for finger, other in ((b1, b2), (b2, b1)):
                if finger in self.finger_bodies:
                    touching.setdefault(other, set()).add(finger)
        for name, body in self.object_bodies.items():
            if touching.get(body) == self.finger_bodies:
                return name
        return None

    def object_pose(self, name: str) -> np.ndarray:
        body = self.object_bodies[name]
        return np.concatenate([self.data.xpos[body], self.data.xquat[body]])

    def render(self, camera: str) -> np.ndarray:
        """RGB uint8 image (H, W, 3) from a named camera."""
        cam = self.spec.camera(camera)
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, cam.height, cam.width)
        self._renderer.update_scene(self.data, camera)
        return self._renderer.render()

    def close(self) -> None:
        """Release the renderer's GL context; leaving it to the garbage collector prints EGL errors at exit."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimArm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A calibration cell in MuJoCo: the arm with a checkerboard on its gripper, cameras whose intrinsics and poses
are set, and the ground truth of both, so every calibration step can be checked against known answers.

The board body is the sim driver's own (robots/sim/board.py: `pac-sim --board` mounts the same one). The arm
is posed kinematically (qpos, no physics): what a pose shows is exactly the joint angles given, plus any
encoder error the test injects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from calibration.transforms import make_transform  # noqa: E402
from robots.board import DEFAULT_MOUNT, BoardMount, BoardSpec  # noqa: E402
from robots.rotations import mat_to_quat  # noqa: E402
from robots.sim.board import BOARD_BODY, add_board, cleared  # noqa: E402
from robots.sim.mjcf import build_mjcf, camera_xyaxes  # noqa: E402
from robots.spec import ArmSpec, CameraSpec  # noqa: E402

MJ_TO_CV = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera axes (x right, y up, looking along -z) to OpenCV's


def spec_intrinsics(cam: CameraSpec) -> np.ndarray:
    """The camera matrix MuJoCo renders with: square pixels, fy from the vertical field of view, the principal
    point at the image centre in OpenCV's convention (pixel centres at integers)."""
    f = cam.height / (2.0 * np.tan(np.radians(cam.fovy) / 2.0))
    return np.array([[f, 0.0, (cam.width - 1) / 2.0], [0.0, f, (cam.height - 1) / 2.0], [0.0, 0.0, 1.0]])


def spec_camera_pose(cam: CameraSpec) -> np.ndarray:
    """The camera's pose in the base frame (4x4, OpenCV axes) as the spec places it."""
    xy = camera_xyaxes(cam)
    rot_mj = np.column_stack([xy[:3], xy[3:], np.cross(xy[:3], xy[3:])])
    return make_transform(rot_mj @ MJ_TO_CV, cam.pos)


class CalibrationCell:
    """The arm, a board on its gripper (or hand-held in front of the cameras) and fixed cameras; joint angles or
    a board pose in, images and ground-truth poses out."""

    def __init__(
        self,
        arm: ArmSpec,
        board: BoardSpec,
        cameras: Sequence[CameraSpec] | None = None,
        mount: BoardMount = DEFAULT_MOUNT,
        encoder_error: np.ndarray | None = None,
        handheld: bool = False,
    ) -> None:
        self.arm, self.board, self.mount = arm, board, mount
        self.cameras = {c.name: c for c in (arm.cameras if cameras is None else cameras)}
        self.encoder_error = np.zeros(arm.dof) if encoder_error is None else np.asarray(encoder_error, float)
        spec = mujoco.MjSpec.from_string(build_mjcf(cleared(arm), cameras=(), scene=True))
        add_board(spec, board, mount, handheld)
        for cam in self.cameras.values():
            c = spec.worldbody.add_camera(name=cam.name)
            c.pos = list(cam.pos)
            c.quat = mat_to_quat(spec_camera_pose(cam)[:3, :3] @ MJ_TO_CV)
            c.fovy = cam.fovy
        spec.visual.global_.offwidth = max(c.width for c in self.cameras.values())
        spec.visual.global_.offheight = max(c.height for c in self.cameras.values())
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._qpos = np.array([self.model.joint(n).qposadr[0] for n in arm.joint_names])
        self.handheld = handheld
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.set_joints(arm.home)

    def set_joints(self, q_reported: np.ndarray) -> None:
        """Pose the arm where its encoders read `q_reported`; physically it is at q_reported + encoder_error."""
        self.data.qpos[self._qpos] = np.asarray(q_reported, float) + self.encoder_error
        mujoco.mj_forward(self.model, self.data)

    def hold_board(self, board_pose: np.ndarray) -> None:
        """Hand-held board: put it at `board_pose` (4x4, base frame)."""
        self.data.mocap_pos[0] = board_pose[:3, 3]
        self.data.mocap_quat[0] = mat_to_quat(board_pose[:3, :3])
        mujoco.mj_forward(self.model, self.data)

    def render(self, camera: str) -> np.ndarray:
        cam = self.cameras[camera]
        key = (cam.height, cam.width)
        if key not in self._renderers:
            self._renderers[key] = mujoco.Renderer(self.model, cam.height, cam.width)
        r = self._renderers[key]
        r.update_scene(self.data, camera)
        return r.render()

    def camera_pose(self, camera: str) -> np.ndarray:
        """Ground truth: the camera in the base frame (4x4, OpenCV axes)."""
        c = self.model.camera(camera).id
        return make_transform(self.data.cam_xmat[c].reshape(3, 3) @ MJ_TO_CV, self.data.cam_xpos[c])

    def board_pose(self) -> np.ndarray:
        """Ground truth: the board frame in the base frame (4x4)."""
        b = self.model.body(BOARD_BODY).id
        return make_transform(self.data.xmat[b].reshape(3, 3), self.data.xpos[b])

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    def __enter__(self) -> CalibrationCell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise of `sigma` grey levels, clipped to uint8."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)

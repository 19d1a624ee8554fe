"""A calibration cell in MuJoCo: the arm with a checkerboard on its gripper, cameras whose intrinsics and poses
are set, and the ground truth of both, so every calibration step can be checked against known answers.

The board is built from geoms (a white plate and thin black squares), not a texture, so the rendered corners
lie exactly where `board.object_points` says. The arm is posed kinematically (qpos, no physics): what a pose
shows is exactly the joint angles given, plus any encoder error the test injects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from calibration.board import CHECKERBOARD, BoardSpec  # noqa: E402
from calibration.transforms import make_transform  # noqa: E402
from robots.rotations import mat_to_quat, quat_to_mat  # noqa: E402
from robots.sim.mjcf import build_mjcf, camera_xyaxes  # noqa: E402
from robots.spec import ArmSpec, CameraSpec  # noqa: E402

BOARD_BODY = "calibration_board"
SQUARE_HALF_THICKNESS = 2e-5  # m: thin, so the squares' sides never widen them when seen at a slant
PLATE_GAP = 2e-4  # m: the white plate's face behind the squares' face; far above the depth buffer's resolution
MJ_TO_CV = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera axes (x right, y up, looking along -z) to OpenCV's


@dataclass(frozen=True)
class BoardMount:
    """Pose of the board's centre (the middle of its inner corners, board axes) in the TCP frame."""

    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float]

    def transform(self, board: BoardSpec) -> np.ndarray:
        """The board frame (origin at its first inner corner) in the TCP frame."""
        return make_transform(quat_to_mat(self.quat), self.pos) @ make_transform(np.eye(3), -board_centre(board))


def board_centre(board: BoardSpec) -> np.ndarray:
    nx, ny = board.inner
    return np.array([(nx - 1) * board.square / 2, (ny - 1) * board.square / 2, 0.0])


# A plate across the fingertips, its face outward along the TCP's z axis 1.5 cm past the TCP, the board's x
# along the TCP's y: with the gripper pointing at the cameras, the whole arm is behind the board.
DEFAULT_MOUNT = BoardMount((0.0, 0.0, 0.015), (0.0, 0.7071068, 0.7071068, 0.0))


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


def _board_body(spec: mujoco.MjSpec, board: BoardSpec, handheld: bool) -> None:
    """The board on the gripper (placed at its mount after compiling), or hand-held: a mocap body in the world."""
    if board.kind != CHECKERBOARD:
        raise ValueError(f"the sim cell renders checkerboards only, not {board.kind}")
    parent = spec.worldbody if handheld else spec.body("gripper")
    body = parent.add_body(name=BOARD_BODY, mocap=handheld)
    s, (w, h) = board.square, board.size_m
    plate = body.add_geom()
    plate.type = mujoco.mjtGeom.mjGEOM_BOX
    plate.size = [w / 2 + s, h / 2 + s, 0.002]
    plate.pos = [w / 2 - s, h / 2 - s, PLATE_GAP + 0.002]  # origin at the first inner corner, one square in
    plate.rgba = [0.95, 0.95, 0.95, 1]
    plate.contype = plate.conaffinity = 0
    plate.mass = 0.05
    for j in range(board.rows):
        for i in range(board.cols):
            if (i + j) % 2:
                continue
            g = body.add_geom()
            g.type = mujoco.mjtGeom.mjGEOM_BOX
            g.size = [s / 2, s / 2, SQUARE_HALF_THICKNESS]
            g.pos = [(i - 0.5) * s, (j - 0.5) * s, SQUARE_HALF_THICKNESS]
            g.rgba = [0.02, 0.02, 0.02, 1]
            g.contype = g.conaffinity = 0
            g.mass = 1e-4


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
        spec = mujoco.MjSpec.from_string(build_mjcf(arm, cameras=(), scene=True))
        _board_body(spec, board, handheld)
        for cam in self.cameras.values():
            c = spec.worldbody.add_camera(name=cam.name)
            c.pos = list(cam.pos)
            c.quat = mat_to_quat(spec_camera_pose(cam)[:3, :3] @ MJ_TO_CV)
            c.fovy = cam.fovy
        spec.visual.global_.offwidth = max(c.width for c in self.cameras.values())
        spec.visual.global_.offheight = max(c.height for c in self.cameras.values())
        spec.visual.quality.offsamples = 4  # antialiased edges, as a real lens and sensor blur them
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._qpos = np.array([self.model.joint(n).qposadr[0] for n in arm.joint_names])
        self.handheld = handheld
        if not handheld:
            self._place_board()
        for obj in arm.scene.get("objects", ()):  # a cleared cell: no cube in front of the board
            adr = self.model.joint(obj["name"]).qposadr[0]
            self.data.qpos[adr : adr + 3] = [0.0, 0.0, -10.0]
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.set_joints(arm.home)

    def _place_board(self) -> None:
        """Put the board body at the mount pose in the TCP frame (the TCP site's pose in the gripper body)."""
        site = self.model.site("tcp")
        tcp_in_gripper = make_transform(quat_to_mat(site.quat), site.pos)
        board_in_gripper = tcp_in_gripper @ self.mount.transform(self.board)
        body = self.model.body(BOARD_BODY)
        body.pos[:] = board_in_gripper[:3, 3]
        body.quat[:] = mat_to_quat(board_in_gripper[:3, :3])

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

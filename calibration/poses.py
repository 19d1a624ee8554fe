"""Arm poses for a calibration capture: the board in view of every camera, the TCP inside the workspace box,
the board's orientation varied, reached by the arm's own IK.

Hand-eye calibration is only determined when the motions between poses rotate about at least two different
axes (Tsai and Lenz); intrinsics need the board tilted in several directions. So each pose turns the board
away from the line of sight by a random tilt and a random roll, and the set is checked for both before use.
The joint offsets of the wrist are the hardest to see (the board sits a few cm from the TCP, so turning a wrist
joint looks much like mounting the board turned): of several reachable candidates per pose, the poses kept are
the ones that leave the worst-determined offset's variance smallest under the joint solve's own model, before
any image is taken. Over seeds that halved the wrist offsets' variance against as many random poses.
IK only places the board: the links behind it are checked against the cell's table, pedestal and floor (the
sim's collision model), so no pose puts the arm through the table. Visibility is judged with the cameras'
nominal poses and intrinsics from the arm spec (a real cell's cameras stand near where the spec puts them);
the capture drops any image the board is not found in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from calibration.joint_offsets import CameraModel, default_solved, offset_variances, pose_information
from calibration.sim_capture import spec_camera_pose, spec_intrinsics
from calibration.transforms import invert, make_transform, to_rvec
from robots.board import BoardMount, BoardSpec, board_centre, object_points
from robots.kinematics import ik
from robots.rotations import axis_angle_to_mat
from robots.sim.clearance import CLEARANCE, Clearance
from robots.spec import ArmSpec, CameraSpec


@dataclass(frozen=True)
class PoseGoals:
    count: int = 24
    candidates_per_pose: int = 3  # reachable poses drawn per pose kept; the most informative are kept
    max_tilt_deg: float = 35.0  # board normal away from the line of sight to the cameras
    max_roll_deg: float = 180.0  # board turned about its own normal, any way: turns the wrist joints
    image_margin: float = 0.06  # fraction of the image kept clear around the board
    above_table: float = 0.02  # m: the board's lowest corner above the table top
    clearance: float = CLEARANCE  # m: every link this far from the table, pedestal and floor (robots/sim/clearance.py)
    ik_iterations: int = 80  # a candidate IK has not reached by then is dropped: cheaper than insisting
    max_tries: int = 20000


def _look_rotation(forward: np.ndarray, roll: float) -> np.ndarray:
    """A rotation whose z axis is `forward` (the board seen from its front: z away from the viewer)."""
    z = forward / np.linalg.norm(forward)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    base = np.column_stack([x, y, z])
    return base @ axis_angle_to_mat(np.array([0.0, 0.0, roll]))


def board_in_view(
    board_pose: np.ndarray, board: BoardSpec, cameras: Sequence[CameraSpec], margin: float, min_cos: float = 0.5
) -> bool:
    """Every inner corner projects inside every camera's image, `margin` of it kept clear, and the board
    faces each camera at under 60°."""
    corners = object_points(board).astype(float)
    for cam in cameras:
        in_cam = invert(spec_camera_pose(cam)) @ board_pose
        if in_cam[2, 3] <= 0 or in_cam[:3, 2] @ (in_cam[:3, 3] / np.linalg.norm(in_cam[:3, 3])) < min_cos:
            return False
        rvec, tvec = to_rvec(in_cam)
        px = cv2.projectPoints(corners, rvec, tvec, spec_intrinsics(cam), None)[0].reshape(-1, 2)
        lo, hi = margin * np.array([cam.width, cam.height]), (1 - margin) * np.array([cam.width, cam.height])
        if np.any(px < lo) or np.any(px > hi):
            return False
    return True


def _plate_corners(board: BoardSpec) -> np.ndarray:
    """The four corners of the board's plate (homogeneous, board frame): the inner corners plus one square."""
    nx, ny = board.inner
    lo, hi = -board.square, np.array([nx, ny]) * board.square
    return np.array([[x, y, 0.0, 1.0] for x in (lo, hi[0]) for y in (lo, hi[1])])


def generate_poses(
    arm: ArmSpec,
    board: BoardSpec,
    mount: BoardMount,
    cameras: Sequence[CameraSpec],
    rng: np.random.Generator,
    goals: PoseGoals = PoseGoals(),
) -> list[np.ndarray]:
    """`goals.count` joint configurations, each reached by IK from home within the joint margins and with every
    link clear of the table, chosen from `goals.candidates_per_pose` times as many for how well they determine
    the joint offsets."""
    chain, box = arm.chain(), arm.limits.workspace
    low, high = np.array(box.low), np.array(box.high)
    margin = arm.limits.joint_margin
    eye = np.mean([c.pos for c in cameras], axis=0)
    table = float(arm.scene["table"]["height"])
    centre = board_centre(board)
    mount_inv = invert(mount.transform(board))
    plate = _plate_corners(board)
    cell = Clearance(arm, goals.clearance)
    poses: list[np.ndarray] = []
    wanted = goals.count * goals.candidates_per_pose
    for _ in range(goals.max_tries):
        if len(poses) == wanted:
            break
        tcp = rng.uniform(low, high)
        # First guess of the board centre: the TCP moved by the mount; the orientation follows the line of sight.
        tilt_axis = rng.normal(size=3)
        tilt = np.radians(goals.max_tilt_deg) * np.sqrt(rng.uniform())
        roll = np.radians(rng.uniform(-goals.max_roll_deg, goals.max_roll_deg))
        rot = axis_angle_to_mat(tilt * tilt_axis / np.linalg.norm(tilt_axis)) @ _look_rotation(tcp - eye, roll)
        board_pose = make_transform(rot, tcp) @ make_transform(np.eye(3), -centre)
        target = board_pose @ mount_inv  # the TCP pose that puts the board there
        board_pose = make_transform(board_pose[:3, :3], board_pose[:3, 3] + tcp - target[:3, 3])
        target = board_pose @ mount_inv
        if np.any(target[:3, 3] < low) or np.any(target[:3, 3] > high):
            continue
        if np.min((board_pose @ plate.T)[2]) < table + goals.above_table:
            continue
        if not board_in_view(board_pose, board, cameras, goals.image_margin):
            continue
        q, ok = ik(chain, target[:3, 3], target[:3, :3], arm.home, iterations=goals.ik_iterations, tolerance=1e-6)
        if ok and np.all(q > arm.joint_lower + margin) and np.all(q < arm.joint_upper - margin) and cell.clear(q):
            poses.append(q)
    if len(poses) < goals.count:
        raise RuntimeError(
            f"found {len(poses)} of {goals.count} reachable board poses in {goals.max_tries} tries: "
            "is the board too large for the cameras' view, or the mount out of the arm's reach?"
        )
    return most_informative(arm, board, mount, cameras, poses, goals.count)


def most_informative(
    arm: ArmSpec,
    board: BoardSpec,
    mount: BoardMount,
    cameras: Sequence[CameraSpec],
    candidates: Sequence[np.ndarray],
    count: int,
) -> list[np.ndarray]:
    """`count` of the candidates, picked one at a time, each the one that most lowers the largest variance of
    the solved joint offsets (greedy minimax design), the cameras and mount where the spec puts them."""
    chain = arm.chain()
    models = {c.name: CameraModel(spec_intrinsics(c), np.zeros(5), spec_camera_pose(c)) for c in cameras}
    points = object_points(board).astype(float)
    infos = [pose_information(chain, q, models, mount.transform(board), points) for q in candidates]
    n = len(default_solved(chain))
    total = 1e-9 * np.eye(infos[0].shape[0])  # a tiny prior: the first picks leave the problem undetermined
    chosen: list[int] = []
    for _ in range(count):
        left = [i for i in range(len(infos)) if i not in chosen]
        best = min(left, key=lambda i: offset_variances(total + infos[i], n).max())
        chosen.append(best)
        total = total + infos[best]
    return [candidates[i] for i in sorted(chosen)]


def handheld_poses(
    board: BoardSpec,
    cam: CameraSpec,
    rng: np.random.Generator,
    count: int = 30,
    distance: tuple[float, float] = (0.3, 0.9),
    max_tilt_deg: float = 50.0,
    margin: float = 0.04,
    above_z: float = -np.inf,
    max_tries: int = 5000,
) -> list[np.ndarray]:
    """Board poses (base frame) for an intrinsics capture of one camera, as a person holding the board makes
    them: near and far, tilted up to `max_tilt_deg`, turned any way, its centre anywhere in the image.
    Distance and tilt together are what separate the focal length from the board's distance. The whole plate
    stays above `above_z` (the table top), where nothing hides it."""
    k, cam_pose = spec_intrinsics(cam), spec_camera_pose(cam)
    plate = _plate_corners(board)
    k_inv = np.linalg.inv(k)
    poses: list[np.ndarray] = []
    for _ in range(max_tries):
        if len(poses) == count:
            break
        pixel = rng.uniform([0, 0], [cam.width, cam.height])
        ray = k_inv @ np.array([pixel[0], pixel[1], 1.0])
        centre_in_cam = ray / np.linalg.norm(ray) * rng.uniform(*distance)
        tilt_axis = np.array([*rng.normal(size=2), 0.0])
        tilt = np.radians(max_tilt_deg) * np.sqrt(rng.uniform())
        rot = axis_angle_to_mat(tilt * tilt_axis / np.linalg.norm(tilt_axis)) @ axis_angle_to_mat(
            np.array([0.0, 0.0, rng.uniform(-np.pi, np.pi)])
        )
        board_pose = cam_pose @ make_transform(rot, centre_in_cam) @ make_transform(np.eye(3), -board_centre(board))
        if np.min((board_pose @ plate.T)[2]) < above_z:
            continue
        if board_in_view(board_pose, board, [cam], margin, min_cos=np.cos(np.radians(max_tilt_deg + 5))):
            poses.append(board_pose)
    if len(poses) < count:
        raise RuntimeError(f"found {len(poses)} of {count} hand-held board poses in view of {cam.name}")
    return poses

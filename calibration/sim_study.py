"""A whole calibration run against the MuJoCo cell, with its ground truth: hand-held views for intrinsics, then
arm poses for hand-eye and joint offsets, each error measured against what the sim was set up with.

The tests and benchmarks/calibration_accuracy.py both call this, so the accuracy the benchmark reports over
many seeds is that of the very procedure the tests check on a few.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from calibration.board import detect
from calibration.handeye import View, calibrate_handeye
from calibration.intrinsics import calibrate_intrinsics
from calibration.joint_offsets import CameraModel, JointView, solve_joint_offsets
from calibration.poses import PoseGoals, generate_poses, handheld_poses
from calibration.sim_capture import CalibrationCell, add_noise, spec_intrinsics
from calibration.transforms import invert, make_transform, pose_error
from robots.board import DEFAULT_MOUNT, BoardSpec, parse_board
from robots.spec import ArmSpec, load_spec

BOARD = parse_board("checkerboard:5x4:0.05")  # 5x4 squares of 5 cm: whole in both 128x128 views of each cell
NOISE = 3.0  # grey levels, σ of the sensor noise added to every render
HANDHELD_VIEWS = 100  # per camera; about a quarter show the board too slanted or too far to be found whole
ARM_POSES = 36
HANDHELD_DISTANCE = (0.25, 0.7)  # m from the camera
ENCODER_ERROR = np.array([3.0, -4.0, 2.5, 5.0, -3.0, 4.0, -2.0]) * 1e-3  # rad, injected into the sim's joints


@dataclass(frozen=True)
class ArmCapture:
    """Views of the board on the gripper at generated poses, and the ground truth they were rendered from."""

    views: dict[str, dict[str, View]]  # camera -> pose name -> view (TCP from the encoders' angles)
    joint_views: list[JointView]
    truth_cameras: dict[str, np.ndarray]  # camera -> 4x4 in the base frame
    truth_target: np.ndarray  # 4x4, the board in the TCP frame


def _tcp(arm: ArmSpec, q: np.ndarray) -> np.ndarray:
    p, r = arm.chain().fk(q)
    return make_transform(r, p)


def handheld_intrinsics(
    arm: ArmSpec, rng: np.random.Generator, count: int = HANDHELD_VIEWS, board: BoardSpec = BOARD
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each camera calibrated from `count` hand-held views: camera -> (K, distortion)."""
    table_top = float(arm.scene["table"]["height"]) + 0.01
    out = {}
    with CalibrationCell(arm, board, handheld=True) as cell:
        for cam in arm.cameras:
            images = {}
            for i, pose in enumerate(handheld_poses(board, cam, rng, count, HANDHELD_DISTANCE, above_z=table_top)):
                cell.hold_board(pose)
                images[f"{i:03d}"] = add_noise(cell.render(cam.name), NOISE, rng)
            r = calibrate_intrinsics(board, images).result
            out[cam.name] = (r.camera_matrix, r.dist_coeffs)
    return out


def arm_capture(
    arm: ArmSpec,
    rng: np.random.Generator,
    poses: int = ARM_POSES,
    encoder_error: np.ndarray | None = None,
    board: BoardSpec = BOARD,
) -> ArmCapture:
    """The arm moved through `poses` generated poses with the board on its gripper, each camera's view kept
    where the board is found; the encoders read the angles commanded, the joints sit `encoder_error` off."""
    error = np.zeros(arm.dof) if encoder_error is None else np.asarray(encoder_error, float)
    qs = generate_poses(arm, board, DEFAULT_MOUNT, arm.cameras, rng, PoseGoals(count=poses))
    views: dict[str, dict[str, View]] = {c.name: {} for c in arm.cameras}
    joint_views = []
    with CalibrationCell(arm, board, encoder_error=error) as cell:
        for i, q in enumerate(qs):
            cell.set_joints(q)
            for cam in cell.cameras:
                det = detect(board, add_noise(cell.render(cam), NOISE, rng))
                if det is not None:
                    views[cam][f"{i:03d}"] = View(_tcp(arm, q), det)
                    joint_views.append(JointView(q, cam, det, f"{i:03d}"))
        cell.set_joints(arm.home)
        truth_target = invert(_tcp(arm, arm.home + error)) @ cell.board_pose()
        truth = {c: cell.camera_pose(c) for c in cell.cameras}
    return ArmCapture(views, joint_views, truth, truth_target)


@dataclass(frozen=True)
class Accuracy:
    """One seed's errors against the ground truth, the worst over the arm's cameras (or solved joints)."""

    focal_pct: float  # |f / f_true - 1| in %, fx and fy
    principal_px: float  # |c - c_true| in px, per axis
    handeye_mm: float  # camera position
    handeye_deg: float  # camera orientation
    offsets_mrad: float  # solved joints' offsets
    offsets: tuple[float, ...]  # mrad, per solved joint: estimate minus injected


def intrinsics_errors(arm: ArmSpec, intrinsics: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(worst focal-length error in %, worst principal-point error in px) over the cameras."""
    focal, principal = 0.0, 0.0
    for cam in arm.cameras:
        k, truth = intrinsics[cam.name][0], spec_intrinsics(cam)
        focal = max(focal, float(np.max(np.abs(np.diag(k)[:2] / np.diag(truth)[:2] - 1))) * 100)
        principal = max(principal, float(np.max(np.abs(k[:2, 2] - truth[:2, 2]))))
    return focal, principal


def handeye_errors(cap: ArmCapture, intrinsics: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(worst camera position error in mm, worst orientation error in deg) of eye-to-hand over the cameras."""
    mm, deg = 0.0, 0.0
    for cam, views in cap.views.items():
        result = calibrate_handeye(views, *intrinsics[cam])
        dt, dr = pose_error(result.camera, cap.truth_cameras[cam])
        mm, deg = max(mm, dt * 1e3), max(deg, float(np.degrees(dr)))
    return mm, deg


def offset_errors(
    arm: ArmSpec, cap: ArmCapture, intrinsics: Mapping[str, tuple[np.ndarray, np.ndarray]], injected: np.ndarray
) -> np.ndarray:
    """Estimated minus injected offset (rad) of each solved joint: hand-eye per camera starts the joint solve."""
    models, target = {}, None
    for cam, views in cap.views.items():
        k, dist = intrinsics[cam]
        he = calibrate_handeye(views, k, dist)  # biased by the encoder error: the joint solve re-estimates it
        models[cam], target = CameraModel(k, dist, he.camera), he.target
    result = solve_joint_offsets(arm.chain(), cap.joint_views, models, target)
    return (result.offsets - injected)[list(result.solved)]


def study(arm_name: str, seed: int, poses: int = ARM_POSES, handheld: int = HANDHELD_VIEWS) -> Accuracy:
    """Every step of one seed's calibration against the sim's ground truth: intrinsics from hand-held views,
    hand-eye from an arm capture with exact encoders, joint offsets from one with ENCODER_ERROR injected."""
    arm = load_spec(arm_name)
    rng = np.random.default_rng(seed)
    intrinsics = handheld_intrinsics(arm, rng, handheld)
    focal, principal = intrinsics_errors(arm, intrinsics)
    mm, deg = handeye_errors(arm_capture(arm, rng, poses), intrinsics)
    error = offset_errors(arm, arm_capture(arm, rng, poses, ENCODER_ERROR), intrinsics, ENCODER_ERROR)
    return Accuracy(focal, principal, mm, deg, float(np.abs(error).max() * 1e3), tuple(float(e) * 1e3 for e in error))

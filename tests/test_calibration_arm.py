"""Hand-eye and joint offsets against the MuJoCo calibration cell's ground truth, and the refusals of pose
sets that cannot determine them. Intrinsics come from the hand-held capture, as in a real cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from calibration.board import detect, parse_board
from calibration.handeye import EYE_IN_HAND, HandEyeError, View, calibrate_handeye, motion_check
from calibration.intrinsics import calibrate_intrinsics
from calibration.joint_offsets import CameraModel, JointView, solve_joint_offsets
from calibration.poses import PoseGoals, generate_poses, handheld_poses
from calibration.sim_capture import DEFAULT_MOUNT, CalibrationCell, add_noise
from calibration.transforms import invert, make_transform, pose_error
from robots.rotations import axis_angle_to_mat
from robots.spec import load_spec

BOARD = parse_board("checkerboard:5x4:0.05")
NOISE = 3.0  # grey levels
ENCODER_ERROR = np.array([3.0, -4.0, 2.5, 5.0, -3.0, 4.0, -2.0]) * 1e-3  # rad, injected into the sim


@dataclass
class Capture:
    arm_name: str
    intrinsics: dict  # camera -> (K, dist)
    views: dict  # camera -> {name: View}
    joint_views: list
    truth_cameras: dict  # camera -> 4x4 in base
    truth_target: np.ndarray  # board in TCP


def _capture(arm_name: str, poses: int, encoder_error: np.ndarray, seed: int) -> Capture:
    arm = load_spec(arm_name)
    chain = arm.chain()
    rng = np.random.default_rng(seed)
    table_top = float(arm.scene["table"]["height"]) + 0.01
    intrinsics = {}
    with CalibrationCell(arm, BOARD, handheld=True) as cell:
        for cam in arm.cameras:
            images = {}
            for i, pose in enumerate(handheld_poses(BOARD, cam, rng, 100, (0.25, 0.7), above_z=table_top)):
                cell.hold_board(pose)
                images[f"{i:03d}"] = add_noise(cell.render(cam.name), NOISE, rng)
            r = calibrate_intrinsics(BOARD, images).result
            intrinsics[cam.name] = (r.camera_matrix, r.dist_coeffs)
    views = {c.name: {} for c in arm.cameras}
    joint_views = []
    qs = generate_poses(arm, BOARD, DEFAULT_MOUNT, arm.cameras, rng, PoseGoals(count=poses))
    with CalibrationCell(arm, BOARD, encoder_error=encoder_error) as cell:
        for i, q in enumerate(qs):
            cell.set_joints(q)
            tcp = make_transform(*reversed(chain.fk(q)))
            for cam in cell.cameras:
                det = detect(BOARD, add_noise(cell.render(cam), NOISE, rng))
                if det is not None:
                    views[cam][f"{i:03d}"] = View(tcp, det)
                    joint_views.append(JointView(q, cam, det))
        cell.set_joints(arm.home)
        truth_target = invert(make_transform(*reversed(chain.fk(arm.home + encoder_error)))) @ cell.board_pose()
        truth = {c: cell.camera_pose(c) for c in cell.cameras}
    return Capture(arm_name, intrinsics, views, joint_views, truth, truth_target)


@pytest.fixture(scope="module")
def sawyer_capture() -> Capture:
    return _capture("sawyer", 36, np.zeros(7), seed=3)


@pytest.mark.parametrize("camera", ["front_left", "front_right"])
def test_eye_to_hand_finds_the_camera_within_5_mm_and_half_a_degree(sawyer_capture, camera) -> None:
    k, dist = sawyer_capture.intrinsics[camera]
    result = calibrate_handeye(sawyer_capture.views[camera], k, dist)
    dt, dr = pose_error(result.camera, sawyer_capture.truth_cameras[camera])
    tt, tr = pose_error(result.target, sawyer_capture.truth_target)
    print(
        f"{camera}: camera {dt * 1e3:.2f} mm {np.degrees(dr):.3f}°, board {tt * 1e3:.2f} mm {np.degrees(tr):.3f}°; "
        f"kept {result.method}, spread {result.spread[0] * 1e3:.1f} mm {result.spread[1]:.2f}°, "
        f"held out {', '.join(f'{m} {s.held_out_px:.3f}' for m, s in result.scores.items())} px"
    )
    assert dt < 0.005 and np.degrees(dr) < 0.5
    assert tt < 0.005 and np.degrees(tr) < 0.5
    assert result.scores[result.method].held_out_px == min(s.held_out_px for s in result.scores.values())
    assert result.rms_px < 0.5


def test_eye_in_hand_is_the_same_solve_the_other_way_round(sawyer_capture) -> None:
    """Eye-in-hand solves G_i X C_i = const for the camera X in the gripper. The eye-to-hand views with each
    TCP pose inverted (G_i = TCP_i⁻¹) are such a problem exactly, whose X is the fixed camera's pose in the
    base and whose constant is the board in the TCP frame: known answers for the eye-in-hand path."""
    cam = "front_left"
    k, dist = sawyer_capture.intrinsics[cam]
    views = sawyer_capture.views[cam]
    flipped = {n: View(invert(v.tcp), v.detection) for n, v in views.items()}
    result = calibrate_handeye(flipped, k, dist, setup=EYE_IN_HAND)
    dt, dr = pose_error(result.camera, sawyer_capture.truth_cameras[cam])
    tt, tr = pose_error(result.target, sawyer_capture.truth_target)
    assert dt < 0.005 and np.degrees(dr) < 0.5 and tt < 0.005 and np.degrees(tr) < 0.5


def test_joint_offsets_injected_in_the_sim_are_recovered_within_half_a_milliradian() -> None:
    cap = _capture("sawyer", 36, ENCODER_ERROR, seed=4)
    arm = load_spec("sawyer")
    models, target = {}, None
    for cam, views in cap.views.items():
        k, dist = cap.intrinsics[cam]
        he = calibrate_handeye(views, k, dist)  # biased by the encoder error: the solve re-estimates it
        models[cam], target = CameraModel(k, dist, he.camera), he.target
    result = solve_joint_offsets(arm.chain(), cap.joint_views, models, target)
    solved = list(result.solved)
    error = (result.offsets - ENCODER_ERROR)[solved]
    print(
        f"offset errors {np.round(error * 1e3, 3)} mrad (σ {np.round(result.std * 1e3, 3)}), RMS "
        f"{result.rms_before_px:.3f} → {result.rms_px:.3f} px"
    )
    assert solved == [1, 2, 3, 4, 5]
    assert np.all(np.abs(error) < 0.5e-3)
    assert result.rms_px < result.rms_before_px


# ------------------------------------------------------------------------------------ degenerate pose sets


def _poses(rotvecs, translations) -> list[np.ndarray]:
    pairs = zip(rotvecs, translations, strict=True)
    return [make_transform(axis_angle_to_mat(np.asarray(r, float)), t) for r, t in pairs]


@pytest.mark.parametrize(
    "poses, says",
    [
        (_poses([[0, 0, 0]] * 8, np.random.default_rng(0).uniform(-0.1, 0.1, (8, 3))), "pure translations"),
        (_poses([[0.01 * i, 0, 0] for i in range(8)], np.zeros((8, 3))), "barely rotate"),
        (_poses([[0, 0, 0.1 * i] for i in range(8)], np.random.default_rng(1).uniform(-0.1, 0.1, (8, 3))), "same axis"),
    ],
)
def test_degenerate_pose_sets_are_refused_by_name(poses, says) -> None:
    with pytest.raises(HandEyeError, match=says):
        motion_check(poses)


def test_varied_rotations_pass_the_motion_check() -> None:
    rng = np.random.default_rng(2)
    largest, spread = motion_check(_poses(rng.normal(0, 0.4, (8, 3)), rng.uniform(-0.1, 0.1, (8, 3))))
    assert largest > 15 and spread > 0.15


def test_too_few_views_are_refused(sawyer_capture) -> None:
    views = dict(list(sawyer_capture.views["front_left"].items())[:4])
    with pytest.raises(HandEyeError, match="at least 6 poses"):
        calibrate_handeye(views, *sawyer_capture.intrinsics["front_left"])

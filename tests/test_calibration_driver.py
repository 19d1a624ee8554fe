"""pac-calibrate capture and check through the driver contract, as on a real cell: a lockstep `pac-sim` process
with the board on its gripper (`--board`), reached only through its sockets; the camera poses found from
that capture against the poses the spec renders from, a moved camera caught by check, no driver named; and the
hand-held capture (`--handheld N`, the arm not claimed) beside another session that waves the board on the arm,
as a person would wave it in front of a real cell's cameras.

The capture takes 12 poses, not the 36 of a real calibration, to keep the suite short; the bound is still
the issue's 5 mm and 0.5° (36 poses through the driver: under 0.5 mm and 0.05°, README).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from calibration import io
from calibration.board import detect
from calibration.cli import main as pac_calibrate
from calibration.driver_capture import CaptureSession
from calibration.handheld_capture import MIN_VIEW_CHANGE, CameraViews, offer, view_params
from calibration.poses import PoseGoals, generate_poses, handheld_poses
from calibration.sim_capture import CalibrationCell, spec_camera_pose, spec_intrinsics
from calibration.transforms import make_transform, pose_error
from robots.board import DEFAULT_MOUNT, parse_board
from robots.contract.client import DriverClient
from robots.contract.security import private_endpoint
from robots.rotations import axis_angle_to_mat
from robots.sim.driver import DriverConfig, SimDriver
from robots.sim.process import start_sim, stop_sim
from robots.spec import load_spec
from robots.tasks.driver import TaskSimDriver

BOARD = "checkerboard:5x4:0.05"
POSES = 12
ROBOT = "sawyer"
SAWYER = load_spec(ROBOT)


@pytest.fixture(scope="module")
def board_sim() -> Iterator[tuple[str, str]]:
    """A lockstep pac-sim with the board on the gripper, shared by the module's tests (pub, cmd)."""
    proc, pub, cmd = start_sim(ROBOT, "--lockstep", "--board", BOARD)
    try:
        yield pub, cmd
    finally:
        out = stop_sim(proc)
        assert proc.returncode == 0, out


@pytest.fixture(scope="module")
def capture(board_sim, tmp_path_factory) -> Path:
    """`pac-calibrate capture` through the driver, then hand-eye per camera with the spec's intrinsics."""
    pub, cmd = board_sim
    out = tmp_path_factory.mktemp("cal")
    argv = ["capture", "--robot", ROBOT, "--board", BOARD, "--out", str(out), "--poses", str(POSES)]
    assert pac_calibrate([*argv, "--pub", pub, "--cmd", cmd]) == 0
    for cam in SAWYER.cameras:
        intrinsics = out / f"{cam.name}.intrinsics.yaml"
        body = {"camera_matrix": spec_intrinsics(cam), "dist_coeffs": np.zeros(5)}
        io.write_result(intrinsics, io.INTRINSICS, ROBOT, body, camera=cam.name, board=BOARD, resolution=(128, 128))
        argv = ["handeye", "--poses", str(out / "poses.yaml"), "--images", str(out / "arm" / cam.name)]
        assert (
            pac_calibrate([*argv, "--intrinsics", str(intrinsics), "--out", str(out / f"{cam.name}.handeye.yaml")]) == 0
        )
    return out


def test_a_capture_through_the_driver_finds_the_cameras_within_5_mm_and_half_a_degree(capture) -> None:
    poses = yaml.safe_load((capture / "poses.yaml").read_text())
    assert poses["robot"] == ROBOT and poses["board"] == BOARD and poses["joints"] == list(SAWYER.joint_names)
    assert len(poses["poses"]) + len(poses["skipped"]) == POSES and len(poses["poses"]) >= POSES - 3
    for cam in SAWYER.cameras:
        assert sorted(p.stem for p in (capture / "arm" / cam.name).iterdir()) == [p["name"] for p in poses["poses"]]
        found = io.transform(io.read_result(capture / f"{cam.name}.handeye.yaml"), "camera_pose")
        mm, rad = pose_error(found, spec_camera_pose(cam))
        assert mm * 1e3 < 5.0 and np.degrees(rad) < 0.5, (cam.name, mm * 1e3, np.degrees(rad))


def test_check_through_the_driver_passes_and_catches_a_camera_turned_by_one_degree(capture, board_sim, capsys):
    pub, cmd = board_sim
    files = ["--intrinsics", *(str(p) for p in sorted(capture.glob("*.intrinsics.yaml")))]
    handeye = sorted(capture.glob("*.handeye.yaml"))
    check = ["check", "--robot", ROBOT, "--pub", pub, "--cmd", cmd, *files, "--handeye"]
    assert pac_calibrate([*check, *map(str, handeye)]) == 0
    assert "front_left: reprojection error 0." in capsys.readouterr().out
    raw = yaml.safe_load(handeye[0].read_text())
    tilted = np.array(raw["camera_pose"]) @ make_transform(axis_angle_to_mat(np.radians([1.0, 0.0, 0.0])), [0, 0, 0])
    moved = capture / "moved.handeye.yaml"
    moved.write_text(yaml.safe_dump({**raw, "camera_pose": tilted.tolist()}, sort_keys=False))
    assert pac_calibrate([*check, str(moved), *map(str, handeye[1:])]) == 1
    errors = dict(line.split(": reprojection error ") for line in capsys.readouterr().out.splitlines())
    assert float(errors[raw["camera"]].split()[0]) > 1.0


def test_a_capture_with_no_driver_says_so_and_writes_nothing(tmp_path, capsys) -> None:
    nowhere, out = private_endpoint("nobody"), tmp_path / "cal"
    argv = ["capture", "--robot", ROBOT, "--out", str(out), "--poses", "6", "--pub", nowhere, "--cmd", nowhere]
    assert pac_calibrate([*argv, "--wait-s", "1"]) == 1
    assert f"no driver heartbeat on {nowhere}" in capsys.readouterr().err
    assert not out.exists()


def test_the_sim_renders_checkerboards_only_and_a_task_needs_its_objects() -> None:
    charuco = parse_board("charuco:5x4:0.05:0.03:DICT_4X4_50")
    with pytest.raises(ValueError, match="checkerboards only"):
        SimDriver(DriverConfig(lockstep=True, cameras=(), board=charuco))
    with pytest.raises(ValueError, match="a task needs its objects"):
        TaskSimDriver(DriverConfig(lockstep=True, cameras=(), board=parse_board(BOARD)), "stack")


@pytest.fixture(scope="module")
def wave_poses() -> list[np.ndarray]:
    return generate_poses(
        SAWYER, parse_board(BOARD), DEFAULT_MOUNT, SAWYER.cameras, np.random.default_rng(3), PoseGoals(count=8)
    )


@contextmanager
def hand(board_sim, poses: list[np.ndarray], hold: bool = False) -> Iterator[threading.Event]:
    """The person's hand, played by the arm: another session, in a thread, claims the arm and takes the board on its
    gripper through `poses` over and over (`hold`: to the first it reaches, and keeps it still there) until the
    block ends; yields an event set once the arm has reached a pose."""
    stop, reached, errors = threading.Event(), threading.Event(), []

    def wave() -> None:
        try:
            with CaptureSession(DriverClient(*board_sim, source="hand"), SAWYER) as arm:
                while not stop.is_set():
                    for i, unreachable in arm.tour(poses):
                        if unreachable is None:
                            reached.set()
                        while hold and unreachable is None and not stop.is_set():
                            arm.move_to(poses[i])  # there already: commands it every period until still again
                        if stop.is_set():
                            break
        except BaseException as err:  # failed in the test, after the thread ends
            errors.append(err)
            reached.set()

    thread = threading.Thread(target=wave, daemon=True)
    thread.start()
    try:
        yield reached
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive() and not errors, errors


def handheld(board_sim, out: Path, count: int, timeout_s: float) -> int:
    pub, cmd = board_sim
    argv = ["capture", "--robot", ROBOT, "--board", BOARD, "--out", str(out), "--handheld", str(count)]
    return pac_calibrate([*argv, "--timeout-s", str(timeout_s), "--pub", pub, "--cmd", cmd])


def test_a_handheld_capture_keeps_sharp_distinct_views_of_a_waved_board_and_intrinsics_reads_them(
    board_sim, wave_poses, tmp_path, capsys
) -> None:
    board, out, count = parse_board(BOARD), tmp_path / "cal", 12
    with hand(board_sim, wave_poses):
        assert handheld(board_sim, out, count, timeout_s=60) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    not_found = [int(n) for n in re.findall(r"the board was not found whole in (\d+)", printed)]
    assert len(not_found) == len(SAWYER.cameras) and sum(not_found) > 0  # frames on the way between poses
    for cam in SAWYER.cameras:
        files = sorted((out / "handheld" / cam.name).iterdir())
        assert [p.name for p in files] == [f"{i:03d}.png" for i in range(count)]
        views = []
        for path in files:  # every view kept shows the whole board, and each differs from the others
            image = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
            det = detect(board, image)
            assert det is not None, path
            views.append(view_params(board, det, image.shape[1], image.shape[0]))
        change = [np.abs(a - b).sum() for i, a in enumerate(views) for b in views[:i]]
        assert min(change) > MIN_VIEW_CHANGE, (cam.name, min(change))
        assert f"{cam.name}: view {count}/{count} kept" in printed
        result = out / f"{cam.name}.intrinsics.yaml"
        argv = ["intrinsics", "--images", str(out / "handheld" / cam.name), "--board", BOARD, "--robot", ROBOT]
        assert pac_calibrate([*argv, "--camera", cam.name, "--out", str(result)]) == 0, capsys.readouterr().err
        found = io.read_result(result).data
        k, truth = np.array(found["camera_matrix"]), spec_intrinsics(cam)
        assert len(found["per_image_px"]) == count and found["rms_px"] < 0.3, found["per_image_px"]
        # 12 views of a board the arm carries over a small part of the image: focal lengths 0.3-11 % off over
        # runs, not the 1 % of the sim study's hand-held views (README), hence only the model's order here
        assert np.allclose(np.diag(k)[:2], np.diag(truth)[:2], rtol=0.2), (cam.name, k)


def test_a_blurred_board_is_passed_over_and_the_same_board_sharp_is_kept() -> None:
    board, cam = parse_board(BOARD), SAWYER.cameras[0]
    pose = handheld_poses(board, cam, np.random.default_rng(0), 1, (0.35, 0.4), max_tilt_deg=20)[0]
    with CalibrationCell(SAWYER, board, handheld=True) as cell:
        cell.hold_board(pose)
        sharp = cell.render(cam.name)
    views = CameraViews(cam.name, 2)
    assert offer(views, board, cv2.GaussianBlur(sharp, (0, 0), 1.2)) is None and views.blurred == 1
    assert "edges 1." in offer(views, board, sharp) and len(views.images) == 1


def test_a_still_board_gives_one_view_per_camera_and_a_timeout_names_them_and_writes_nothing(
    board_sim, wave_poses, tmp_path, capsys
) -> None:
    out = tmp_path / "cal"
    with hand(board_sim, wave_poses, hold=True) as reached:
        assert reached.wait(60)
        assert handheld(board_sim, out, 8, timeout_s=3) == 1
    captured = capsys.readouterr()
    for cam in SAWYER.cameras:
        assert f"{cam.name}: 1 of 8 views after 3 s: move the board through more of the image" in captured.err
    assert "nothing written" in captured.err and not out.exists()


def test_a_handheld_capture_refuses_too_few_views_and_a_folder_that_holds_images(tmp_path, capsys) -> None:
    nowhere, out = private_endpoint("nobody"), tmp_path / "cal"
    assert handheld((nowhere, nowhere), out, 5, timeout_s=1) == 1
    assert "--handheld 5: intrinsics need at least 8 views per camera" in capsys.readouterr().err
    (out / "handheld" / "front_left").mkdir(parents=True)
    (out / "handheld" / "front_left" / "000.png").write_bytes(b"")
    assert handheld((nowhere, nowhere), out, 8, timeout_s=1) == 1
    assert "front_left already holds images: move them away or give another --out" in capsys.readouterr().err

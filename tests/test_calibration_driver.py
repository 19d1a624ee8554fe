"""pac-calibrate capture and check through the driver contract, as on a real cell: a lockstep `pac-sim` process
with the board on its gripper (`--board`), reached only through its sockets; the camera poses found from
that capture against the poses the spec renders from, a moved camera caught by check, no driver named.

The capture takes 12 poses, not the 36 of a real calibration, to keep the suite short; the bound is still
the issue's 5 mm and 0.5° (36 poses through the driver: under 0.5 mm and 0.05°, README).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibration import io
from calibration.cli import main as pac_calibrate
from calibration.sim_capture import spec_camera_pose, spec_intrinsics
from calibration.transforms import make_transform, pose_error
from robots.board import parse_board
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

"""pac-run's calibration pre-flight: a table of cells (files named, present, fresh, at the model's resolution,
covering the model's cameras) and what it says; the result files written by calibration.io; the pac-calibrate
CLI's named errors with nothing written."""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from calibration import io
from calibration.cli import main as pac_calibrate
from policies.spec import observation_spec
from robots.spec import load_spec
from runtime.config import load_config
from runtime.preflight import PreflightFailed, check_calibration

NOW = _dt.datetime(2026, 12, 1, tzinfo=_dt.timezone.utc)
SAWYER = load_spec("sawyer")
OBS = observation_spec(SAWYER, ("front_left",))


def _write(tmp: Path, name: str, kind: str, camera: str = "", resolution=(128, 128), robot="sawyer", age_days=1.0):
    path = tmp / name
    io.write_result(path, kind, robot, {"camera_matrix": np.eye(3), "dist_coeffs": np.zeros(5)}, camera=camera,
                    resolution=resolution if camera else None)  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    raw["date"] = (NOW - _dt.timedelta(days=age_days)).isoformat()
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _config(files: list[str]):
    return replace(load_config(robot="sawyer"), calibration=tuple(files), calibration_max_age_days=30.0)


def _good(tmp: Path) -> list[str]:
    return [
        _write(tmp, "fl.intrinsics.yaml", io.INTRINSICS, "front_left"),
        _write(tmp, "fl.handeye.yaml", io.HANDEYE, "front_left"),
        _write(tmp, "joints.yaml", io.JOINT_OFFSETS),
    ]


def test_a_good_cell_passes_and_names_every_file_with_its_hash(tmp_path) -> None:
    files = _good(tmp_path)
    check, hashes = check_calibration(_config(files), OBS, NOW)
    assert set(hashes) == set(files) and all(len(h) == 64 for h in hashes.values())
    assert hashes[files[0]] == io.read_result(Path(files[0])).sha256
    assert "intrinsics front_left" in check.detail and "oldest 1.0 days" in check.detail


def test_no_files_named_is_the_sim() -> None:
    check, hashes = check_calibration(_config([]), OBS, NOW)
    assert "none configured" in check.detail and hashes == {}


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda tmp, files: files + [str(tmp / "gone.yaml")], "gone.yaml does not exist"),
        (lambda tmp, files: files[1:], "no intrinsics calibration of camera front_left"),
        (lambda tmp, files: files[:1] + files[2:], "no handeye calibration of camera front_left"),
        (
            lambda tmp, files: [_write(tmp, "old.yaml", io.INTRINSICS, "front_left", age_days=45)] + files[1:],
            "45 days old",
        ),
        (
            lambda tmp, files: [_write(tmp, "big.yaml", io.INTRINSICS, "front_left", (640, 480))] + files[1:],
            "made from 640x480 images of front_left; the model reads 128x128",
        ),
        (lambda tmp, files: files + [_write(tmp, "p.yaml", io.JOINT_OFFSETS, robot="panda")], "for a panda"),
        (lambda tmp, files: files + [str(Path(__file__))], "not YAML|not a pac-calibrate result"),
    ],
)
def test_bad_cells_are_refused_by_name(tmp_path, change, says) -> None:
    with pytest.raises(PreflightFailed, match=says):
        check_calibration(_config(change(tmp_path, _good(tmp_path))), OBS, NOW)


def test_a_single_file_name_in_the_config_reads_as_a_list(tmp_path) -> None:
    path = tmp_path / "cell.yaml"
    path.write_text("robot: sawyer\ncalibration: /etc/pac/sawyer-cell1.yaml\n")
    assert load_config(path).calibration == ("/etc/pac/sawyer-cell1.yaml",)
    path.write_text("robot: sawyer\ncalibration: [a.yaml, b.yaml]\n")
    assert load_config(path).calibration == ("a.yaml", "b.yaml")


def test_cli_errors_are_named_and_write_nothing(tmp_path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(10):
        cv2.imwrite(str(images / f"{i}.png"), np.full((128, 128, 3), 200, np.uint8))
    out = tmp_path / "out.yaml"
    args = ["intrinsics", "--images", str(images), "--board", "checkerboard:5x4:0.05", "--out", str(out)]
    assert pac_calibrate(args) == 1
    assert "no checkerboard:5x4:0.05 board found in any of the 10 images" in capsys.readouterr().err
    assert not out.exists()
    args = ["intrinsics", "--images", str(images), "--board", "checkerboard:5x4:0.05", "--robot", "sawyer",
            "--camera", "front_left", "--out", str(out)]  # fmt: skip
    cv2.imwrite(str(images / "odd.png"), np.zeros((64, 64, 3), np.uint8))
    assert pac_calibrate(args) == 1
    assert "1 image(s) are not 128x128: odd (64x64)" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert pac_calibrate(["intrinsics", "--images", str(images), "--board", "checkerboard:9x7:0.03", "--out", str(out)])
    assert "180°" in capsys.readouterr().err

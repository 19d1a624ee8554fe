"""pac-calibrate: capture board views, calibrate intrinsics, hand-eye and joint offsets, check a calibration.

    pac-calibrate capture --robot sawyer --sim --out DIR       board views: DIR/handheld/<cam>/, DIR/arm/<cam>/, poses
    pac-calibrate intrinsics --images DIR/handheld/front_left --board checkerboard:5x4:0.05 --robot sawyer \\
        --camera front_left --out front_left.intrinsics.yaml
    pac-calibrate handeye --poses DIR/poses.yaml --images DIR/arm/front_left --intrinsics front_left.intrinsics.yaml \\
        --out front_left.handeye.yaml
    pac-calibrate joints --poses DIR/poses.yaml --images DIR/arm --intrinsics *.intrinsics.yaml \\
        --handeye *.handeye.yaml --out joints.yaml
    pac-calibrate check --robot sawyer --sim --intrinsics ... --handeye ...

Each command writes its file only when the calibration succeeded; an error names what to recapture and
the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

from calibration import io
from calibration.board import detect
from calibration.handeye import EYE_IN_HAND, EYE_TO_HAND, HandEyeError, View, calibrate_handeye, predicted_board
from calibration.intrinsics import DEFAULT_DISTORTION, DISTORTION_FLAGS, IntrinsicsError, calibrate_intrinsics
from calibration.joint_offsets import CameraModel, JointOffsetError, JointView, solve_joint_offsets
from calibration.plots import residual_image
from calibration.poses import PoseGoals, generate_poses, handheld_poses
from calibration.sim_capture import CalibrationCell, add_noise
from calibration.transforms import make_transform, to_rvec
from robots.board import DEFAULT_MOUNT, BoardError, parse_board
from robots.spec import SpecError, load_spec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
POSES_FILE = "poses.yaml"
CHECK_LIMIT_PX = 1.0  # pac-calibrate check fails above this RMS reprojection error


class CalibrationFailed(RuntimeError):
    pass


def read_images(directory: Path) -> dict[str, np.ndarray]:
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationFailed(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_COLOR_RGB) for p in files}


def _tcp(chain, q) -> np.ndarray:
    p, r = chain.fk(np.asarray(q, float))
    return make_transform(r, p)


def cmd_capture(args: argparse.Namespace) -> int:
    """Sim capture: hand-held views for intrinsics and arm poses for hand-eye and joints, with the poses file."""
    if not args.sim:
        raise CalibrationFailed(
            "capture from a real driver is not built yet: capture with --sim, or save frames of each camera "
            "and the joint angles at each pose into the same layout (see the README)"
        )
    arm, board = load_spec(args.robot), parse_board(args.board)
    rng = np.random.default_rng(args.seed)
    error = np.asarray(args.inject_offsets_mrad or [0.0] * arm.dof, float) * 1e-3
    if error.size != arm.dof:
        raise CalibrationFailed(f"--inject-offsets-mrad needs {arm.dof} values for the {arm.name}")
    out = Path(args.out)
    table_top = float(arm.scene["table"]["height"]) + 0.01
    with CalibrationCell(arm, board, handheld=True) as cell:
        for cam in arm.cameras:
            (out / "handheld" / cam.name).mkdir(parents=True, exist_ok=True)
            for i, pose in enumerate(handheld_poses(board, cam, rng, args.handheld, (0.25, 0.7), above_z=table_top)):
                cell.hold_board(pose)
                image = add_noise(cell.render(cam.name), args.noise, rng)
                cv2.imwrite(str(out / "handheld" / cam.name / f"{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    qs = generate_poses(arm, board, DEFAULT_MOUNT, arm.cameras, rng, PoseGoals(count=args.poses))
    entries = []
    with CalibrationCell(arm, board, encoder_error=error) as cell:
        for i, q in enumerate(qs):
            cell.set_joints(q)
            for cam in cell.cameras:
                (out / "arm" / cam).mkdir(parents=True, exist_ok=True)
                image = add_noise(cell.render(cam), args.noise, rng)
                cv2.imwrite(str(out / "arm" / cam / f"{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            entries.append({"name": f"{i:03d}", "q": [float(x) for x in q]})
    record = {"robot": arm.name, "board": board.text, "joints": list(arm.joint_names), "poses": entries}
    (out / POSES_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
    print(f"captured {args.handheld} hand-held views and {len(entries)} arm poses per camera into {out}")
    return 0


def cmd_intrinsics(args: argparse.Namespace) -> int:
    board = parse_board(args.board)
    expected = None
    if args.robot and args.camera:
        cam = load_spec(args.robot).camera(args.camera)
        expected = (cam.width, cam.height)
    run = calibrate_intrinsics(board, read_images(args.images), distortion=args.distortion, expected_size=expected)
    r = run.result
    body = {
        "camera_matrix": r.camera_matrix,
        "distortion_model": r.distortion,
        "dist_coeffs": r.dist_coeffs,
        "rms_px": r.rms,
        "per_image_px": r.per_image,
        "rejected_px": r.rejected,
        "not_found": list(r.not_found),
    }
    digest = io.write_result(
        args.out, io.INTRINSICS, args.robot or "", body, camera=args.camera or "", board=board.text,
        resolution=(r.width, r.height),
    )  # fmt: skip
    png = args.png or Path(args.out).with_suffix(".png")
    cv2.imwrite(str(png), residual_image(run))
    k = r.camera_matrix
    print(
        f"{args.out}: fx {k[0, 0]:.2f} fy {k[1, 1]:.2f} cx {k[0, 2]:.2f} cy {k[1, 2]:.2f} px, RMS {r.rms:.3f} px over "
        f"{len(r.per_image)} images ({len(r.rejected)} outliers dropped, board not found in {len(r.not_found)}); "
        f"residuals in {png}; sha256 {digest[:12]}"
    )
    return 0


def _poses(path: Path) -> dict:
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or "poses" not in raw:
        raise CalibrationFailed(f"{path}: not a poses file (pac-calibrate capture writes one)")
    return raw


def _views(poses: dict, images: Path, board, chain) -> tuple[dict[str, View], dict[str, np.ndarray]]:
    found = read_images(images)
    views, qs = {}, {}
    for entry in poses["poses"]:
        name = str(entry["name"])
        if name in found:
            det = detect(board, found[name])
            if det is not None:
                views[name] = View(_tcp(chain, entry["q"]), det)
                qs[name] = np.asarray(entry["q"], float)
    return views, qs


def cmd_handeye(args: argparse.Namespace) -> int:
    poses = _poses(args.poses)
    intr = io.read_result(args.intrinsics)
    arm, board = load_spec(poses["robot"]), parse_board(intr.data["board"])
    views, _ = _views(poses, args.images, board, arm.chain())
    k, dist = io.camera_matrix(intr)
    h = calibrate_handeye(views, k, dist, setup=args.setup)
    body = {
        "setup": h.setup,
        "camera_pose": h.camera,  # camera (OpenCV axes) in the base frame, or in the TCP frame (eye-in-hand)
        "target_pose": h.target,
        "method": h.method,
        "methods": {m: vars(s) for m, s in h.scores.items()},
        "spread_m_deg": list(h.spread),
        "rms_px": h.rms_px,
        "per_view_px": h.per_view_px,
        "rejected_px": h.rejected,
        "intrinsics_sha256": intr.sha256,
    }
    digest = io.write_result(
        args.out, io.HANDEYE, arm.name, body, camera=intr.camera, board=board.text, resolution=intr.resolution
    )
    print(
        f"{args.out}: {h.setup} by {h.method}, RMS {h.rms_px:.3f} px over {len(h.per_view_px)} views "
        f"({len(h.rejected)} outliers dropped); methods spread "
        f"{h.spread[0] * 1e3:.1f} mm / {h.spread[1]:.2f}°; sha256 {digest[:12]}"
    )
    return 0


def _camera_models(intrinsics: list[Path], handeye: list[Path]) -> tuple[dict[str, CameraModel], np.ndarray]:
    intr = {r.camera: r for r in map(io.read_result, intrinsics)}
    models, target = {}, None
    for he in map(io.read_result, handeye):
        if he.camera not in intr:
            raise CalibrationFailed(f"{he.path} is for camera {he.camera!r}, with no intrinsics file given")
        k, dist = io.camera_matrix(intr[he.camera])
        models[he.camera] = CameraModel(k, dist, io.transform(he, "camera_pose"))
        target = io.transform(he, "target_pose")
    if target is None:
        raise CalibrationFailed("give at least one --handeye file")
    return models, target


def cmd_joints(args: argparse.Namespace) -> int:
    poses = _poses(args.poses)
    arm, board = load_spec(poses["robot"]), parse_board(poses["board"])
    models, target = _camera_models(args.intrinsics, args.handeye)
    views = []
    for cam in models:
        found, qs = _views(poses, Path(args.images) / cam, board, arm.chain())
        views += [JointView(qs[n], cam, v.detection, n) for n, v in found.items()]
    r = solve_joint_offsets(arm.chain(), views, models, target)
    body = {
        "offsets_rad": dict(zip(arm.joint_names, map(float, r.offsets), strict=True)),
        "solved": [arm.joint_names[i] for i in r.solved],
        "std_rad": dict(zip([arm.joint_names[i] for i in r.solved], map(float, r.std), strict=True)),
        "convention": "true angle = encoder angle + offset; the first and last joints are held at 0 (gauge)",
        "rms_before_px": r.rms_before_px,
        "rms_px": r.rms_px,
        "rejected_px": r.rejected,
    }
    digest = io.write_result(args.out, io.JOINT_OFFSETS, arm.name, body, board=board.text)
    shown = ", ".join(
        f"{arm.joint_names[i]} {r.offsets[i] * 1e3:+.2f}±{s * 1e3:.2f}" for i, s in zip(r.solved, r.std, strict=True)
    )
    print(
        f"{args.out}: offsets (mrad) {shown}; RMS {r.rms_before_px:.3f} → {r.rms_px:.3f} px "
        f"({len(r.rejected)} outlier views dropped); sha256 {digest[:12]}"
    )
    return 0


def check_error(cell: CalibrationCell, models: dict[str, CameraModel], target: np.ndarray, q: np.ndarray) -> dict:
    """RMS px between the board the calibration predicts at `q` and the one each camera sees."""
    cell.set_joints(q)
    tcp = _tcp(cell.arm.chain(), q)
    errors = {}
    for cam, m in models.items():
        det = detect(cell.board, cell.render(cam))
        if det is None:
            errors[cam] = float("inf")
            continue
        board = predicted_board(m.pose, target, tcp, EYE_TO_HAND)
        proj = cv2.projectPoints(det.object_points, *to_rvec(board), m.k, m.dist)[0].reshape(-1, 2)
        errors[cam] = float(np.sqrt(np.mean(np.sum((proj - det.image_points) ** 2, axis=1))))
    return errors


def cmd_check(args: argparse.Namespace) -> int:
    if not args.sim:
        raise CalibrationFailed("check against a real driver is not built yet: use --sim")
    arm = load_spec(args.robot)
    models, target = _camera_models(args.intrinsics, args.handeye)
    board = parse_board(io.read_result(args.handeye[0]).data["board"])
    q = generate_poses(arm, board, DEFAULT_MOUNT, arm.cameras, np.random.default_rng(args.seed), PoseGoals(count=1))[0]
    with CalibrationCell(arm, board) as cell:
        errors = check_error(cell, models, target, q)
    worst = max(errors.values())
    for cam, e in errors.items():
        print(f"{cam}: reprojection error {e:.3f} px (limit {args.limit_px} px)")
    return 0 if worst <= args.limit_px else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pac-calibrate", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="board views and poses (sim)")
    c.add_argument("--robot", required=True)
    c.add_argument("--sim", action="store_true")
    c.add_argument("--board", default="checkerboard:5x4:0.05")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--poses", type=int, default=36)
    c.add_argument("--handheld", type=int, default=100, help="hand-held views per camera, for intrinsics")
    c.add_argument("--noise", type=float, default=3.0, help="sim image noise, grey levels")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--inject-offsets-mrad", type=float, nargs="+", help="sim: encoder errors to recover")
    c.set_defaults(run=cmd_capture)
    i = sub.add_parser("intrinsics", help="camera matrix and distortion from board images")
    i.add_argument("--images", type=Path, required=True)
    i.add_argument("--board", required=True)
    i.add_argument("--robot", default="")
    i.add_argument("--camera", default="")
    i.add_argument("--distortion", default=DEFAULT_DISTORTION, choices=list(DISTORTION_FLAGS))
    i.add_argument("--out", type=Path, required=True)
    i.add_argument("--png", type=Path)
    i.set_defaults(run=cmd_intrinsics)
    h = sub.add_parser("handeye", help="camera pose from arm poses and board views")
    h.add_argument("--poses", type=Path, required=True)
    h.add_argument("--images", type=Path, required=True)
    h.add_argument("--intrinsics", type=Path, required=True)
    h.add_argument("--setup", default=EYE_TO_HAND, choices=[EYE_TO_HAND, EYE_IN_HAND])
    h.add_argument("--out", type=Path, required=True)
    h.set_defaults(run=cmd_handeye)
    j = sub.add_parser("joints", help="joint offsets from the same views, through the FK")
    j.add_argument("--poses", type=Path, required=True)
    j.add_argument("--images", type=Path, required=True, help="the capture's arm/ directory (one folder per camera)")
    j.add_argument("--intrinsics", type=Path, nargs="+", required=True)
    j.add_argument("--handeye", type=Path, nargs="+", required=True)
    j.add_argument("--out", type=Path, required=True)
    j.set_defaults(run=cmd_joints)
    k = sub.add_parser("check", help="current reprojection error at one pose")
    k.add_argument("--robot", required=True)
    k.add_argument("--sim", action="store_true")
    k.add_argument("--intrinsics", type=Path, nargs="+", required=True)
    k.add_argument("--handeye", type=Path, nargs="+", required=True)
    k.add_argument("--limit-px", type=float, default=CHECK_LIMIT_PX)
    k.add_argument("--seed", type=int, default=7)
    k.set_defaults(run=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (
        CalibrationFailed, BoardError, IntrinsicsError, HandEyeError, JointOffsetError, io.CalibrationFileError,
        SpecError, KeyError, OSError,
    ) as exc:  # fmt: skip
        print(f"pac-calibrate {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

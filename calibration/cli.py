"""pac-calibrate: capture board views, calibrate intrinsics, hand-eye and joint offsets, check a calibration.

    pac-calibrate capture --robot sawyer --sim --out DIR       board views: DIR/handheld/<cam>/, DIR/arm/<cam>/, poses
    pac-calibrate capture --robot sawyer --out DIR             the same arm views through a running driver
    pac-calibrate capture --robot sawyer --handheld 100 --out DIR   DIR/handheld/<cam>/ from a running driver's
                                                               cameras while a person moves the board (arm still)
    pac-calibrate intrinsics --images DIR/handheld/front_left --board checkerboard:5x4:0.05 --robot sawyer \\
        --camera front_left --out front_left.intrinsics.yaml
    pac-calibrate handeye --poses DIR/poses.yaml --images DIR/arm/front_left --intrinsics front_left.intrinsics.yaml \\
        --out front_left.handeye.yaml
    pac-calibrate joints --poses DIR/poses.yaml --images DIR/arm --intrinsics *.intrinsics.yaml \\
        --handeye *.handeye.yaml --out joints.yaml
    pac-calibrate check --robot sawyer [--sim] --intrinsics ... --handeye ...

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

from calibration import io, sim_study
from calibration.board import detect
from calibration.driver_capture import CaptureError, CaptureSession, Motion, Unreachable
from calibration.handeye import EYE_IN_HAND, EYE_TO_HAND, HandEyeError, View, calibrate_handeye, predicted_board
from calibration.handheld_capture import TIMEOUT_S, TooFewViews, capture_handheld
from calibration.intrinsics import (
    DEFAULT_DISTORTION,
    DISTORTION_FLAGS,
    MIN_IMAGES,
    IntrinsicsError,
    calibrate_intrinsics,
)
from calibration.joint_offsets import CameraModel, JointOffsetError, JointView, solve_joint_offsets
from calibration.plots import residual_image
from calibration.poses import PoseGoals, generate_poses, handheld_poses
from calibration.sim_capture import CalibrationCell, add_noise
from calibration.transforms import make_transform, to_rvec
from robots.board import DEFAULT_MOUNT, BoardError, parse_board
from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.security import CLIENT_KEY_NAME, NO_KEYS, LinkRefused, LinkSecurity, local_endpoints
from robots.spec import SpecError, load_spec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
POSES_FILE = "poses.yaml"
CHECK_LIMIT_PX = 1.0  # pac-calibrate check fails above this RMS reprojection error
CHECK_POSES = 12  # drawn for check; through a driver, the first with a clear way there and back is used


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


def save_image(path: Path, image: np.ndarray) -> None:
    """An RGB frame as the file read_images reads back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def pose_entry(name: str, q: np.ndarray) -> dict:
    return {"name": name, "q": [float(x) for x in q]}


def write_poses(out: Path, arm, board, entries: list[dict], **extra) -> None:
    record = {"robot": arm.name, "board": board.text, "joints": list(arm.joint_names), "poses": entries, **extra}
    (out / POSES_FILE).write_text(yaml.safe_dump(record, sort_keys=False))


def driver_client(args: argparse.Namespace) -> DriverClient:
    """A client of the driver the flags name: --pub/--cmd as pac-run takes them (default: this user's ipc
    sockets for the arm, where pac-sim and pac-driver serve by default); CURVE keys in pac-keys' layout."""
    local_pub, local_cmd = local_endpoints(args.robot)
    security = LinkSecurity.client_keys(args.keys, args.key_name) if args.keys else NO_KEYS
    if missing := security.missing_files():
        raise CalibrationFailed(f"--keys: {missing[0]} does not exist (pac-keys makes the keys)")
    return DriverClient(args.pub or local_pub, args.cmd or local_cmd, source="pac-calibrate", security=security)


def _session(args: argparse.Namespace, arm) -> CaptureSession:
    return CaptureSession(driver_client(args), arm, Motion(connect_timeout_s=args.wait_s))


def _arm_poses(arm, board, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return generate_poses(arm, board, DEFAULT_MOUNT, arm.cameras, rng, PoseGoals(count=count))


def cmd_capture(args: argparse.Namespace) -> int:
    """Board views and the poses file, in the sim (--sim) or through a running driver; through a driver, --handheld
    takes the hand-held views instead of the arm poses."""
    arm, board = load_spec(args.robot), parse_board(args.board)
    if not args.sim and (args.noise is not None or args.inject_offsets_mrad):
        raise CalibrationFailed("--noise and --inject-offsets-mrad are for --sim only")
    if args.timeout_s is not None and (args.sim or args.handheld is None):
        raise CalibrationFailed("--timeout-s is for a hand-held capture through a driver (--handheld N, no --sim)")
    rng = np.random.default_rng(args.seed)
    if args.sim:
        return capture_sim(args, arm, board, rng)
    if args.handheld is not None:
        return capture_handheld_through_driver(args, arm, board)
    return capture_through_driver(args, arm, board, rng)


def capture_sim(args: argparse.Namespace, arm, board, rng: np.random.Generator) -> int:
    """Hand-held views for intrinsics and the arm poses for hand-eye and joints, rendered in the calibration
    cell with image noise and any encoder error injected."""
    error = np.asarray(args.inject_offsets_mrad or [0.0] * arm.dof, float) * 1e-3
    if error.size != arm.dof:
        raise CalibrationFailed(f"--inject-offsets-mrad needs {arm.dof} values for the {arm.name}")
    out, noise = Path(args.out), sim_study.NOISE if args.noise is None else args.noise
    handheld = sim_study.HANDHELD_VIEWS if args.handheld is None else args.handheld
    table_top = float(arm.scene["table"]["height"]) + 0.01
    with CalibrationCell(arm, board, handheld=True) as cell:
        for cam in arm.cameras:
            (out / "handheld" / cam.name).mkdir(parents=True, exist_ok=True)
            for i, pose in enumerate(handheld_poses(board, cam, rng, handheld, (0.25, 0.7), above_z=table_top)):
                cell.hold_board(pose)
                save_image(out / "handheld" / cam.name / f"{i:03d}.png", add_noise(cell.render(cam.name), noise, rng))
    qs = _arm_poses(arm, board, rng, args.poses)
    entries = []
    with CalibrationCell(arm, board, encoder_error=error) as cell:
        for i, q in enumerate(qs):
            cell.set_joints(q)
            for cam in cell.cameras:
                save_image(out / "arm" / cam / f"{i:03d}.png", add_noise(cell.render(cam), noise, rng))
            entries.append(pose_entry(f"{i:03d}", q))
    write_poses(out, arm, board, entries)
    print(f"captured {handheld} hand-held views and {len(entries)} arm poses per camera into {out}")
    return 0


def capture_through_driver(args: argparse.Namespace, arm, board, rng: np.random.Generator) -> int:
    """The arm poses through the driver contract (calibration/driver_capture.py): the frames and the joints
    the arm reports at each pose it reached, written only once the capture is over. Hand-held views for
    intrinsics need a person holding the board, not the arm: a separate run with --handheld takes them."""
    qs = _arm_poses(arm, board, rng, args.poses)  # before the arm is claimed: its lease lasts while commands flow
    cameras = [c.name for c in arm.cameras]
    frames: dict[str, dict[str, np.ndarray]] = {}
    entries, skipped = [], {}
    with _session(args, arm) as session:
        for i, unreachable in session.tour(qs):
            name = f"{i:03d}"
            if unreachable is not None:
                skipped[name] = str(unreachable)
                print(f"pose {name} skipped: {unreachable}")
                continue
            frames[name], q = session.capture(cameras)
            entries.append(pose_entry(name, q))
        driver = session.client.pub_endpoint
    if not entries:
        raise CalibrationFailed(f"the arm reached none of the {len(qs)} poses; nothing written")
    out = Path(args.out)
    for name, views in frames.items():
        for cam, image in views.items():
            save_image(out / "arm" / cam / f"{name}.png", image)
    write_poses(out, arm, board, sorted(entries, key=lambda e: e["name"]), driver=driver, skipped=skipped)
    print(
        f"captured {len(entries)} of {len(qs)} arm poses per camera through the driver on {driver} into {out} "
        f"(joints as the arm reported them); the hand-held views for intrinsics: capture --handheld N"
    )
    return 0


def capture_handheld_through_driver(args: argparse.Namespace, arm, board) -> int:
    """Hand-held views for intrinsics, kept from the driver's camera topics while a person moves the board
    (calibration/handheld_capture.py; the arm is neither claimed nor moved), written as DIR/handheld/<cam>/NNN.png
    only once every camera has its count."""
    if args.handheld < MIN_IMAGES:
        raise CalibrationFailed(f"--handheld {args.handheld}: intrinsics need at least {MIN_IMAGES} views per camera")
    out = Path(args.out) / "handheld"
    dirs = {cam.name: out / cam.name for cam in arm.cameras}
    for d in dirs.values():  # refused before anyone waves the board: views of two captures would mix
        if d.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir()):
            raise CalibrationFailed(f"{d} already holds images: move them away or give another --out")
    client = driver_client(args)
    driver = client.pub_endpoint
    timeout_s = TIMEOUT_S if args.timeout_s is None else args.timeout_s
    views = capture_handheld(client, arm, board, args.handheld, timeout_s=timeout_s, connect_timeout_s=args.wait_s)
    for cam, images in views.items():
        for i, image in enumerate(images):
            save_image(dirs[cam] / f"{i:03d}.png", image)
    print(
        f"captured {args.handheld} hand-held views per camera from the driver on {driver} into {out}/<camera>/ "
        f"(the arm was not moved); calibrate each with pac-calibrate intrinsics --images {out}/<camera>"
    )
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


def check_error(board, chain, models: dict[str, CameraModel], target: np.ndarray, q: np.ndarray, images) -> dict:
    """RMS px between the board the calibration predicts at the reported joints `q` and the one each camera sees
    in `images` (camera -> RGB frame); inf where the board is not found."""
    tcp = _tcp(chain, q)
    errors = {}
    for cam, m in models.items():
        det = detect(board, images[cam])
        if det is None:
            errors[cam] = float("inf")
            continue
        predicted = predicted_board(m.pose, target, tcp, EYE_TO_HAND)
        proj = cv2.projectPoints(det.object_points, *to_rvec(predicted), m.k, m.dist)[0].reshape(-1, 2)
        errors[cam] = float(np.sqrt(np.mean(np.sum((proj - det.image_points) ** 2, axis=1))))
    return errors


def cmd_check(args: argparse.Namespace) -> int:
    """The board at one new pose, rendered (--sim) or captured through the driver, against the calibration."""
    arm = load_spec(args.robot)
    models, target = _camera_models(args.intrinsics, args.handeye)
    board = parse_board(io.read_result(args.handeye[0]).data["board"])
    qs = _arm_poses(arm, board, np.random.default_rng(args.seed), CHECK_POSES)
    if args.sim:
        with CalibrationCell(arm, board) as cell:
            q = qs[0]
            cell.set_joints(q)
            images = {cam: cell.render(cam) for cam in models}
    else:
        with _session(args, arm) as session:
            q = next((q for q in qs if session.round_trip(q)), None)
            if q is None:
                raise CalibrationFailed(f"no check pose of --seed {args.seed} has a clear way there and back")
            try:
                session.move_to(q)
            except Unreachable as err:
                raise CalibrationFailed(f"the check pose cannot be reached: {err}") from err
            images, q = session.capture(list(models))
    errors = check_error(board, arm.chain(), models, target, q, images)
    for cam, e in errors.items():
        print(f"{cam}: reprojection error {e:.3f} px (limit {args.limit_px} px)")
    return 0 if max(errors.values()) <= args.limit_px else 1


def _driver_flags(p: argparse.ArgumentParser) -> None:
    """How capture and check reach a running driver (without --sim)."""
    where = "(default: this user's ipc socket for the arm, where pac-sim and pac-driver serve by default)"
    p.add_argument("--pub", default=None, help=f"driver state endpoint, as pac-run's {where}")
    p.add_argument("--cmd", default=None, help=f"driver command endpoint, as pac-run's {where}")
    p.add_argument(
        "--keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="CURVE keys for a driver on another host: DIR/NAME.key_secret and the driver's DIR/server.key (pac-keys)",
    )
    p.add_argument("--key-name", default=CLIENT_KEY_NAME, metavar="NAME", help="this client's key pair in --keys")
    p.add_argument("--wait-s", type=float, default=Motion.connect_timeout_s, help="seconds to wait for the driver")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pac-calibrate", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="board views and poses: in the sim, or through a running driver")
    c.add_argument("--robot", required=True)
    c.add_argument("--sim", action="store_true", help="render in the calibration cell instead of using a driver")
    c.add_argument("--board", default=sim_study.BOARD.text)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--poses", type=int, default=sim_study.ARM_POSES)
    views, noise = sim_study.HANDHELD_VIEWS, sim_study.NOISE
    c.add_argument(
        "--handheld",
        type=int,
        default=None,
        metavar="N",
        help=f"hand-held views per camera: --sim renders N (default {views}) besides the arm poses; through a driver,\n"
        "N are kept from its cameras while a person moves the board (the arm is not moved; no arm poses)",
    )
    c.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        help=f"--handheld through a driver: give up, writing nothing, after this long (default {TIMEOUT_S:g})",
    )
    c.add_argument("--noise", type=float, default=None, help=f"sim: image noise, grey levels (default {noise})")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--inject-offsets-mrad", type=float, nargs="+", help="sim: encoder errors to recover")
    _driver_flags(c)
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
    k.add_argument("--sim", action="store_true", help="render in the calibration cell instead of using a driver")
    k.add_argument("--intrinsics", type=Path, nargs="+", required=True)
    k.add_argument("--handeye", type=Path, nargs="+", required=True)
    k.add_argument("--limit-px", type=float, default=CHECK_LIMIT_PX)
    k.add_argument("--seed", type=int, default=7, help="picks the check pose")
    _driver_flags(k)
    k.set_defaults(run=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (
        CalibrationFailed, BoardError, IntrinsicsError, HandEyeError, JointOffsetError, io.CalibrationFileError,
        SpecError, KeyError, OSError, DriverUnavailable, CaptureError, LinkRefused, TooFewViews,
    ) as exc:  # fmt: skip
        print(f"pac-calibrate {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The calibration board as a MuJoCo body: on the gripper at its mount (pac-sim --board, the calibration cell)
or hand-held (a mocap body in the world, for intrinsics views).

The board is built from geoms (a white plate and thin black squares), not a texture, so the rendered corners
lie exactly where `robots.board.object_points` says. It neither collides nor weighs on the arm (gravity
compensated, as a real arm is told its payload).
"""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import mujoco  # noqa: E402

from robots.board import CHECKERBOARD, DEFAULT_MOUNT, BoardMount, BoardSpec  # noqa: E402
from robots.rotations import make_transform, mat_to_quat, quat_to_mat  # noqa: E402
from robots.sim.mjcf import TCP_SITE  # noqa: E402
from robots.spec import ArmSpec  # noqa: E402

BOARD_BODY = "calibration_board"
SQUARE_HALF_THICKNESS = 2e-5  # m: thin, so the squares' sides never widen them when seen at a slant
PLATE_GAP = 2e-4  # m: the white plate's face behind the squares' face; far above the depth buffer's resolution
ANTIALIAS_SAMPLES = 4  # offscreen multisamples with a board: antialiased edges, as a real lens and sensor blur them


def add_board(spec: mujoco.MjSpec, board: BoardSpec, mount: BoardMount = DEFAULT_MOUNT, handheld: bool = False) -> None:
    """Add the board body to an arm's MjSpec (robots/sim/mjcf.py) before it is compiled: on the gripper,
    `mount` from the TCP site, or hand-held, a mocap body in the world. Renders are antialiased from then on."""
    if board.kind != CHECKERBOARD:
        raise ValueError(f"the sim renders checkerboards only, not {board.kind}")
    if handheld:
        body = spec.worldbody.add_body(name=BOARD_BODY, mocap=True)
    else:
        site = spec.site(TCP_SITE)
        in_gripper = make_transform(quat_to_mat(site.quat), site.pos) @ mount.transform(board)
        body = site.parent.add_body(name=BOARD_BODY, gravcomp=1.0)
        body.pos = in_gripper[:3, 3]
        body.quat = mat_to_quat(in_gripper[:3, :3])
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
    spec.visual.quality.offsamples = ANTIALIAS_SAMPLES


def cleared(spec: ArmSpec) -> ArmSpec:
    """The arm's cell cleared for calibration: the table without its objects, so nothing hides the board from a
    camera or stands in the arm's way."""
    return replace(spec, scene={**spec.scene, "objects": []})

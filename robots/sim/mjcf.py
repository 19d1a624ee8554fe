"""The project's own MuJoCo models of the arms, generated from the arm spec (no meshes, nothing downloaded).

Writing the MJCF from the same spec as the numpy kinematics keeps sim and driver math in agreement; the
scene is the RGB-Stacking cell: a table with red, green and blue cubes and two front cameras. Rendering is
kept cheap (no shadows, no multisampling) so two 128×128 cameras cost a few ms a frame on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from robots.rotations import mat_to_quat, quat_to_mat
from robots.spec import ArmSpec, CameraSpec

PHYSICS_DT = 0.002  # s; 25 substeps per 50 ms control period, 500 Hz interpolation
TCP_SITE = "tcp"
FINGER_JOINTS = ("finger_left", "finger_right")
ARM_COLLISION = 'contype="2" conaffinity="1"'  # arm links touch the scene, not each other
SCENE_COLLISION = 'contype="1" conaffinity="3"'


def _vec(values: Sequence[float]) -> str:
    return " ".join(f"{float(v):.7g}" for v in values)


def camera_xyaxes(cam: CameraSpec) -> np.ndarray:
    """MuJoCo's camera xyaxes for a camera at `pos` looking at `lookat` with the world z axis up."""
    forward = np.asarray(cam.lookat, dtype=float) - np.asarray(cam.pos, dtype=float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return np.concatenate([x, y])


def _link_geom(joint, rgba: str) -> str:
    if joint.capsule is not None:
        cap = joint.capsule
        fromto = cap.get("fromto") or [0, 0, cap["z"][0], 0, 0, cap["z"][1]]
        shape = f'type="capsule" size="{cap["radius"]}" fromto="{_vec(fromto)}"'
    else:
        cyl = joint.cylinder
        shape = f'type="cylinder" size="{cyl["radius"]} {cyl["half_length"]}"'
    return f'<geom {shape} mass="{joint.mass}" rgba="{rgba}" {ARM_COLLISION}/>'


def _gripper_xml(spec: ArmSpec) -> str:
    g = spec.gripper
    flange_rot = quat_to_mat(spec.flange["quat"])
    quat = mat_to_quat(flange_rot @ quat_to_mat(g.quat))
    half_len = g.finger_length / 2
    fingers = []
    for name, side in zip(FINGER_JOINTS, (1, -1), strict=True):
        fingers.append(
            f'<body name="{name}" pos="0 0 {g.body_length}" gravcomp="1">'
            f'<joint name="{name}" type="slide" axis="0 {side} 0" range="{_vec(g.finger_range)}" damping="2"/>'
            f'<geom type="box" size="0.01 0.006 {half_len}" pos="0 {side * 0.006} {half_len}"'
            f' mass="{g.finger_mass}" friction="1.5 0.01 0.001" condim="4" rgba="0.2 0.2 0.2 1"'
            f" {ARM_COLLISION}/></body>"
        )
    return (
        f'<body name="gripper" pos="{_vec(spec.flange["pos"])}" quat="{_vec(quat)}" gravcomp="1">'
        f'<geom type="box" size="0.03 0.05 {g.body_length / 2}" pos="0 0 {g.body_length / 2}" mass="{g.mass}"'
        f' rgba="0.3 0.3 0.3 1" {ARM_COLLISION}/>'
        f'<site name="{TCP_SITE}" pos="0 0 {g.tcp_z}" size="0.005" rgba="1 1 0 1"/>' + "".join(fingers) + "</body>"
    )


def _arm_xml(spec: ArmSpec) -> str:
    """Nested bodies of the chain; the gripper hangs from the last one."""
    colors = ("0.75 0.1 0.1 1", "0.85 0.85 0.85 1") if spec.name == "sawyer" else ("0.95 0.95 0.95 1",) * 2
    opening = []
    for i, j in enumerate(spec.joints):
        opening.append(
            f'<body name="{j.body}" pos="{_vec(j.pos)}" quat="{_vec(j.quat)}" gravcomp="1">'
            f'<joint name="{j.joint}" axis="0 0 1" range="{_vec(j.range)}" damping="{j.damping}"'
            f' armature="{j.armature}" frictionloss="{j.frictionloss}"/>' + _link_geom(j, colors[i % 2])
        )
    base = spec.base
    base_geom = (
        f'<geom type="cylinder" size="{base["cylinder"]["radius"]} {base["cylinder"]["half_length"]}"'
        f' pos="0 0 {base["cylinder"]["z"]}" mass="{base["mass"]}" rgba="0.2 0.2 0.2 1" {ARM_COLLISION}/>'
    )
    return f'<body name="base">{base_geom}' + "".join(opening) + _gripper_xml(spec) + "</body>" * (spec.dof + 1)


def _scene_xml(spec: ArmSpec) -> str:
    table = spec.scene["table"]
    half = np.asarray(table["size"], dtype=float) / 2
    top = float(table["height"])
    parts = [
        '<light name="sun" directional="true" pos="0 0 3" dir="0.3 0.2 -1" castshadow="false" diffuse="0.8 0.8 0.8"/>',
        f'<geom name="floor" type="plane" size="3 3 0.1" pos="0 0 {top - 0.75}" rgba="0.45 0.45 0.5 1"'
        f" {SCENE_COLLISION}/>",
        f'<geom name="pedestal" type="cylinder" size="0.1 {(0.75 - top) / 2}" pos="0 0 {(top - 0.75) / 2}"'
        f' rgba="0.25 0.25 0.28 1" {SCENE_COLLISION}/>',
        f'<geom name="table" type="box" size="{half[0]} {half[1]} 0.025" pos="{table["center"][0]}'
        f' {table["center"][1]} {top - 0.025}" rgba="0.6 0.5 0.4 1" {SCENE_COLLISION}/>',
    ]
    for obj in spec.scene["objects"]:
        s = float(obj["size"])
        parts.append(
            f'<body name="{obj["name"]}" pos="{obj["pos"][0]} {obj["pos"][1]} {top + s}">'
            f'<freejoint name="{obj["name"]}"/>'
            f'<geom type="box" size="{s} {s} {s}" mass="0.08" rgba="{_vec(obj["rgba"])}" friction="1.2 0.01 0.001"'
            f' condim="4" {SCENE_COLLISION}/></body>'
        )
    return "".join(parts)


def _cameras_xml(spec: ArmSpec, cameras: Sequence[str]) -> str:
    out = []
    for name in cameras:
        cam = spec.camera(name)
        out.append(
            f"<camera name={quoteattr(cam.name)} pos={quoteattr(_vec(cam.pos))}"
            f" xyaxes={quoteattr(_vec(camera_xyaxes(cam)))} fovy={quoteattr(str(cam.fovy))}/>"
        )
    return "".join(out)


def _actuators_xml(spec: ArmSpec) -> str:
    out = [
        f'<position name="{j.joint}" joint="{j.joint}" kp="{j.kp}" kv="{j.kv}" ctrlrange="{_vec(j.range)}"'
        f' forcerange="{-j.max_torque} {j.max_torque}"/>'
        for j in spec.joints
    ]
    g = spec.gripper
    out += [
        f'<position name="{f}" joint="{f}" kp="{g.kp}" kv="{g.kv}" ctrlrange="{_vec(g.finger_range)}"'
        f' forcerange="{-g.max_force} {g.max_force}"/>'
        for f in FINGER_JOINTS
    ]
    return "".join(out)


def build_mjcf(spec: ArmSpec, cameras: Sequence[str] | None = None, scene: bool = True) -> str:
    """MJCF text of the arm, its gripper and (unless scene=False: the arm alone, in free space) the stacking
    scene; `cameras` defaults to all of the spec's."""
    names = [c.name for c in spec.cameras] if cameras is None else list(cameras)
    width = max([spec.camera(n).width for n in names] + [64])
    height = max([spec.camera(n).height for n in names] + [64])
    return (
        f'<mujoco model="{spec.name}_stacking">'
        '<compiler angle="radian" autolimits="true"/>'
        f'<option timestep="{PHYSICS_DT}" integrator="implicitfast"/>'
        f'<visual><quality shadowsize="0" offsamples="0"/><global offwidth="{width}" offheight="{height}"/></visual>'
        "<worldbody>"
        + (_scene_xml(spec) if scene else "")
        + _cameras_xml(spec, names)
        + _arm_xml(spec)
        + "</worldbody>"
        "<actuator>" + _actuators_xml(spec) + "</actuator>"
        "</mujoco>"
    )

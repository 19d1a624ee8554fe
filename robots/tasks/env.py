"""Gymnasium environments of the reference tasks, over the project's own sim (robots/sim/cell.py).

Observations are driver-shaped: the arm's named proprio fields from the state message a driver would
publish now, each camera's frame after the same JPEG encode and decode as on the wire, and the scene objects'
poses in the base frame from the `objects` message a driver would publish. Turning them into model inputs is
the policy side's job (policies/tokenizer/observation.py), exactly as in `pac-run`, so this package never
imports `policies`. Actions are the arm's Cartesian velocity action space, applied
through the driver's command servo for one control period per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from robots.contract.link import DEFAULT_LINK, DriverMode, Mode
from robots.contract.messages import POSE_SIZE, CommandMsg
from robots.contract.wire import decode
from robots.sim.cell import SimCell
from robots.sim.layout import object_layout
from robots.sim.physics import SimArm
from robots.spec import ArmSpec, load_spec
from robots.tasks.tasks import TASKS, Scene, shaped_reward, success

MODE = Mode.CARTESIAN_VELOCITY
LINK = DEFAULT_LINK  # the env steps and encodes frames as a driver on the default link does


def action_space(arm: ArmSpec) -> gym.spaces.Box:
    """The arm's Cartesian velocity action space (robots/specs/*.yaml), as float32."""
    space = arm.action_spaces[MODE]
    return gym.spaces.Box(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), dtype=np.float32)


def observation_space(arm: ArmSpec, cameras: Sequence[str]) -> gym.spaces.Dict:
    """{"proprio": the arm's named proprio fields (float64, as the state message carries them),
    "images": camera → (H, W, 3) uint8 RGB, "objects": scene object → (7,) float64 pose in the base frame}."""
    proprio = {f.name: gym.spaces.Box(-np.inf, np.inf, (f.size,), np.float64) for f in arm.proprio}
    images = {}
    for name in cameras:
        cam = arm.camera(name)  # raises for an unknown camera
        images[name] = gym.spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8)
    objects = {
        str(o["name"]): gym.spaces.Box(-np.inf, np.inf, (POSE_SIZE,), np.float64) for o in arm.scene.get("objects", ())
    }
    return gym.spaces.Dict(
        {"proprio": gym.spaces.Dict(proprio), "images": gym.spaces.Dict(images), "objects": gym.spaces.Dict(objects)}
    )


def scene_of(sim: SimArm, arm: ArmSpec) -> Scene:
    """The privileged scene the task rewards and experts read, from the sim's state: the one way to build it,
    shared by the environment and the task-aware driver (robots/tasks/driver.py)."""
    return Scene(
        tcp=sim.state().tcp_pose[:3].copy(),
        objects={o["name"]: sim.object_pose(o["name"])[:3].copy() for o in arm.scene["objects"]},
        half_size=float(arm.scene["objects"][0]["size"]),
        table_z=float(arm.scene["table"]["height"]),
        grasped=sim.grasped_object(),
    )


def _scene_info(scene: Scene) -> dict[str, Any]:
    """Privileged state for logging and scripted experts (plain types: Gymnasium compares infos)."""
    return {"tcp": scene.tcp, "objects": dict(scene.objects), "grasped": scene.grasped or ""}


class PacTaskEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": round(1 / LINK.period_s)}

    def __init__(
        self,
        robot: str = "sawyer",
        task: str = "stack",
        cameras: tuple[str, ...] | None = None,
        jpeg_quality: int = LINK.jpeg_quality,
        max_steps: int | None = None,
        render_images: bool = True,
    ) -> None:
        """`cameras` None: every camera of the arm. `render_images=False` leaves the frames black: for
        expert-only runs that never look at them."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        self.robot, self.task = robot, TASKS[task]
        self.arm = load_spec(robot)
        self.cameras = tuple(c.name for c in self.arm.cameras) if cameras is None else tuple(cameras)
        self.observation_space = observation_space(self.arm, self.cameras)
        self.action_space = action_space(self.arm)
        self.cell = SimCell(self.arm, self.cameras, LINK.period_s)
        self.jpeg_quality = jpeg_quality
        self.render_images = render_images
        self.max_steps = max_steps or self.task.episode_steps
        self.instruction = self.task.instruction
        self._t_ns = 0
        self._step = 0
        self._seq = 0

    # ----------------------------------------------------------------- helpers
    def scene(self) -> Scene:
        return scene_of(self.cell.sim, self.arm)

    def observation(self) -> dict[str, dict[str, np.ndarray]]:
        """What a driver would publish now: the state message's proprio fields, the decoded frames and the
        objects message's poses."""
        mode = DriverMode.LOCKSTEP.value
        state = self.cell.state_msg(self._seq, f"sim/{self.robot}", self._t_ns, mode, self._seq, self._step)
        proprio = {name: value.copy() for name, value in state.proprio_fields().items()}
        images = {}
        for camera in self.cameras:
            if self.render_images:
                image = self.cell.image_msg(camera, self._seq, state.source, self._t_ns, self._step)
                images[camera] = decode(image.to_frames(quality=self.jpeg_quality)).arrays["image"]
            else:
                images[camera] = np.zeros(self.observation_space["images"][camera].shape, np.uint8)
        objects = self.cell.objects_msg(self._seq, state.source, self._t_ns, self._step).as_dict()
        return {"proprio": proprio, "images": images, "objects": objects}

    # --------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t_ns, self._step = 0, 0
        self.cell.reset(self._t_ns, object_layout(self.arm, self.np_random))
        return self.observation(), {"instruction": self.instruction, **_scene_info(self.scene())}

    def step(self, action: np.ndarray):
        self._seq += 1
        action = np.asarray(action, dtype=np.float64)
        command = CommandMsg(self._seq, MODE, action, self._t_ns + 2 * LINK.period_ns, self._seq, obs_t_ns=self._t_ns)
        rejection = self.cell.submit(command, self._t_ns)
        self.cell.advance(self.cell.substeps, self._t_ns)
        self._t_ns += LINK.period_ns
        self._step += 1
        scene = self.scene()
        done = success(self.task.name, scene)
        info = {
            **_scene_info(scene),
            "success": done,
            "shaped_reward": shaped_reward(self.task.name, scene),
            "rejected": rejection.value if rejection is not None else "",
        }
        return self.observation(), float(done), done, self._step >= self.max_steps, info

    def render(self) -> np.ndarray:
        return self.cell.sim.render(self.cameras[0])

    def close(self) -> None:
        self.cell.close()

"""Gymnasium environments of the reference tasks, over the project's own sim (robots/sim/cell.py).

Observations are what `pac-run` would feed the policy for the same sim state: the state message a driver
publishes, the camera frames through the same JPEG encode and decode as on the wire, assembled by the
one ObservationTokenizer. Actions are the arm's Cartesian velocity action space, applied through the
driver's command servo for one control period per step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policies.spec import action_spec, observation_spec
from policies.tokenizer.language import InstructionTokenizer
from policies.tokenizer.observation import Observation, ObservationTokenizer
from robots.contract.messages import CommandMsg
from robots.contract.wire import decode
from robots.sim.cell import SimCell
from robots.spec import load_spec
from robots.tasks.layout import object_layout
from robots.tasks.tasks import TASKS, Scene, shaped_reward, success

PERIOD_S = 0.05
MODE = "cartesian_velocity"


def _scene_info(scene: Scene) -> dict[str, Any]:
    """Privileged state for logging and scripted experts (plain types: Gymnasium compares infos)."""
    return {"tcp": scene.tcp, "objects": dict(scene.objects), "grasped": scene.grasped or ""}


class PacTaskEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        robot: str = "sawyer",
        task: str = "stack",
        cameras: tuple[str, ...] | None = None,
        jpeg_quality: int = 90,
        max_steps: int | None = None,
        render_images: bool = True,
    ) -> None:
        """`render_images=False` leaves the images black: for expert-only runs that never look at them."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        self.robot, self.task = robot, TASKS[task]
        self.arm = load_spec(robot)
        self.obs_spec = observation_spec(self.arm, cameras)
        self.act_spec = action_spec(self.arm, MODE)
        self.tokenizer = ObservationTokenizer(self.obs_spec, InstructionTokenizer.default())
        self.cell = SimCell(self.arm, self.obs_spec.cameras, PERIOD_S)
        self.jpeg_quality = jpeg_quality
        self.render_images = render_images
        self.max_steps = max_steps or self.task.episode_steps
        self.instruction = self.task.instruction
        self.half_size = float(self.arm.scene["objects"][0]["size"])
        self.table_z = float(self.arm.scene["table"]["height"])
        p, (n, c, h, w), length = (
            self.obs_spec.proprio_size,
            self.obs_spec.image_shape,
            self.obs_spec.instruction_length,
        )
        self.observation_space = gym.spaces.Dict(
            {
                "proprio": gym.spaces.Box(-np.inf, np.inf, (p,), np.float32),
                "images": gym.spaces.Box(0, 255, (n, c, h, w), np.uint8),
                "instruction": gym.spaces.Box(0, self.tokenizer.language.vocab_size - 1, (length,), np.int64),
            }
        )
        self.action_space = gym.spaces.Box(
            np.asarray(self.act_spec.low, np.float32), np.asarray(self.act_spec.high, np.float32), dtype=np.float32
        )
        self._t_ns = 0
        self._step = 0
        self._seq = 0

    # ----------------------------------------------------------------- helpers
    def scene(self) -> Scene:
        sim = self.cell.sim
        return Scene(
            tcp=sim.state().tcp_pose[:3].copy(),
            objects={o["name"]: sim.object_pose(o["name"])[:3].copy() for o in self.arm.scene["objects"]},
            half_size=self.half_size,
            table_z=self.table_z,
            grasped=sim.grasped_object(),
        )

    def observation(self) -> Observation:
        """Batch-1 model inputs, built from the messages a driver would publish now."""
        state = self.cell.state_msg(self._seq, f"sim/{self.robot}", self._t_ns, "lockstep", self._seq, self._step)
        frames = {}
        for camera in self.obs_spec.cameras if self.render_images else ():
            image = self.cell.image_msg(camera, self._seq, state.source, self._t_ns, self._step)
            frames[camera] = decode(image.to_frames(quality=self.jpeg_quality)).arrays["image"]
        if not self.render_images:
            h, w = self.obs_spec.image_height, self.obs_spec.image_width
            frames = {c: np.zeros((h, w, 3), np.uint8) for c in self.obs_spec.cameras}
        return self.tokenizer.from_messages(state, frames, self.instruction)

    def _obs(self) -> dict[str, np.ndarray]:
        o = self.observation()
        return {"proprio": o.proprio[0].copy(), "images": o.images[0].copy(), "instruction": o.instruction[0].copy()}

    # --------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t_ns, self._step = 0, 0
        self.cell.reset(self._t_ns, object_layout(self.arm, self.np_random))
        return self._obs(), {"instruction": self.instruction, **_scene_info(self.scene())}

    def step(self, action: np.ndarray):
        self._seq += 1
        action = np.asarray(action, dtype=np.float64)
        command = CommandMsg(self._seq, MODE, action, self._t_ns + round(2 * PERIOD_S * 1e9), self._seq)
        rejection = self.cell.submit(command, self._t_ns)
        self.cell.advance(self.cell.substeps, self._t_ns)
        self._t_ns += round(PERIOD_S * 1e9)
        self._step += 1
        scene = self.scene()
        done = success(self.task.name, scene)
        info = {
            **_scene_info(scene),
            "success": done,
            "shaped_reward": shaped_reward(self.task.name, scene),
            "rejected": rejection.value if rejection is not None else "",
        }
        return self._obs(), float(done), done, self._step >= self.max_steps, info

    def render(self) -> np.ndarray:
        return self.cell.sim.render(self.obs_spec.cameras[0])

    def close(self) -> None:
        self.cell.close()

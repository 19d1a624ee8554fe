"""Scripted experts in the policy's own action space (Cartesian velocity + gripper), with quality knobs.

A phase machine over privileged sim state (object positions): approach above the red cube, descend,
close, lift, carry above the blue cube (stack) and lower, open, retreat. The knobs make the sub-optimal
data PAC needs (reference/pac.md: CHEF's mixed data succeeds ~28%): action noise, hesitation, grasping
the wrong object, dropping early, giving up. Each knob draws from the expert's own seeded generator.
`expert_rollout` is the one episode loop: `pac-collect` (policies/data/collect.py) and the success tests
both step the environment through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from robots.tasks.tasks import Scene

if TYPE_CHECKING:
    from robots.tasks.env import PacTaskEnv

HOVER = 0.08  # m above the object top when approaching or carrying
GAIN = 4.0  # 1/s, proportional gain of the TCP position servo
CLOSE_STEPS = 8  # periods with the gripper closing before lifting
OPEN_STEPS = 6


@dataclass(frozen=True)
class ExpertQuality:
    name: str = "expert"
    noise: float = 0.0  # linear-velocity noise, as a fraction of each dimension's half range
    hesitate: float = 0.0  # per-step chance of pausing for 5-20 periods
    wrong_object: float = 0.0  # per-episode chance of grasping the green distractor instead
    drop: float = 0.0  # per-episode chance of opening the gripper while carrying
    give_up: float = 0.0  # per-episode chance of stopping for good at a random step


MIXED_TARGET = 0.28  # stacking success of the "mixed" setting: CHEF's sub-optimal data succeeds 28%

QUALITIES = {
    "expert": ExpertQuality(),
    "noisy": ExpertQuality("noisy", noise=0.3, hesitate=0.02),
    "mixed": ExpertQuality("mixed", noise=0.25, hesitate=0.02, wrong_object=0.35, drop=0.45, give_up=0.35),
}


class ScriptedExpert:
    def __init__(self, task: str, low: np.ndarray, high: np.ndarray, quality: ExpertQuality, seed: int = 0):
        self.task, self.quality = task, quality
        self.low, self.high = np.asarray(low, float), np.asarray(high, float)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        q, rng = self.quality, self.rng
        self.phase, self.count, self.pause = "approach", 0, 0
        self.target = "green" if rng.random() < q.wrong_object else "red"
        self.drops = rng.random() < q.drop
        self.gives_up_at = int(rng.integers(20, 300)) if rng.random() < q.give_up else None
        self.steps = 0
        self.grip = 0.0

    def _move(self, tcp: np.ndarray, goal: np.ndarray) -> np.ndarray:
        a = np.zeros(self.low.size)
        a[:3] = GAIN * (goal - tcp)
        a[-1] = self.grip
        return a

    def act(self, s: Scene) -> np.ndarray:
        """The next action for scene `s`; phases advance on what the scene shows."""
        self.steps += 1
        obj = s.objects[self.target]
        top = obj[2] + s.half_size
        if self.gives_up_at is not None and self.steps >= self.gives_up_at:
            self.phase = "gave_up"
        if self.phase == "approach":
            goal = np.array([obj[0], obj[1], top + HOVER])
            if np.linalg.norm(goal - s.tcp) < 0.01:
                self.phase = "descend"
        elif self.phase == "descend":
            goal = obj.copy()
            if np.linalg.norm(goal - s.tcp) < 0.006:
                self.phase, self.count = "close", 0
        elif self.phase == "close":
            goal, self.grip = obj.copy(), 1.0
            self.count += 1
            if self.count >= CLOSE_STEPS:
                self.phase = "lift"
        elif self.phase == "lift":
            goal = s.tcp.copy()
            goal[2] = s.table_z + 2 * s.half_size + HOVER + 0.03
            if s.tcp[2] > goal[2] - 0.01:
                self.phase = "carry" if self.task == "stack" else "hold"
        elif self.phase == "carry":
            blue = s.objects["blue"]
            goal = np.array([blue[0], blue[1], s.tcp[2]])
            if self.drops and np.linalg.norm(goal[:2] - s.tcp[:2]) < 0.08:
                self.grip = 0.0
            if np.linalg.norm(goal[:2] - s.tcp[:2]) < 0.005:
                self.phase = "place"
        elif self.phase == "place":
            blue = s.objects["blue"]
            goal = np.array([blue[0], blue[1], blue[2] + 2 * s.half_size + 0.004])
            if abs(goal[2] - s.tcp[2]) < 0.004:
                self.phase, self.count = "release", 0
        elif self.phase == "release":
            goal, self.grip = s.tcp.copy(), 0.0
            self.count += 1
            if self.count >= OPEN_STEPS:
                self.phase = "retreat"
        elif self.phase == "retreat":
            goal = s.tcp + np.array([0.0, 0.0, 0.05])
        else:  # hold (lift done) or gave up
            goal = s.tcp.copy()
        action = self._move(s.tcp, goal)
        q = self.quality
        if self.pause > 0:
            self.pause -= 1
            action[:-1] = 0.0
        elif q.hesitate and self.rng.random() < q.hesitate:
            self.pause = int(self.rng.integers(5, 20))
        if q.noise:  # on the TCP's linear velocity only: rotation noise random-walks the grasp orientation
            action[:3] += self.rng.normal(0.0, q.noise, 3) * (self.high - self.low)[:3] / 2
        return np.clip(action, self.low, self.high)


def make_expert(task: str, low, high, quality: str | ExpertQuality = "expert", seed: int = 0) -> ScriptedExpert:
    q = QUALITIES[quality] if isinstance(quality, str) else quality
    return ScriptedExpert(task, low, high, q, seed)


@dataclass(frozen=True)
class ExpertStep:
    """What the environment returned: after the reset (no action), or after the expert's `action`."""

    observation: dict[str, Any]
    info: dict[str, Any]
    action: np.ndarray | None = None  # float32, in the env's action space
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False


def expert_rollout(env: PacTaskEnv, quality: str | ExpertQuality, seed: int) -> Iterator[ExpertStep]:
    """One episode of `env`, reset with `seed`, driven by the expert of that seed: the reset, then every
    step until the episode terminates or is truncated. The expert reads the privileged scene, never the
    observation."""
    observation, info = env.reset(seed=seed)
    yield ExpertStep(observation, info)
    expert = make_expert(env.task.name, env.action_space.low, env.action_space.high, quality, seed)
    while True:
        action = expert.act(env.scene()).astype(np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        yield ExpertStep(observation, info, action, reward, terminated, truncated)
        if terminated or truncated:
            return

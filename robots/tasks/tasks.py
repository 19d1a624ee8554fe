"""The reference tasks: what success is and how the shaped reward is computed, as pure functions.

reach: the TCP within REACH_TOLERANCE of a point just above the red cube. lift: the red cube held and at
least LIFT_HEIGHT above its resting height. stack (RGB-Stacking): red resting on blue (centred within
STACK_XY, at one cube height) and released; green is a distractor. The sparse reward is 1 on a success
step; the shaped reward grows through each task's stages and is in [0, 1]. Each task's instruction is task
data too; the instruction tokenizer's corpus (policies/tokenizer/instructions.py) is built to cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REACH_TOLERANCE = 0.03  # m
LIFT_HEIGHT = 0.05  # m
STACK_XY = 0.02  # m between cube centres in the table plane
STACK_Z = 0.012  # m error allowed on the one-cube-height offset
PLACE_SCALE = 5.0  # 1/m: the stack reward's place term is 1 − tanh(PLACE_SCALE · distance), 0.36 at 15 cm, 0.80 at 4 cm


@dataclass(frozen=True, eq=False)  # numpy fields: equality is by identity
class Scene:
    """What the task rewards look at: privileged sim state, never given to the policy."""

    tcp: np.ndarray  # (3,)
    objects: dict[str, np.ndarray]  # name → (3,) centre
    half_size: float  # cube half size
    table_z: float  # table top
    grasped: str | None  # the object between the fingers


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    episode_steps: int = 400  # 20 s at 20 Hz


TASKS = {
    t.name: t
    for t in (
        Task("reach", "reach the red object"),
        Task("lift", "lift the red object"),
        Task("stack", "stack the red object on the blue object"),
    )
}
TASK_INSTRUCTIONS = {name: t.instruction for name, t in TASKS.items()}  # the instruction each task is run with


def _reach_target(s: Scene) -> np.ndarray:
    return s.objects["red"] + np.array([0.0, 0.0, s.half_size])


def success(task: str, s: Scene) -> bool:
    red = s.objects["red"]
    if task == "reach":
        return bool(np.linalg.norm(s.tcp - _reach_target(s)) < REACH_TOLERANCE)
    if task == "lift":
        return bool(s.grasped == "red" and red[2] - (s.table_z + s.half_size) >= LIFT_HEIGHT)
    if task == "stack":
        blue = s.objects["blue"]
        on_top = np.linalg.norm(red[:2] - blue[:2]) < STACK_XY and abs(red[2] - blue[2] - 2 * s.half_size) < STACK_Z
        return bool(on_top and s.grasped is None)
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def shaped_reward(task: str, s: Scene) -> float:
    """Staged dense reward in [0, 1]: approach and grasp, then lift (lift) or carry and place (stack); 1 at success."""
    red = s.objects["red"]
    approach = 1.0 - np.tanh(10.0 * np.linalg.norm(s.tcp - _reach_target(s)))
    if task == "reach":
        return float(approach)
    held = s.grasped == "red"
    if task == "lift":
        height = np.clip((red[2] - (s.table_z + s.half_size)) / LIFT_HEIGHT, 0.0, 1.0)
        return float(0.4 * approach + 0.2 * held + 0.4 * height * held)
    if task == "stack":
        # place: red's 3-D distance to its stacked pose (on blue, one cube height up). A height term would pay for
        # holding red high over blue, and a critic trained on it valued hovering there as much as placing
        # (benchmarks/RESULTS.md, issue 11's probe); this one pays for every millimetre of the descent too.
        stacked = s.objects["blue"] + np.array([0.0, 0.0, 2 * s.half_size])
        place = 1.0 - np.tanh(PLACE_SCALE * np.linalg.norm(red - stacked))
        lifted = held or red[2] > s.table_z + 2 * s.half_size
        stage = 0.25 * approach + 0.25 * held + 0.45 * place * lifted
        return float(1.0 if success(task, s) else min(stage, 0.95))
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")

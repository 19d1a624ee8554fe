"""Scripted experts in the policy's own action space (Cartesian velocity + gripper), with quality knobs.

A phase machine over privileged sim state (object positions): approach above the red cube, descend,
close, lift, carry above the blue cube (stack) and lower, open, retreat. The knobs make the sub-optimal
data PAC needs (reference/pac.md: CHEF's mixed data succeeds ~28%): action noise, hesitation, grasping
the wrong object, dropping early, giving up. "mixed" makes those whole-episode choices at the start, so its
successful and failed episodes part early. "rl_like" is closer to data recorded by RL agents (issue 11):
noise whose level varies across episodes and switches within them, late mistakes (a drop near the blue
cube, a release off its centre), grasps not closed ("rl_like_skip_close": the hand rises open and tries again),
and an expert that notices a mistake after a while and goes back (lets go
of green, re-grasps a dropped or misplaced red cube), so failures and successes pass through the same
states and an offline critic has something to stitch. Each knob draws from the expert's own seeded
generator. `expert_rollout` is the one episode loop: `pac-collect` (policies/data/collect.py) and the
success tests both step the environment through it; each step carries the events the expert went through.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from robots.tasks.tasks import Scene, success

if TYPE_CHECKING:
    from robots.tasks.env import PacTaskEnv

HOVER = 0.08  # m above the object top when approaching or carrying
GAIN = 4.0  # 1/s, proportional gain of the TCP position servo
CLOSE_STEPS = 8  # periods with the gripper closing before lifting
OPEN_STEPS = 6
MISPLACE_OFFSET = (0.022, 0.04)  # m off blue's centre: beyond STACK_XY (2 cm), up to 80% of a cube's width
PEEK_HEIGHT = 0.03  # m a skipped close (ExpertQuality.skip_close) rises above the grasp point before trying again
MISPLACE_LIFT = 0.015  # m above the stacking height: a misplaced cube must not wedge on blue's edge
EARLY_CLOSE_HEIGHT = (0.015, 0.08)  # m of TCP above the grasp point (red's centre) where an early close happens
HOLDING = ("lift", "carry", "place", "hold")  # phases in which the gripper should hold red


@dataclass(frozen=True)
class ExpertQuality:
    """An attempt is one grasp of red and what follows it; a noticed mistake starts the next. With
    `noise_high` above `noise`, one draw per episode, its sloppiness s (uniform in [0, 1]), sets the noise
    level to noise + s × (noise_high - noise) and scales the mistake chances (wrong_object, drop, misplace)
    by 2s: a continuum of skill, as over an RL agent's training, whose mean chances are the knobs."""

    name: str = "expert"
    noise: float = 0.0  # linear-velocity noise, as a fraction of each dimension's half range
    hesitate: float = 0.0  # per-step chance of pausing for 5-20 periods
    wrong_object: float = 0.0  # per-episode chance of going for the green distractor (unless noticed)
    drop: float = 0.0  # per-attempt chance of opening the gripper while carrying, near the blue cube
    give_up: float = 0.0  # per-episode chance of stopping for good at a random step
    # Mistakes and recoveries inside an episode ("rl_like"); at 0 the knobs above act as they always did.
    noise_high: float = 0.0  # the noisiest episode's level (see above)
    noise_switch: float = 0.0  # per-step chance of a new noise segment, its level drawn in [0, 2 × the episode's]
    misplace: float = 0.0  # per-attempt chance of releasing red MISPLACE_OFFSET off the blue cube's centre
    notice: float = 0.0  # per-step chance of noticing a mistake (wrong or no object held, red not stacked)
    # the noise's correlation from one step to the next (AR(1), its level's std whatever ρ): an RL agent's errors
    # persist (a policy that is wrong somewhere is wrong there for a while); white noise (0) averages out over a
    # few steps, so a critic never sees the arm held in a wrong direction (issue 11's coverage probe)
    noise_correlation: float = 0.0
    # per-attempt chance of closing early during the descent, at a TCP height drawn in EARLY_CLOSE_HEIGHT above the
    # grasp point: low in that range the fingers catch the cube high, higher they shut on air and the hand comes
    # up empty, a miss noticed like any other. Issue 11: in "rl_like" the gripper never closes more than 1 cm above
    # red's centre (benchmarks/grasp_coverage.py), so a critic's value of closing higher is pure extrapolation
    # (the failing PAC seeds closed on air)
    early_close: float = 0.0
    # chance, each time the hand arrives on the object it goes for (red, or green when it takes the distractor) with
    # the fingers open, of not closing: it rises PEEK_HEIGHT with the fingers open and comes back down to decide again
    # (an agent that has not yet learnt when to close). Issue 11: unlike a drop, which is one step among the many that
    # carry on at its states, this choice is made at one state (the hand on the object, fingers open) that every
    # arrival passes once, so its share of the actions there is its share
    # of the arrivals: above one half, the data's majority there is the mistake, and cloning copies it
    skip_close: float = 0.0


MIXED_TARGET = 0.28  # stacking success of the "mixed" setting: CHEF's sub-optimal data succeeds 28%
RL_LIKE_RANGE = (0.25, 0.35)  # stacking success of "rl_like" (issue 11): around CHEF's 28%

RL_LIKE = ExpertQuality(
    "rl_like",
    noise=0.02,
    noise_high=0.4,
    noise_switch=0.03,
    hesitate=0.01,
    wrong_object=0.5,
    drop=0.8,
    misplace=0.6,
    notice=0.08,
)
QUALITIES = {
    "expert": ExpertQuality(),
    "noisy": ExpertQuality("noisy", noise=0.3, hesitate=0.02),
    "mixed": ExpertQuality("mixed", noise=0.25, hesitate=0.02, wrong_object=0.35, drop=0.45, give_up=0.35),
    "rl_like": RL_LIKE,
    # "rl_like" whose grasps sometimes close early (EARLY_CLOSE_HEIGHT), fewer drops to stay in RL_LIKE_RANGE
    "rl_like_early_close": replace(RL_LIKE, name="rl_like_early_close", drop=0.6, early_close=0.3),
    # "rl_like" whose arrivals on red are mostly not closed (skip_close: about 7 in 10 on 200 seeds), fewer drops to
    # stay in RL_LIKE_RANGE
    "rl_like_skip_close": replace(RL_LIKE, name="rl_like_skip_close", skip_close=0.5, drop=0.7),
}


class ScriptedExpert:
    def __init__(self, task: str, low: np.ndarray, high: np.ndarray, quality: ExpertQuality, seed: int = 0):
        self.task, self.quality = task, quality
        self.low, self.high = np.asarray(low, float), np.asarray(high, float)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        q, rng = self.quality, self.rng
        spread = q.noise_high > q.noise  # the episode's place on the continuum of skill (ExpertQuality)
        self.sloppiness = rng.random() if spread else 0.5  # 0.5: the knobs' own chances
        self.episode_noise = q.noise + self.sloppiness * (q.noise_high - q.noise) if spread else q.noise
        self.noise = self.episode_noise  # this segment's level
        self.unit_noise = np.zeros(3)  # the AR(1) process the noise level scales (ExpertQuality.noise_correlation)
        self.phase, self.count, self.pause = "approach", 0, 0
        self.target = "green" if rng.random() < self._chance(q.wrong_object) else "red"
        self.drops = rng.random() < self._chance(q.drop)
        self.gives_up_at = int(rng.integers(20, 300)) if rng.random() < q.give_up else None
        self.steps = 0
        self.grip = 0.0
        self.events: list[tuple[int, str]] = []  # (step, what): the mistakes made, noticed and recovered from
        self.attempt = 0  # grasps of red started after the first
        self.held = False  # whether the last close ended with an object between the fingers
        self.place_offset = self._misplacement()
        self.early_close_at = self._early_close_height()
        self.on_air = False  # this attempt closes early: where the hand is, not on the object
        if self.target == "green":
            self.events.append((0, "target_distractor"))

    def _move(self, tcp: np.ndarray, goal: np.ndarray) -> np.ndarray:
        a = np.zeros(self.low.size)
        a[:3] = GAIN * (goal - tcp)
        a[-1] = self.grip
        return a

    def _chance(self, knob: float) -> float:
        """This episode's chance of a mistake whose preset chance is `knob`."""
        return min(1.0, knob * 2 * self.sloppiness)

    def _misplacement(self) -> np.ndarray:
        """This attempt's release point relative to the stacking point: zero, or off blue's centre."""
        q, rng = self.quality, self.rng
        if not (q.misplace and rng.random() < self._chance(q.misplace)):
            return np.zeros(3)
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(*MISPLACE_OFFSET)
        return np.array([radius * np.cos(angle), radius * np.sin(angle), MISPLACE_LIFT])

    def _early_close_height(self) -> float | None:
        """This attempt's TCP height above the grasp point at which the gripper closes early, or None (the knob at 0
        draws nothing, so presets without it keep their random streams)."""
        q, rng = self.quality, self.rng
        if not (q.early_close and rng.random() < self._chance(q.early_close)):
            return None
        return float(rng.uniform(*EARLY_CLOSE_HEIGHT))

    def _skips_close(self) -> bool:
        """Whether this arrival on red rises without closing (the knob at 0 draws nothing, as _early_close_height)."""
        q = self.quality
        return bool(q.skip_close) and self.rng.random() < self._chance(q.skip_close)

    def _event(self, what: str) -> None:
        self.events.append((self.steps, what))

    def _mistake(self, s: Scene) -> str | None:
        """What is wrong now that the expert could notice, if anything."""
        if self.phase in HOLDING and s.grasped != "red":
            if s.grasped is not None:
                return "distractor"
            return "drop" if self.held else "miss"
        if self.phase == "retreat" and not success(self.task, s):
            return "unstacked"
        return None

    def _watch(self, s: Scene) -> None:
        """Notice a mistake after a geometric delay, then let go, back off upwards and go for red again."""
        mistake = self._mistake(s)
        if mistake is not None and self.rng.random() < self.quality.notice:
            self._event(f"notice_{mistake}")
            self.phase, self.grip, self.target = "back_off", 0.0, "red"

    def act(self, s: Scene) -> np.ndarray:
        """The next action for scene `s`; phases advance on what the scene shows."""
        self.steps += 1
        if self.gives_up_at is not None and self.steps >= self.gives_up_at:
            self.phase = "gave_up"
        if self.quality.notice:
            self._watch(s)
        obj = s.objects[self.target]
        top = obj[2] + s.half_size
        carry_z = s.table_z + 2 * s.half_size + HOVER + 0.03
        if self.phase == "approach":
            goal = np.array([obj[0], obj[1], top + HOVER])
            if np.linalg.norm(goal - s.tcp) < 0.01:
                self.phase = "descend"
        elif self.phase == "descend":
            goal = obj.copy()
            if self.early_close_at is not None and s.tcp[2] - obj[2] < self.early_close_at:
                self.phase, self.count, self.on_air, self.early_close_at = "close", 0, True, None
                self._event("early_close")
            elif np.linalg.norm(goal - s.tcp) < 0.006:
                if self._skips_close():  # up with the fingers open, then down to decide again
                    self.phase = "peek"
                    self._event("skip_close")
                else:
                    self.phase, self.count = "close", 0
                    if self.attempt:
                        self._event("regrasp")
        elif self.phase == "peek":
            goal = obj + np.array([0.0, 0.0, PEEK_HEIGHT])
            if np.linalg.norm(goal - s.tcp) < 0.01:
                self.phase = "descend"
        elif self.phase == "close":  # on the object; or, closing early, where the hand is
            goal, self.grip = (s.tcp.copy() if self.on_air else obj.copy()), 1.0
            self.count += 1
            if self.count >= CLOSE_STEPS:
                self.phase, self.held = "lift", s.grasped is not None
        elif self.phase == "lift":
            goal = s.tcp.copy()
            goal[2] = carry_z
            if s.tcp[2] > goal[2] - 0.01:
                self.phase = "carry" if self.task == "stack" else "hold"
        elif self.phase == "carry":
            blue = s.objects["blue"]
            goal = np.array([blue[0], blue[1], s.tcp[2]])
            if self.drops and np.linalg.norm(goal[:2] - s.tcp[:2]) < 0.08:
                if self.grip:
                    self._event("drop")
                self.grip = 0.0
            if np.linalg.norm(goal[:2] - s.tcp[:2]) < 0.005:
                self.phase = "place"
        elif self.phase == "place":
            blue = s.objects["blue"]
            goal = np.array([blue[0], blue[1], blue[2] + 2 * s.half_size + 0.004]) + self.place_offset
            if abs(goal[2] - s.tcp[2]) < 0.004:
                self.phase, self.count = "release", 0
                if self.place_offset.any():
                    self._event("misplace")
        elif self.phase == "release":
            goal, self.grip = s.tcp.copy(), 0.0
            self.count += 1
            if self.count >= OPEN_STEPS:
                self.phase = "retreat"
        elif self.phase == "retreat":
            goal = s.tcp + np.array([0.0, 0.0, 0.05])
        elif self.phase == "back_off":  # open, rise clear of the cubes, then a new attempt at red
            goal = np.array([s.tcp[0], s.tcp[1], carry_z])
            if s.tcp[2] > carry_z - 0.01:
                self.phase, self.attempt = "approach", self.attempt + 1
                self.drops = self.rng.random() < self._chance(self.quality.drop)
                self.place_offset = self._misplacement()
                self.early_close_at, self.on_air = self._early_close_height(), False
        else:  # hold (lift done) or gave up
            goal = s.tcp.copy()
        action = self._move(s.tcp, goal)
        q = self.quality
        if self.pause > 0:
            self.pause -= 1
            action[:-1] = 0.0
        elif q.hesitate and self.rng.random() < q.hesitate:
            self.pause = int(self.rng.integers(5, 20))
            self._event("hesitate")
        if q.noise_switch and self.rng.random() < q.noise_switch:
            self.noise = self.rng.uniform(0.0, 2 * self.episode_noise)
        if self.noise:  # on the TCP's linear velocity only: rotation noise random-walks the grasp orientation
            rho = q.noise_correlation  # at 0: 0·last + 1·fresh is fresh, bit for bit (white noise, as ever)
            self.unit_noise = rho * self.unit_noise + np.sqrt(1.0 - rho * rho) * self.rng.normal(0.0, 1.0, 3)
            action[:3] += self.noise * self.unit_noise * (self.high - self.low)[:3] / 2
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
    events: tuple[str, ...] = ()  # what the expert did or noticed while choosing `action` (ScriptedExpert.events)


def expert_rollout(env: PacTaskEnv, quality: str | ExpertQuality, seed: int) -> Iterator[ExpertStep]:
    """One episode of `env`, reset with `seed`, driven by the expert of that seed: the reset, then every
    step until the episode terminates or is truncated. The expert reads the privileged scene, never the
    observation."""
    observation, info = env.reset(seed=seed)
    yield ExpertStep(observation, info)
    expert = make_expert(env.task.name, env.action_space.low, env.action_space.high, quality, seed)
    seen = 0
    while True:
        action = expert.act(env.scene()).astype(np.float32)
        events, seen = tuple(what for _, what in expert.events[seen:]), len(expert.events)
        observation, reward, terminated, truncated, info = env.step(action)
        yield ExpertStep(observation, info, action, reward, terminated, truncated, events)
        if terminated or truncated:
            return

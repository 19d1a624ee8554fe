"""Reference tasks, object layouts and scripted experts, on the real sim (in-process and over the wire)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from policies.spec import observation_spec
from policies.tokenizer.language import InstructionTokenizer
from policies.tokenizer.observation import ObservationTokenizer
from robots.contract.client import DriverClient
from robots.contract.link import Mode
from robots.sim.layout import MIN_SEPARATION, object_layout
from robots.spec import load_spec
from robots.tasks.env import PacTaskEnv
from robots.tasks.experts import (
    CLOSE_STEPS,
    EARLY_CLOSE_HEIGHT,
    MIXED_TARGET,
    RL_LIKE_RANGE,
    ExpertQuality,
    expert_rollout,
    make_expert,
)
from robots.tasks.tasks import Scene, shaped_reward, success


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_layouts_are_seeded_separated_and_inside_the_workspace(robot):
    spec = load_spec(robot)
    a = object_layout(spec, np.random.default_rng(7))
    assert a == object_layout(spec, np.random.default_rng(7))
    assert a != object_layout(spec, np.random.default_rng(8))
    for seed in range(50):
        xy = np.array(list(object_layout(spec, np.random.default_rng(seed)).values()))
        gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)[np.triu_indices(3, 1)]
        assert gaps.min() >= MIN_SEPARATION
        assert np.all(xy >= spec.limits.workspace.low[:2]) and np.all(xy <= spec.limits.workspace.high[:2])


def _scene(red, blue=(0.5, 0.2, 0.025), tcp=(0.0, 0.0, 0.5), grasped=None) -> Scene:
    return Scene(
        tcp=np.asarray(tcp, float),
        objects={"red": np.asarray(red, float), "blue": np.asarray(blue, float), "green": np.array([0.3, 0.3, 0.025])},
        half_size=0.025,
        table_z=0.0,
        grasped=grasped,
    )


@pytest.mark.parametrize(
    "task, scene, expected",
    [
        ("reach", _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.06)), True),
        ("reach", _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.10)), False),
        ("lift", _scene((0.4, 0.1, 0.08), grasped="red"), True),
        ("lift", _scene((0.4, 0.1, 0.08)), False),  # not held: falling, not lifted
        ("lift", _scene((0.4, 0.1, 0.06), grasped="red"), False),  # not high enough
        ("stack", _scene((0.5, 0.2, 0.075)), True),
        ("stack", _scene((0.5, 0.2, 0.075), grasped="red"), False),  # still held
        ("stack", _scene((0.53, 0.2, 0.075)), False),  # off centre
        ("stack", _scene((0.5, 0.2, 0.025)), False),  # beside, on the table
    ],
)
def test_success_table(task, scene, expected):
    assert success(task, scene) is expected


def test_shaped_reward_grows_through_the_stacking_stages():
    far = shaped_reward("stack", _scene((0.4, 0.1, 0.025)))
    above = shaped_reward("stack", _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.05)))
    held = shaped_reward("stack", _scene((0.4, 0.1, 0.05), tcp=(0.4, 0.1, 0.05), grasped="red"))
    carried = shaped_reward("stack", _scene((0.5, 0.2, 0.1), tcp=(0.5, 0.2, 0.1), grasped="red"))
    done = shaped_reward("stack", _scene((0.5, 0.2, 0.075)))
    assert 0 <= far < above < held < carried < done == 1.0


def test_stack_reward_pays_for_the_descent_onto_blue_not_for_height():
    """Held over blue, red earns more the closer it is to its stacked pose: hovering high is not a plateau."""
    stacked_z = 0.075  # blue's centre 0.025 + one cube height
    held = [
        shaped_reward("stack", _scene((0.5, 0.2, z), tcp=(0.5, 0.2, z), grasped="red"))
        for z in (stacked_z + 0.10, stacked_z + 0.04, stacked_z + 0.01, stacked_z)
    ]
    assert held == sorted(held) and len(set(held)) == 4
    assert held[-1] < 1.0  # still held: only the release is a success


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value is")  # proprio is unbounded
@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_env_follows_the_gymnasium_api_with_driver_shaped_observations(robot):
    arm = load_spec(robot)
    env = PacTaskEnv(robot, "reach", render_images=False)
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs) and info["instruction"] == "reach the red object"
        assert list(obs["proprio"]) == [f.name for f in arm.proprio]  # the arm spec's fields, in its order
        for f in arm.proprio:
            assert obs["proprio"][f.name].shape == (f.size,) and obs["proprio"][f.name].dtype == np.float64
        assert list(obs["images"]) == [c.name for c in arm.cameras]
        for c in arm.cameras:
            assert obs["images"][c.name].shape == (c.height, c.width, 3) and obs["images"][c.name].dtype == np.uint8
        space = arm.action_spaces[Mode.CARTESIAN_VELOCITY]
        np.testing.assert_array_equal(env.action_space.low, space.low.astype(np.float32))
        np.testing.assert_array_equal(env.action_space.high, space.high.astype(np.float32))
    finally:
        env.close()


def test_env_observation_equals_what_pac_run_assembles_from_the_driver(start_driver):
    """Same seed, same actions: the env emits what pac-sim publishes, and tokenizing either gives the same inputs."""
    env = PacTaskEnv("sawyer", "stack")
    tokenizer = ObservationTokenizer(observation_spec(env.arm, env.cameras), InstructionTokenizer.default())
    sim = start_driver("sawyer", "--lockstep")
    client = DriverClient(sim.pub, sim.cmd)
    try:
        client.wait_ready()
        env_obs, _ = env.reset(seed=11)
        latest = client.reset(seed=11)
        rng = np.random.default_rng(0)
        for _ in range(6):
            action = rng.uniform(env.action_space.low, env.action_space.high) * 0.5
            env_obs, *_ = env.step(action)
            latest = client.step(Mode.CARTESIAN_VELOCITY, action)
        wire_fields = latest.state.proprio_fields()
        assert list(env_obs["proprio"]) == list(wire_fields)
        for name, value in wire_fields.items():
            np.testing.assert_array_equal(env_obs["proprio"][name], value, err_msg=name)
        frames = {c: latest.images[c].image for c in env.cameras}
        for camera, frame in frames.items():
            np.testing.assert_array_equal(env_obs["images"][camera], frame, err_msg=camera)
        from_env = tokenizer.from_observation(env_obs, env.instruction)
        from_env = {k: v.copy() for k, v in from_env.feeds().items()}  # the tokenizer reuses its image buffer
        wire = tokenizer.from_messages(latest.state, frames, env.instruction).feeds()
        for key in ("proprio", "images", "instruction"):
            np.testing.assert_array_equal(from_env[key], wire[key], err_msg=key)
        assert np.abs(env_obs["proprio"]["joint_pos"] - load_spec("sawyer").home).max() > 1e-3  # the arm moved
    finally:
        client.close()
        env.close()


def _success_rate(robot: str, quality: str, seeds: range) -> float:
    """Stacking success through pac-collect's episode loop, without rendering (experts never look at images)."""
    env = PacTaskEnv(robot, "stack", render_images=False)
    try:
        last = [deque(expert_rollout(env, quality, seed), maxlen=1)[0] for seed in seeds]
        return float(np.mean([step.terminated for step in last]))
    finally:
        env.close()


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_expert_stacks_at_least_90_percent(robot):
    assert _success_rate(robot, "expert", range(10)) >= 0.9


@pytest.mark.parametrize("robot", ["sawyer", "panda"])
def test_mixed_expert_is_within_5_points_of_its_target(robot):
    assert abs(_success_rate(robot, "mixed", range(30)) - MIXED_TARGET) <= 0.05


@dataclass(frozen=True)
class _Episode:
    success: bool
    events: list[str]  # what the expert went through, in order (ExpertStep.events)
    held: list[str]  # the object between the fingers, whenever that changes ("" for none), from the env's info
    near_goal: bool  # red held within 8 cm (in the table plane) of blue at some step: the drop zone


@pytest.fixture(scope="module")
def rl_like_episodes() -> list[_Episode]:
    """Sawyer "rl_like" episodes, seeds 0-9 (~10 s), shared by the tests below."""
    env = PacTaskEnv("sawyer", "stack", cameras=(), render_images=False)
    episodes = []
    try:
        for seed in range(10):  # seed 3 recovered only before the servo's workspace wall; 8 does with it
            steps = list(expert_rollout(env, "rl_like", seed))[1:]
            held = [s.info["grasped"] for s in steps]
            near = [
                h == "red" and np.linalg.norm(s.info["objects"]["red"][:2] - s.info["objects"]["blue"][:2]) < 0.08
                for h, s in zip(held, steps, strict=True)
            ]
            changes = [h for i, h in enumerate(held) if i == 0 or h != held[i - 1]]
            episodes.append(_Episode(steps[-1].terminated, [e for s in steps for e in s.events], changes, any(near)))
    finally:
        env.close()
    return episodes


def test_rl_like_success_stays_near_its_range(rl_like_episodes):
    """RL_LIKE_RANGE is measured on 200 seeds per arm (benchmarks/RESULTS.md, issue 11: Sawyer 28%, Panda
    30%). Eight seeds (2 of 8 succeed today) have a binomial spread of ±16 points at 30%, so the band here is
    wider than the range: 1 to 4 of 8, which a preset inside the range meets on ≥ 86% of seed sets. It
    catches a change that makes the preset stop failing or stop succeeding, not a drift of a few points."""
    assert RL_LIKE_RANGE == (0.25, 0.35)  # the range the band below was widened from
    assert 1 <= sum(e.success for e in rl_like_episodes) <= 4


def test_rl_like_mistakes_are_recovered_inside_episodes(rl_like_episodes):
    """Successes and failures share states: a success that lost red near the goal and grasped it again, a
    distractor grasp let go for red, and failures that had red within reach of the goal."""
    for e in rl_like_episodes:  # every noticed mistake comes after the mistake and before the next grasp
        for i, event in enumerate(e.events):
            if event == "regrasp":
                assert any(x.startswith("notice_") for x in e.events[:i]), e.events
    recovered = [e for e in rl_like_episodes if e.success and e.held.count("red") >= 2]
    assert any("notice_drop" in e.events or "notice_unstacked" in e.events for e in recovered)
    corrected = [e for e in rl_like_episodes if "green" in e.held and "red" in e.held[e.held.index("green") :]]
    assert corrected and all("notice_distractor" in e.events for e in corrected)
    failures = [e for e in rl_like_episodes if not e.success]
    assert sum(e.near_goal for e in failures) >= len(failures) // 2
    assert all(e.near_goal for e in rl_like_episodes if e.success)


def test_early_closes_shut_above_the_grasp_and_a_miss_is_recovered():
    """In "rl_like_early_close", at an early close the TCP is inside EARLY_CLOSE_HEIGHT above red's centre (where
    "rl_like" never closes: it closes within 1 cm). Low in that range the fingers still catch red (a high grasp);
    higher they shut on nothing, and the expert notices the miss and grasps red again."""
    env = PacTaskEnv("sawyer", "stack", cameras=(), render_images=False)
    on_air = 0
    try:
        for seed in range(6):
            steps = list(expert_rollout(env, "rl_like_early_close", seed))
            for i, step in enumerate(steps):
                if "early_close" not in step.events:
                    continue
                seen = steps[i - 1].info  # the scene the expert acted on
                height = seen["tcp"][2] - seen["objects"]["red"][2]
                assert EARLY_CLOSE_HEIGHT[0] - 0.005 <= height <= EARLY_CLOSE_HEIGHT[1] + 0.005
                closing = steps[i + 1 : i + 1 + CLOSE_STEPS]  # the close starts on the step after the decision
                assert all(s.action[-1] == 1.0 for s in closing)
                if any(s.info["grasped"] for s in closing):
                    continue
                on_air += 1
                after = [e for s in steps[i + 1 :] for e in s.events]
                assert "notice_miss" in after and "regrasp" in after[after.index("notice_miss") :]
    finally:
        env.close()
    assert on_air >= 2


def test_skipped_closes_rise_open_and_come_back_and_are_most_grasp_decisions():
    """In "rl_like_skip_close", a skipped close rises with the fingers open, holding nothing, and comes back down to
    decide again; and skips are most of the decisions made with the hand on the object (skip or close), the property
    the preset exists for: there the data's majority action is the mistake."""
    env = PacTaskEnv("sawyer", "stack", cameras=(), render_images=False)
    skips = closes = retried = 0
    try:
        for seed in range(10):
            steps = list(expert_rollout(env, "rl_like_skip_close", seed))[1:]
            grips = [s.action[-1] for s in steps]
            closes += sum(g == 1.0 and (i == 0 or grips[i - 1] == 0.0) for i, g in enumerate(grips))
            for i, step in enumerate(steps):
                if "skip_close" not in step.events:
                    continue
                skips += 1
                after = steps[i + 1 : i + 1 + CLOSE_STEPS]  # where a close would have been
                assert all(s.action[-1] == 0.0 and not s.info["grasped"] for s in after)
                if i + 31 <= len(steps):  # up within 30 steps (a hesitation may pause it up to 20)
                    assert max(s.info["tcp"][2] for s in steps[i + 1 : i + 31]) > step.info["tcp"][2] + 0.01
                decisions = (
                    j for j in range(i + 1, len(steps)) if "skip_close" in steps[j].events or grips[j] > grips[j - 1]
                )
                j = next(decisions, None)  # the next skip or close: the hand back down where it skipped
                if j is not None:
                    assert abs(steps[j].info["tcp"][2] - step.info["tcp"][2]) < 0.01
                    retried += 1
    finally:
        env.close()
    assert retried >= 2
    assert skips > closes, (skips, closes)


def test_expert_knobs_draw_from_its_own_seeded_generator():
    """The same seed gives the same actions and events whatever else draws from numpy's global state."""
    scene = _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.2))
    low, high = -np.ones(5), np.ones(5)

    def run(seed: int):
        expert = make_expert("stack", low, high, "rl_like", seed)
        actions = []
        for _ in range(200):
            np.random.random()  # noqa: NPY002 (the legacy global generator must not matter)
            actions.append(expert.act(scene))
        return np.array(actions), expert.events, expert.episode_noise

    (a, events_a, noise_a), (b, events_b, noise_b) = run(3), run(3)
    np.testing.assert_array_equal(a, b)
    assert events_a == events_b and noise_a == noise_b
    assert not np.array_equal(a, run(4)[0])


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_expert_noise_persists_as_its_correlation_says_at_the_same_level(rho):
    """ExpertQuality.noise_correlation: the velocity noise is an AR(1) process, its lag-1 correlation ρ and its
    std the noise level whatever ρ; at ρ = 0 it is the white noise every preset was collected with."""
    scene = _scene((0.4, 0.1, 0.025), tcp=(0.4, 0.1, 0.2))  # nothing moves: the noiseless action is constant
    low, high = -10 * np.ones(5), 10 * np.ones(5)  # wide enough that clipping never bends the noise

    def actions(quality: ExpertQuality) -> np.ndarray:
        expert = make_expert("stack", low, high, quality, seed=5)
        return np.array([expert.act(scene)[:3] for _ in range(4000)])

    noise = actions(ExpertQuality(noise=0.1, noise_correlation=rho)) - actions(ExpertQuality())
    unit = noise / (0.1 * 10)  # the level times each dimension's half range
    lag1 = np.mean([np.corrcoef(unit[:-1, d], unit[1:, d])[0, 1] for d in range(3)])
    assert lag1 == pytest.approx(rho, abs=0.05)
    assert unit.std() == pytest.approx(1.0, rel=0.1 if rho else 0.05)

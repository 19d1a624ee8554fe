"""`pac-sim-task`: the sim driver that publishes the episode's outcome, replaying the environment step for step."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from robots.contract import messages as msg
from robots.contract.client import DriverClient
from robots.contract.link import Mode
from robots.contract.wire import MalformedMessage, decode, encode
from robots.sim.process import free_loopback_endpoint, stop_sim
from robots.tasks.env import PacTaskEnv
from robots.tasks.experts import expert_rollout

TASK = "stack"


@pytest.fixture(scope="module")
def task_driver() -> Iterator[DriverClient]:
    """A lockstep, state-only `python -m robots.tasks.driver --task stack` for Sawyer, shared by this module."""
    pub, cmd = free_loopback_endpoint(), free_loopback_endpoint()
    argv = [sys.executable, "-m", "robots.tasks.driver", "--task", TASK, "--robot", "sawyer", "--pub", pub]
    argv += ["--cmd", cmd, "--lockstep", "--cameras", "none"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = DriverClient(pub, cmd)
    try:
        client.wait_ready(timeout_s=30)
        yield client
    finally:
        client.close()
        out = stop_sim(proc)
        assert proc.returncode == 0, out
        assert "task" in out and "objects published" in out  # the start-up line names what it publishes


def test_task_message_round_trips():
    sent = msg.TaskMsg(4, "sim/sawyer", 9, "stack", True, 1.0, 0.93, 120)
    assert msg.TaskMsg.from_envelope(decode(sent.to_frames())) == sent


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"success": 1}, "success"),  # an int is not a bool
        ({"reward": "1"}, "reward"),
        ({"shaped_reward": True}, "shaped_reward"),
        ({"task": None}, "task"),
        ({"step": 1.5}, "step"),
    ],
)
def test_malformed_task_messages_are_refused(fields, match):
    good = {"task": "stack", "success": False, "reward": 0.0, "shaped_reward": 0.2, "step": 3}
    frames = encode(msg.TASK, seq=1, source="sim", t_capture_ns=0, fields={**good, **fields})
    with pytest.raises(MalformedMessage, match=match):
        msg.TaskMsg.from_envelope(decode(frames))


def test_unknown_task_is_refused_before_binding_anything():
    from robots.sim.driver import DriverConfig
    from robots.tasks.driver import TaskSimDriver

    with pytest.raises(ValueError, match="unknown task 'juggle'"):
        TaskSimDriver(DriverConfig(lockstep=True), "juggle")


@pytest.mark.parametrize("seed", [0, 7])
def test_reset_with_a_seed_lays_the_objects_out_as_the_env_does(task_driver, seed):
    env = PacTaskEnv("sawyer", TASK, render_images=False)
    try:
        obs, info = env.reset(seed=seed)
        latest = task_driver.reset(seed=seed)
        assert latest.objects.step == latest.task.step == latest.state.step == 0
        for name, pose in obs["objects"].items():
            np.testing.assert_array_equal(latest.objects.pose(name), pose, err_msg=name)
            np.testing.assert_array_equal(latest.objects.pose(name)[:3], info["objects"][name], err_msg=name)
        assert latest.task.task == TASK and not latest.task.success and latest.task.reward == 0.0
    finally:
        env.close()


def test_expert_replayed_through_the_driver_succeeds_at_the_same_step(task_driver):
    """Lockstep is deterministic: the env's expert actions, sent one by one, give the env's outcome every step."""
    env = PacTaskEnv("sawyer", TASK, render_images=False)
    try:
        rollout = list(expert_rollout(env, "expert", seed=3))
    finally:
        env.close()
    assert rollout[-1].terminated, "the expert should stack this seed"
    latest = task_driver.reset(seed=3)
    first_success = None
    for k, step in enumerate(rollout[1:], start=1):
        latest = task_driver.step(Mode.CARTESIAN_VELOCITY, step.action)
        task = latest.task
        assert task.step == latest.state.step == k
        assert (task.success, task.reward) == (step.info["success"], step.reward), f"step {k}"
        assert task.shaped_reward == step.info["shaped_reward"], f"step {k}"
        if task.success and first_success is None:
            first_success = k
    assert first_success == len(rollout) - 1  # the env's episode ends at its first success

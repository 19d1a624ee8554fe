"""pac-eval: closed-loop episodes of an untrained XS state policy through pac-run's loop and the task driver.

Episodes are cut to a few steps (--max-steps) so the whole file stays fast; what is checked is the plumbing
(outputs, determinism across workers, faults, the stop condition), not the policy's skill.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from robots.contract.client import LatestMessages
from robots.contract.link import DEFAULT_LINK, Mode
from robots.contract.messages import TaskMsg
from runtime.config import CONFIG_DIR
from runtime.eval import HELD_OUT_SEED_START, _Tally, evaluate, wilson_interval
from runtime.eval import main as pac_eval
from runtime.guard import Guard
from runtime.link import RealtimeLink
from runtime.loop import STAGES, ControlLoop
from runtime.safety.limits import SafetyLimits
from runtime.safety.watchdogs import MS, WatchdogConfig
from runtime.timing import StageTimer
from tests.state_policy import export_state_policy
from tests.test_pac_run import _nan_when_instruction_starts_with
from tests.test_realtime_loop import ARM, CAMERAS, ScriptedDriver, ScriptedPolicy

STEPS = 12


@pytest.fixture(scope="module")
def state_policy(tmp_path_factory) -> Path:
    return export_state_policy(tmp_path_factory.mktemp("state_policy"))


@pytest.mark.parametrize(
    "successes, n, low, high",
    [
        (0, 0, 0.0, 1.0),  # no episodes: nothing known
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
        (1, 20, 0.0089, 0.2361),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_interval_table(successes, n, low, high):
    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    if n:
        assert lo <= successes / n <= hi


def test_pac_eval_reports_a_success_rate_with_its_interval_and_writes_csv_and_json(state_policy, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["--policy", str(state_policy), "--robot", "sawyer", "--task", "stack", "--episodes", "2"]
    code = pac_eval([*args, "--max-steps", str(STEPS), "--out", str(out), "--sheets", "1"])
    assert code == 0
    table = capsys.readouterr().out
    assert "success rate" in table and "Wilson 95 %" in table and "faults" in table
    summary = json.loads((out / "summary.json").read_text())
    lo, hi = summary["success_ci95"]
    assert 0.0 <= lo <= summary["success_rate"] <= hi <= 1.0
    assert summary["episodes"] == 2 and summary["seeds"] == [HELD_OUT_SEED_START, HELD_OUT_SEED_START + 1]
    assert summary["robot"] == "sawyer" and summary["task"] == "stack" and summary["policy"] == str(state_policy)
    assert summary["provenance"]["weights"] == "untrained" and summary["model"]["size"] == "XS"
    assert summary["model"]["inputs"] == ["proprio", "objects", "instruction"]
    for key in ("mean_return", "mean_shaped_return", "mean_steps", "faults_by_cause"):
        assert key in summary
    with (out / "episodes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == summary["seeds"]
    assert {"seed", "success", "steps", "return", "shaped_return", "fault"} <= set(rows[0])
    for r in rows:  # an untrained policy: no success, the whole (short) episode, no fault
        assert int(r["steps"]) == STEPS and r["success"] == "0" and r["fault"] == ""
    assert (out / "contact_sheet.png").stat().st_size > 0


@pytest.mark.parametrize("decode", ["argmax", "sample_median"])
def test_the_same_seeds_give_the_same_episodes_with_one_worker_or_two(state_policy, tmp_path, decode):
    # Lockstep ages are on sim time; the inference deadline is the one watchdog on the wall clock, and a
    # loaded CI machine must not make it fire in one run and not the other. A sampled decoding draws from a
    # generator seeded by the episode's seed, so it replays too, whichever worker runs the episode.
    raw = yaml.safe_load((CONFIG_DIR / "sawyer.yaml").read_text())
    raw["watchdogs"] = {"inference_deadline_ms": 5_000.0}
    config = tmp_path / "sawyer.yaml"
    config.write_text(yaml.safe_dump(raw))
    common = dict(robot="sawyer", task="stack", episodes=3, seed_start=7, max_steps=STEPS, config=config, decode=decode)
    one = evaluate(state_policy, workers=1, **common)
    two = evaluate(state_policy, workers=2, **common)
    assert [r.seed for r in one.results] == [7, 8, 9]
    assert one.results == two.results  # exact: steps, returns (floats), faults, holds
    assert len({r.shaped_return for r in one.results}) == 3  # the seeds do lay out different episodes


def test_a_pause_after_the_reset_longer_than_the_link_lease_holds_no_tick(state_policy, monkeypatch):
    """A loaded machine once took more than the link's 1 s lease between an episode's reset and its first tick:
    that tick held for LEASE_LOST in one run and not in the replay. The evaluation's own sim keeps its lease."""
    from runtime import eval as pac_eval_module

    build = pac_eval_module.build_loop

    def slow_build(*args, **kwargs):
        time.sleep(DEFAULT_LINK.lease_ms / 1000 * 1.5)  # the loaded machine, between the reset and the loop
        return build(*args, **kwargs)

    monkeypatch.setattr(pac_eval_module, "build_loop", slow_build)
    summary = evaluate(state_policy, robot="sawyer", task="stack", episodes=1, seed_start=7, max_steps=3, workers=1)
    assert summary.results[0].steps == 3
    assert summary.holds_by_cause == {}


def test_a_nan_policy_faults_every_episode_and_never_moves_the_arm(state_policy, tmp_path):
    """The lift instruction makes this actor's logits NaN: the guard latches FAULT before anything moves."""
    nan_policy = _nan_when_instruction_starts_with(state_policy, tmp_path / "nan.onnx", "lift")
    summary = evaluate(nan_policy, "sawyer", "lift", episodes=2, max_steps=STEPS)
    assert summary.successes == 0 and summary.faults_by_cause == {"non_finite:policy_output": 2}
    assert all(r.steps == 0 and r.sparse_return == 0.0 for r in summary.results)
    assert summary.success_ci95[0] == 0.0


# ------------------------------------------------------------------------------------------- the parts
class _TaskClient:
    def __init__(self) -> None:
        self.latest = LatestMessages()

    def publish(self, step: int, success: bool, shaped: float) -> None:
        self.latest.task = TaskMsg(step, "sim", step, "stack", success, float(success), shaped, step)


def test_the_tally_sums_each_period_once_and_stops_on_success_or_the_step_limit():
    client = _TaskClient()
    tally = _Tally(client, max_steps=5, camera=None)
    assert tally.look() == ""  # no task message yet
    client.publish(1, False, 0.25)
    assert tally.look() == "" and tally.look() == ""  # asked twice in one period: counted once
    client.publish(2, True, 0.5)
    assert tally.look() == "success"
    assert (tally.step, tally.sparse, tally.shaped) == (2, 1.0, 0.75)
    client.publish(2, False, 0.5)
    tally = _Tally(client, max_steps=2, camera=None)
    assert tally.look() == "episode_steps" and (tally.step, tally.sparse) == (2, 0.0)


def test_the_loop_stops_when_until_names_a_reason_and_then_holds(virtual_clock):
    driver = ScriptedDriver(virtual_clock, 3_000 * MS)
    timer = StageTimer(STAGES, clock=virtual_clock)
    link = RealtimeLink(driver, CAMERAS, DEFAULT_LINK, timer, virtual_clock)
    guard = Guard(SafetyLimits.from_arm(ARM, Mode.CARTESIAN_VELOCITY), WatchdogConfig(), CAMERAS)
    loop = ControlLoop(link, ScriptedPolicy(virtual_clock), guard, timer, clock=virtual_clock)
    loop.run(max_ticks=100, until=lambda: "success" if loop.ticks >= 7 else "")
    assert loop.ticks == 7 and loop.stop_reason == "success" and loop.stats().final_state == "RUNNING"
    assert driver.sent[-1].mode is Mode.HOLD and loop.final_hold_confirmed
    assert np.all([np.all(np.isfinite(s.action)) for s in driver.sent])

"""pac-run serving a *state* policy (proprio + object poses, no camera): closed loop, refusal, stale poses.

The policy is an untrained XS actor exported once for this module (tests/state_policy.py); drivers are real
lockstep `pac-sim` children, and a wire proxy records what reaches the driver or drops `objects` messages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policies.spec import ObservationSpec, observation_spec, scene_objects
from robots.contract.messages import ObjectsMsg, StateMsg, StatusMsg
from robots.spec import load_spec
from runtime.cli import EXIT_OK, EXIT_REFUSED, open_policy
from runtime.cli import main as pac_run
from runtime.config import load_config
from runtime.guard import Guard
from runtime.inference.loader import PolicyRefused
from runtime.inference.providers import SessionConfig
from runtime.link import Inputs
from runtime.loop import STAGES
from runtime.policy_step import PolicyStep
from runtime.preflight import expected_observation
from runtime.safety.causes import CauseKind, stale
from runtime.safety.limits import SafetyLimits
from runtime.safety.watchdogs import MS, WatchdogConfig
from runtime.timing import StageTimer
from tests.state_policy import export_state_policy

ARM = load_spec("sawyer")
OBJECTS = scene_objects(ARM)
PERIOD_MS = 50


@pytest.fixture(scope="module")
def state_policy(tmp_path_factory) -> Path:
    return export_state_policy(tmp_path_factory.mktemp("state_policy"))


def _run(*args: str, record: Path) -> tuple[int, dict, list[dict]]:
    code = pac_run(["--robot", "sawyer", *args, "--record", str(record)])
    summary = json.loads((record / "summary.json").read_text())
    ticks = [json.loads(line) for line in (record / "ticks.jsonl").read_text().splitlines()]
    return code, summary, ticks


def test_state_policy_drives_the_embedded_sim_closed_loop(state_policy, tmp_path, capsys):
    code, summary, ticks = _run("--policy", str(state_policy), "--sim", "--lockstep", "--ticks", "60", record=tmp_path)
    assert code == EXIT_OK, summary
    assert summary["ticks"] == 60 and summary["final_state"] == "RUNNING" and summary["holds_by_cause"] == {}
    assert summary["inferences"] == 60 and summary["commands_sent"] == 60  # every tick: fresh poses, a move
    assert [t["step"] for t in ticks] == sorted(t["step"] for t in ticks)
    out = capsys.readouterr().out
    assert "cameras none, objects red, green, blue" in out and "state, poses of red, green, blue" in out


def test_a_driver_publishing_no_objects_is_refused_before_any_motion(
    state_policy, start_driver, wire_proxy, tmp_path, capsys
):
    sim = start_driver("sawyer", "--lockstep", "--cameras", "none", "--objects", "none")
    proxy = wire_proxy(sim.pub, sim.cmd)
    code = pac_run(
        ["--robot", "sawyer", "--policy", str(state_policy), "--pub", proxy.pub_endpoint, "--cmd", proxy.cmd_endpoint]
    )
    assert code == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "pre-flight failed: no `objects` topic from the driver" in err
    assert "the model needs the poses of red, green, blue" in err
    assert "start pac-sim with --objects all, or run a tracker that publishes `objects`" in err.lower()
    assert proxy.commands == []  # not even a hold: nothing was commanded


def test_stale_object_poses_hold_within_one_period_and_running_resumes(
    state_policy, start_driver, wire_proxy, tmp_path
):
    sim = start_driver("sawyer", "--lockstep", "--cameras", "none")
    freeze = range(20, 35)  # sim steps whose `objects` messages never reach pac-run
    frozen = lambda env: env.topic == "objects" and env.fields["step"] in freeze  # noqa: E731
    proxy = wire_proxy(sim.pub, sim.cmd, drop=frozen)
    args = ("--policy", str(state_policy), "--pub", proxy.pub_endpoint, "--cmd", proxy.cmd_endpoint, "--ticks", "50")
    code, summary, ticks = _run(*args, record=tmp_path)
    assert code == EXIT_OK, summary
    max_age_steps = WatchdogConfig().max_objects_age_ms / PERIOD_MS
    sent = {c.obs_seq: c.mode for c in proxy.commands}
    for t in ticks:
        step = t["step"]
        age_steps = step - (freeze.start - 1) if step in freeze else 0
        if age_steps > max_age_steps:  # the poses are stale at this tick: the command must be a hold
            assert sent[t["obs_seq"]] == "hold" and "stale:objects" in t["causes"], t
        elif step < freeze.start or step > freeze.stop:
            assert sent[t["obs_seq"]] == "cartesian_velocity", t
    first_hold = next(t for t in ticks if sent[t["obs_seq"]] == "hold")
    assert first_hold["step"] == freeze.start + 1  # poses last captured at step 19: 100 ms > 90 ms old
    assert summary["holds_by_cause"] == {"stale:objects": 1}
    transitions = [(tr["from"], tr["to"]) for tr in summary["transitions"]]
    assert ("RUNNING", "HOLD") in transitions and ("HOLD", "RUNNING") in transitions
    assert all(np.all(np.isfinite(c.action)) for c in proxy.commands)


# ------------------------------------------------------------------------------------- the parts, one by one
def _inputs(now_ns: int, objects_at: int | None, names: tuple[str, ...] = OBJECTS) -> Inputs:
    tcp = np.concatenate([ARM.chain().fk(ARM.home)[0], [1.0, 0.0, 0.0, 0.0]])
    state = StateMsg(1, "sim", now_ns, ARM.home.copy(), np.zeros(7), 0.0, 0.0, 0.0, tcp, "lockstep", -1)
    status = StatusMsg(1, "sim", now_ns, "sawyer", "lockstep", False, "", -1, -1, "", 0)
    poses = np.tile([0.5, 0.0, 0.02, 1.0, 0.0, 0.0, 0.0], (len(names), 1))
    objects = None if objects_at is None else ObjectsMsg(1, "sim", objects_at, names, poses)
    return Inputs(now_ns, state, status, {}, 0, objects)


@pytest.mark.parametrize(
    "uses_objects, objects_age_ms, stale_objects",
    [
        (True, 0, False),
        (True, 90, False),  # at the limit: still fresh
        (True, 91, True),
        (True, None, True),  # never heard: a cell without a tracker
        (False, None, False),  # a policy that reads no poses does not watch the topic
    ],
)
def test_the_guard_watches_the_objects_topic_only_for_a_policy_reading_poses(
    uses_objects, objects_age_ms, stale_objects
):
    guard = Guard(SafetyLimits.from_arm(ARM, "cartesian_velocity"), WatchdogConfig(), (), objects=uses_objects)
    now = 10_000 * MS
    objects_at = None if objects_age_ms is None else now - objects_age_ms * MS
    causes = guard.watch(_inputs(now, objects_at), tick=0)
    assert (stale("objects") in causes) is stale_objects
    assert guard.may_infer(_inputs(now, objects_at), causes) is not stale_objects


def test_an_object_the_tracker_does_not_see_is_a_bad_observation_not_an_exception(state_policy):
    policy = open_policy(load_config(None, "sawyer"), state_policy, SessionConfig(device="cpu", threads=1))
    step = PolicyStep(policy, "stack the red object on the blue object", "argmax", 1e9, StageTimer(STAGES))
    now = 10_000 * MS
    assert step(_inputs(now, now)).action is not None
    out = step(_inputs(now, now, names=("red", "green")))  # blue out of the tracker's view
    assert out.action is None and out.cause.kind is CauseKind.BAD_OBSERVATION and "'blue'" in out.cause.detail


def _model(**changes) -> ObservationSpec:
    spec = observation_spec(ARM, cameras=(), objects=OBJECTS)
    return ObservationSpec(**{**spec.__dict__, **changes})


def test_the_expected_spec_follows_the_model_and_refuses_what_the_cell_lacks():
    assert expected_observation(ARM, (), _model()) == _model()  # a state policy: no camera expected
    vision = observation_spec(ARM)
    assert expected_observation(ARM, (), vision) == vision  # a vision policy: as before
    # The config names cameras: the model must read exactly those (load_policy compares the specs).
    assert expected_observation(ARM, ("front_left",), _model()).cameras == ("front_left",)
    with pytest.raises(PolicyRefused, match="camera\\(s\\) wrist, which the sawyer does not have"):
        expected_observation(ARM, (), _model(cameras=("wrist",), image_height=128, image_width=128))
    with pytest.raises(PolicyRefused, match="pose\\(s\\) of purple, which the sawyer's cell does not track"):
        expected_observation(ARM, (), _model(objects=("red", "purple")))

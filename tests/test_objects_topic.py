"""The `objects` topic: object poses in the base frame, checked at both ends, published by `pac-sim` each period."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from robots.contract import messages as msg
from robots.contract.client import DriverClient
from robots.contract.link import Mode
from robots.contract.wire import MalformedMessage, decode, encode
from robots.sim.process import free_loopback_endpoint
from robots.tasks.env import PacTaskEnv
from robots.tasks.experts import expert_rollout

NAMES = ("red", "green", "blue")
POSES = np.array([[0.4, 0.1, 0.02, 1, 0, 0, 0], [0.5, -0.1, 0.02, 0, 1, 0, 0], [0.45, 0.0, 0.07, 0.5, 0.5, 0.5, 0.5]])


def objects_frames(seq: int = 1, names: object = NAMES, poses: np.ndarray = POSES, **fields) -> list[bytes]:
    """An `objects` message built with the bare codec, so it can break the contract the dataclass enforces."""
    header = {"names": list(names) if isinstance(names, tuple) else names, "frame": "base", "step": 0, **fields}
    return encode(msg.OBJECTS, seq=seq, source="tracker", t_capture_ns=5, fields=header, arrays={"poses": poses})


def test_objects_message_round_trips_and_reads_by_name():
    sent = msg.ObjectsMsg(3, "sim/sawyer", 1_000, NAMES, POSES, step=7)
    got = msg.ObjectsMsg.from_envelope(decode(sent.to_frames()))
    assert (got.seq, got.source, got.t_capture_ns, got.names, got.frame, got.step) == (
        3,
        "sim/sawyer",
        1_000,
        NAMES,
        "base",
        7,
    )
    np.testing.assert_array_equal(got.poses, POSES)
    assert got.poses.dtype == np.float64
    np.testing.assert_array_equal(got.pose("blue"), POSES[2])
    as_dict = got.as_dict()
    assert list(as_dict) == list(NAMES)
    for i, name in enumerate(NAMES):
        assert as_dict[name].shape == (7,) and as_dict[name].dtype == np.float64
        np.testing.assert_array_equal(as_dict[name], POSES[i])
    with pytest.raises(KeyError, match="yellow.*'red', 'green', 'blue'"):
        got.pose("yellow")


def test_no_objects_is_a_valid_message():
    got = msg.ObjectsMsg.from_envelope(decode(msg.ObjectsMsg(1, "tracker", 0, (), np.zeros((0, 7))).to_frames()))
    assert got.names == () and got.poses.shape == (0, 7) and got.as_dict() == {}


def _with_nan() -> np.ndarray:
    poses = POSES.copy()
    poses[1, 4] = np.nan
    return poses


@pytest.mark.parametrize(
    "names, poses, match",
    [
        (NAMES, POSES[:2], "shape"),  # one pose short
        (NAMES, POSES[:, :3], "shape"),  # positions without orientations
        (NAMES, POSES.ravel(), "shape"),
        (NAMES, _with_nan(), "non-finite"),
        (["red", 3, "blue"], POSES, "list of str"),
        ("red", POSES[:1], "list"),
        (["red", "red", "blue"], POSES, "duplicate"),
    ],
)
def test_malformed_objects_messages_are_refused(names, poses, match):
    with pytest.raises(MalformedMessage, match=match):
        msg.ObjectsMsg.from_envelope(decode(objects_frames(names=names, poses=poses)))
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        with pytest.raises(MalformedMessage, match=match):  # nor does a driver send one
            msg.ObjectsMsg(1, "sim", 0, tuple(names), poses).to_frames()


def test_objects_message_without_its_fields_is_refused():
    for missing in ("frame", "step"):
        frames = objects_frames(**{missing: None})
        with pytest.raises(MalformedMessage, match=missing):
            msg.ObjectsMsg.from_envelope(decode(frames))
    with pytest.raises(MalformedMessage, match="expected topic"):
        msg.ObjectsMsg.from_envelope(decode(msg.TaskMsg(1, "s", 0, "stack", False, 0.0, 0.0, 0).to_frames()))


def test_client_counts_a_malformed_objects_message_as_dropped_and_goes_on():
    pub_endpoint = free_loopback_endpoint()
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(pub_endpoint)
    client = DriverClient(pub_endpoint, free_loopback_endpoint())

    def send_until(frames: list[bytes], done) -> None:
        pub.send_multipart(frames)
        for _ in range(200):
            client.poll(10)
            if done():
                return
        raise AssertionError("the client never took the message")

    try:
        seq = 0
        while client.latest.objects is None and seq < 200:  # PUB/SUB drops what is sent before the pipe is up
            seq += 1
            pub.send_multipart(msg.ObjectsMsg(seq, "tracker", 0, NAMES, POSES).to_frames())
            client.poll(10)
        assert client.latest.objects is not None and not client.dropped.get("malformed")
        kept = client.latest.objects
        send_until(objects_frames(seq + 1, poses=_with_nan()), lambda: client.dropped.get("malformed") == 1)
        send_until(objects_frames(seq + 2, names=["red", "red", "blue"]), lambda: client.dropped.get("malformed") == 2)
        assert client.latest.objects is kept  # a bad message never replaces the last good one
        moved = POSES + 0.01
        send_until(
            msg.ObjectsMsg(seq + 3, "tracker", 0, NAMES, moved).to_frames(),
            lambda: client.latest.objects.seq == seq + 3,
        )
        np.testing.assert_array_equal(client.latest.objects.poses, moved)
    finally:
        client.close()
        pub.close(0)


def test_lockstep_driver_publishes_the_sims_object_poses_each_period(start_driver):
    """Same seed, same actions: the objects a lockstep pac-sim publishes each period are the env's, bit for bit,
    while the expert picks the red cube up."""
    env = PacTaskEnv("sawyer", "lift", render_images=False)
    sim = start_driver("sawyer", "--lockstep", "--cameras", "none")
    client = DriverClient(sim.pub, sim.cmd)
    try:
        client.wait_ready(timeout_s=30)
        rollout = expert_rollout(env, "expert", seed=5)
        env_obs = next(rollout).observation
        latest = client.reset(seed=5)
        assert latest.objects.names == NAMES and latest.objects.frame == "base" and latest.objects.step == 0
        rest_z = latest.objects.pose("red")[2]
        for step in rollout:
            for name in NAMES:
                np.testing.assert_array_equal(latest.objects.pose(name), env_obs["objects"][name], err_msg=name)
            seq_before = latest.objects.seq
            latest = client.step(Mode.CARTESIAN_VELOCITY, step.action)
            env_obs = step.observation
            assert latest.objects.seq == seq_before + 1  # one objects message per period, before the state
            assert latest.objects.step == latest.state.step
        assert step.terminated  # lifted
        red = latest.objects.pose("red")
        np.testing.assert_array_equal(red, env_obs["objects"]["red"])
        np.testing.assert_array_equal(red, env.cell.sim.object_pose("red"))
        assert red[2] > rest_z + 0.04
        assert env.observation_space.contains(env_obs)
    finally:
        client.close()
        env.close()


def test_driver_without_a_tracker_publishes_no_objects(start_driver):
    sim = start_driver("panda", "--lockstep", "--cameras", "none", "--objects", "none")
    client = DriverClient(sim.pub, sim.cmd)
    try:
        client.wait_ready(timeout_s=30)
        client.reset(seed=1)
        for _ in range(3):
            latest = client.step()
        assert latest.state.step == 3 and latest.objects is None
        assert not client.dropped.get("malformed")
    finally:
        client.close()

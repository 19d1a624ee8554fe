"""Fuzzing on a CI budget: every decoder fed hostile inputs raises only its typed error, and names each rejection.

benchmarks/fuzz.py runs the same generators 100,000 times per decoder; here each decoder gets a few hundred
seeded inputs, and hypothesis drives the values of single fields where a value's type is the natural unit.
A bug in a file this change does not own is pinned by a strict xfail below and listed in KNOWN_BUGS, so the
budget runs still fail on any new bug; when the fix lands, the xfail passes and both entries go.
"""

from __future__ import annotations

import json
import math
from functools import cache

import msgpack
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import fuzz
from robots.contract import messages as msg
from robots.contract import wire
from runtime.config import ConfigError, load_config

CI_HANG_S = 3.0  # the benchmark's 1 s, with room for a shared CI machine; a real hang is minutes
BUDGETS = {"wire": 600, "receiver": 200, "config": 300, "metadata": 400, "driver": 200, "dataset": 150, "control": 400}
MESSAGE_BUDGET = 150  # per message type

# signature (benchmarks.fuzz.signature) → the strict xfail that pins it
KNOWN_BUGS: dict[str, dict[str, str]] = {
    "metadata": {},
    "driver": {},
}

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)  # what a msgpack header field can hold


def _run(name: str, budget: int) -> fuzz.Tally:
    target = fuzz.make_target(name)
    try:
        return fuzz.run_target(target, budget, seed=0, progress=False, report=lambda _: None, hang_s=CI_HANG_S)
    finally:
        target.close()


def _check(tally: fuzz.Tally, known: dict[str, str]) -> None:
    new = {sig: tally.examples[sig][0] for sig in tally.bugs if sig not in known}
    assert not new, "\n\n".join(f"{sig}\ninput: {ex['input'][:600]}\n{ex['traceback']}" for sig, ex in new.items())
    assert tally.rejected and all(isinstance(r, str) and r.strip() for r in tally.rejected), "a rejection unnamed"
    assert sum(tally.accepted.values()) > 0, "no input accepted: the generator never reaches the deep checks"


@pytest.mark.parametrize("name", [n for n in fuzz.expand(fuzz.DECODERS) if not n.startswith("messages.")])
def test_budget_run_raises_only_typed_errors_and_names_every_rejection(name: str) -> None:
    tally = _run(name, BUDGETS[name])
    assert tally.inputs == BUDGETS[name]
    _check(tally, KNOWN_BUGS.get(name, {}))


@pytest.mark.parametrize("name", [n for n in fuzz.expand(["messages"])])
def test_budget_run_of_each_message_type_raises_only_malformed_message(name: str) -> None:
    _check(_run(name, MESSAGE_BUDGET), {})


def test_every_message_type_with_a_decoder_is_fuzzed() -> None:
    decodable = {n for n in dir(msg) if n.endswith("Msg") and hasattr(getattr(msg, n), "from_envelope")}
    assert decodable <= set(fuzz.MESSAGE_TYPES)


# ------------------------------------------------------------------------------------- hypothesis, per field


@pytest.fixture(scope="module")
def driver_target():
    target = fuzz.DriverTarget()
    yield target
    target.close()


_DRIVER_FIELDS = ("seq", "seed", "mode", "deadline_ns", "obs_seq", "obs_t_ns", "session", "lease_ms", "source")


@settings(max_examples=150, deadline=None)
@given(
    topic=st.sampled_from(("command", msg.TICK, msg.RESET, getattr(msg, "CLAIM", msg.TICK))),
    name=st.sampled_from(_DRIVER_FIELDS),
    value=values,
)
def test_driver_takes_any_value_in_any_field_and_counts_what_becomes_of_it(driver_target, topic, name, value) -> None:
    """Whatever a command, tick, reset or claim carries, handle() never raises and the input is applied or counted."""
    target, rng = driver_target, fuzz.random.Random(0)
    if target.driver.counters.last_rx_seq >= 2**62:  # an earlier example ran our seq to the top: a new session
        target.token = target.new_token(fuzz.random.Random(target.driver.counters.last_rx_seq))
    frames = target.command(rng) if topic == "command" else target.control(rng, topic)
    header = msgpack.unpackb(frames[1], raw=False)
    if name in ("seq", "source"):
        header[name] = value
    else:
        header["fields"][name] = value
    frames = [frames[0], msgpack.packb(header, use_bin_type=True), *frames[2:]]
    assert target.check(frames)  # raises InvariantBroken for an input neither applied nor counted


@cache
def _message_target(name: str) -> fuzz.MessageTarget:
    return fuzz.MessageTarget(name.split(".")[1])


@settings(max_examples=200, deadline=None)
@given(type_name=st.sampled_from(fuzz.expand(["messages"])), key=st.text(max_size=12), value=values)
def test_messages_take_any_value_in_any_field(type_name: str, key: str, value) -> None:
    """A field of any name (one the message has, mostly) holding any value: MalformedMessage or a message."""
    target = _message_target(type_name)
    parts = dict(target.parts[0])
    names = [*parts["fields"], key]
    parts["fields"] = {**parts["fields"], names[len(key) % len(names)]: value}
    try:
        env = wire.decode(wire.encode(**parts))
    except wire.WireError:
        return  # not a message the wire carries
    try:
        target.cls.from_envelope(env)
    except wire.MalformedMessage:
        pass


_frame_objects = st.one_of(
    st.binary(max_size=40),
    st.builds(bytearray, st.binary(max_size=8)),
    st.builds(
        lambda b, step: memoryview(np.frombuffer(b, np.uint8)[::step]),
        st.binary(min_size=1, max_size=16),
        st.integers(1, 3),
    ),
    st.builds(lambda n: np.arange(n, dtype=np.int32), st.integers(0, 4)),
    st.none() | st.integers() | st.text(max_size=5),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_frame_objects, max_size=5))
def test_wire_decode_takes_frames_of_any_buffer_type(frames) -> None:
    try:
        wire.decode(frames)
    except wire.WireError:
        pass


_CONFIG_KEYS = (
    "robot",
    "mode",
    "cameras",
    "instruction",
    "decode",
    "calibration_max_age_days",
    "link",
    "watchdogs",
    "link.period_s",
    "link.jpeg_quality",
    "link.pub_endpoint",
    "watchdogs.max_state_age_ms",
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(_CONFIG_KEYS),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=8,
    ),
)
def test_config_takes_any_yaml_value_for_any_key(tmp_path, key: str, value) -> None:
    """load_config raises only ConfigError, and what it accepts holds every field at its declared type."""
    raw = {"robot": "sawyer", "link": {"period_s": 0.05}, "watchdogs": {"max_state_age_ms": 30.0}}
    *parents, leaf = key.split(".")
    (raw[parents[0]] if parents else raw)[leaf] = value
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        config = load_config(path)
    except ConfigError:
        return
    assert fuzz.well_typed(config) is None


# ----------------------------------------------------------------------- regressions: fixed in this change


def test_wire_refuses_a_strided_frame_as_malformed() -> None:
    """A non-contiguous buffer reached str() and np.frombuffer: TypeError and BufferError, not WireError."""
    good = wire.encode("state", seq=1, source="s", t_capture_ns=1, arrays={"q": np.zeros(3)})
    strided = np.frombuffer(b"stxaxtxe", np.uint8)[::2]
    for i in range(3):
        frames = [*good]
        frames[i] = strided if i == 0 else memoryview(np.frombuffer(good[i] * 2, np.uint8)[::2])
        with pytest.raises(wire.MalformedMessage, match="contiguous"):
            wire.decode(frames)


def test_wire_encode_refuses_a_topic_that_is_not_utf8_text() -> None:
    with pytest.raises(wire.MalformedMessage, match="UTF-8"):
        wire.encode("image/\ud800", seq=1, source="s", t_capture_ns=1)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"robot: sawyer\ncameras: 5\n", "cameras: expected a list of names"),
        (b"robot: sawyer\ncameras: front_left\n", "cameras: expected a list of names"),
        (b"robot: sawyer\n1: 2\nnull: 3\n2026-01-01: x\n", "unknown key(s) [1, None, datetime.date(2026, 1, 1)]"),
        (b"robot: sawyer\nlink: {period_s: .nan}\n", "link.period_s: expected a positive float"),
        (b"robot: sawyer\nlink: {period_s: -0.05}\n", "link.period_s: expected a positive float"),
        (b"robot: sawyer\nlink: {period_s: fast}\n", "link.period_s: expected a positive float"),
        (b"robot: sawyer\nlink: {jpeg_quality: 9.5}\n", "link.jpeg_quality: expected a positive int"),
        (b"robot: sawyer\nwatchdogs: {max_state_age_ms: 1e999}\n", "max_state_age_ms: expected a positive float"),
        (b"robot: sawyer\ninstruction: [a, b]\n", "instruction: expected a string"),
        (b"robot: 7\n", "robot: expected a string"),
        (b"robot: sawyer\nmode: [hold]\n", "mode: ['hold'] is not one of"),
        (b"robot: sawy\xe9r\n", "is not UTF-8 text"),
        (b"robot: sawyer\nlink: " + b"{a: " * 40, "nested deeper than 32"),
        (b"robot: sawyer\nlink: " + b"[" * 2000, "brackets: not a config"),
        (b"robot: sawyer\ninstruction: " + b"x" * 70_000, "bytes: not a config"),
        (f"robot: sawyer\nmode: {fuzz.alias_bomb(9)}\n".encode(), "is not one of"),
    ],
)
def test_config_refuses_what_the_fuzzer_found_with_a_config_error(tmp_path, data: bytes, message: str) -> None:
    """Each of these raised TypeError, UnicodeDecodeError or RecursionError, ran for seconds, or was accepted."""
    path = tmp_path / "cell.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and len(str(err.value)) < 2000


def test_config_key_without_a_value_takes_the_default(tmp_path) -> None:
    path = tmp_path / "cell.yaml"
    path.write_text("robot: sawyer\ncalibration:\ncameras:\nlink:\nwatchdogs: {max_state_age_ms: }\n")
    assert load_config(path) == load_config(robot="sawyer")


# ------------------------------------------------- known bugs in files this change does not own (strict xfail)


@pytest.fixture(scope="module")
def actor_props() -> dict[str, str]:
    return dict(fuzz.MetadataTarget().seeds[0])


def _from_props(props: dict[str, str]):
    from policies.export.metadata import PolicyMetadata

    return PolicyMetadata.from_props(props)


def _refused(props: dict[str, str]) -> None:
    from policies.export.metadata import PolicyFileError

    with pytest.raises(PolicyFileError):
        _from_props(props)


def test_the_metadata_seed_is_accepted(actor_props) -> None:
    assert _from_props(actor_props).graph == "actor"


def test_metadata_refuses_json_nested_past_the_recursion_limit(actor_props) -> None:
    _refused(actor_props | {"pac.provenance": "[" * 100_000 + "]" * 100_000})


def test_metadata_refuses_an_infinite_candidate_count(actor_props) -> None:
    _refused(actor_props | {"pac.candidates": "Infinity"})


def test_metadata_refuses_an_int_too_long_to_parse(actor_props) -> None:
    _refused(actor_props | {"pac.format": "1" * 4301})


def test_metadata_refuses_a_bound_too_large_for_a_float(actor_props) -> None:
    spec = json.loads(actor_props["pac.action_spec"])
    spec["high"][0] = 10**400
    _refused(actor_props | {"pac.action_spec": json.dumps(spec)})


def test_metadata_refuses_a_model_entry_that_is_no_map(actor_props) -> None:
    _refused(actor_props | {"pac.model": "1.5"})


def test_metadata_refuses_a_critic_with_infinite_q_bins() -> None:
    critic = dict(fuzz.MetadataTarget().seeds[1])
    model = json.loads(critic["pac.model"])
    model["config"]["q_bins"] = math.inf
    _refused(critic | {"pac.model": json.dumps(model)})


def test_driver_counts_a_release_from_a_session_that_does_not_hold(driver_target) -> None:
    target = driver_target
    rng = fuzz.random.Random(1)
    target.check(target.control(rng, msg.TICK))  # our session holds the arm
    stranger = msg.ControlMsg(msg.RELEASE, 1, session=fuzz.DriverTarget.new_token(rng)).to_frames()
    target.check(stranger)  # InvariantBroken("uncounted") if the refused release were not counted


def test_known_bugs_each_have_their_strict_xfail() -> None:
    tests = {name for bugs in KNOWN_BUGS.values() for name in bugs.values()}
    assert tests <= set(globals()), tests - set(globals())

"""Record and replay: `pac-run --record` against a real `pac-sim`, then `pac-run --replay` in virtual time.

A replay must send the recorded commands bit for bit (same provider), lockstep and real time alike; a recording
with one input taken out or changed must not replay clean; the MCAP file must open with the mcap reader and
hold the channels the format promises; `pac-replay --plot` must draw it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer

from robots.contract.messages import STATE, CommandMsg, StateMsg
from robots.contract.wire import decode
from runtime.cli import EXIT_OK
from runtime.cli import main as pac_run
from runtime.recorder import (
    COMMAND_CHANNEL,
    RECORDING,
    SESSION,
    TICK_CHANNEL,
    TRACE_CHANNEL,
    WIRE_ENCODING,
    Recorder,
)
from runtime.replay import EXIT_MISMATCH, EXIT_REFUSED, read_recording, replay, verify
from runtime.replay import main as pac_replay

TICKS = 200


def _record(policy: Path, directory: Path, *extra: str) -> dict:
    """`pac-run --sim` (a real pac-sim child) recording into `directory`; returns the run's summary."""
    code = pac_run(["--robot", "sawyer", "--policy", str(policy), "--sim", "--record", str(directory), *extra])
    assert code == EXIT_OK
    return json.loads((directory / "summary.json").read_text())


@pytest.fixture(scope="module")
def policy(exported_policy) -> Path:
    return exported_policy("sawyer")


@pytest.fixture(scope="module")
def lockstep_run(policy, tmp_path_factory) -> tuple[Path, dict]:
    """A 200-tick lockstep run, recorded."""
    directory = tmp_path_factory.mktemp("lockstep") / "rec"
    return directory, _record(policy, directory, "--lockstep", "--ticks", str(TICKS))


def _rewrite(src: Path, dst: Path, change: Callable[[str, int, bytes], bytes | None]) -> Path:
    """A copy of the recording `src` in which `change(topic, sequence, data)` replaces each message's data
    (None: the message is left out)."""
    with src.open("rb") as f, dst.open("wb") as out:
        reader = make_reader(f)
        summary = reader.get_summary()
        writer = Writer(out)
        writer.start()
        schemas = {i: writer.register_schema(s.name, s.encoding, s.data) for i, s in summary.schemas.items()}
        channels = {
            i: writer.register_channel(c.topic, c.message_encoding, schemas.get(c.schema_id, 0), c.metadata)
            for i, c in summary.channels.items()
        }
        for _, channel, message in reader.iter_messages(log_time_order=False):
            data = change(channel.topic, message.sequence, message.data)
            if data is not None:
                writer.add_message(channels[channel.id], message.log_time, data, message.publish_time, message.sequence)
        for record in reader.iter_metadata():
            writer.add_metadata(record.name, record.metadata)
        writer.finish()
    return dst


def _loop_state(directory: Path, tick: int) -> int:
    """The receive index of the state the recorded loop observed at `tick`."""
    rec = read_recording(directory)
    seq = rec.ticks[tick]["obs_seq"]
    return next(
        i
        for i, frames in rec.received.items()
        if i >= rec.session["first_message"] and frames[0] == STATE.encode() and decode(frames).seq == seq
    )


def test_the_recording_is_mcap_with_every_input_every_command_and_the_session(lockstep_run):
    directory, summary = lockstep_run
    assert (directory / "ticks.jsonl").exists() and (directory / "summary.json").exists()
    with (directory / RECORDING).open("rb") as f:
        reader = make_reader(f)
        channels = {c.topic: c for c in reader.get_summary().channels.values()}
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
        states, commands = [], []
        for _, channel, message in reader.iter_messages(topics=["/driver/state", COMMAND_CHANNEL]):
            frames = msgpack.unpackb(message.data)
            (states if channel.topic == "/driver/state" else commands).append(frames)
    expected = {"/driver/state", "/driver/status", "/driver/objects", "/driver/image/front_left"}
    expected |= {"/driver/image/front_right", COMMAND_CHANNEL, "/pac/control", TRACE_CHANNEL, TICK_CHANNEL}
    assert expected <= set(channels)
    assert channels["/driver/state"].message_encoding == WIRE_ENCODING
    assert channels[TICK_CHANNEL].message_encoding == "json"

    session = {k: json.loads(v) for k, v in metadata[SESSION].items()}
    assert session["robot"] == "sawyer" and session["link"] == "lockstep" and session["provider"] == summary["provider"]
    assert len(session["policy_sha256"]) == 64
    assert StateMsg.from_envelope(decode(states[-1])).holder == session["fingerprint"]  # the arm was this session's

    sent = [CommandMsg.from_envelope(decode(frames)) for frames in commands]
    assert [c.seq for c in sent] == sorted(c.seq for c in sent)
    assert len(sent) == TICKS + 1 == summary["commands_sent"] + summary["holds_sent"] + 1  # and the final hold
    assert all(c.session == "" for c in sent)  # the session token, a credential, is never written down


def test_a_lockstep_run_replays_bit_for_bit(lockstep_run, policy, capsys):
    directory, _ = lockstep_run
    assert pac_run(["--replay", str(directory), "--policy", str(policy)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{TICKS + 1} commands, {TICKS + 1} identical" in out, out


def test_a_sampled_decoding_is_recorded_and_replays_bit_for_bit(policy, tmp_path, capsys):
    """`--decode sample_median` draws the motion from the policy: the recorded config names the decoding and
    the replay draws the same actions (the generator's seed is pac-run's, 0), so it replays clean."""
    directory = tmp_path / "rec"
    _record(policy, directory, "--lockstep", "--ticks", "60", "--decode", "sample_median")
    assert read_recording(directory).session["config"]["decode"] == "sample_median"
    assert pac_run(["--replay", str(directory), "--policy", str(policy)]) == EXIT_OK
    assert "61 commands, 61 identical" in capsys.readouterr().out


def test_a_state_taken_out_of_the_recording_does_not_replay_clean(lockstep_run, policy, tmp_path):
    directory, _ = lockstep_run
    dropped = _loop_state(directory, TICKS // 2)
    altered = _rewrite(
        directory / RECORDING,
        tmp_path / "dropped.mcap",
        lambda topic, seq, data: None if topic == "/driver/state" and seq == dropped else data,
    )
    result = replay(altered, policy)
    assert not result.ok
    assert result.identical < result.commands == TICKS + 1
    assert result.identical >= TICKS // 2 - 1  # everything before the gap still matches
    assert verify(altered, policy) == EXIT_MISMATCH


def test_a_changed_state_changes_the_command_of_its_tick(lockstep_run, policy, tmp_path):
    """A state whose TCP reads far outside the workspace: the replay holds at that tick where the run moved."""
    directory, _ = lockstep_run
    tick = TICKS // 2
    index = _loop_state(directory, tick)

    def lift(topic: str, seq: int, data: bytes) -> bytes:
        if topic != "/driver/state" or seq != index:
            return data
        state = StateMsg.from_envelope(decode(msgpack.unpackb(data)))
        state.tcp_pose = state.tcp_pose + np.array([0, 0, 1.0, 0, 0, 0, 0])
        return msgpack.packb(state.to_frames())

    result = replay(_rewrite(directory / RECORDING, tmp_path / "lifted.mcap", lift), policy)
    assert not result.ok and not result.diverged  # same branches, another command
    recorded = read_recording(directory).ticks[tick]
    assert recorded["mode"] != "hold"
    assert result.mismatches[0].startswith(f"command {recorded['cmd_seq']}: mode: '{recorded['mode']}' → 'hold'")


def test_a_recording_without_a_loop_is_refused(policy, tmp_path, capsys):
    Recorder(tmp_path / "empty").close()  # as a refused pre-flight leaves it
    assert verify(tmp_path / "empty", policy) == EXIT_REFUSED
    assert "holds no loop" in capsys.readouterr().err


def test_plot_draws_the_run(lockstep_run, tmp_path):
    directory, _ = lockstep_run
    out = tmp_path / "run.png"
    assert pac_replay([str(directory), "--plot", str(out)]) == EXIT_OK
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_a_real_time_run_replays_bit_for_bit(policy, tmp_path):
    """Real time: ticks paced by the host's clock, frames waited for, holds on stale inputs; all reproduced."""
    _record(policy, tmp_path / "rec", "--ticks", "40")
    result = replay(tmp_path / "rec", policy)
    assert result.ok, result.report()
    assert result.commands == 41 and result.ticks == (40, 40)


def test_a_run_stopped_by_a_signal_replays_to_the_same_tick(policy, tmp_path):
    directory = tmp_path / "rec"

    def interrupt_after_20_ticks() -> None:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            ticks = directory / "ticks.jsonl"
            if ticks.exists() and len(ticks.read_text().splitlines()) >= 20:
                os.kill(os.getpid(), signal.SIGINT)  # pac-run's handler: stop after this tick
                return
            time.sleep(0.01)

    thread = threading.Thread(target=interrupt_after_20_ticks, daemon=True)
    thread.start()
    summary = _record(policy, directory, "--lockstep", "--ticks", "100000")
    thread.join()
    assert summary["stop_reason"] == "signal SIGINT"
    result = replay(directory, policy)
    assert result.ok, result.report()
    assert result.ticks == (summary["ticks"], summary["ticks"]) and result.commands == summary["ticks"] + 1

"""What pac-run does with inputs the contract says to drop or refuse, never to die on (DESIGN §2, §3).

Real `pac-sim` drivers in lockstep, real loopback sockets, real ONNX Runtime sessions. A rogue publisher sits
on the driver's PUB link (it forwards the driver's traffic and publishes messages of its own), and the wire
proxy (conftest) records every command pac-run sends, as the driver receives it.

- A decodable state with the wrong joint count, or a frame that is empty or of the wrong size, is dropped
  and counted by topic ("wrong_shape:<topic>"); the loop runs on, and when the good data stops the watchdogs
  hold the arm.
- A broken policy file (weights missing or cut short, an unknown op, a malformed golden pair or tokenizer)
  is refused at start-up with exit 2 and one line saying what was wrong and what was expected.
- An instruction longer than the model takes is refused by the pre-flight, before any command.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import sentencepiece as spm
import zmq

from policies.export.metadata import decode_array, encode_array
from policies.tokenizer.instructions import corpus
from policies.tokenizer.language import PAD_ID, InstructionTokenizer
from policies.tokenizer.train import train
from robots.contract.messages import IMAGE_PREFIX, STATE, ImageMsg, StateMsg
from robots.contract.receiver import shape_drop_reason
from robots.contract.wire import Envelope, decode
from robots.sim.process import free_loopback_endpoint
from runtime.cli import EXIT_OK, EXIT_REFUSED
from runtime.cli import main as pac_run
from runtime.inference.loader import read_metadata

ROGUE_SEQ = 1_000_000  # added to a copied message's seq: far ahead, so an accepted one would show everywhere
FRONT_LEFT = IMAGE_PREFIX + "front_left"
Rogue = Callable[[Envelope], list[bytes] | None]


class RoguePublisher:
    """On the driver's PUB link: forwards every driver message to pac-run and, after each one `rogue` answers
    for, publishes the rogue's message too (or instead of it, with `replace`), from its own PUB socket."""

    def __init__(self, driver_pub: str, rogue: Rogue, replace: bool = False):
        self.pub_endpoint = free_loopback_endpoint()
        self.rogue, self.replace = rogue, replace
        self.sent: list[Envelope] = []  # what the rogue published, as pac-run would decode it
        ctx = zmq.Context.instance()
        self._from_driver = ctx.socket(zmq.SUB)
        self._from_driver.setsockopt(zmq.SUBSCRIBE, b"")
        self._from_driver.connect(driver_pub)
        self._to_runtime = ctx.socket(zmq.PUB)
        self._to_runtime.bind(self.pub_endpoint)
        for s in (self._from_driver, self._to_runtime):
            s.setsockopt(zmq.LINGER, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._from_driver.poll(20):
                continue
            frames = self._from_driver.recv_multipart()
            bad = self.rogue(decode(frames))
            if bad is None or not self.replace:
                self._to_runtime.send_multipart(frames)
            if bad is not None:
                self._to_runtime.send_multipart(bad)
                self.sent.append(decode(bad))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._from_driver.close(0)
        self._to_runtime.close(0)


@pytest.fixture
def rogue_link() -> Iterator[Callable[..., RoguePublisher]]:
    """`rogue_link(driver_pub, rogue, replace=False)`: a rogue publisher on that link, closed at teardown."""
    made: list[RoguePublisher] = []

    def make(driver_pub: str, rogue: Rogue, replace: bool = False) -> RoguePublisher:
        made.append(RoguePublisher(driver_pub, rogue, replace))
        return made[-1]

    yield make
    for rogue in made:
        rogue.close()


@pytest.fixture(scope="module")
def policy(exported_policy) -> Path:
    return exported_policy("sawyer")


def _run(policy: Path, pub: str, cmd: str, tmp: Path, *extra: str) -> tuple[int, dict, list[dict]]:
    record = tmp / "rec"
    argv = ["--robot", "sawyer", "--policy", str(policy), "--pub", pub, "--cmd", cmd, "--device", "cpu"]
    code = pac_run([*argv, "--record", str(record), *extra])
    summary = json.loads((record / "summary.json").read_text())
    ticks = [json.loads(line) for line in (record / "ticks.jsonl").read_text().splitlines()]
    return code, summary, ticks


def _at_steps(topic: str, steps: range) -> Callable[[Envelope], bool]:
    return lambda env: env.topic == topic and env.fields.get("step") in steps


# ---------------------------------------------------------------------------------------- bad messages at run time


def test_a_state_with_the_wrong_joint_count_is_dropped_counted_and_never_commanded_from(
    lockstep_sim, wire_proxy, rogue_link, policy, tmp_path
):
    joints = itertools.cycle((6, 8, 0))  # the sawyer has 7
    chosen = _at_steps(STATE, range(10, 20))

    def wrong_joint_count(env: Envelope) -> list[bytes] | None:
        if not chosen(env):
            return None
        good, n = StateMsg.from_envelope(env), next(joints)
        # The driver's own source and a seq far ahead: taken, it would also have hidden every later good state.
        return replace(good, seq=good.seq + ROGUE_SEQ, q=np.zeros(n), dq=np.zeros(n)).to_frames()

    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    rogue = rogue_link(lockstep_sim.pub, wrong_joint_count)
    code, summary, ticks = _run(policy, rogue.pub_endpoint, proxy.cmd_endpoint, tmp_path, "--ticks", "30")

    assert code == EXIT_OK and summary["ticks"] == 30 and summary["final_state"] == "RUNNING"
    assert len(rogue.sent) >= 10
    assert summary["messages_dropped"].get(shape_drop_reason(STATE)) == len(rogue.sent)
    assert summary["holds_by_cause"] == {}  # the bad states never reached a tick: nothing to hold for
    assert all(len(t["q"]) == 7 for t in ticks)
    bad_seqs = {env.seq for env in rogue.sent}
    assert proxy.commands and not bad_seqs & {c.obs_seq for c in proxy.commands}
    assert all(c.mode == "cartesian_velocity" for c in proxy.commands[:-1])  # all but the final hold move


def test_empty_and_wrong_size_frames_are_dropped_and_counted_and_the_loop_runs_on(
    lockstep_sim, wire_proxy, rogue_link, policy, tmp_path
):
    frames = itertools.cycle(
        (
            (np.zeros((0, 0, 3), np.uint8), False),  # empty: raw (JPEG cannot carry 0×0)
            (np.zeros((0, 128, 3), np.uint8), False),
            (np.full((48, 64, 3), 200, np.uint8), True),  # wrong size, as JPEG
            (np.full((96, 128, 3), 50, np.uint8), False),  # wrong size, raw
        )
    )
    chosen = _at_steps(FRONT_LEFT, range(10, 20))

    def bad_frame(env: Envelope) -> list[bytes] | None:
        if not chosen(env):
            return None
        image, jpeg = next(frames)
        good = ImageMsg.from_envelope(env)
        return replace(good, seq=good.seq + ROGUE_SEQ, image=image).to_frames(jpeg=jpeg)

    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    rogue = rogue_link(lockstep_sim.pub, bad_frame)
    code, summary, _ = _run(policy, rogue.pub_endpoint, proxy.cmd_endpoint, tmp_path, "--ticks", "30")

    assert code == EXIT_OK and summary["ticks"] == 30 and summary["final_state"] == "RUNNING"
    assert len(rogue.sent) >= 10
    assert summary["messages_dropped"].get(shape_drop_reason(FRONT_LEFT)) == len(rogue.sent)
    # Had one been taken, its seq would have hidden the driver's next frames: stale holds would show here.
    assert summary["holds_by_cause"] == {}
    assert all(c.mode == "cartesian_velocity" for c in proxy.commands[:-1])


def test_when_only_empty_frames_come_the_watchdog_holds_and_running_resumes_after(
    lockstep_sim, wire_proxy, rogue_link, policy, tmp_path
):
    broken = range(40, 60)  # sim steps whose front_left frame pac-run receives empty instead
    chosen = _at_steps(FRONT_LEFT, broken)

    def emptied(env: Envelope) -> list[bytes] | None:
        if not chosen(env):
            return None
        return replace(ImageMsg.from_envelope(env), image=np.zeros((0, 0, 3), np.uint8)).to_frames(jpeg=False)

    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    rogue = rogue_link(lockstep_sim.pub, emptied, replace=True)
    code, summary, ticks = _run(policy, rogue.pub_endpoint, proxy.cmd_endpoint, tmp_path, "--ticks", "90")

    assert code == EXIT_OK and summary["ticks"] == 90
    assert len(rogue.sent) >= len(broken)
    assert summary["messages_dropped"].get(shape_drop_reason(FRONT_LEFT)) == len(rogue.sent)
    assert summary["holds_by_cause"] == {"stale:image/front_left": 1}
    sent = {c.obs_seq: c.mode for c in proxy.commands}
    held = [t["step"] for t in ticks if sent[t["obs_seq"]] == "hold"]
    # The last good frame is from step 39; it is stale (> 90 ms) from step 41 until a good one comes at 60.
    assert held and held[0] == broken.start + 1 and held[-1] <= broken.stop
    assert all(sent[t["obs_seq"]] == "cartesian_velocity" for t in ticks if t["step"] > broken.stop)
    states = [(tr["from"], tr["to"]) for tr in summary["transitions"]]
    assert ("RUNNING", "HOLD") in states and ("HOLD", "RUNNING") in states


# ------------------------------------------------------------------------------ broken policy files at start-up


def _edit_props(src: Path, dst: Path, key: str, edit: Callable[[object], object]) -> Path:
    proto = onnx.load(str(src))
    prop = next(p for p in proto.metadata_props if p.key == key)
    prop.value = json.dumps(edit(json.loads(prop.value)))
    onnx.save(proto, str(dst))
    return dst


def _external(src: Path, dst: Path) -> Path:
    onnx.save(onnx.load(str(src)), str(dst), save_as_external_data=True, location=dst.name + ".data")
    return dst


def _missing_external_data(src: Path, dst: Path) -> Path:
    Path(str(_external(src, dst)) + ".data").unlink()
    return dst


def _external_data_cut_short(src: Path, dst: Path) -> Path:
    data = Path(str(_external(src, dst)) + ".data")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return dst


def _file_cut_short(src: Path, dst: Path) -> Path:
    raw = src.read_bytes()
    dst.write_bytes(raw[: len(raw) * 9 // 10])
    return dst


def _unknown_op(src: Path, dst: Path) -> Path:
    proto = onnx.load(str(src))
    node = next(n for n in proto.graph.node if n.op_type == "Add")
    node.op_type, node.name = "FrobnicateXYZ", "frobnicate"
    onnx.save(proto, str(dst))
    return dst


def _golden(edit: Callable[[dict], None]) -> Callable[[Path, Path], Path]:
    def make(src: Path, dst: Path) -> Path:
        def apply(golden):
            edit(golden)
            return golden

        return _edit_props(src, dst, "pac.golden", apply)

    return make


def _drop_instruction(golden: dict) -> None:
    del golden["inputs"]["instruction"]


def _proprio_as_float64(golden: dict) -> None:
    proprio = decode_array(golden["inputs"]["proprio"])
    golden["inputs"]["proprio"] = encode_array(proprio.astype(np.float64))


def _output_of_another_shape(golden: dict) -> None:
    golden["outputs"]["action_logits"] = encode_array(np.zeros((1, 3), np.float32))


def _output_not_base64(golden: dict) -> None:
    golden["outputs"]["action_logits"]["data"] = "!!not base64"


def _tokenizer(model: Callable[[], bytes] | str) -> Callable[[Path, Path], Path]:
    """The file with its tokenizer's model replaced: by the bytes `model()` makes (with their hash and vocabulary
    size), or by the text `model` where the base64 should be."""

    def make(src: Path, dst: Path) -> Path:
        def apply(tok):
            if isinstance(model, str):
                return tok | {"model": model}
            data = model()
            text, sha = base64.b64encode(data).decode("ascii"), hashlib.sha256(data).hexdigest()
            return tok | {"model": text, "sha256": sha, "vocab_size": _vocab_size(data)}

        return _edit_props(src, dst, "pac.tokenizer", apply)

    return make


def _vocab_size(model: bytes) -> int:
    try:
        return spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    except RuntimeError:
        return 0  # not a model at all: refused before its size matters


def _pad_id_3() -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=out,
        model_type="word",
        vocab_size=64,
        hard_vocab_limit=False,
        pad_id=3,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        minloglevel=2,
        num_threads=1,
    )
    return out.getvalue()


def _more_words_than_the_model_embeds() -> bytes:
    words = [f"word{i}" for i in range(100)]
    return train([" ".join(words[i : i + 10]) for i in range(0, len(words), 10)], vocab_size=200)


BROKEN_FILES = {
    "missing external data": (_missing_external_data, r"external-data file '.*\.data', which is missing; expected it"),
    "external data cut short": (_external_data_cut_short, r"external-data file .*\.data is cut short: \d+ bytes"),
    "file cut short": (_file_cut_short, r"is not a readable ONNX file .*; expected a whole model"),
    "unknown op": (_unknown_op, r"node 'frobnicate' uses op 'FrobnicateXYZ', which is not an ONNX operator"),
    "golden without an input": (
        _golden(_drop_instruction),
        r"pac.golden has inputs \['images', 'proprio'\], expected \['images', 'instruction', 'proprio'\]",
    ),
    "golden input of another dtype": (
        _golden(_proprio_as_float64),
        r"pac.golden input 'proprio' is float64 \[1, 24\], expected float32 \[1, 24\]",
    ),
    "golden output of another shape": (
        _golden(_output_of_another_shape),
        r"pac.golden output 'action_logits' is float32 \[1, 3\], expected float32 \[1, 5, 101\]",
    ),
    "golden output not base64": (_golden(_output_not_base64), r"pac.golden is malformed .*; expected \{inputs, "),
    "tokenizer not a SentencePiece model": (
        _tokenizer(lambda: b"not a sentencepiece model"),
        r"pac.tokenizer's bytes are not a SentencePiece model; expected a sentencepiece model",
    ),
    "tokenizer not base64": (_tokenizer("@@@"), r"pac.tokenizer's model is not base64"),
    "tokenizer with another pad id": (_tokenizer(_pad_id_3), r"pac.tokenizer's model does not fit: .*pad id 3"),
    "tokenizer larger than the embedding": (
        _tokenizer(_more_words_than_the_model_embeds),
        r"pac.tokenizer has \d+ token ids but the model embeds only 64",
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN_FILES))
def test_a_broken_policy_file_is_refused_at_start_up_with_one_line_saying_why(broken, policy, tmp_path, capsys):
    make, message = BROKEN_FILES[broken]
    path = make(policy, tmp_path / "broken.onnx")
    nowhere = free_loopback_endpoint()  # refused before any driver is looked for
    code = pac_run(["--robot", "sawyer", "--policy", str(path), "--pub", nowhere, "--cmd", nowhere, "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED, err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("pac-run:")]
    assert line.startswith("pac-run: refused: ")
    assert re.search(message, line), line


# ------------------------------------------------------------------------------------ the instruction's length


def test_an_instruction_longer_than_the_model_takes_is_refused_before_any_command(
    lockstep_sim, wire_proxy, policy, tmp_path, capsys
):
    length = read_metadata(policy).observation.instruction_length
    words = ("stack the red object on the blue object " * length).split()[: length + 1]  # one token a word
    assert (InstructionTokenizer.default().encode(" ".join(words), 4 * length) != PAD_ID).sum() == length + 1
    proxy = wire_proxy(lockstep_sim.pub, lockstep_sim.cmd)
    argv = ["--robot", "sawyer", "--policy", str(policy), "--pub", proxy.pub_endpoint, "--cmd", proxy.cmd_endpoint]

    code = pac_run([*argv, "--device", "cpu", "--ticks", "3", "--instruction", " ".join(words)])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED
    assert f"is {length + 1} tokens; the model takes at most {length}" in err and "shorten --instruction" in err
    assert proxy.commands == []

    code, summary, _ = _run(
        policy, proxy.pub_endpoint, proxy.cmd_endpoint, tmp_path, "--ticks", "3", "--instruction", " ".join(words[:-1])
    )
    assert code == EXIT_OK and summary["ticks"] == 3 and proxy.commands

"""Fuzz every decoder the runtime and the driver expose; count each outcome, and every rejection by its reason.

`python -m benchmarks.fuzz [--inputs 100000] [--decoders wire,messages,receiver,config,metadata,driver]
[--json FILE]`: a progress bar per decoder, then a table of outcomes and each bug with an input that shows it.

Decoders: the wire codec (`wire.decode`), each message's `from_envelope`, the receiver's drain-to-latest drop
counting, `load_config` on YAML files, `PolicyMetadata.from_props` on metadata_props, and a lockstep
`SimDriver.handle` fed commands, ticks, resets and session requests with hostile values. An input ends in
one of: accepted; rejected with a named reason (the decoder's typed error, or a driver counter); or a bug:
an untyped exception, an input over HANG_S, or a broken invariant (an input the driver or receiver neither
acted on nor counted, a config accepted with a value of the wrong type, metadata accepted but unusable).

Why a seeded mutator and not hypothesis here: `strategy.example()` costs milliseconds an input and is not
meant for loops; mutating valid messages (bit flips, truncation, frame surgery, type swaps and extreme values
in the decoded header) reaches the deep checks a random byte string never gets past, at thousands of inputs
a second. tests/test_fuzz.py runs the same generators on a CI budget, and hypothesis strategies field by field.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import typing
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import yaml
import zmq
from tqdm import tqdm

from robots.contract import messages as msg
from robots.contract import wire
from robots.contract.link import Mode
from robots.contract.receiver import LatestReceiver

HANG_S = 1.0  # an input slower than this is a hang
HARD_LIMIT_S = 10.0  # and one still running after this is interrupted (where Python code is running)
REPO = Path(__file__).resolve().parents[1]
DECODERS = ("wire", "messages", "receiver", "config", "metadata", "driver", "dataset", "control")
MESSAGE_TYPES = ("StateMsg", "ImageMsg", "ObjectsMsg", "TaskMsg", "StatusMsg", "CommandMsg", "ControlMsg")


class InvariantBroken(Exception):
    """An oracle's verdict on an input the decoder handled without raising; `kind` names the invariant and
    `case` the kind of input (a topic, an error type) it broke on: together they are the bug's signature."""

    def __init__(self, kind: str, detail: str = "", case: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.case = kind, case


class _Interrupted(BaseException):  # BaseException: decoders that catch Exception must not swallow it
    pass


# ------------------------------------------------------------------------------------------- hostile values

INTS = (0, 1, -1, 2, 7, 127, 128, 255, 256, -129, 2**15, 2**16, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53 + 1)
INTS64 = (2**63 - 1, 2**63, -(2**63), 2**64 - 1)  # the edges of msgpack's integers
WIDE_INTS = (2**64, -(2**63) - 1, 10**30, -(10**30), 10**400, 10**5000)  # JSON and YAML carry these too
FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, -1.7976931348623157e308)
NONFINITE = (math.inf, -math.inf, math.nan)
STRINGS = (
    "",
    " ",
    "a",
    "\x00",
    "sawyer",
    "panda",
    "hold",
    "cartesian_velocity",
    "joint_position",
    "HOLD",
    "argmax",
    "front_left",
    "ü\u202e\u0301",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "%s%n{0}",
    "../../etc/passwd",
    "tcp://0.0.0.0:1",
    "ipc:///tmp/x",
    "1e999",
    "nan",
    "null",
    "~",
    "yes",
    "0x10",
    "!!python/object/apply:os.system ['true']",
    "*a",
    "image/",
    "state",
    "command",
    "tick",
    "reset",
)


def random_string(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return rng.choice(STRINGS)
    if r < 0.8:
        return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 24)))
    if r < 0.95:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(1, 12)))
    return rng.choice("ab\x00é") * rng.choice((1000, 70_000))


def random_scalar(rng: random.Random, wide_ints: bool = False, binary: bool = True) -> Any:
    kind = rng.randrange(7 if binary else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        pool = INTS + INTS64 + (WIDE_INTS if wide_ints else ())
        value = rng.choice(pool)
        return -value if rng.random() < 0.2 else value
    if kind == 3:
        return rng.choice(FLOATS + NONFINITE) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)
    if kind in (4, 5):
        return random_string(rng)
    return rng.randbytes(rng.choice((0, 1, 8, 64, 1000)))


def random_value(rng: random.Random, depth: int = 2, wide_ints: bool = False, binary: bool = True) -> Any:
    """A random plain value (None, bool, int, float, str, bytes, list, map with str keys), nested `depth` deep."""
    r = rng.random()
    if depth <= 0 or r < 0.6:
        return random_scalar(rng, wide_ints, binary)
    if r < 0.78:
        return [random_value(rng, depth - 1, wide_ints, binary) for _ in range(rng.randrange(0, 5))]
    if r < 0.96:
        return {random_string(rng): random_value(rng, depth - 1, wide_ints, binary) for _ in range(rng.randrange(0, 4))}
    value: Any = random_scalar(rng, wide_ints, binary)  # deep nesting
    for _ in range(rng.choice((20, 200, 600))):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


# ------------------------------------------------------------------------------------------- tree mutation


def _paths(value: Any, prefix: tuple = (), out: list | None = None, depth: int = 0) -> list[tuple]:
    out = [] if out is None else out
    out.append(prefix)
    if depth < 12 and len(out) < 400:
        if isinstance(value, dict):
            for key in list(value)[:64]:
                _paths(value[key], (*prefix, key), out, depth + 1)
        elif isinstance(value, list):
            for i in range(min(len(value), 64)):
                _paths(value[i], (*prefix, i), out, depth + 1)
    return out


def _replace(value: Any, path: tuple, new: Callable[[Any], Any]) -> Any:
    """`value` with the node at `path` replaced by new(node); copies only along the path."""
    if not path:
        return new(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        copy[head] = _replace(value[head], rest, new)
        return copy
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


_DELETE = object()


def _mutate_node(rng: random.Random, node: Any, wide_ints: bool, binary: bool) -> Any:
    r = rng.random()
    if r < 0.25:
        return random_value(rng, 2, wide_ints, binary)
    if r < 0.3:
        return [node] if rng.random() < 0.5 else {"x": node}
    if isinstance(node, bool):
        return rng.choice((not node, int(node), str(node).lower(), None))
    if isinstance(node, int):
        op = rng.randrange(6)
        if op == 0:
            return node + rng.choice((1, -1))
        if op == 1:
            return -node - 1
        if op == 2:
            return float(node) if abs(node) < 2**1000 else math.inf
        if op == 3:
            return str(node) if abs(node) < 10**4000 else "9" * 4400  # past Python's int-to-str digit limit
        return rng.choice(INTS + INTS64 + (WIDE_INTS if wide_ints else ()))
    if isinstance(node, float):
        return rng.choice((*NONFINITE, *FLOATS, -node, node * 1e300, int(node) if math.isfinite(node) else 0))
    if isinstance(node, str):
        op = rng.randrange(5)
        if op == 0:
            return node[: rng.randrange(len(node) + 1)]
        if op == 1:
            return node + random_string(rng)
        if op == 2:
            return node.upper()
        if op == 3 and binary:
            return node.encode("utf-8", "surrogatepass")
        return random_string(rng)
    if isinstance(node, dict):
        op = rng.randrange(4)
        if op == 0 and node:
            key = rng.choice(list(node))
            return {k: v for k, v in node.items() if k != key}
        if op == 1:
            return {**node, random_string(rng): random_value(rng, 1, wide_ints, binary)}
        if op == 2 and node:
            key = rng.choice(list(node))
            return {(random_string(rng) if k == key else k): v for k, v in node.items()}
        return {}
    if isinstance(node, list):
        op = rng.randrange(5)
        if op == 0 and node:
            i = rng.randrange(len(node))
            return node[:i] + node[i + 1 :]
        if op == 1:
            return [*node, random_value(rng, 1, wide_ints, binary)]
        if op == 2 and node:
            return node * rng.choice((2, 50))
        if op == 3:
            return node[: rng.randrange(len(node) + 1)]
        return rng.choice(([], [node], None))
    return random_value(rng, 1, wide_ints, binary)


def mutate_tree(rng: random.Random, value: Any, n: int = 1, wide_ints: bool = False, binary: bool = True) -> Any:
    """`value` with `n` random nodes changed: deleted, retyped, pushed to extremes, renamed or wrapped."""
    for _ in range(n):
        path = rng.choice(_paths(value))
        value = _replace(value, path, lambda node: _mutate_node(rng, node, wide_ints, binary))
    return value


# ------------------------------------------------------------------------------------------- byte mutation

_MAGIC_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0xC0, 0xC1, 0xC4, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xCF, 0xD3, 0xD8, 0xD9)


def mutate_bytes(rng: random.Random, data: bytes, splice: Sequence[bytes] = ()) -> bytes:
    buf = bytearray(data)
    op = rng.randrange(9)
    if op == 0 and buf:  # bit flips
        for _ in range(rng.choice((1, 1, 2, 8))):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif op == 1 and buf:  # magic bytes
        for _ in range(rng.choice((1, 2, 4))):
            buf[rng.randrange(len(buf))] = rng.choice(_MAGIC_BYTES)
    elif op == 2:  # truncate
        del buf[rng.randrange(len(buf) + 1) :]
    elif op == 3:  # extend
        buf += rng.randbytes(rng.choice((1, 7, 100))) if rng.random() < 0.7 else bytes(buf[-16:]) * 4
    elif op == 4:  # insert
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = rng.randbytes(rng.randrange(1, 9))
    elif op == 5 and buf:  # delete a range
        i = rng.randrange(len(buf))
        del buf[i : i + rng.randrange(1, 17)]
    elif op == 6 and buf:  # duplicate a chunk in place
        i = rng.randrange(len(buf))
        buf[i:i] = buf[i : i + rng.randrange(1, 33)]
    elif op == 7 and splice:  # splice with another message's frame
        other = rng.choice(splice)
        i, j = rng.randrange(len(buf) + 1), rng.randrange(len(other) + 1)
        buf = buf[:i] + other[j:]
    else:  # random bytes of the same length
        buf = bytearray(rng.randbytes(len(buf)))
    return bytes(buf)


def mutate_frames(rng: random.Random, frames: list[Any], splice: Sequence[bytes] = ()) -> list[Any]:
    frames = list(frames)
    op = rng.randrange(10)
    if op <= 4 and frames:  # one frame's bytes; the header most often
        i = 1 if len(frames) > 1 and rng.random() < 0.5 else rng.randrange(len(frames))
        frames[i] = mutate_bytes(rng, bytes(frames[i]), splice)
    elif op == 5 and frames:  # drop or duplicate a frame
        i = rng.randrange(len(frames))
        frames[i : i + 1] = [] if rng.random() < 0.5 else [frames[i], frames[i]]
    elif op == 6 and len(frames) > 1:  # swap two frames
        i, j = rng.sample(range(len(frames)), 2)
        frames[i], frames[j] = frames[j], frames[i]
    elif op == 7 and frames:  # split a frame in two
        i = rng.randrange(len(frames))
        cut = rng.randrange(len(frames[i]) + 1)
        frames[i : i + 1] = [bytes(frames[i])[:cut], bytes(frames[i])[cut:]]
    elif op == 8 and len(frames) > 1:  # merge two neighbours
        i = rng.randrange(len(frames) - 1)
        frames[i : i + 2] = [bytes(frames[i]) + bytes(frames[i + 1])]
    else:  # extra frames
        frames += [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.choice((1, 2, 20)))]
    return frames


def repack_header(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    """The message with its decoded header changed structurally (type swaps, extremes, missing keys), repacked."""
    header = msgpack.unpackb(frames[1], raw=False)
    arrays = header.get("arrays") or []
    if arrays and rng.random() < 0.4:  # an array descriptor, where the size arithmetic lives
        i = rng.randrange(len(arrays))
        d = dict(arrays[i])
        key = rng.choice(("name", "dtype", "shape", "enc"))
        if key == "dtype":
            d[key] = rng.choice([*wire.DTYPES, "float128", "object", "<f8", "V8", "", 3, None])
        elif key == "shape":
            d[key] = rng.choice(
                (
                    [],
                    [0],
                    [1] * 33,
                    [0, 2**64 - 1],
                    [2**63, 2**63],
                    [-1],
                    [True],
                    [1.5],
                    "3",
                    [*d["shape"], 1],
                    d["shape"][::-1],
                    [s + 1 for s in d["shape"]],
                    [s * 2 for s in d["shape"]],
                    [0, 65535, 3],
                    [65536, 1, 3],
                )
            )
        elif key == "enc":
            d[key] = rng.choice(("raw", "jpeg", "png", None, 0))
        else:
            d[key] = rng.choice((arrays[0]["name"], "", 0, None, "q" * 300))
        if rng.random() < 0.1:
            del d[key]
        header = {**header, "arrays": [*arrays[:i], d, *arrays[i + 1 :]]}
    else:
        header = mutate_tree(rng, header, rng.choice((1, 1, 2, 3)))
    try:
        packed = msgpack.packb(header, use_bin_type=rng.random() < 0.9)
    except (TypeError, ValueError, OverflowError):
        packed = frames[1]
    return [frames[0], packed, *frames[2:]]


def mutate_jpeg(rng: random.Random, data: bytes) -> bytes:
    """A JPEG with its frame header's sizes, a segment length or its markers changed."""
    buf = bytearray(data)
    sof = buf.find(b"\xff\xc0")
    op = rng.randrange(5)
    if op == 0 and sof > 0:
        for at in rng.sample((sof + 5, sof + 6, sof + 7, sof + 8, sof + 9), rng.randrange(1, 3)):
            buf[at] = rng.choice((0, 1, 3, 0x7F, 0xFF))
    elif op == 1:
        buf = buf[:-2] if rng.random() < 0.5 else bytearray(b"\xff\xd8") + buf[rng.randrange(2, 40) :]
    elif op == 2:
        i = buf.find(b"\xff", rng.randrange(2, max(3, len(buf) // 2)))
        if i > 0 and i + 3 < len(buf):
            buf[i + 2 : i + 4] = rng.choice((b"\x00\x00", b"\x00\x01", b"\xff\xff", b"\x00\x10"))
    elif op == 3 and sof > 0:
        buf[sof + 1] = rng.choice((0xC2, 0xC4, 0xC8, 0xCC, 0xCF, 0xDA))
    else:
        buf = bytearray(b"\xff\xd8") + buf[sof : sof + 19] + b"\xff\xd9" if sof > 0 else buf
    return bytes(buf)


# ---------------------------------------------------------------------------------------------- the seeds


def _seed_messages(rng: np.random.Generator) -> dict[str, list[Any]]:
    """Valid instances of every message type, built with each class's own constructor and `to_frames`."""
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    pose = np.array([0.5, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0])
    seeds: dict[str, list[Any]] = {
        "StateMsg": [
            msg.StateMsg(
                5, "sim/sawyer", 10**9, rng.normal(size=7), rng.normal(size=7), 0.5, 0.0, 0.1, pose, "lockstep", 3
            )
        ],
        "ImageMsg": [msg.ImageMsg("front_left", 9, "sim/sawyer", 10**9, image, 2)],
        "ObjectsMsg": [msg.ObjectsMsg(4, "sim/sawyer", 10**9, ("red", "green"), np.stack([pose, pose]), step=1)],
        "TaskMsg": [msg.TaskMsg(3, "sim/sawyer", 10**9, "stack", False, 0.0, 0.25, 12)],
        "StatusMsg": [
            msg.StatusMsg(2, "sim/sawyer", 10**9, "sawyer", "lockstep", True, "reset", 1, -1, "", 1, {"late": 1})
        ],
        "CommandMsg": [
            msg.CommandMsg(6, Mode.CARTESIAN_VELOCITY, np.zeros(7), 2 * 10**9, 5, t_capture_ns=10**9),
            msg.CommandMsg(7, Mode.JOINT_POSITION, np.zeros(8), 2 * 10**9, 5, t_capture_ns=10**9),
            msg.CommandMsg(8, Mode.HOLD, np.zeros(0), 2 * 10**9, t_capture_ns=10**9),
        ],
        "ControlMsg": [msg.ControlMsg(msg.TICK, 10), msg.ControlMsg(msg.RESET, 11, seed=3)],
    }
    if "session" in msg.ControlMsg.__dataclass_fields__:  # the session contract, where this tree has it
        seeds["ControlMsg"] += [msg.ControlMsg(t, 12, session="s" * 32) for t in (msg.CLAIM, msg.RELEASE)]
    return seeds


def _frames_of(message: Any) -> list[bytes]:
    if isinstance(message, msg.ImageMsg):
        return message.to_frames(jpeg=True)
    return message.to_frames()


# ------------------------------------------------------------------------------------------------ targets


class Target:
    """One decoder under fuzz: `generate` an input, `check` it (returns the outcome label, or raises)."""

    name: str
    typed: tuple[type[BaseException], ...] = ()
    unit = "input"
    hang_s = HANG_S  # an input slower than this is a hang (a target whose decoder is bounded slower says so)

    def generate(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def check(self, case: Any) -> str | Counter:
        raise NotImplementedError

    def reason(self, exc: BaseException) -> str:
        """The rejection's name: the error's `reason` where it has one (the drop counters' key)."""
        return getattr(exc, "reason", None) or type(exc).__name__

    def detail(self, exc: BaseException) -> str:
        """What the rejection said, its values blanked out (the JSON's finer breakdown)."""
        return _normalise(str(exc))

    def close(self) -> None:
        pass


class WireTarget(Target):
    """`wire.decode` on multipart frames: mutated valid messages, header surgery, JPEG surgery, garbage."""

    name = "wire"
    typed = (wire.WireError,)

    def __init__(self) -> None:
        seeds = _seed_messages(np.random.default_rng(0))
        self.seeds = [_frames_of(m) for group in seeds.values() for m in group]
        image = seeds["ImageMsg"][0]
        self.seeds.append(image.to_frames(jpeg=False))
        gray = wire.encode("image/gray", seq=1, source="s", t_capture_ns=1, jpeg={"image": image.image[..., 0]})
        self.jpegs = [_frames_of(image), gray]
        self.splice = [f for frames in self.seeds for f in frames]
        self.big = memoryview(bytes(wire.DEFAULT_LIMITS.max_buffer_bytes + 1))  # oversize frames without copies

    def generate(self, rng: random.Random) -> Any:
        seed = list(rng.choice(self.seeds))
        r = rng.random()
        if r < 0.35:
            frames = repack_header(rng, seed)
            return mutate_frames(rng, frames, self.splice) if rng.random() < 0.2 else frames
        if r < 0.65:
            for _ in range(rng.choice((1, 1, 2, 3))):
                seed = mutate_frames(rng, seed, self.splice)
            return seed
        if r < 0.75:
            jpeg = list(rng.choice(self.jpegs))
            jpeg[2] = mutate_jpeg(rng, jpeg[2])
            return jpeg
        if r < 0.85:
            n = rng.choice((0, 1, 2, 2, 3, 5, 17))
            return [rng.randbytes(rng.choice((0, 1, 4, 30, 300))) for _ in range(n)]
        if r < 0.9:
            odd = [None, 3, "state", 1.5, [b"x"], np.arange(3, dtype=np.int32), np.zeros((2, 2), np.uint8)]
            odd += [np.zeros(4, np.uint8)[::2], memoryview(b"abcd").cast("B", (2, 2)), bytearray(b"x")]
            if rng.random() < 0.15:
                return rng.choice((None, 5, b"state", "state", iter([b"a", b"b"]), {b"a": 1}))
            i = rng.randrange(len(seed))
            seed[i] = rng.choice(odd)
            return seed
        if r < 0.93:
            limits = wire.DEFAULT_LIMITS
            op = rng.randrange(4)
            if op == 0:
                return [seed[0], seed[1] + bytes(limits.max_header_bytes)]
            if op == 1:
                return [*seed, self.big]
            if op == 2:
                return [*seed, self.big[:-2], self.big[:-2], b"x" * 10]
            return [*seed, *([b""] * limits.max_frames)]
        return seed  # a valid message, unchanged: accepted

    def check(self, case: Any) -> str:
        env = wire.decode(case)
        for name, array in env.arrays.items():
            if array.nbytes > wire.DEFAULT_LIMITS.max_buffer_bytes:
                raise InvariantBroken("oversized_array", f"{name}: {array.nbytes} B")
        return "accepted"


def _envelope_parts(frames: list[bytes]) -> dict[str, Any]:
    env = wire.decode(frames)
    header = msgpack.unpackb(frames[1], raw=False)
    jpeg = {d["name"] for d in header["arrays"] if d["enc"] == "jpeg"}
    return {
        "topic": env.topic,
        "seq": env.seq,
        "source": env.source,
        "t_capture_ns": env.t_capture_ns,
        "fields": env.fields,
        "arrays": {k: v for k, v in env.arrays.items() if k not in jpeg},
        "jpeg": {k: v for k, v in env.arrays.items() if k in jpeg},
    }


_TOPICS = ("state", "status", "command", "objects", "task", "tick", "reset", "claim", "release", "image/front_left")


def mutate_array(rng: random.Random, a: np.ndarray) -> np.ndarray:
    op = rng.randrange(7)
    if op == 0:
        return a.astype(rng.choice(list(wire.DTYPES)))
    if op == 1:  # non-finite or extreme values
        b = np.array(a, dtype=np.float64)
        if b.size:
            b.flat[rng.randrange(b.size)] = rng.choice((*NONFINITE, 1e308, -1e308, 5e-324))
        return b.astype(a.dtype) if a.dtype.kind == "f" and rng.random() < 0.5 else b
    if op == 2:
        return a.reshape(-1)[: rng.randrange(a.size + 1)]
    if op == 3:
        return np.concatenate([a.reshape(-1), a.reshape(-1)])
    if op == 4:
        return a.reshape(1, -1) if rng.random() < 0.5 else np.asarray(a.reshape(-1)[0] if a.size else 0.0)
    if op == 5:
        return np.zeros(rng.choice(((0,), (0, 7), (7, 0), (3, 0, 3), (1, 1, 3), (2, 2, 2))), a.dtype)
    return np.full(a.shape, rng.choice((0, 1, -1, 2**31)), dtype=np.int64)


class MessageTarget(Target):
    """`<Type>.from_envelope` on messages the wire accepts: the seed's fields, arrays and topic made hostile."""

    typed = (wire.MalformedMessage,)

    def __init__(self, type_name: str) -> None:
        self.name = f"messages.{type_name}"
        self.cls = getattr(msg, type_name)
        self.parts = [_envelope_parts(_frames_of(m)) for m in _seed_messages(np.random.default_rng(0))[type_name]]

    def mutate(self, rng: random.Random, parts: dict[str, Any]) -> dict[str, Any]:
        parts = dict(parts)
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
            what = rng.random()
            if what < 0.45:
                parts["fields"] = mutate_tree(rng, parts["fields"])
                if not isinstance(parts["fields"], dict):
                    parts["fields"] = {"x": parts["fields"]}
            elif what < 0.75 and (parts["arrays"] or parts["jpeg"]):
                kind = "arrays" if parts["arrays"] and (not parts["jpeg"] or rng.random() < 0.5) else "jpeg"
                arrays = dict(parts[kind])
                name = rng.choice(list(arrays))
                op = rng.randrange(6)
                if op == 0:
                    del arrays[name]
                elif op == 1:
                    arrays[random_string(rng)[:20] or "x"] = arrays[name]
                elif op == 2 and kind == "jpeg":  # the same image raw, or a gray JPEG
                    parts["arrays"] = {**parts["arrays"], name: arrays.pop(name)}
                elif op == 3 and kind == "jpeg":
                    image = arrays[name]
                    arrays[name] = image[..., 0] if image.ndim == 3 else image[: rng.randrange(1, 4), :1]
                else:
                    arrays[name] = mutate_array(rng, arrays[name]) if kind == "arrays" else arrays[name]
                parts[kind] = arrays
            elif what < 0.9:
                parts["topic"] = rng.choice((*_TOPICS, "image/", "image//x", "Image/x", "state ", random_string(rng)))
            else:
                key = rng.choice(("seq", "t_capture_ns", "source"))
                parts[key] = random_string(rng) if key == "source" else rng.choice((0, 2**64 - 1, 2**63, 1))
        return parts

    def generate(self, rng: random.Random) -> Any:
        for _ in range(20):  # until the wire encodes it: from_envelope only ever sees what decode accepts
            parts = self.mutate(rng, rng.choice(self.parts))
            try:
                return wire.encode(**parts)
            except wire.WireError:
                continue
            except Exception:  # noqa: BLE001 - encode must raise only WireError: `check` reports it
                return parts
        return wire.encode(**self.parts[0])

    def reason(self, exc: BaseException) -> str:
        """Every refusal here is counted as "malformed"; the table names what was wrong, without the topic."""
        return _normalise(re.sub(r"^[^\s:]*: ", "", str(exc)))

    def check(self, case: Any) -> str:
        if isinstance(case, dict):
            case = wire.encode(**case)
        try:
            env = wire.decode(case)
        except wire.WireError as err:  # encode made it, decode must take it
            raise InvariantBroken("encode_decode_roundtrip", f"decode refused what encode built: {err}") from err
        self.cls.from_envelope(env)
        return "accepted"


class _QueueSocket:
    """Stands in for the receiver's SUB socket: a queue of multipart messages, drained without blocking."""

    def __init__(self) -> None:
        self.queue: deque[list[Any]] = deque()

    def poll(self, timeout: int = 0, flags: int = zmq.POLLIN) -> int:
        return zmq.POLLIN if self.queue else 0

    def recv_multipart(self, flags: int = 0, copy: bool = True) -> list[Any]:
        if not self.queue:
            raise zmq.Again()
        return self.queue.popleft()


class ReceiverTarget(Target):
    """`LatestReceiver.poll` over batches of messages: each message kept as the newest or counted as a drop."""

    name = "receiver"
    typed = ()
    unit = "batch"

    def __init__(self) -> None:
        self.wire = WireTarget()
        logging.getLogger("robots.contract.receiver").setLevel(logging.ERROR)  # each drop reason's log line
        self.socket = _QueueSocket()
        try:  # the shapes the reader takes, where this receiver checks them
            self.receiver = LatestReceiver(self.socket, shapes={"state": {"q": (7,)}})  # type: ignore[arg-type]
        except TypeError:
            self.receiver = LatestReceiver(self.socket)  # type: ignore[arg-type]
        self.seq: Counter = Counter()

    def _valid(self, rng: random.Random) -> list[bytes]:
        topic = rng.choice(("state", "status", "image/front_left", "objects"))
        source = rng.choice(("sim/sawyer", "sim/panda"))
        key = (topic, source)
        step = rng.choice((1, 1, 1, 2, 0, -1, -5, 2**40))  # mostly increasing; repeats, reorders and jumps
        self.seq[key] = min(max(0, self.seq[key] + step), 2**64 - 1)
        arrays = {"q": np.zeros(rng.choice((7, 7, 7, 6, 0)))} if topic == "state" else None
        return wire.encode(topic, seq=self.seq[key], source=source, t_capture_ns=1, fields={"step": 1}, arrays=arrays)

    def generate(self, rng: random.Random) -> Any:
        return [
            self._valid(rng) if rng.random() < 0.6 else self.wire.generate(rng)
            for _ in range(rng.choice((1, 1, 2, 3, 8)))
        ]

    def check(self, case: Any) -> Counter:
        before = Counter(self.receiver.drops.by_reason)
        self.socket.queue.extend(case)
        fresh = self.receiver.poll(0)
        dropped = Counter(self.receiver.drops.by_reason) - before
        if self.socket.queue:
            raise InvariantBroken("not_drained", f"{len(self.socket.queue)} messages left in the queue")
        if len(fresh) + dropped.total() != len(case):
            raise InvariantBroken("uncounted", f"{len(case)} messages, {len(fresh)} kept, {dropped.total()} counted")
        outcome = Counter({"accepted": len(fresh)})
        outcome.update({f"rejected:{reason}": n for reason, n in dropped.items()})
        return outcome


# ------------------------------------------------------------------------------------------------- config


def well_typed(obj: Any, where: str = "config") -> str | None:
    """Where a loaded config dataclass holds a value its annotation does not allow; None when all are right.

    The oracle is written apart from runtime/config.py on purpose: it must not share the loader's mistakes.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        path = f"{where}.{f.name}"
        if dataclasses.is_dataclass(hint):
            problem = well_typed(value, path) if isinstance(value, hint) else f"{path}: {type(value).__name__}"
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            problem = None if isinstance(value, hint) else f"{path}: {value!r:.60}"
        elif hint is float:
            ok = isinstance(value, int) or isinstance(value, float) and math.isfinite(value)
            problem = None if ok and not isinstance(value, bool) and value > 0 else f"{path}: {value!r:.60}"
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            problem = None if ok else f"{path}: {value!r:.60}"
        elif hint is str:
            problem = None if isinstance(value, str) else f"{path}: {type(value).__name__}"
        elif hint == tuple[str, ...]:
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            problem = None if ok else f"{path}: {value!r:.60}"
        else:
            problem = None
        if problem:
            return problem
    return None


def _config_seed() -> dict[str, Any]:
    return {
        "robot": "sawyer",
        "mode": "joint_position",
        "link": {"pub_endpoint": "tcp://127.0.0.1:5555", "period_s": 0.05, "jpeg_quality": 90},
        "cameras": ["front_left", "front_right"],
        "instruction": "stack the red cube on the blue cube",
        "decode": "hybrid",
        "calibration": "",
        "calibration_max_age_days": 30.0,
        "watchdogs": {"max_state_age_ms": 30.0, "heartbeat_timeout_ms": 300},
    }


def alias_bomb(levels: int = 7) -> str:
    """A YAML value of 9**levels leaves made of `levels` small lists: cheap to load, ruinous to repr."""
    lists = ["&l0 [x, x, x, x, x, x, x, x, x]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(lists)}]"


_YAML_ATTACKS = (
    *(f"robot: sawyer\n{key}: {alias_bomb()}\n" for key in ("mode", "decode", "cameras", "instruction", "bogus")),
    f"robot: {alias_bomb()}\n",
    "robot: !!python/object/apply:os.system ['true']\n",
    "robot: !!binary AAEC\n",
    "robot: sawyer\nrobot: panda\n",
    "---\nrobot: sawyer\n---\nrobot: panda\n",
    "base: &b {robot: sawyer}\n<<: *b\n",
    "? [1, 2]\n: 3\n",
    "robot: sawyer\n1: 2\nnull: 3\n2026-01-01: x\n",
    "robot: sawyer\nlink: {period_s: .nan}\n",
    "robot: sawyer\nlink: {period_s: .inf}\n",
    "robot: sawyer\ncameras: 5\n",
    "robot: sawyer\ncameras: front_left\n",
    "robot: sawyer\ncameras: {a: 1}\n",
    "robot: 7\n",
    "robot: sawyer\nmode: [cartesian_velocity]\n",
    "robot: sawyer\ndecode: {argmax: 1}\n",
    "\ufeffrobot: sawyer\n",
    "robot: sawyer\x00\n",
    "robot: '\\ud800'\n",
    "%YAML 9.9\n---\nrobot: sawyer\n",
    "robot: *undefined\n",
    "",
    "~",
    "[]",
)


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's, where built: generating is not under test


class ConfigTarget(Target):
    """`load_config` on YAML files: mutated configs dumped as YAML, YAML attacks, broken text and bytes."""

    name = "config"

    def __init__(self) -> None:
        from runtime import config as config_module

        self.config = config_module
        self.typed = (config_module.ConfigError,)
        shm = Path("/dev/shm")
        self.dir = tempfile.TemporaryDirectory(prefix="pac-fuzz-", dir=shm if shm.is_dir() else None)
        self.path = Path(self.dir.name) / "config.yaml"
        self.seed = _config_seed()

    def generate(self, rng: random.Random) -> Any:
        robot = rng.choice((None, None, "sawyer", "panda", "ur5"))
        r = rng.random()
        if r < 0.6:
            raw = mutate_tree(rng, self.seed, rng.choice((1, 1, 2, 3)), wide_ints=True, binary=rng.random() < 0.1)
            try:
                flow, uni = rng.random() < 0.5, rng.random() < 0.5
                text = yaml.dump(raw, Dumper=_DUMPER, allow_unicode=uni, default_flow_style=flow)
            except (yaml.YAMLError, RecursionError, ValueError):  # 10**5000 has no decimal str here
                text = yaml.safe_dump(self.seed)
            data = text.encode("utf-8", "surrogatepass")
        elif r < 0.75:
            data = rng.choice(_YAML_ATTACKS).encode("utf-8", "surrogatepass")
            if rng.random() < 0.3:
                data = b"robot: sawyer\nx: " + data if rng.random() < 0.5 else data.replace(b"robot: sawyer\n", b"")
        elif r < 0.9:
            data = yaml.safe_dump(self.seed).encode()
            for _ in range(rng.choice((1, 2, 4))):
                data = mutate_bytes(rng, data)
        elif r < 0.95:
            depth = rng.choice((50, 5_000, 100_000))
            data = b"robot: sawyer\nlink: " + (b"[" * depth if rng.random() < 0.5 else b"{a: " * depth)
        elif r < 0.98:
            data = b"robot: sawyer\ninstruction: " + b"x" * rng.choice((6 * 10**4, 10**5, 3 * 10**6)) + b"\n"
        else:
            return (None, robot)  # no file at all
        return (data, robot)

    def check(self, case: Any) -> str:
        data, robot = case
        if data is None:
            path = self.path.with_name("missing.yaml")
        else:
            path = self.path
            path.write_bytes(data)
        config = self.config.load_config(path, robot)
        problem = well_typed(config)
        if problem is not None:
            raise InvariantBroken("accepted_ill_typed", problem, problem.split(":")[0])
        return "accepted"

    def reason(self, exc: BaseException) -> str:
        return _normalise(str(exc).replace(str(self.path), "<file>").replace(str(self.path.parent), "<dir>"))

    def detail(self, exc: BaseException) -> str:
        return self.reason(exc)

    def close(self) -> None:
        self.dir.cleanup()


_QUOTED = re.compile(r"(?<!field )(?<!array )(?<!lacks )(?<!props )'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_NUMBER = re.compile(r"(?<![\w.-])-?(?:0x[0-9a-fA-F]+|\d[\d_]*(?:\.\d*)?(?:e[+-]?\d+)?)\b")
_INNER = (re.compile(r"\[[^\[\]]*\]"), re.compile(r"\{[^{}]*\}"))


def _normalise(message: str) -> str:
    """A rejection message with its values blanked out, so that one cause counts under one name.

    Field and key names stay ("field 'mode'", "lacks 'pac.golden'"); values, numbers and lists go.
    """
    message = message[:400].split("\n")[0]  # the name is at the start; regexes on 70 kB backtrack for seconds
    for cut in (", got ", "; known", " in '", " (has ", ", but --robot"):
        message = message.split(cut)[0]
    message = re.sub(r"<class '(\w+)'>", r"\1", message)
    message = re.sub(r"(\w+Error)\((['\"])(.*)\2\)", r"\1(\3)", message)  # an error's repr: keep its words
    message = _NUMBER.sub("N", _QUOTED.sub("'…'", message))
    for pattern, mark in zip(_INNER, "\x00\x01", strict=True):  # innermost first, then what held them
        for _ in range(8):
            message, n = pattern.subn(mark, message)
            if not n:
                break
    return message.replace("\x00", "[…]").replace("\x01", "{…}")[:90]


# ----------------------------------------------------------------------------------------------- metadata


class MetadataTarget(Target):
    """`PolicyMetadata.from_props` on metadata_props: JSON values made hostile, broken, nested, removed."""

    name = "metadata"

    def __init__(self) -> None:
        from policies.export import metadata as meta_module
        from policies.spec import action_spec, observation_spec, scene_objects
        from policies.tokenizer.language import InstructionTokenizer
        from robots.spec import load_spec

        self.meta = meta_module
        self.typed = (meta_module.PolicyFileError,)
        arm = load_spec("sawyer")
        base = dict(
            variant="fp32",
            observation=observation_spec(arm, cameras=(), objects=scene_objects(arm)),  # no images: small JSON
            action=action_spec(arm),
            tokenizer_model=InstructionTokenizer.default().model_bytes,
            model={"size": "XS", "config": {"q_bins": 51, "width": 64}, "parameters": 1, "flops": 2},
            provenance={"weights": "untrained", "git": "abc"},
        )
        self.seeds = []
        for graph, candidates in (("actor", 0), ("critic", 8)):
            blank = meta_module.PolicyMetadata(graph=graph, candidates=candidates, golden=None, **base)
            inputs, outputs = blank.signature()  # a golden pair of the graph's own shapes
            arrays = [{n: np.zeros(shape, dtype) for n, (dtype, shape) in side.items()} for side in (inputs, outputs)]
            blank.golden = meta_module.Golden(*arrays, 1e-5)
            self.seeds.append(blank.to_props())
        self.keys = sorted(self.seeds[0])
        self.parsed = [{k: json.loads(v) for k, v in seed.items()} for seed in self.seeds]

    def _value(self, rng: random.Random, key: str, parsed: Any, text: str) -> str | None:
        r = rng.random()
        if r < 0.45:
            return _json(mutate_tree(rng, parsed, rng.choice((1, 1, 2)), wide_ints=True, binary=False), text)
        if r < 0.6:
            return mutate_bytes(rng, text.encode()).decode("utf-8", "replace")
        if r < 0.7:
            return rng.choice(
                ("", "null", "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "1" * 4301, "1.5")
                + ("true", '"1"', "[]", "{}", "[1]", '{"a": 1}', '"\\ud800"', "0x10", "01")
            )
        if r < 0.75:
            depth = rng.choice((100, 2_000, 100_000))
            return "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
        if r < 0.8:
            return None  # the key is missing
        if key in ("pac.tokenizer", "pac.golden"):  # the binary payloads inside, specifically
            return _json(self._binary(rng, key, parsed), text)
        return _json(random_value(rng, 2, wide_ints=True, binary=False), text)

    def _binary(self, rng: random.Random, key: str, parsed: Any) -> Any:
        if key == "pac.tokenizer":
            model = rng.choice(
                (
                    "!!!not base64",
                    "QUJD",
                    "",
                    rng.randbytes(64).hex(),
                    mutate_bytes(rng, parsed["model"].encode()).decode("ascii", "replace"),
                )
            )
            tok = {**parsed, "model": model}
            if rng.random() < 0.7:  # the hash recomputed, so the loader gets past the hash check
                import base64
                import hashlib

                try:
                    tok["sha256"] = hashlib.sha256(base64.b64decode(model)).hexdigest()
                except ValueError:
                    pass
            return tok
        golden = json.loads(json.dumps(parsed))
        side = rng.choice(("inputs", "outputs"))
        name = rng.choice(list(golden[side]))
        arr = golden[side][name]
        field = rng.choice(("dtype", "shape", "data"))
        if field == "dtype":
            arr["dtype"] = rng.choice(
                ("O", "V0", "S0", "<U99999999", "(2,2)<f4", "<M8[ns]", "?", "<c16", "i9", "", "<f4,<f4", "|V8")
                + ("float64", "<f2", ">i8", 3, None, ["<f4"], {"names": ["a"], "formats": ["O"]})
            )
        elif field == "shape":
            arr["shape"] = rng.choice(([], [-1], [0], [2**63], [1, 2**40, 0], [1.5], "1", None, [[1]], [-1, -1]))
        else:
            arr["data"] = rng.choice(("", "AA==", "====", "A" * 4000, 3, None, "AAAA" * 3))
        return golden

    def generate(self, rng: random.Random) -> Any:
        which = rng.randrange(len(self.seeds))
        props = dict(self.seeds[which])
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            key = rng.choice(self.keys)
            value = self._value(rng, key, self.parsed[which][key], props.get(key, "null"))
            if value is None:
                props.pop(key, None)
            else:
                props[key] = value
        if rng.random() < 0.05:
            props[random_string(rng)] = random_string(rng)
        return props

    def check(self, case: Any) -> str:
        meta = self.meta.PolicyMetadata.from_props(case)
        if hasattr(meta.golden, "check"):  # the loader's own check of the golden pair: a refusal, typed
            meta.golden.check(meta.signature())
        try:  # what the loader (runtime/inference/loader.py) then does with the file before the first motion
            _, outputs = meta.signature()
            (output,) = outputs
            meta.golden.outputs[output]
            meta.model.get("size")
        except Exception as exc:  # noqa: BLE001 - any failure here is the finding
            raise InvariantBroken("accepted_unusable", f"{exc!r}"[:120], type(exc).__name__) from exc
        return "accepted"

    def reason(self, exc: BaseException) -> str:
        return _normalise(str(exc))


def _json(value: Any, fallback: str) -> str:
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):  # ints past 4300 digits, nesting past the recursion limit
        return fallback


# ------------------------------------------------------------------------------------------------- driver


class DriverTarget(Target):
    """A lockstep `SimDriver.handle` (with its publishing), fed what a runtime sends, made hostile.

    The inputs follow the driver: valid commands carry the next seq, a fresh deadline and observation time,
    and the session token that holds the arm, so hostile values land one at a time on messages that would
    otherwise be applied. After each input the driver's counters must say what became of it.
    """

    name = "driver"
    typed = ()

    def __init__(self, robot: str = "sawyer") -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        from robots.sim.driver import DriverConfig, SimDriver
        from robots.sim.process import free_loopback_endpoint
        from robots.spec import load_spec

        logging.getLogger("pac-sim").setLevel(logging.CRITICAL)  # every refusal is logged; counted here instead
        link = dataclasses.replace(
            msg.DEFAULT_LINK, pub_endpoint=free_loopback_endpoint(), cmd_endpoint=free_loopback_endpoint()
        )
        self.driver = SimDriver(DriverConfig(robot=robot, lockstep=True, cameras=(), link=link))
        self.spec = load_spec(robot)
        self.sessions = "session" in msg.CommandMsg.__dataclass_fields__
        self.token = self.new_token(random.Random(0))
        self.strangers = [self.new_token(random.Random(1)), "s" * 16, "ü" * 32]  # other sessions' valid tokens
        self.wire = WireTarget()

    @staticmethod
    def new_token(rng: random.Random) -> str:
        return rng.randbytes(16).hex()

    def _holding(self) -> bool:
        """Whether our session holds the arm (always, on a driver without sessions)."""
        sessions = getattr(self.driver, "sessions", None)
        return sessions is None or (sessions.token == self.token and sessions.held())

    def _next_seq(self) -> int:
        """The seq after the driver's last for our session; a session that does not hold the arm starts at 0."""
        return min(self.driver.counters.last_rx_seq + 1, 2**64 - 1) if self._holding() else 0

    def _session(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.sessions:
            kwargs["session"] = self.token
        return kwargs

    def command(self, rng: random.Random) -> list[bytes]:
        now = self.driver.now_ns()
        mode = rng.choice((Mode.CARTESIAN_VELOCITY, Mode.CARTESIAN_VELOCITY, Mode.JOINT_POSITION, Mode.HOLD))
        if mode is Mode.HOLD:
            action = np.zeros(0)
        else:
            space = self.spec.action_spaces[mode]
            low, high = np.asarray(space.low), np.asarray(space.high)
            action = low + (high - low) * np.array([rng.random() for _ in range(space.size)])
            if mode is Mode.JOINT_POSITION:  # near home, where the TCP stays inside the workspace
                action[:-1] = self.spec.home + 0.05 * (action[:-1] - (low[:-1] + high[:-1]) / 2)
        kwargs: dict[str, Any] = dict(
            seq=self._next_seq(), mode=mode, action=action, deadline_ns=now + 10**8, obs_seq=1, t_capture_ns=now
        )
        if "obs_t_ns" in msg.CommandMsg.__dataclass_fields__:
            kwargs["obs_t_ns"] = now
        return msg.CommandMsg(**self._session(kwargs)).to_frames()

    def control(self, rng: random.Random, topic: str) -> list[bytes]:
        kwargs: dict[str, Any] = dict(topic=topic, seq=self._next_seq())
        if topic == msg.RESET and rng.random() < 0.5:
            kwargs["seed"] = rng.randrange(2**32)
        return msg.ControlMsg(**self._session(kwargs)).to_frames()

    def _hostile_fields(self, rng: random.Random, frames: list[bytes]) -> list[bytes]:
        """One header or field value replaced by something of another type or at an extreme."""
        header = msgpack.unpackb(frames[1], raw=False)
        fields = dict(header["fields"])
        r = rng.random()
        if r < 0.25:
            header["seq"] = rng.choice((0, 1, header["seq"] - 1, header["seq"], 2**63, 2**64 - 1, -1, "1", 1.0))
        elif r < 0.4:
            fields["seed"] = rng.choice(
                (-1, 0, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1.5, math.nan, "3", True, None, [1], b"\x01")
            )
        elif r < 0.5 and self.sessions:
            fields["session"] = rng.choice(
                ("", "x", "s" * 15, "s" * 129, "\x00" * 32, "\n" * 32, *self.strangers, 5, None, ["s" * 32])
            )
        elif r < 0.6:
            fields["mode"] = rng.choice(("HOLD", "fly", "", "hold ", "cartesian_velocity\x00", 1, None, ["hold"]))
        elif r < 0.7:
            key = rng.choice(("deadline_ns", "obs_seq", "obs_t_ns"))
            fields[key] = rng.choice((-1, 0, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, math.inf, "now", None))
        elif r < 0.75:
            fields["lease_ms"] = rng.choice((0, -1, 1e308, math.inf, math.nan, 10**18, "1000", True, None, 50.0))
        elif r < 0.8:
            header["source"] = rng.choice(("", "x" * 10_000, "\x1b[31mred", "\ud800", 5))
        else:
            fields = mutate_tree(rng, fields, 1)
            fields = fields if isinstance(fields, dict) else {"x": fields}
        header["fields"] = fields
        try:
            return [frames[0], msgpack.packb(header, use_bin_type=True), *frames[2:]]
        except (TypeError, ValueError, OverflowError):
            return frames

    def _hostile_action(self, rng: random.Random) -> list[bytes]:
        frames = self.command(rng)
        header = msgpack.unpackb(frames[1], raw=False)
        action = np.frombuffer(frames[2], np.float64).copy()
        r = rng.random()
        if r < 0.4 and action.size:
            action[rng.randrange(action.size)] = rng.choice((*NONFINITE, 1e308, -1e308, 1e20))
        elif r < 0.6:
            action = np.full(action.size, rng.choice((1e300, -1e300, 5e-324, 1e6)))
        elif r < 0.8:
            action = np.zeros(rng.choice((0, 1, 6, 9, 100)))
        else:
            dtype = rng.choice(("float16", "float32", "int64", "uint8", "bool", "int8"))
            arr = action.astype(dtype) if action.size else np.zeros(3, dtype)
            header["arrays"] = [{"name": "action", "dtype": dtype, "shape": list(arr.shape), "enc": "raw"}]
            return [frames[0], msgpack.packb(header, use_bin_type=True), arr.tobytes()]
        header["arrays"] = [{"name": "action", "dtype": "float64", "shape": list(action.shape), "enc": "raw"}]
        return [frames[0], msgpack.packb(header, use_bin_type=True), action.tobytes()]

    def generate(self, rng: random.Random) -> Any:
        if (self._holding() and self.driver.counters.last_rx_seq >= 2**62) or rng.random() < 0.005:
            # this session's seq ran to the top: a runtime in that state starts a new session
            frames = self.control(rng, msg.RELEASE if self.sessions else msg.TICK)
            self.token = self.new_token(rng)
            return frames
        sessions = getattr(self.driver, "sessions", None)
        if sessions is not None and sessions.held() and sessions.token != self.token and rng.random() < 0.2:
            # another session (a hostile token that was valid) holds the arm: it gives it back, as its client would
            own, self.token = self.token, sessions.token
            frames, self.token = self.control(rng, msg.RELEASE), own
            return frames
        r = rng.random()
        if r < 0.3:
            return self.command(rng)
        if r < 0.42:
            return self.control(rng, msg.TICK)
        if r < 0.47:
            return self.control(rng, msg.RESET)
        if r < 0.5 and self.sessions:
            return self.control(rng, rng.choice((msg.CLAIM, msg.CLAIM, msg.RELEASE)))
        if r < 0.6:
            return self._hostile_action(rng)
        if r < 0.85:
            topic = rng.choice((msg.TICK, msg.RESET, "command", "command", *((msg.CLAIM,) if self.sessions else ())))
            frames = self.command(rng) if topic == "command" else self.control(rng, topic)
            return self._hostile_fields(rng, frames)
        if r < 0.9:  # topics that pass the SUB socket's prefix filter without being one of its topics
            frames = self.control(rng, msg.TICK)
            topic = rng.choice(("ticks", "tick/x", "commander", "reset2", "claimed", "release!"))
            return [topic.encode(), *frames[1:]]
        return self.wire.generate(rng)

    def _snapshot(self) -> tuple[Counter, Counter, int, Any]:
        sessions = getattr(self.driver, "sessions", None)
        holder = (sessions.token, sessions.held()) if sessions is not None else None
        servo = self.driver.servo.status
        return Counter(self.driver.counters.dropped), Counter(servo.rejected), servo.applied, holder

    def check(self, case: Any) -> str:
        drops, rejected, applied, holder = self._snapshot()
        stepped = self.driver.handle(case)
        if stepped:
            self.driver.publish_all()  # as the lockstep loop does
        drops2, rejected2, applied2, holder2 = self._snapshot()
        servo = self.driver.servo
        inside = (servo.q_des >= servo.q_low - 1e-9) & (servo.q_des <= servo.q_high + 1e-9)
        if not np.all(np.isfinite(servo.q_des) & inside):  # the servo's promise, whatever came in
            raise InvariantBroken("joint_target_outside_limits", f"q_des {servo.q_des}")
        outcomes = [f"dropped:{r}" for r in (drops2 - drops).elements()]
        outcomes += [f"rejected:{r}" for r in (rejected2 - rejected).elements()]
        outcomes += ["applied"] * (applied2 - applied)
        if len(outcomes) > 1:
            raise InvariantBroken("counted_twice", ", ".join(outcomes))
        if outcomes:
            return outcomes[0]
        topic = _topic(case)
        if stepped and topic in (msg.TICK, msg.RESET):
            return topic
        if topic == getattr(msg, "CLAIM", None):  # admitted: a refused claim is counted as a drop
            return "claim"
        if topic == getattr(msg, "RELEASE", None) and holder2 != holder:
            return "release"
        held = "arm held" if holder and holder[1] else "arm free"
        detail = f"{topic!r:.30} handled ({held}, returned {stepped}), no counter moved"
        raise InvariantBroken("uncounted", detail, topic[:30])

    def close(self) -> None:
        self.driver.close()


def _topic(frames: Any) -> str:
    try:
        return bytes(frames[0]).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - whatever the first frame is, it names no topic
        return ""


# ----------------------------------------------------------------------------------------------- datasets

_HDF5_SIGNATURES = (b"\x89HDF", b"OHDR", b"TREE", b"HEAP", b"SNOD", b"GCOL", b"BTHD", b"BTLF", b"FRHP", b"FHDB")
_HDF5_NAMES = (b"episode_", b"pac_checksums", b"pac_format", b"crc32", b"total_steps", b"observations", b"actions")


class DatasetCase:
    """One damaged dataset: the HDF5 file's and metadata.json's bytes, what was done to them, and the step of
    each episode whose frame is read."""

    def __init__(self, ops: list[str], hdf5: bytes, meta: bytes, steps: tuple[int, ...]):
        self.ops, self.hdf5, self.meta, self.steps = ops, hdf5, meta, steps

    def __repr__(self) -> str:
        return (
            f"DatasetCase({'; '.join(self.ops)}; hdf5 {len(self.hdf5)} B, steps {self.steps}, meta {self.meta[:300]!r})"
        )


class DatasetTarget(Target):
    """A small sealed dataset (3 episodes, one JPEG camera), its HDF5 bytes and metadata.json damaged (bytes
    flipped or overwritten anywhere, HDF5 structures most often; truncation; attributes, datasets and groups
    changed, deleted or linked through h5py; hostile metadata values), then checked whole (`check_dataset`
    with data, what `open_dataset` runs) and read through `EpisodeReader` (every episode's arrays and one
    frame). Accepted only when everything read equals what was written; a DatasetError is a rejection."""

    name = "dataset"
    LENGTHS = (3, 2, 3)
    CAMERA = "front_left"

    def __init__(self) -> None:
        from policies.data import dataset as dataset_module
        from policies.data import integrity
        from policies.data.collect import dataset_id, write_dataset
        from policies.data.episodes import EpisodeReader
        from policies.data.errors import DatasetError

        self.typed = (DatasetError,)
        self.dataset, self.integrity, self.reader_cls = dataset_module, integrity, EpisodeReader
        warnings.simplefilter("ignore", integrity.UncheckedDataWarning)
        logging.getLogger("minari").setLevel(logging.ERROR)
        shm = Path("/dev/shm")
        self.dir = tempfile.TemporaryDirectory(prefix="pac-fuzz-", dir=shm if shm.is_dir() else None)
        base = Path(self.dir.name)
        self.did = dataset_id("sawyer", "stack", "mixed")
        seed_root = base / "seed"
        env = os.environ.get("MINARI_DATASETS_PATH")
        try:
            write_dataset(
                self._episodes(), seed_root, "sawyer", "stack", "mixed", cameras=(self.CAMERA,), objects=False
            )
        finally:  # write_dataset points Minari at its root: put it back
            if env is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = env
        data = seed_root / self.did / "data"
        self.hdf5 = (data / "main_data.hdf5").read_bytes()
        self.meta_text = (data / "metadata.json").read_bytes()
        self.meta = json.loads(self.meta_text)
        self.root = base / "root"
        self.data = self.root / self.did / "data"
        self.data.mkdir(parents=True)
        self.path, self.meta_path = self.data / "main_data.hdf5", self.data / "metadata.json"
        self.scratch = base / "scratch.hdf5"
        self.objects, self.data_ranges = self._survey(data / "main_data.hdf5")
        self.hotspots = sorted(
            {m.start() for s in (*_HDF5_SIGNATURES, *_HDF5_NAMES) for m in re.finditer(re.escape(s), self.hdf5)}
        )
        self.structure = self._structure_offsets()
        # A damaged file is surveyed in a child given SURVEY_TIMEOUT_S plus its size's read time, and an input is
        # surveyed twice (check_dataset, then EpisodeReader's open): slower than both is a hang.
        survey_s = dataset_module.SURVEY_TIMEOUT_S + len(self.hdf5) / dataset_module.SURVEY_BYTES_PER_S
        self.hang_s = 2 * survey_s + HANG_S

    def _episodes(self) -> list[Any]:
        from policies.data.collect import Episode, tokenizer

        spec = tokenizer("sawyer", (self.CAMERA,), objects=False).spec
        _, _, height, width = spec.image_shape
        episodes = []
        for index, steps in enumerate(self.LENGTHS):
            proprio = np.zeros((steps + 1, spec.proprio_size), np.float32)
            proprio[:, 0] = 100 * index + np.arange(steps + 1)
            last = np.arange(steps) == steps - 1
            t = np.arange(steps + 1)[:, None, None, None, None]
            channel = 60 * np.arange(3)[None, None, :, None, None]
            images = (np.add.outer(np.arange(height), np.arange(width)) + 40 * t + 7 * index + channel) % 256
            instruction = np.full((steps + 1, spec.instruction_length), index + 1, np.int64)
            episodes.append(
                Episode(
                    seed=index,
                    observations={"proprio": proprio, "instruction": instruction, "images": images.astype(np.uint8)},
                    actions=np.full((steps, 5), index + 0.5, np.float32),
                    rewards=np.arange(1, steps + 1, dtype=np.float32),
                    terminations=last & (index != 1),
                    truncations=last & (index == 1),
                    shaped=np.full(steps, 10.0 * index + 7, np.float32),
                    success=index != 1,
                    quality="mixed",
                )
            )
        return episodes

    def _survey(self, path: Path) -> tuple[list[str], list[tuple[int, int]]]:
        """Every object's path, and the byte ranges of the datasets' raw data (the rest is HDF5 structure)."""
        import h5py

        objects, ranges = [""], []
        with h5py.File(path, "r") as f:

            def visit(name: str, obj: Any) -> None:
                objects.append(name)
                if isinstance(obj, h5py.Dataset):
                    offset = obj.id.get_offset()
                    if offset is not None:
                        ranges.append((offset, obj.id.get_storage_size()))
                    elif obj.chunks is not None:
                        for i in range(obj.id.get_num_chunks()):
                            info = obj.id.get_chunk_info(i)
                            ranges.append((info.byte_offset, info.size))

            f.visititems(visit)
        return objects, sorted(ranges)

    def _structure_offsets(self) -> list[int]:
        inside = np.zeros(len(self.hdf5), bool)
        for start, size in self.data_ranges:
            inside[start : start + size] = True
        return np.flatnonzero(~inside).tolist()

    # --- generating
    def _offset(self, rng: random.Random) -> int:
        r = rng.random()
        if r < 0.35:
            return rng.choice(self.structure)
        if r < 0.6 and self.hotspots:
            return min(len(self.hdf5) - 1, rng.choice(self.hotspots) + rng.randrange(-8, 64))
        if r < 0.85:
            start, size = rng.choice(self.data_ranges)
            return start + rng.randrange(max(1, size))
        return rng.randrange(len(self.hdf5))

    def _damage_bytes(self, rng: random.Random, data: bytes, ops: list[str]) -> bytes:
        buf = bytearray(data)
        op = rng.randrange(8) if buf else 7  # an earlier truncation left nothing to change: append
        at = min(self._offset(rng), max(0, len(buf) - 1))
        if op <= 2:
            bit = rng.randrange(8)
            buf[at] ^= 1 << bit
            ops.append(f"flip {at:#x} bit {bit}")
        elif op == 3:
            value = bytes([rng.choice(_MAGIC_BYTES)]) * rng.choice((1, 2, 4, 8))
            buf[at : at + len(value)] = value
            ops.append(f"write {value.hex()} at {at:#x}")
        elif op == 4:
            n = rng.choice((1, 8, 64, 512))
            buf[at : at + n] = (
                bytes(len(buf[at : at + n])) if rng.random() < 0.5 else rng.randbytes(len(buf[at : at + n]))
            )
            ops.append(f"zero/randomise {n} B at {at:#x}")
        elif op == 5:
            cut = rng.choice((at, rng.randrange(len(buf)), len(buf) - rng.randrange(1, 2048), 0, 8, 512))
            del buf[max(0, cut) :]
            ops.append(f"truncate at {max(0, cut):#x}")
        elif op == 6:
            src = self._offset(rng)
            n = rng.choice((4, 8, 16, 64))
            buf[at : at + n] = buf[src : src + n]
            ops.append(f"copy {n} B from {src:#x} to {at:#x}")
        else:
            extra = rng.randbytes(rng.choice((1, 100, 4096))) if rng.random() < 0.5 else bytes(buf[:512])
            buf += extra
            ops.append(f"append {len(extra)} B")
        return bytes(buf)

    def _attr_value(self, rng: random.Random) -> Any:
        return rng.choice(
            (
                0,
                -1,
                1,
                2,
                3,
                2**31,
                2**63 - 1,
                np.int64(-5),
                np.uint64(2**64 - 1),
                1.0,
                3.0,
                math.nan,
                math.inf,
                True,
                np.bool_(False),
                "",
                "3",
                "x" * 3000,
                "é",
                b"\xff\xfe",
                np.zeros(3),
                np.array([1, 2], np.uint32),
                np.zeros(0, np.int8),
                np.array(["a", "b"], dtype=object),
                np.zeros((2, 2)),
                np.array(1.5, np.float16),
                np.zeros(3, np.uint32),
                "{}",
                "[]",
                "null",
                '{"fields": {}, "attrs": {}}',
            )
        )

    def _damage_h5(self, rng: random.Random, data: bytes, ops: list[str]) -> bytes:
        """`data` changed through h5py (on a scratch copy): what an edit by hand, a crash or another tool does."""
        import h5py

        self.scratch.write_bytes(data)
        episodes = [f"episode_{i}" for i in range(len(self.LENGTHS))]
        with h5py.File(self.scratch, "r+") as f:
            op = rng.randrange(12)
            name = rng.choice(self.objects)
            obj = f[name] if name else f
            if op <= 1:  # an attribute deleted, or given another value
                keys = list(obj.attrs)
                key = rng.choice(keys) if keys and rng.random() < 0.85 else random_string(rng)[:20] or "x"
                if rng.random() < 0.3 and key in obj.attrs:
                    del obj.attrs[key]
                    ops.append(f"del {name}@{key}")
                else:
                    value = self._attr_value(rng)
                    obj.attrs[key] = value
                    ops.append(f"set {name}@{key} = {value!r:.60}")
            elif op == 2:  # the manifest's JSON changed
                episode = f[rng.choice(episodes)]
                manifest = json.loads(episode.attrs[self.integrity.MANIFEST_ATTR])
                manifest = mutate_tree(rng, manifest, rng.choice((1, 1, 2)), wide_ints=True, binary=False)
                episode.attrs[self.integrity.MANIFEST_ATTR] = _json(manifest, "{")
                ops.append(f"manifest of {episode.name} mutated")
            elif op == 3:  # a per-step checksum array changed
                ds = f[f"{rng.choice(episodes)}/observations/images/{self.CAMERA}"]
                crcs = np.array(ds.attrs[self.integrity.STEP_ATTR])
                what = rng.randrange(4)
                if what == 0 and crcs.size:
                    crcs[rng.randrange(crcs.size)] ^= 1 << rng.randrange(32)
                elif what == 1:
                    crcs = crcs[:-1]
                elif what == 2:
                    crcs = crcs.astype(rng.choice((np.int64, np.float64, np.uint16)))
                else:
                    crcs = np.concatenate([crcs, crcs[:1]])
                ds.attrs[self.integrity.STEP_ATTR] = crcs
                ops.append(f"crc32 of {ds.name} = {crcs!r:.80}")
            elif op == 4:  # a dataset's values changed in place, its checksums not
                datasets = [n for n in self.objects if n and isinstance(f[n], h5py.Dataset)]
                ds = f[rng.choice(datasets)]
                if h5py.check_vlen_dtype(ds.dtype) is not None:
                    row = np.array(ds[0])
                    row[rng.randrange(row.size)] ^= 1
                    ds[0] = row
                else:
                    values = ds[()]
                    flat = values.reshape(-1)
                    if flat.size:
                        i = rng.randrange(flat.size)
                        flat[i] = (not flat[i]) if values.dtype == bool else flat[i] + 1
                    ds[...] = values
                ops.append(f"values of {ds.name} changed")
            elif op == 5:  # a dataset replaced by one of another dtype or shape
                datasets = [n for n in self.objects if n and isinstance(f[n], h5py.Dataset)]
                n = rng.choice(datasets)
                values = f[n][()]
                del f[n]
                kind = rng.randrange(5)
                if kind == 0:
                    f[n] = (
                        values.astype(rng.choice((np.float64, np.int32, np.uint8, bool)))
                        if values.dtype != object
                        else values[:1]
                    )
                elif kind == 1:
                    f[n] = values[:-1]
                elif kind == 2:
                    f[n] = np.concatenate([values, values[:1]])
                elif kind == 3:
                    f[n] = values.reshape(len(values), -1)[:, :0] if values.ndim else values
                else:
                    f[n] = np.float64(1.0)
                ops.append(f"{n} replaced (kind {kind})")
            elif op == 6:  # an object deleted
                n = rng.choice(self.objects[1:])
                if n in f:
                    del f[n]
                ops.append(f"del {n}")
            elif op == 7:  # episodes renamed or swapped
                a, b = rng.sample(episodes, 2)
                if rng.random() < 0.5:
                    f.move(a, "tmp")
                    f.move(b, a)
                    f.move("tmp", b)
                    ops.append(f"swap {a} {b}")
                else:
                    new = rng.choice(("episode_3", "episode_-1", "episode_01", "Episode_0", "x"))
                    f.move(a, new)
                    ops.append(f"move {a} -> {new}")
            elif op == 8:  # a link where an object was
                n = rng.choice(self.objects[1:])
                if n in f:
                    del f[n]
                kind = rng.randrange(4)
                if kind == 0:
                    f[n] = h5py.SoftLink("/nowhere")
                elif kind == 1:
                    f[n] = h5py.ExternalLink("/nonexistent.h5", "/x")
                elif kind == 2:
                    other = rng.choice([o for o in self.objects[1:] if o != n and not o.startswith(n + "/")])
                    if other in f:
                        f[n] = f[other]  # a hard link to another object
                else:
                    f[n] = h5py.SoftLink("/" + n)  # a cycle
                ops.append(f"{n} -> link kind {kind}")
            elif op == 9:  # something extra
                parent = rng.choice([o for o in self.objects if not o or isinstance(f[o], h5py.Group)])
                where = f[parent] if parent else f
                extra = rng.choice(("extra", "episode_3", "infos", "images", "actions2"))
                if extra not in where:
                    if rng.random() < 0.5:
                        where.create_group(extra)
                    else:
                        where[extra] = np.zeros(rng.choice((0, 3, 4)))
                ops.append(f"add {parent}/{extra}")
            elif op == 10:  # unsealed: no checksums anywhere (a file written before them, or stripped)
                f.attrs.pop(self.integrity.FORMAT_ATTR, None) if hasattr(f.attrs, "pop") else None
                if self.integrity.FORMAT_ATTR in f.attrs:
                    del f.attrs[self.integrity.FORMAT_ATTR]
                for e in episodes:
                    if e in f and self.integrity.MANIFEST_ATTR in f[e].attrs:
                        del f[e].attrs[self.integrity.MANIFEST_ATTR]
                ops.append("unsealed")
            else:  # a whole episode's group replaced by something else
                e = rng.choice(episodes)
                del f[e]
                if rng.random() < 0.5:
                    f[e] = np.zeros(3)
                else:
                    f.create_group(e)
                ops.append(f"{e} emptied or a dataset")
        return self.scratch.read_bytes()

    def _damage_meta(self, rng: random.Random, ops: list[str]) -> bytes:
        r = rng.random()
        if r < 0.4:
            key = rng.choice(("total_episodes", "total_steps", "dataset_id"))
            value = rng.choice((None, True, 3.0, "3", -1, 0, 2, 4, 7, 9, 2**64, 10**400, [], {}, math.nan))
            meta = dict(self.meta)
            if rng.random() < 0.2:
                meta.pop(key, None)
                ops.append(f"meta: del {key}")
            else:
                meta[key] = value
                ops.append(f"meta: {key} = {value!r:.40}")
            return _json(meta, "{").encode()
        if r < 0.7:
            ops.append("meta: tree mutated")
            meta = mutate_tree(rng, self.meta, rng.choice((1, 2)), wide_ints=True, binary=False)
            return _json(meta, "[").encode("utf-8", "surrogatepass")
        ops.append("meta: bytes mutated")
        return mutate_bytes(rng, self.meta_text)

    def generate(self, rng: random.Random) -> DatasetCase:
        ops: list[str] = []
        hdf5, meta = self.hdf5, self.meta_text
        r = rng.random()
        if r < 0.5:
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                hdf5 = self._damage_bytes(rng, hdf5, ops)
        elif r < 0.8:
            hdf5 = self._damage_h5(rng, hdf5, ops)
        elif r < 0.92:
            meta = self._damage_meta(rng, ops)
        elif r < 0.95:
            hdf5 = self._damage_h5(rng, hdf5, ops)
            hdf5 = self._damage_bytes(rng, hdf5, ops)
        else:
            ops.append("unchanged")
        steps = tuple(rng.randrange(n + 1) for n in self.LENGTHS)
        return DatasetCase(ops, hdf5, meta, steps)

    # --- checking
    def _read_all(self, steps: tuple[int, ...]) -> list[Any]:
        """All the reader gives: lengths, sealed, layout, every episode's arrays (both rewards) and one frame each."""
        reader = self.reader_cls(self.root, self.did)
        try:
            out: list[Any] = [reader.lengths, reader.sealed, reader.layout, len(reader)]
            for i in range(len(reader)):
                for reward in ("sparse", "shaped"):
                    a = reader.arrays(i, reward)
                    out += [a.observations, a.actions, a.rewards, a.terminations, a.truncations]
                out.append(reader.frames(i, steps[i] if i < len(steps) else 0))
            return out
        finally:
            reader.close()

    def check(self, case: DatasetCase) -> str:
        self.path.write_bytes(case.hdf5)
        self.meta_path.write_bytes(case.meta)
        self.dataset._SOUND.clear()  # each input checked afresh, whatever its mtime
        full = None
        try:
            self.dataset.check_dataset(self.root, self.did, data=True)  # what open_dataset checks first
        except self.typed as exc:
            full = exc
        self.dataset._SOUND.clear()
        seed_steps = case.steps
        try:
            read = self._read_all(seed_steps)
        except self.typed:
            if full is None:
                raise
            raise full from None
        original = self._original(seed_steps)
        if not _same(read, original):
            if not read[1]:  # unsealed: no checksums to check the data against (warned, by design)
                return "accepted_unsealed_altered" if full is None else "rejected:" + self.reason(full)
            raise InvariantBroken("altered_data_read", f"{case.ops[:3]}", "reader")
        if full is not None:  # what the reader read is sound; the whole check found damage elsewhere
            raise full
        return "accepted"

    def _original(self, steps: tuple[int, ...]) -> list[Any]:
        cache = getattr(self, "_originals", None)
        if cache is None:
            cache = self._originals = {}
        if steps not in cache:
            self.path.write_bytes(self.hdf5)
            self.meta_path.write_bytes(self.meta_text)
            self.dataset._SOUND.clear()
            cache[steps] = self._read_all(steps)
        return cache[steps]

    def reason(self, exc: BaseException) -> str:
        text = str(exc).replace(str(self.path), "<file>").replace(str(self.meta_path), "<metadata>")
        lines = text.split("\n")
        several = len(lines) > 1 and "corrupt episodes" in lines[0]
        text = lines[1].strip() if several else lines[0]
        text = re.sub(r"^<file>:? ?", "", text)
        text = re.sub(r"episode \d+, ", "", text)
        text = re.sub(r"\((\w+(?:Error|Exception)): .*", r"(\1)", text)  # h5py's message: keep its type
        text = re.sub(r" \((?:stored|sealed|has|\d).*", "", text)
        text = _normalise(text)
        return ("several episodes; " if several else "") + text

    def detail(self, exc: BaseException) -> str:
        return self.reason(exc)

    def close(self) -> None:
        self.dir.cleanup()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and not isinstance(a, str):
        return isinstance(b, type(a)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return bool(a == b)


# ------------------------------------------------------------------------------------------------ control


class _ControlLoop:
    """What ControlServer reads of a ControlLoop: the guard (a real SafetyStateMachine, watchdogs, session),
    the tick count, the last tick's inputs, the driver clock and stop()."""

    def __init__(self, safety: Any, watchdogs: Any, await_reset: bool, last_inputs: Any) -> None:
        from types import SimpleNamespace

        self.guard = SimpleNamespace(safety=safety, watchdogs=watchdogs, session="me")
        self.link = SimpleNamespace(now_ns=lambda: 123)
        self.await_reset, self.last_inputs = await_reset, last_inputs
        self.ticks, self.stop_reason = 7, ""

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason


_CONTROL_ATTACKS = (
    b"",
    b"{}",
    b"[]",
    b"null",
    b'"status"',
    b"1e999",
    b"NaN",
    b'{"verb": "status", "verb": "reset"}',
    b'{"verb": "reset", "operator": "ana", "reason": "x", "verb": "status"}',
    b'{"verb": "STATUS"}',
    b'{"verb": "status "}',
    b'{"verb": ["status"]}',
    b'{"verb": {"status": 1}}',
    b'{"verb": null}',
    b'{"verb": "estop", "operator": "\\ud800", "reason": "x"}',
    b'{"verb": "estop", "operator": "ana\\u2028", "reason": "x"}',
    b'{"verb": "estop", "operator": "ana", "reason": "a\\u0000b"}',
    b'{"verb": "estop", "operator": "   ", "reason": "x"}',
    b'{"verb": "estop", "operator": 5, "reason": "x"}',
    b'{"verb": "stop", "operator": "ana", "reason": "' + b"x" * 501 + b'"}',
    b'{"verb": "reset", "operator": "ana", "reason": "x", "extra": 1}',
    b'{"verb": "status", "operator": "ana"}',
    b"\xef\xbb\xbf" + b'{"verb": "status"}',
    b'{"verb": "st\xc3atus"}',
    b'{"verb": "\xed\xa0\x80"}',
    b"[" * 1000 + b"]" * 1000,
    b'{"verb": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    b'{"verb": ' + b'{"a":' * 300 + b"1" + b"}" * 301,
    b'{"verb": "status", "x": ' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"verb": ' + b"9" * 1900 + b"}",
    b'{"verb": "stop", "operator": "ana", "reason": "x"}' + b" " * 2000,
)


class ControlTarget(Target):
    """pac-run's control endpoint (`ControlServer._answer`, what `serve` calls for each received request) on
    mutated request frames, with a real SafetyStateMachine behind it in every state. Accepted: a verb answered
    (done or refused, with its reply); rejected: a BadRequest reason, as counted in the run summary. A bug: an
    exception, an `internal` reply, a reply that is not JSON, a count that did not move, or the safety state
    changed by anything but a valid reset or estop."""

    name = "control"

    def __init__(self) -> None:
        from runtime import control
        from runtime.safety.watchdogs import WatchdogConfig

        self.control = control
        self.typed = (control.BadRequest,)
        self.watchdogs = WatchdogConfig()
        logging.getLogger(control.__name__).setLevel(logging.CRITICAL)  # a line per request otherwise
        logging.getLogger("runtime.safety.state_machine").setLevel(logging.CRITICAL)
        self.dir = tempfile.TemporaryDirectory(prefix="pac-fuzz-")
        self.server = control.ControlServer(f"ipc://{self.dir.name}/c.ctl")
        self.seeds = [control.encode_request("status")]
        for verb in control.ACTIONS:
            self.seeds += [
                control.encode_request(verb, "ana", "cube jammed"),
                control.encode_request(verb, "Zoë", "é" * 10),
            ]

    def _setup(self, rng: random.Random) -> dict[str, Any]:
        return {
            "state": rng.choice(("STARTING", "READY", "RUNNING", "HOLD", "FAULT", "ESTOP", "FAULT", "ESTOP")),
            "await_reset": rng.random() < 0.8,
            "inputs": rng.choice((None, "quiet", "lost", "estop_pressed", "other_holder")),
        }

    def _loop(self, setup: dict[str, Any]) -> _ControlLoop:
        from runtime.link import Inputs
        from runtime.safety.causes import Cause, CauseKind
        from runtime.safety.state_machine import SafetyStateMachine

        safety = SafetyStateMachine()
        state = setup["state"]
        if state != "STARTING":
            safety.ready(0, 0)
        if state in ("RUNNING", "HOLD"):
            safety.update({Cause(CauseKind.STALE, "state")} if state == "HOLD" else set(), 1, 1)
        elif state == "FAULT":
            safety.latch(Cause(CauseKind.NON_FINITE, "action"), 1, 1)
        elif state == "ESTOP":
            safety.latch(Cause(CauseKind.ESTOP, "driver"), 1, 1)
        inputs = None
        kind = setup["inputs"]
        if kind is not None:
            from types import SimpleNamespace

            from robots.contract.link import DriverFault

            faults = [DriverFault.ESTOP] if kind == "estop_pressed" else []
            status = SimpleNamespace(holder="them" if kind == "other_holder" else "me", faults=faults)
            silent = 10**10 if kind == "lost" else 0
            inputs = Inputs(0, None, status, {}, silent)
        return _ControlLoop(safety, self.watchdogs, setup["await_reset"], inputs)

    def generate(self, rng: random.Random) -> Any:
        seed = rng.choice(self.seeds)
        r = rng.random()
        if r < 0.35:
            body = mutate_tree(rng, json.loads(seed), rng.choice((1, 1, 2, 3)), wide_ints=True, binary=False)
            try:
                text = json.dumps(body, ensure_ascii=rng.random() < 0.5)
            except (ValueError, RecursionError):
                text = seed.decode()
            frames = [text.encode("utf-8", "surrogatepass")]
        elif r < 0.6:
            data = seed
            for _ in range(rng.choice((1, 1, 2, 4))):
                data = mutate_bytes(rng, data)
            frames = [data]
        elif r < 0.72:
            frames = [rng.choice(_CONTROL_ATTACKS)]
        elif r < 0.8:
            op = rng.randrange(4)
            if op == 0:
                frames = []
            elif op == 1:
                frames = [seed, seed] if rng.random() < 0.5 else [seed, b""]
            elif op == 2:
                frames = [seed + b" " * (self.control.MAX_REQUEST_BYTES + 1 - len(seed))]
            else:
                frames = [b"x" * rng.choice((self.control.MAX_REQUEST_BYTES, 2 * 10**4, self.control.MAX_FRAME_BYTES))]
        elif r < 0.88:
            frames = [rng.randbytes(rng.choice((0, 1, 8, 100, 2048)))]
        else:
            frames = [seed]
        return (frames, self._setup(rng))

    def check(self, case: Any) -> str:
        frames, setup = case
        loop = self._loop(setup)
        safety = loop.guard.safety
        before = (safety.state, safety.fault_cause, len(safety.transitions))
        rejected, actions = sum(self.server.rejected.values()), len(self.server.actions)
        reply = self.server._answer(list(frames), loop)
        after = (safety.state, safety.fault_cause, len(safety.transitions))
        try:
            sent = json.loads(json.dumps(reply))  # what serve() sends: it must encode
        except (TypeError, ValueError) as exc:
            raise InvariantBroken("reply_not_json", repr(exc)) from exc
        if not isinstance(sent, dict) or not isinstance(sent.get("ok"), bool):
            raise InvariantBroken("reply_malformed", f"{sent!r:.100}")
        counted = sum(self.server.rejected.values()) - rejected
        acted = len(self.server.actions) - actions
        verb = sent.get("verb")
        if sent.get("error") == "internal":
            raise InvariantBroken("internal_error", sent.get("detail", ""), str(verb))
        if "error" in sent:
            if counted != 1 or acted or before != after or loop.stop_reason:
                raise InvariantBroken("rejection_acted", f"{sent} counted {counted} acted {acted}")
            raise self.control.BadRequest(sent["error"], str(sent.get("detail", "")))
        if verb not in self.control.VERBS or counted:
            raise InvariantBroken("answer_uncounted", f"{sent!r:.100}")
        if acted != (verb in self.control.ACTIONS):
            raise InvariantBroken("action_not_recorded", f"{verb}: {acted} actions recorded")
        if acted:
            action = self.server.actions[-1]
            for text, limit in ((action.operator, self.control.MAX_OPERATOR_CHARS), (action.reason, 500)):
                if not text or len(text) > limit or not text.isprintable():
                    raise InvariantBroken("action_text_unchecked", f"{text!r:.80}", verb)
        changed = before != after
        if changed and not (sent["ok"] and verb in ("reset", "estop")):
            raise InvariantBroken("state_changed", f"{before[0]} -> {after[0]} by {verb}", str(verb))
        if verb == "reset" and sent["ok"] and after[0].value != "READY":
            raise InvariantBroken("reset_not_ready", f"{after[0]}", verb)
        if verb == "estop" and after[0].value != "ESTOP":
            raise InvariantBroken("estop_not_latched", f"{after[0]}", verb)
        if bool(loop.stop_reason) != (verb == "stop"):
            raise InvariantBroken("stop_mismatch", f"{verb}: {loop.stop_reason!r}", str(verb))
        if len(self.server.actions) > 1000:
            self.server.actions.clear()
        return f"{verb}:{'done' if sent['ok'] else 'refused'}"

    def close(self) -> None:
        self.server.close()
        self.dir.cleanup()


# ------------------------------------------------------------------------------------------------- runner


@dataclasses.dataclass
class Tally:
    decoder: str
    unit: str = "input"
    inputs: int = 0
    accepted: Counter = dataclasses.field(default_factory=Counter)
    rejected: Counter = dataclasses.field(default_factory=Counter)
    details: Counter = dataclasses.field(default_factory=Counter)  # "reason | message" of each rejection
    bugs: Counter = dataclasses.field(default_factory=Counter)  # signature → count
    examples: dict[str, list[dict[str, str]]] = dataclasses.field(default_factory=dict)
    hangs: int = 0
    hang_s: float = HANG_S
    generator_errors: int = 0  # the harness's own failures to make an input (not counted as inputs)
    check_s: float = 0.0
    wall_s: float = 0.0
    max_s: float = 0.0

    def add_outcome(self, label: str, n: int = 1) -> None:
        kind, _, reason = label.partition(":")
        if kind == "rejected" or kind == "dropped":
            self.rejected[reason] += n
        else:
            self.accepted[label] += n

    def add_bug(self, signature: str, case: Any, tb: str, keep: int = 3) -> bool:
        """Count a bug; True the first time its signature is seen."""
        self.bugs[signature] += 1
        examples = self.examples.setdefault(signature, [])
        if len(examples) < keep:
            examples.append({"input": _short_repr(case), "traceback": tb})
        return self.bugs[signature] == 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "decoder": self.decoder,
            "unit": self.unit,
            "inputs": self.inputs,
            "accepted": sum(self.accepted.values()),
            "accepted_by_kind": dict(self.accepted.most_common()),
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected.most_common()),
            "rejected_by_message": dict(self.details.most_common(60)),
            "bugs": sum(self.bugs.values()),
            "bugs_by_signature": dict(self.bugs.most_common()),
            "hangs": self.hangs,
            "hang_s": self.hang_s,
            "generator_errors": self.generator_errors,
            "bug_examples": self.examples,
            "inputs_per_s": self.inputs / self.wall_s if self.wall_s else 0.0,
            "decode_inputs_per_s": self.inputs / self.check_s if self.check_s else 0.0,
            "max_input_ms": self.max_s * 1e3,
            "wall_s": self.wall_s,
        }


def _short_repr(case: Any, limit: int = 1500) -> str:
    text = repr(case)
    return text if len(text) <= limit else f"{text[: limit // 2]} … [{len(text)} chars] … {text[-limit // 4 :]}"


def signature(exc: BaseException) -> str:
    """What one bug is called: the error type and the function of this repository that raised it (its
    innermost frame here, or the innermost at all), or the invariant and the kind of input that broke it."""
    if isinstance(exc, InvariantBroken):
        return f"invariant {exc.kind}" + (f" ({exc.case})" if exc.case else "")
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(REPO)) and "/.venv/" not in f.filename]
    where = (ours or frames or [None])[-1]
    return f"{type(exc).__name__}" + (f" in {Path(where.filename).name} {where.name}" if where else "")


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Interrupted()


def make_target(name: str) -> Target:
    if name.startswith("messages."):
        return MessageTarget(name.split(".", 1)[1])
    return {
        "wire": WireTarget,
        "receiver": ReceiverTarget,
        "config": ConfigTarget,
        "metadata": MetadataTarget,
        "driver": DriverTarget,
        "dataset": DatasetTarget,
        "control": ControlTarget,
    }[name]()


def expand(decoders: Sequence[str]) -> list[str]:
    names = []
    for name in decoders:
        if name == "messages":
            names += [f"messages.{t}" for t in MESSAGE_TYPES if hasattr(getattr(msg, t), "from_envelope")]
        elif name in DECODERS or name.startswith("messages."):
            names.append(name)
        else:
            raise ValueError(f"unknown decoder {name!r}: use {', '.join(DECODERS)} or messages.<Type>")
    return names


def run_target(
    target: Target,
    inputs: int,
    seed: int = 0,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    hang_s: float | None = None,
    first: int = 0,
) -> Tally:
    """Generate and check `inputs` inputs; every outcome counted, every bug kept with its input. With `first`,
    the inputs before it are generated but not checked: the same run's inputs first..inputs-1, reproduced."""
    rng = random.Random(f"{seed}/{target.name}")
    hang_s = target.hang_s if hang_s is None else hang_s
    tally = Tally(target.name, target.unit, hang_s=hang_s)
    report = report or tqdm.write
    alarm = signal.getsignal(signal.SIGALRM) if _main_thread() else None
    if alarm is not None:
        signal.signal(signal.SIGALRM, _on_alarm)
    bar = tqdm(total=inputs - first, desc=f"{target.name:>20}", unit=target.unit, disable=not progress, mininterval=1.0)
    start = time.perf_counter()
    try:
        for i in range(inputs):
            case = _generate(target, rng, tally, report)
            if i < first:
                continue  # only advancing the generator to input `first`
            outcome, error, dt = _check_timed(target, case, alarm is not None)
            tally.check_s += dt
            tally.max_s = max(tally.max_s, dt)
            if isinstance(error, _Interrupted):
                tally.hangs += 1
                tally.add_bug("hang (interrupted)", case, f"over {HARD_LIMIT_S} s")
            elif dt > hang_s:
                tally.hangs += 1
                if tally.add_bug(f"hang (> {hang_s:g} s)", case, f"{dt:.2f} s"):
                    report(f"[{target.name}] HANG #{i}: {dt:.2f} s\n  input: {_short_repr(case, 400)}")
            if isinstance(error, target.typed) and not isinstance(error, InvariantBroken):
                reason = target.reason(error)
                tally.add_outcome(f"rejected:{reason}")
                tally.details[f"{reason} | {target.detail(error)}"] += 1
            elif isinstance(error, Exception):
                tb = "".join(traceback.format_exception(error, limit=-8))
                sig = signature(error)
                if tally.add_bug(sig, case, tb):
                    report(f"[{target.name}] BUG #{i} {sig}\n  input: {_short_repr(case, 400)}\n{tb}")
            if isinstance(outcome, Counter):
                for label, n in outcome.items():
                    tally.add_outcome(label, n)
            elif outcome is not None:
                tally.add_outcome(outcome)
            tally.inputs += 1
            if tally.inputs % 200 == 0:
                bar.update(200)
                bar.set_postfix(bugs=sum(tally.bugs.values()), refresh=False)
    finally:
        bar.update(tally.inputs - bar.n)
        bar.close()
        if alarm is not None:
            signal.signal(signal.SIGALRM, alarm)
        tally.wall_s = time.perf_counter() - start
    return tally


def _generate(target: Target, rng: random.Random, tally: Tally, report: Callable[[str], None]) -> Any:
    """The next input; a generator's own error is reported once and counted, and another input is made."""
    for _ in range(100):
        try:
            return target.generate(rng)
        except Exception as exc:  # noqa: BLE001 - a bug of the harness, not of the decoder: the run goes on
            tally.generator_errors += 1
            if tally.generator_errors == 1:
                report(f"[{target.name}] generator error:\n{''.join(traceback.format_exception(exc))}")
    raise RuntimeError(f"{target.name}: 100 generator errors in a row")


def _check_timed(target: Target, case: Any, alarm: bool) -> tuple[Any, BaseException | None, float]:
    """(outcome, error, seconds) of one check; SIGALRM interrupts one still in Python code after HARD_LIMIT_S."""
    t0 = time.perf_counter()
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, HARD_LIMIT_S)
    try:
        outcome, error = target.check(case), None
    except (Exception, _Interrupted) as exc:  # noqa: BLE001 - sorting every exception is the point
        outcome, error = None, exc
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return outcome, error, time.perf_counter() - t0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _table(tallies: list[Tally]) -> list[str]:
    lines = [
        "| decoder | inputs | accepted | rejected | rejected by reason | bugs | hangs | inputs/s | max ms |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for t in tallies:
        reasons = ", ".join(f"{r} {n}" for r, n in t.rejected.most_common(4))
        if len(t.rejected) > 4:
            reasons += f", {len(t.rejected) - 4} more"
        unit = "" if t.unit == "input" else f" {t.unit}es"
        lines.append(
            f"| {t.decoder} | {t.inputs}{unit} | {sum(t.accepted.values())} | {sum(t.rejected.values())} | "
            f"{reasons or '–'} | {sum(t.bugs.values())} | {t.hangs} | {t.inputs / t.wall_s:,.0f} | "
            f"{t.max_s * 1e3:.1f} |"
        )
    return lines


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """libjpeg writes a warning to fd 2 for each corrupt JPEG it decodes: thousands a run. Send fd 2 to
    /dev/null and keep Python's stderr (progress bars, tracebacks) on a copy of the real one."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    original = sys.stderr
    os.dup2(devnull, 2)
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "modified": run("status", "--porcelain", "-uno").splitlines()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=100_000, help="inputs per decoder")
    p.add_argument("--decoders", default=",".join(DECODERS), help="comma-separated; messages.<Type> for one type")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--from",
        dest="first",
        type=int,
        default=0,
        help="check only inputs FROM..inputs-1 of the run (reproduce a range)",
    )
    p.add_argument("--json", type=Path, default=None, help="write every count and each bug's inputs here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    tallies = []
    warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow-in-cast notes, on hostile values by design
    with _native_stderr_silenced():
        for name in expand(args.decoders.split(",")):
            target = make_target(name)
            try:
                tallies.append(
                    run_target(target, args.inputs, args.seed, progress=not args.no_progress, first=args.first)
                )
            finally:
                target.close()
    print()
    print("\n".join(_table(tallies)))
    for t in tallies:
        for sig, n in t.bugs.most_common():
            print(f"BUG {t.decoder}: {sig} ×{n}\n  e.g. {t.examples[sig][0]['input'][:300]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": " ".join(["python -m benchmarks.fuzz", *(argv if argv is not None else sys.argv[1:])]),
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "git": _git(),
            "inputs_per_decoder": args.inputs,
            "seed": args.seed,
            "checked_from": args.first,
            "hang_s": HANG_S,  # the default; a decoder bounded slower has its own (decoders[].hang_s)
            "decoders": [t.as_dict() for t in tallies],
        }
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 1 if any(t.bugs for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())

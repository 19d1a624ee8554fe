"""The wire codec: exact round-trips of every allowed array and field, and rejection of broken messages."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from robots.contract import wire
from robots.contract.wire import (
    DTYPES,
    SCHEMA_VERSION,
    MalformedMessage,
    OversizedMessage,
    VersionMismatch,
    WireError,
    WireLimits,
    decode,
    encode,
)

HEAD = {"seq": 7, "source": "sim", "t_capture_ns": 1_000}


def roundtrip(**kwargs) -> wire.Envelope:
    return decode(encode("state", **HEAD, **kwargs))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes: NaN payloads and the sign of zero included."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def header_of(frames: list[bytes]) -> dict:
    return msgpack.unpackb(frames[1], raw=False)


def with_header(frames: list[bytes], **changes) -> list[bytes]:
    header = header_of(frames) | changes
    return [frames[0], msgpack.packb(header, use_bin_type=True), *frames[2:]]


def gradient(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], -1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_every_allowed_dtype_round_trips(name: str) -> None:
    a = (np.arange(24) % 2 == 1) if name == "bool" else np.arange(24)
    a = a.astype(name).reshape(2, 3, 4)
    env = roundtrip(arrays={"a": a})
    assert same_bits(env.arrays["a"], a)
    assert env.arrays["a"].dtype.name == name


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (5, 1, 1)])
def test_zero_dim_and_empty_arrays_round_trip(shape: tuple[int, ...]) -> None:
    a = np.full(shape, 2.5, dtype=np.float32)
    assert same_bits(roundtrip(arrays={"a": a}).arrays["a"], a)


def test_large_array_round_trips_as_a_read_only_view_of_the_frame() -> None:
    a = np.random.default_rng(0).standard_normal(512 * 1024)  # 4 MiB of float64
    frames = encode("state", **HEAD, arrays={"a": a})
    got = decode(frames).arrays["a"]
    assert same_bits(got, a)
    assert not got.flags.writeable
    assert np.shares_memory(got, np.frombuffer(frames[2], np.uint8))  # no copy of the buffer


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_nan_and_inf_round_trip_bit_exactly(name: str) -> None:
    uint = np.dtype(f"uint{np.dtype(name).itemsize * 8}")
    a = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5], dtype=name)
    payload = a[:1].view(uint) | uint.type(1)  # a NaN with a non-default payload
    a = np.concatenate([a, payload.view(name)])
    got = roundtrip(arrays={"a": a}).arrays["a"]
    assert got.view(uint).tobytes() == a.view(uint).tobytes()


def test_non_contiguous_and_big_endian_inputs_round_trip_by_value() -> None:
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    strided, transposed = base[::2, ::3], base.T
    big = np.arange(12, dtype=">i4").reshape(3, 4)
    big_nan = np.array([np.nan, np.inf, -2.0], dtype=">f8")
    big_nan[:1].view(">u8")[0] |= 1  # NaN payload survives the byte swap
    env = roundtrip(arrays={"strided": strided, "transposed": transposed, "big": big, "big_nan": big_nan})
    assert same_bits(env.arrays["strided"], np.ascontiguousarray(strided))
    assert same_bits(env.arrays["transposed"], np.ascontiguousarray(transposed))
    assert env.arrays["big"].dtype == np.dtype("<i4") and np.array_equal(env.arrays["big"], big)
    assert env.arrays["big_nan"].tobytes() == big_nan.astype("<f8").tobytes()
    assert env.arrays["big_nan"].view("<u8")[0] == big_nan.view(">u8")[0]


def test_header_and_every_field_type_round_trip() -> None:
    fields = {
        "int": -3,
        "big": 2**63,
        "float": 0.1,
        "nan": float("nan"),
        "str": "grüß",
        "bool": True,
        "none": None,
        "list": [1, "a", [2.5, None]],
        "dict": {"a": {"b": [False]}, "c": {}},
        "bytes": b"\x00\xff",
    }
    frames = encode("status", seq=3, source="panda", t_capture_ns=11, t_send_ns=12, fields=fields)
    env = decode(frames)
    header = (env.topic, env.v, env.seq, env.source, env.t_capture_ns, env.t_send_ns)
    assert header == ("status", SCHEMA_VERSION, 3, "panda", 11, 12)
    nan = env.fields.pop("nan")
    assert nan != nan
    assert env.fields == {k: v for k, v in fields.items() if k != "nan"}
    assert env.arrays == {}


def test_t_send_defaults_to_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire.time, "monotonic_ns", lambda: 424242)
    assert roundtrip().t_send_ns == 424242


def test_accepts_bytearray_memoryview_and_zmq_frames() -> None:
    frames = encode("state", **HEAD, arrays={"q": np.arange(7.0)})
    for convert in (bytearray, memoryview, zmq.Frame):
        env = decode([convert(f) for f in frames])
        assert env.topic == "state" and np.array_equal(env.arrays["q"], np.arange(7.0))


def test_jpeg_round_trips_rgb_with_small_error() -> None:
    image = gradient()
    got = roundtrip(jpeg={"image": image}, jpeg_quality=95).arrays["image"]
    assert got.shape == image.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - image).mean() < 2.0


def test_jpeg_keeps_channel_order() -> None:
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    got = roundtrip(jpeg={"image": red}).arrays["image"]
    assert got[..., 0].mean() > 240 and got[..., 2].mean() < 15


def test_jpeg_grayscale_and_mixed_with_raw() -> None:
    gray = gradient()[..., 0].copy()
    env = roundtrip(jpeg={"gray": gray}, arrays={"q": np.ones(3)})
    assert env.arrays["gray"].shape == gray.shape
    assert np.abs(env.arrays["gray"].astype(int) - gray).mean() < 3.0
    assert list(env.arrays) == ["q", "gray"]


@settings(max_examples=200, deadline=None)
@given(
    npst.arrays(
        dtype=st.sampled_from(sorted(DTYPES)).map(np.dtype),
        shape=npst.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_property_decode_inverts_encode(a: np.ndarray) -> None:
    assert same_bits(roundtrip(arrays={"a": a}).arrays["a"], a)


# ------------------------------------------------------------------------------------------ encode rejects


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arrays": {"a": np.zeros(2, np.complex64)}},
        {"arrays": {"a": np.array(["x"])}},
        {"arrays": {"a": np.zeros(2, dtype=[("x", "f4")])}},
        {"arrays": {"a": [1.0, 2.0]}},
        {"arrays": {1: np.zeros(2)}},
        {"arrays": {"a": np.zeros(2)}, "jpeg": {"a": np.zeros((4, 4, 3), np.uint8)}},
        {"jpeg": {"a": np.zeros((4, 4, 3), np.float32)}},
        {"jpeg": {"a": np.zeros((4, 4, 4), np.uint8)}},
        {"jpeg": {"a": np.zeros((0, 4), np.uint8)}},
        {"jpeg": {"a": np.zeros((4, 4), np.uint8)}, "jpeg_quality": 0},
        {"fields": {"x": object()}},
        {"fields": {"x": {1: 2}}},
        {"fields": {"x": 2**64}},
        {"seq": -1},
        {"seq": True},
        {"source": 3},
    ],
)
def test_encode_rejects_bad_input_as_malformed(kwargs: dict) -> None:
    with pytest.raises(MalformedMessage):
        encode("state", **(HEAD | kwargs))


def test_encode_rejects_oversized_messages() -> None:
    limits = WireLimits(max_frames=3, max_header_bytes=200, max_buffer_bytes=100, max_total_bytes=150)
    with pytest.raises(OversizedMessage):
        encode("s", **HEAD, arrays={"a": np.zeros(13)}, limits=limits)  # 104 B buffer
    with pytest.raises(OversizedMessage):
        encode("s", **HEAD, arrays={"a": np.zeros(1), "b": np.zeros(1)}, limits=limits)  # 4 frames
    with pytest.raises(OversizedMessage):
        encode("s", **HEAD, fields={"x": "y" * 300}, limits=limits)  # header
    with pytest.raises(OversizedMessage):
        encode("s", **HEAD, arrays={"a": np.zeros(12)}, limits=limits)  # 96 B buffer, but > 150 B in total


# ------------------------------------------------------------------------------------------ decode rejects


def valid_frames() -> list[bytes]:
    return encode("state", **HEAD, fields={"mode": "hold"}, arrays={"q": np.arange(7.0), "m": np.eye(2)})


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([], MalformedMessage),
        ([b"state"], MalformedMessage),
        ([b"\xff\xfe", valid_frames()[1], *valid_frames()[2:]], MalformedMessage),  # topic not UTF-8
        ([b"", *valid_frames()[1:]], MalformedMessage),  # empty topic
        ([b"state", valid_frames()[1][:-5], *valid_frames()[2:]], MalformedMessage),  # truncated header
        ([b"state", valid_frames()[1] + b"\x00", *valid_frames()[2:]], MalformedMessage),  # trailing bytes
        ([b"state", b"\xc1\x00garbage"], MalformedMessage),
        ([b"state", msgpack.packb([1, 2, 3])], MalformedMessage),  # not a map
        (valid_frames()[:-1], MalformedMessage),  # fewer buffers than descriptors
        ([*valid_frames(), b"\x00" * 8], MalformedMessage),  # more buffers than descriptors
        ([*valid_frames()[:-1], valid_frames()[-1][:-1]], MalformedMessage),  # buffer shorter than its shape
        ([*valid_frames()[:-1], b"x"], MalformedMessage),
        ("not frames", MalformedMessage),
        (None, MalformedMessage),
        ([b"state", object()], MalformedMessage),
    ],
)
def test_decode_rejects_broken_frames(frames, error: type[WireError]) -> None:
    with pytest.raises(error):
        decode(frames)


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": -1},
        {"seq": "7"},
        {"seq": True},
        {"source": None},
        {"t_capture_ns": 1.5},
        {"t_send_ns": -2},
        {"fields": [1]},
        {"arrays": {"q": 1}},
        {"arrays": [{"name": "q", "dtype": "float64", "shape": [7]}, {}]},  # descriptor without keys
        {"arrays": [{"name": "q", "dtype": "complex128", "shape": [7], "enc": "raw"}] * 2},
        {"arrays": [{"name": "q", "dtype": ["float64"], "shape": [7], "enc": "raw"}] * 2},
        {"arrays": [{"name": "q", "dtype": "float64", "shape": [7], "enc": "png"}] * 2},
        {"arrays": [{"name": "q", "dtype": "float64", "shape": [7.0], "enc": "raw"}] * 2},
        {"arrays": [{"name": "q", "dtype": "float64", "shape": [-7], "enc": "raw"}] * 2},
        {"arrays": [{"name": "q", "dtype": "float64", "shape": 7, "enc": "raw"}] * 2},
        {"arrays": [{"name": 3, "dtype": "float64", "shape": [7], "enc": "raw"}] * 2},
        {"arrays": [{"name": "q", "dtype": "float64", "shape": [7], "enc": "raw"}] * 2},  # duplicate name
        {"arrays": [{"name": "q", "dtype": "float32", "shape": [7], "enc": "raw"}] * 2},  # length mismatch
        {"extra": 1},
    ],
)
def test_decode_rejects_bad_header_fields(changes: dict) -> None:
    frames = encode("state", **HEAD, arrays={"q": np.zeros(7), "r": np.zeros(7)})
    with pytest.raises(MalformedMessage):
        decode(with_header(frames, **changes))


def test_decode_rejects_empty_arrays_too_big_for_numpy() -> None:
    frames = encode("state", **HEAD, arrays={"q": np.zeros(0)})
    descriptor = header_of(frames)["arrays"][0] | {"shape": [2**62, 2**62, 0]}
    with pytest.raises(MalformedMessage):
        decode(with_header(frames, arrays=[descriptor]))


def test_decode_rejects_bool_bytes_other_than_zero_and_one() -> None:
    frames = encode("state", **HEAD, arrays={"b": np.array([True, False])})
    with pytest.raises(MalformedMessage):
        decode([*frames[:2], b"\x01\x02"])


@pytest.mark.parametrize("version", [0, 2, 99])
def test_decode_rejects_other_schema_versions(version: int) -> None:
    with pytest.raises(VersionMismatch) as info:
        decode(with_header(valid_frames(), v=version, seq="even the rest is checked later"))
    assert info.value.reason == "version"


def test_decode_rejects_a_non_integer_version_as_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode(with_header(valid_frames(), v="1"))


def test_decode_rejects_oversized_messages_before_parsing() -> None:
    limits = WireLimits(max_frames=4, max_header_bytes=64, max_buffer_bytes=32, max_total_bytes=80)
    garbage_header = b"\xc1" * 65  # would be malformed, but its size is checked first
    cases = {
        "frames": [b"t", b"\xc1", b"", b"", b""],
        "header": [b"t", garbage_header],
        "buffer": [b"t", b"\xc1", b"\x00" * 33],
        "total": [b"t", b"\xc1" * 40, b"\x00" * 30, b"\x00" * 30],
    }
    for name, frames in cases.items():
        with pytest.raises(OversizedMessage) as info:
            decode(frames, limits)
        assert info.value.reason == "oversized", name


def test_decode_limits_are_exact_bounds() -> None:
    frames = encode("t", **HEAD, arrays={"a": np.zeros(4)})
    size = sum(map(len, frames))
    exact = WireLimits(max_frames=3, max_header_bytes=len(frames[1]), max_buffer_bytes=32, max_total_bytes=size)
    assert decode(frames, exact).arrays["a"].shape == (4,)
    with pytest.raises(OversizedMessage):
        decode(frames, WireLimits(max_total_bytes=size - 1))


def jpeg_frames(image: np.ndarray) -> list[bytes]:
    return encode("image/wrist", **HEAD, jpeg={"image": image})


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"\x00" * len(data),
        lambda data: data[:2] + b"\xff\xda" + data[4:],  # scan before the frame header
        lambda data: b"\xff\xd8\xff\xd9",
        lambda data: data.replace(b"\xff\xc0\x00\x11\x08\x00\x30\x00\x40", b"\xff\xc0\x00\x11\x08\x40\x00\x40\x00"),
    ],
)
def test_decode_rejects_corrupt_jpeg(corrupt) -> None:
    frames = jpeg_frames(gradient())
    with pytest.raises(MalformedMessage):
        decode([*frames[:2], corrupt(frames[2])])


def test_decode_rejects_jpeg_whose_shape_disagrees_with_its_descriptor() -> None:
    frames = jpeg_frames(gradient())
    descriptor = header_of(frames)["arrays"][0]
    for shape in ([48, 65, 3], [48, 64], [48, 64, 1], [64, 48, 3]):
        with pytest.raises(MalformedMessage):
            decode(with_header(frames, arrays=[descriptor | {"shape": shape}]))
    with pytest.raises(MalformedMessage):
        decode(with_header(frames, arrays=[descriptor | {"dtype": "uint16"}]))
    with pytest.raises(OversizedMessage):  # a claimed decoded size over the limit is refused before decoding
        decode(with_header(frames, arrays=[descriptor | {"shape": [4096, 4096, 3]}]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_property_garbage_frames_raise_only_wire_errors(frames: list[bytes]) -> None:
    try:
        decode(frames)
    except WireError:
        pass


msgpack_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "seq", "source", "t_capture_ns", "t_send_ns", "fields", "arrays"]) | st.text(max_size=3),
        msgpack_values,
        max_size=8,
    ),
    st.lists(st.binary(max_size=16), max_size=3),
)
def test_property_wrong_header_structures_raise_only_wire_errors(header: dict, buffers: list[bytes]) -> None:
    header.setdefault("v", SCHEMA_VERSION)
    try:
        decode([b"state", msgpack.packb(header, use_bin_type=True), *buffers])
    except WireError:
        pass


descriptors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b"]) | msgpack_scalars,
        "dtype": st.sampled_from([*DTYPES, "complex64", "<f4"]) | msgpack_scalars,
        "shape": st.lists(st.integers(-1, 9), max_size=4) | msgpack_values,
        "enc": st.sampled_from(["raw", "jpeg", "png"]) | msgpack_scalars,
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(descriptors, max_size=3), st.lists(st.binary(max_size=96), max_size=3))
def test_property_wrong_descriptors_raise_only_wire_errors(arrays: list[dict], buffers: list[bytes]) -> None:
    frames = encode("state", **HEAD)
    try:
        env = decode(with_header(frames, arrays=arrays)[:2] + buffers)
    except WireError:
        return
    assert len(env.arrays) == len(buffers)  # accepted only when every buffer became an array


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_bit_flips_in_a_valid_message_raise_only_wire_errors(data: st.DataObject) -> None:
    valid = encode("state", **HEAD, fields={"a": [1, 2]}, arrays={"q": np.arange(3.0)}, jpeg={"i": gradient(8, 8)})
    frames = [bytearray(f) for f in valid]
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(frames) - 1))
        if frames[index]:
            at = data.draw(st.integers(0, len(frames[index]) - 1))
            frames[index][at] ^= 1 << data.draw(st.integers(0, 7))
    try:
        decode(frames)
    except WireError:
        pass

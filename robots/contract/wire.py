"""The one wire codec shared by the robot drivers and the runtime: ZeroMQ multipart frames, msgpack header.

A message is `[topic, header, *buffers]`. Arrays travel as raw little-endian buffers (or JPEG) described in
the header, never pickled, so a peer in any language can read them and a hostile peer cannot run code.
`decode` is the trust boundary: sizes are checked before anything is unpacked or decoded, and it raises only
`WireError` subclasses, whose `reason` is the key the receiver counts drops under.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import msgpack
import numpy as np

from robots.contract.link import DEFAULT_LINK

SCHEMA_VERSION = 1

# Dtypes a raw buffer may carry, by name; on the wire they are always little-endian.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in "bool uint8 int8 uint16 int16 uint32 int32 uint64 int64 float16 float32 float64".split()
}
# The same dtypes by value: numpy computes `dtype.name` in Python on every access (4 µs; 50 µs where the caches are
# cold, as in the runtime's loop after inference: issue 13), a dict lookup by the dtype costs a hash.
_NAME_OF = {dtype: name for name, dtype in DTYPES.items()}
ENCODINGS = ("raw", "jpeg")

_HEADER_KEYS = frozenset({"v", "seq", "source", "t_capture_ns", "t_send_ns", "fields", "arrays"})
_DESCRIPTOR_KEYS = frozenset({"name", "dtype", "shape", "enc"})
_MAX_NDIM = 32
_MAX_JPEG_SIDE = 65535  # the JPEG frame header stores each side in 16 bits
_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_EXACT_SCALARS = frozenset(_PLAIN_SCALARS)  # these types exactly (not subclasses): plain, nothing to look into
# Start-of-frame markers SOF0..SOF15; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass(frozen=True)
class WireLimits:
    max_frames: int = 16  # topic + header + buffers
    max_header_bytes: int = 64 * 1024
    max_buffer_bytes: int = 16 * 1024 * 1024  # one buffer, and one decoded JPEG
    max_total_bytes: int = 32 * 1024 * 1024  # all frames together


DEFAULT_LIMITS = WireLimits()


class WireError(ValueError):
    """A message that cannot be encoded or was received broken; `reason` is the drop-counter key."""

    reason: str = "malformed"


class MalformedMessage(WireError):
    reason = "malformed"


class VersionMismatch(WireError):
    reason = "version"


class OversizedMessage(WireError):
    reason = "oversized"


@dataclass
class Envelope:
    """A decoded message. Raw arrays are read-only views over the received frames (no copy)."""

    topic: str
    v: int
    seq: int
    source: str
    t_capture_ns: int
    t_send_ns: int
    fields: dict[str, Any]
    arrays: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------------- encode


def encode(
    topic: str,
    *,
    seq: int,
    source: str,
    t_capture_ns: int,
    t_send_ns: int | None = None,
    fields: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    jpeg: Mapping[str, np.ndarray] | None = None,
    jpeg_quality: int = DEFAULT_LINK.jpeg_quality,
    limits: WireLimits = DEFAULT_LIMITS,
) -> list[bytes]:
    """Build the frames of one message; raises a `WireError` for anything `decode` would reject."""
    arrays, jpeg, fields = dict(arrays or {}), dict(jpeg or {}), dict(fields or {})
    if t_send_ns is None:
        t_send_ns = time.monotonic_ns()
    if not isinstance(topic, str) or not topic:
        raise MalformedMessage(f"topic must be a non-empty str, got {topic!r}")
    topic_bytes = _encode_topic(topic)
    for name, value in (("seq", seq), ("t_capture_ns", t_capture_ns), ("t_send_ns", t_send_ns)):
        _check_count(name, value)
    if not isinstance(source, str):
        raise MalformedMessage(f"source must be a str, got {type(source).__name__}")
    if 2 + len(arrays) + len(jpeg) > limits.max_frames:
        raise OversizedMessage(f"{2 + len(arrays) + len(jpeg)} frames > {limits.max_frames}")
    for name in [*arrays, *jpeg]:
        if not isinstance(name, str):
            raise MalformedMessage(f"array name must be a str, got {name!r}")
    if duplicates := arrays.keys() & jpeg.keys():
        raise MalformedMessage(f"names in both arrays and jpeg: {sorted(duplicates)}")

    descriptors, buffers = [], []
    for name, array in arrays.items():
        descriptor, buffer = _encode_raw(name, array, limits)
        descriptors.append(descriptor)
        buffers.append(buffer)
    for name, image in jpeg.items():
        descriptor, buffer = _encode_jpeg(name, image, jpeg_quality, limits)
        descriptors.append(descriptor)
        buffers.append(buffer)

    header = {
        "v": SCHEMA_VERSION,
        "seq": seq,
        "source": source,
        "t_capture_ns": t_capture_ns,
        "t_send_ns": t_send_ns,
        "fields": fields,
        "arrays": descriptors,
    }
    packed = _pack_header(header, fields)
    if len(packed) > limits.max_header_bytes:
        raise OversizedMessage(f"header of {len(packed)} B > {limits.max_header_bytes} B")
    frames = [topic_bytes, packed, *buffers]
    total = sum(len(frame) for frame in frames)
    if total > limits.max_total_bytes:
        raise OversizedMessage(f"message of {total} B > {limits.max_total_bytes} B")
    return frames


def _encode_topic(topic: str) -> bytes:
    try:
        return topic.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: a str that is no UTF-8 text
        raise MalformedMessage(f"topic {topic!r} is not encodable as UTF-8") from err


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedMessage(f"{name} must be a non-negative int, got {value!r}")


def _pack_header(header: dict[str, Any], fields: dict[str, Any]) -> bytes:
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as err:
        raise MalformedMessage(f"header is not msgpack-serialisable: {err}") from err
    _check_plain(fields, "fields")  # after packb, which bounds the nesting depth
    return packed


def _check_plain(value: object, path: str) -> None:
    """Reject what packs but would not decode back: non-str map keys, msgpack extension types."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedMessage(f"{path}: map keys must be str, got {key!r}")
            if type(item) not in _EXACT_SCALARS:  # a plain scalar needs no call (nor a path string) of its own
                _check_plain(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{path}[{index}]")
    elif not isinstance(value, _PLAIN_SCALARS):
        raise MalformedMessage(f"{path}: {type(value).__name__} is not a plain msgpack value")


def _encode_raw(name: str, array: np.ndarray, limits: WireLimits) -> tuple[dict[str, Any], bytes]:
    if not isinstance(array, np.ndarray):
        raise MalformedMessage(f"array {name!r} must be a numpy array, got {type(array).__name__}")
    dtype = _NAME_OF.get(array.dtype) or array.dtype.name  # the lookup misses only for other byte orders
    if dtype not in DTYPES or array.dtype.fields is not None:
        raise MalformedMessage(f"array {name!r}: dtype {array.dtype} is not allowed on the wire")
    if array.nbytes > limits.max_buffer_bytes:
        raise OversizedMessage(f"array {name!r} of {array.nbytes} B > {limits.max_buffer_bytes} B")
    little = DTYPES[dtype]
    if array.dtype != little:  # swap bytes rather than convert values, so NaN payloads survive
        array = array.byteswap().view(little)
    descriptor = {"name": name, "dtype": dtype, "shape": list(array.shape), "enc": "raw"}
    return descriptor, array.tobytes(order="C")


def _encode_jpeg(name: str, image: np.ndarray, quality: int, limits: WireLimits) -> tuple[dict[str, Any], bytes]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise MalformedMessage(f"jpeg {name!r} must be a uint8 numpy array")
    if not _is_jpeg_shape(image.shape):
        raise MalformedMessage(f"jpeg {name!r} must be HxW or HxWx3, sides 1..{_MAX_JPEG_SIDE}: {image.shape}")
    if image.nbytes > limits.max_buffer_bytes:
        raise OversizedMessage(f"jpeg {name!r} decodes to {image.nbytes} B > {limits.max_buffer_bytes} B")
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise MalformedMessage(f"jpeg_quality must be an int in 1..100, got {quality!r}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else np.ascontiguousarray(image)
    try:
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    except cv2.error as err:
        raise MalformedMessage(f"jpeg {name!r}: {err}") from err
    if not ok:
        raise MalformedMessage(f"jpeg {name!r}: OpenCV could not encode it")
    data = buffer.tobytes()
    if len(data) > limits.max_buffer_bytes:
        raise OversizedMessage(f"jpeg {name!r} of {len(data)} B > {limits.max_buffer_bytes} B")
    descriptor = {"name": name, "dtype": "uint8", "shape": list(image.shape), "enc": "jpeg"}
    return descriptor, data


def _is_jpeg_shape(shape: tuple[int, ...]) -> bool:
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
        return False
    return all(1 <= side <= _MAX_JPEG_SIDE for side in shape[:2])


# ---------------------------------------------------------------------------------------------------- decode


def decode(frames: Sequence[Any], limits: WireLimits = DEFAULT_LIMITS) -> Envelope:
    """Parse received frames (bytes, bytearray, memoryview or zmq.Frame); raises only `WireError`.

    Raw arrays are read-only views over the frames, which they keep alive; copy one to modify or keep it
    without pinning the frame's memory.
    """
    views = _frame_views(frames, limits)
    topic = _decode_topic(views[0])
    header = _unpack_header(views[1], limits)
    descriptors = _check_header(header)
    buffers = views[2:]
    if len(descriptors) != len(buffers):
        raise MalformedMessage(f"{len(descriptors)} array descriptors but {len(buffers)} buffers")
    decoded: dict[str, np.ndarray] = {}
    for descriptor, buffer in zip(descriptors, buffers, strict=True):
        name = descriptor["name"]
        if name in decoded:
            raise MalformedMessage(f"duplicate array name {name!r}")
        decoded[name] = _decode_array(descriptor, buffer, limits)
    return Envelope(
        topic=topic,
        v=header["v"],
        seq=header["seq"],
        source=header["source"],
        t_capture_ns=header["t_capture_ns"],
        t_send_ns=header["t_send_ns"],
        fields=header["fields"],
        arrays=decoded,
    )


def _frame_views(frames: Sequence[Any], limits: WireLimits) -> list[memoryview]:
    """Byte views of the frames, with every size checked before anything is parsed."""
    try:
        count = len(frames)
    except TypeError as err:
        raise MalformedMessage("frames must be a sequence") from err
    if count > limits.max_frames:
        raise OversizedMessage(f"{count} frames > {limits.max_frames}")
    if count < 2:
        raise MalformedMessage(f"{count} frames; need at least topic and header")
    views = [_byte_view(frame) for frame in frames]
    if len(views[1]) > limits.max_header_bytes:
        raise OversizedMessage(f"header of {len(views[1])} B > {limits.max_header_bytes} B")
    for view in views[2:]:
        if len(view) > limits.max_buffer_bytes:
            raise OversizedMessage(f"buffer of {len(view)} B > {limits.max_buffer_bytes} B")
    total = sum(len(view) for view in views)
    if total > limits.max_total_bytes:
        raise OversizedMessage(f"message of {total} B > {limits.max_total_bytes} B")
    return views


def _byte_view(frame: Any) -> memoryview:
    """A flat unsigned-byte view of one frame, without copying it."""
    try:
        if isinstance(frame, (bytes, bytearray, memoryview)):
            view = memoryview(frame)
        elif hasattr(frame, "buffer"):  # zmq.Frame
            view = memoryview(frame.buffer)
        elif hasattr(frame, "bytes"):
            view = memoryview(frame.bytes)
        else:
            view = memoryview(frame)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
    except Exception as err:  # any object may arrive here; all that matters is that it is not bytes
        raise MalformedMessage(f"frame of type {type(frame).__name__} is not a byte buffer") from err
    if not view.c_contiguous:  # a strided view: neither str() nor numpy can read it in place
        raise MalformedMessage(f"frame of type {type(frame).__name__} is not a contiguous byte buffer")
    return view


def _decode_topic(view: memoryview) -> str:
    try:
        topic = str(view, "utf-8")
    except UnicodeDecodeError as err:
        raise MalformedMessage("topic is not UTF-8") from err
    if not topic:
        raise MalformedMessage("empty topic")
    return topic


def _unpack_header(view: memoryview, limits: WireLimits) -> Any:
    n = limits.max_header_bytes  # no string or container can be longer than the header holding it
    try:
        return msgpack.unpackb(
            view,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
        )
    except Exception as err:  # msgpack raises many types for hostile input; each means "not a header"
        raise MalformedMessage(f"header is not valid msgpack: {type(err).__name__}") from err


def _check_header(header: Any) -> list[dict[str, Any]]:
    """Validate the header in place and return its array descriptors; the version is checked first."""
    if not isinstance(header, dict):
        raise MalformedMessage(f"header must be a map, got {type(header).__name__}")
    version = header.get("v")
    if not _is_int(version):
        raise MalformedMessage(f"header field v must be an int, got {version!r}")
    if version != SCHEMA_VERSION:
        raise VersionMismatch(f"schema version {version}, expected {SCHEMA_VERSION}")
    if header.keys() != _HEADER_KEYS:
        raise MalformedMessage(f"header keys {sorted(map(str, header))}, expected {sorted(_HEADER_KEYS)}")
    for name in ("seq", "t_capture_ns", "t_send_ns"):
        if not _is_int(header[name]) or header[name] < 0:
            raise MalformedMessage(f"header field {name} must be a non-negative int, got {header[name]!r}")
    if not isinstance(header["source"], str):
        raise MalformedMessage("header field source must be a str")
    fields = header["fields"]
    if not isinstance(fields, dict) or not all(isinstance(key, str) for key in fields):
        raise MalformedMessage("header field fields must be a map with str keys")
    descriptors = header["arrays"]
    if not isinstance(descriptors, list):
        raise MalformedMessage("header field arrays must be a list")
    for descriptor in descriptors:
        _check_descriptor(descriptor)
    return descriptors


def _check_descriptor(descriptor: Any) -> None:
    if not isinstance(descriptor, dict) or descriptor.keys() != _DESCRIPTOR_KEYS:
        raise MalformedMessage(f"array descriptor must be a map with keys {sorted(_DESCRIPTOR_KEYS)}")
    if not isinstance(descriptor["name"], str):
        raise MalformedMessage("array name must be a str")
    if not isinstance(descriptor["dtype"], str) or descriptor["dtype"] not in DTYPES:
        raise MalformedMessage(f"unknown dtype {descriptor['dtype']!r}")
    if descriptor["enc"] not in ENCODINGS:
        raise MalformedMessage(f"unknown encoding {descriptor['enc']!r}")
    shape = descriptor["shape"]
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(_is_int(s) and s >= 0 for s in shape):
        raise MalformedMessage(f"bad shape {shape!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_array(descriptor: dict[str, Any], buffer: memoryview, limits: WireLimits) -> np.ndarray:
    if descriptor["enc"] == "jpeg":
        return _decode_jpeg(descriptor, buffer, limits)
    dtype = DTYPES[descriptor["dtype"]]
    shape = tuple(descriptor["shape"])
    expected = math.prod(shape) * dtype.itemsize
    name = descriptor["name"]
    if expected != len(buffer):
        raise MalformedMessage(f"array {name!r}: shape {shape} needs {expected} B, got {len(buffer)}")
    if dtype == np.bool_ and len(buffer) and np.frombuffer(buffer, np.uint8).max() > 1:
        raise MalformedMessage(f"array {name!r}: bool bytes other than 0 and 1")
    try:
        array = np.frombuffer(buffer, dtype).reshape(shape)
    except ValueError as err:  # e.g. an empty array whose other sides overflow numpy's index type
        raise MalformedMessage(f"array {name!r}: {err}") from err
    array.flags.writeable = False
    return array


def _decode_jpeg(descriptor: dict[str, Any], buffer: memoryview, limits: WireLimits) -> np.ndarray:
    name, shape = descriptor["name"], tuple(descriptor["shape"])
    if descriptor["dtype"] != "uint8" or not _is_jpeg_shape(shape):
        raise MalformedMessage(f"jpeg {name!r}: dtype {descriptor['dtype']} shape {shape} is not an image")
    if math.prod(shape) > limits.max_buffer_bytes:
        raise OversizedMessage(f"jpeg {name!r} of shape {shape} would decode to > {limits.max_buffer_bytes} B")
    channels = shape[2] if len(shape) == 3 else 1
    if _jpeg_frame_size(buffer) != (shape[0], shape[1], channels):  # before decoding: no decompression bombs
        raise MalformedMessage(f"jpeg {name!r}: frame header does not match shape {shape}")
    mode = cv2.IMREAD_COLOR_RGB if channels == 3 else cv2.IMREAD_GRAYSCALE
    try:
        image = cv2.imdecode(np.frombuffer(buffer, np.uint8), mode | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as err:
        raise MalformedMessage(f"jpeg {name!r}: {err}") from err
    if image is None or image.shape != shape or image.dtype != np.uint8:
        raise MalformedMessage(f"jpeg {name!r}: does not decode to shape {shape}")
    return image


def _jpeg_frame_size(data: memoryview) -> tuple[int, int, int]:
    """Height, width and component count from a JPEG's start-of-frame header, read without decoding."""
    if bytes(data[:2]) != b"\xff\xd8" or bytes(data[-2:]) != b"\xff\xd9":
        raise MalformedMessage("jpeg lacks start or end-of-image marker")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise MalformedMessage("jpeg segment does not start with a marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF and length >= 8 and i + 10 <= len(data):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return height, width, data[i + 9]
        if marker == 0xDA or length < 2:  # a scan before any frame header, or a corrupt length
            break
        i += 2 + length
    raise MalformedMessage("jpeg has no frame header")

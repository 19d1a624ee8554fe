"""Open a policy file for serving, or refuse it before any motion with a message naming the problem.

Pre-flight, in order: the file and its metadata; the model's observation and action specs against the
robot's (wrong arm, action space, action size or camera set is refused here, before a session is built);
the graph's operators and its weights (an external-data file missing or cut short, an op ONNX does not
define: named here, where ONNX Runtime would only say that loading failed); the graph's inputs and outputs
against the signature the metadata promises; the execution provider really obtained; the golden
input/output pair on that provider; warm-up runs. Whatever else a broken file makes ONNX Runtime raise is
a PolicyRefused too, so a bad file never ends in a traceback. `pac-run` and `pac-bench` both load through
`load_policy`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, defs

from policies.export.metadata import PolicyFileError, PolicyMetadata
from policies.spec import ActionSpec, ObservationSpec, SpecMismatch, check_matches
from policies.tokenizer.observation import ModelInputs, ObservationTokenizer
from runtime.inference.providers import (
    CPU,
    FirstCallFailed,
    ProviderUnavailable,
    SessionConfig,
    one_line,
    open_runner,
)

log = logging.getLogger(__name__)

_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)", "int64": "tensor(int64)"}
_ONNX_DOMAINS = ("", "ai.onnx")  # the standard operator set; other domains are ONNX Runtime's or custom
_T = TensorProto
# Bytes per element of the weight types stored one element per whole bytes (packed 4-bit types are skipped).
_ITEM_BYTES = {_T.FLOAT: 4, _T.DOUBLE: 8, _T.FLOAT16: 2, _T.BFLOAT16: 2, _T.BOOL: 1, _T.INT8: 1, _T.UINT8: 1}
_ITEM_BYTES |= {_T.INT16: 2, _T.UINT16: 2, _T.INT32: 4, _T.UINT32: 4, _T.INT64: 8, _T.UINT64: 8}


class PolicyRefused(RuntimeError):
    """The policy file cannot be served on this robot; the message says which check failed and why."""


@dataclass
class LoadedPolicy:
    path: Path
    metadata: PolicyMetadata
    provider: str
    fell_back: bool
    golden_error: float
    tokenizer: ObservationTokenizer
    _run: Callable[[Mapping[str, np.ndarray]], np.ndarray]  # the session's call (providers.Session.runner)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The graph's one output for batch-1 feeds, without the batch axis."""
        return self._run(feeds)[0]

    def infer(self, inputs: ModelInputs) -> np.ndarray:
        """(A, K) action-bin logits for one observation (actor files)."""
        return self.run(inputs.feeds())

    def action(self, logits: np.ndarray, how: str = "argmax", rng: np.random.Generator | None = None) -> np.ndarray:
        """Physical action (A,) from logits, with the model's own action spec (`rng`: for the sampled decodings)."""
        return self.metadata.action.from_logits(logits, how, rng)


def _read_graph(path: Path) -> onnx.ModelProto:
    """The file's ModelProto without its external weights, or PolicyRefused naming why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise PolicyRefused(f"policy file {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same refusal
        raise PolicyRefused(
            f"{path} is not a readable ONNX file ({one_line(exc)}); expected a whole model as pac-export writes it"
        ) from exc


def _metadata(proto: onnx.ModelProto, path: Path) -> PolicyMetadata:
    try:
        return PolicyMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    except PolicyFileError as exc:
        raise PolicyRefused(f"{path}: {exc}") from exc


def read_metadata(path: Path) -> PolicyMetadata:
    """The policy metadata of an ONNX file, read without loading its weights."""
    return _metadata(_read_graph(path), path)


def _check_ops(proto: onnx.ModelProto, name: str) -> None:
    """Every node of the standard domain is an operator of the file's opset (else ONNX Runtime refuses the
    graph with a message about registries); nodes of other domains are left to ONNX Runtime."""
    opset = {o.domain or "": o.version for o in proto.opset_import}
    version = opset.get("", opset.get("ai.onnx"))
    for graph in (proto.graph, *proto.functions):
        for node in graph.node:
            if node.domain not in _ONNX_DOMAINS or version is None:
                continue
            if not defs.has(node.op_type, version):
                raise PolicyRefused(
                    f"{name}: node {node.name!r} uses op {node.op_type!r}, which is not an ONNX operator in opset "
                    f"{version}; expected standard ONNX ops only (re-export the model with pac-export)"
                )


def _check_weights(proto: onnx.ModelProto, path: Path) -> None:
    """Each initializer's bytes are all there: inline, or in the external-data file beside the graph."""
    sizes: dict[Path, int] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_type not in _ITEM_BYTES:
            continue
        dims = [int(d) for d in tensor.dims]
        needed = int(np.prod(dims)) * _ITEM_BYTES[tensor.data_type]
        if tensor.data_location != TensorProto.EXTERNAL:
            if tensor.HasField("raw_data") and len(tensor.raw_data) != needed:
                raise PolicyRefused(
                    f"{path.name}: weight {tensor.name!r} holds {len(tensor.raw_data)} bytes, its shape {dims} needs "
                    f"{needed}; the file is corrupt (re-export or copy it again)"
                )
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        data = path.parent / location
        if not location or not data.is_file():
            raise PolicyRefused(
                f"{path.name}: its weights are in an external-data file {location!r}, which is missing; expected it "
                f"beside the graph at {data} (copy {path.name} and {location or '<name>.onnx.data'} together)"
            )
        try:
            end = int(info.get("offset", 0)) + int(info.get("length", needed))
        except ValueError as exc:
            raise PolicyRefused(
                f"{path.name}: weight {tensor.name!r} has a malformed external-data entry {info}"
            ) from exc
        if data not in sizes:
            sizes[data] = data.stat().st_size
        if sizes[data] < end:
            raise PolicyRefused(
                f"{path.name}: the external-data file {location} is cut short: {sizes[data]} bytes, but weight "
                f"{tensor.name!r} ends at byte {end}; expected the whole file (copy it again)"
            )


def _check_signature(session, meta: PolicyMetadata) -> None:
    want_in, want_out = meta.signature()
    for kind, got_nodes, want in (
        ("input", session.get_inputs(), want_in),
        ("output", session.get_outputs(), want_out),
    ):
        got = {n.name: (n.type, tuple(n.shape)) for n in got_nodes}
        if set(got) != set(want):
            raise PolicyRefused(f"graph {kind}s are {sorted(got)}, expected {sorted(want)}")
        for name, (dtype, shape) in want.items():
            if got[name] != (_ORT_TYPES[dtype], shape):
                raise PolicyRefused(
                    f"graph {kind} {name!r} is {got[name][0]} {list(got[name][1])}, "
                    f"expected {_ORT_TYPES[dtype]} {list(shape)}"
                )


def load_policy(
    path: Path,
    observation: ObservationSpec,
    action: ActionSpec,
    config: SessionConfig | None = None,
    graph: str = "actor",
    warmup: int = 5,
) -> LoadedPolicy:
    """Open `path` for the robot described by `observation` and `action`, or raise PolicyRefused.

    The model decides the instruction length and the number of bins; everything else must equal the
    robot's specs. ProviderUnavailable (from providers.py) propagates when the device asked for is missing.
    """
    path = Path(path)
    config = config or SessionConfig()
    proto = _read_graph(path)
    meta = _metadata(proto, path)
    if meta.graph != graph:
        raise PolicyRefused(f"{path} holds the {meta.graph} graph; expected the {graph}")
    try:
        check_matches(meta.observation, replace(observation, instruction_length=meta.observation.instruction_length))
        check_matches(meta.action, replace(action, bins=meta.action.bins))
    except SpecMismatch as exc:
        raise PolicyRefused(f"{path.name} does not fit this robot: {exc}") from exc

    _check_ops(proto, path.name)
    _check_weights(proto, path)
    del proto  # the session reads the file itself; inline weights need not stay in memory twice

    def verify(session) -> None:  # before the first call: the graph against its metadata, then the golden pair
        _check_signature(session, meta)
        try:
            meta.golden.check(meta.signature())
        except PolicyFileError as exc:
            raise PolicyRefused(f"{path.name}: {exc}") from exc

    (output,) = meta.signature()[1]
    if graph != "actor":  # the critic is called with any number of candidate actions: no fixed buffers
        config = replace(config, cuda_graph=False)
    started = time.perf_counter()
    try:  # through the call the loop will make: on CUDA, this first call captures the graph it replays
        expected = meta.golden.outputs.get(output)  # missing: verify refuses the file before anything is bound
        shape = expected.shape if expected is not None else ()
        runner = open_runner(path, config, output, meta.golden.inputs, shape, verify)
    except (ProviderUnavailable, PolicyRefused):
        raise
    except FirstCallFailed as exc:
        raise PolicyRefused(f"{path.name} fails on its own golden input {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises many types for a broken file; each is a refusal
        raise PolicyRefused(f"ONNX Runtime cannot load {path.name}: {one_line(exc)}") from exc
    opened, run, golden = runner.session, runner.call, runner.first_output
    if meta.variant == "fp16" and opened.provider == CPU:
        log.warning("%s is an fp16 model running on the CPU, where fp16 is several times slower than fp32", path)
    error = float(np.abs(golden - meta.golden.outputs[output]).max())
    if not np.isfinite(error) or error > meta.golden.atol:
        raise PolicyRefused(
            f"golden check failed on {opened.provider}: max |error| {error:.3g} > {meta.golden.atol:g} "
            f"({meta.variant} model); this provider does not compute what the model was exported to compute"
        )
    for _ in range(warmup):
        run(meta.golden.inputs)
    log.info(
        "policy %s (%s %s, %s) on %s%s: golden error %.2g, ready in %.1f s",
        path.name,
        meta.model.get("size"),
        meta.variant,
        meta.graph,
        opened.provider,
        " (one CUDA graph per call)" if opened.cuda_graph else "",
        error,
        time.perf_counter() - started,
    )
    return LoadedPolicy(
        path=path,
        metadata=meta,
        provider=opened.provider,
        fell_back=opened.fell_back,
        golden_error=error,
        tokenizer=ObservationTokenizer(meta.observation, meta.tokenizer()),
        _run=run,
    )

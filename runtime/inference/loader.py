"""Open a policy file for serving, or refuse it before any motion with a message naming the problem.

Pre-flight, in order: the file and its metadata; the model's observation and action specs against the
robot's (wrong arm, action space, action size or camera set is refused here, before a session is built);
the graph's inputs and outputs against the signature the metadata promises; the execution provider really
obtained; the golden input/output pair on that provider; warm-up runs. `pac-run` and `pac-bench` both
load through `load_policy`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from policies.export.metadata import PolicyFileError, PolicyMetadata
from policies.spec import ActionSpec, ObservationSpec, SpecMismatch, check_matches
from policies.tokenizer.observation import ModelInputs, ObservationTokenizer
from runtime.inference.providers import CPU, SessionConfig, open_session

log = logging.getLogger(__name__)

_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)", "int64": "tensor(int64)"}


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
    _session: object
    _output: str

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's one output for batch-1 feeds, without the batch axis."""
        return self._session.run([self._output], feeds)[0][0]

    def infer(self, inputs: ModelInputs) -> np.ndarray:
        """(A, K) action-bin logits for one observation (actor files)."""
        return self.run(inputs.feeds())

    def action(self, logits: np.ndarray, how: str = "argmax") -> np.ndarray:
        """Physical action (A,) from logits, with the model's own action spec."""
        return self.metadata.action.from_logits(logits, how)


def read_metadata(path: Path) -> PolicyMetadata:
    """The policy metadata of an ONNX file, read without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise PolicyRefused(f"policy file {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same refusal
        raise PolicyRefused(f"{path} is not a readable ONNX file: {exc}") from exc
    try:
        return PolicyMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    except PolicyFileError as exc:
        raise PolicyRefused(f"{path}: {exc}") from exc


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
    meta = read_metadata(path)
    if meta.graph != graph:
        raise PolicyRefused(f"{path} holds the {meta.graph} graph; expected the {graph}")
    try:
        check_matches(meta.observation, replace(observation, instruction_length=meta.observation.instruction_length))
        check_matches(meta.action, replace(action, bins=meta.action.bins))
    except SpecMismatch as exc:
        raise PolicyRefused(f"{path.name} does not fit this robot: {exc}") from exc

    started = time.perf_counter()
    opened = open_session(path, config)
    _check_signature(opened.session, meta)
    if meta.variant == "fp16" and opened.provider == CPU:
        log.warning("%s is an fp16 model running on the CPU, where fp16 is several times slower than fp32", path)
    (output,) = meta.signature()[1]
    golden = opened.session.run([output], meta.golden.inputs)[0]
    error = float(np.abs(golden - meta.golden.outputs[output]).max())
    if not np.isfinite(error) or error > meta.golden.atol:
        raise PolicyRefused(
            f"golden check failed on {opened.provider}: max |error| {error:.3g} > {meta.golden.atol:g} "
            f"({meta.variant} model); this provider does not compute what the model was exported to compute"
        )
    for _ in range(warmup):
        opened.session.run([output], meta.golden.inputs)
    log.info(
        "policy %s (%s %s, %s) on %s: golden error %.2g, ready in %.1f s",
        path.name,
        meta.model.get("size"),
        meta.variant,
        meta.graph,
        opened.provider,
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
        _session=opened.session,
        _output=output,
    )

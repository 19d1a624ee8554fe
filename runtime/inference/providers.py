"""ONNX Runtime sessions on the execution provider asked for, and proof of which one really runs.

onnxruntime-gpu lists CUDA and TensorRT as available even on a machine with no GPU, and a session asked
for them silently runs on the CPU (reference/ecosystem.md). So the only truth is `session.get_providers()`
after creation: a device asked for explicitly and not obtained is an error, unless the operator allowed
the CPU fallback, and then it is logged at WARNING and recorded, never silent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.inference.binding import BoundRun

log = logging.getLogger(__name__)

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "tensorrt", "cuda", "cpu")
_CHAIN = {"auto": [TRT, CUDA, CPU], "tensorrt": [TRT, CUDA, CPU], "cuda": [CUDA, CPU], "cpu": [CPU]}
_WANTED = {"tensorrt": TRT, "cuda": CUDA, "cpu": CPU}
_DEVICE_OF = {provider: device for device, provider in _WANTED.items()}


class ProviderUnavailable(RuntimeError):
    """The execution provider asked for did not come up."""


@dataclass(frozen=True)
class SessionConfig:
    """How to build the session. CPU values measured best for an S model on 2 cores (ecosystem.md)."""

    device: str = "auto"
    allow_cpu_fallback: bool = False
    threads: int = 0  # intra-op threads on the CPU; 0: one per core
    # Spinning threads cost ~6 ms less median inference on S, but steal the CPU the rest of the loop needs:
    # with them pac-run's overhead p99 was 5.1 ms, without 3.1 ms (benchmarks/RESULTS.md). Off for serving.
    allow_spinning: bool = False
    fp16: bool = False  # let TensorRT build fp16 engines from an fp32 graph
    trt_cache_dir: Path | None = None  # TensorRT engine cache; building an engine takes minutes
    # On CUDA, capture the graph once and replay it per call through IO binding (binding.py): a batch-1 call is
    # launch-bound, and L fp16 on an H200 went from 5.1 to 1.8 ms p99 (benchmarks/RESULTS.md, issue 13).
    cuda_graph: bool = True


@dataclass(frozen=True)
class Session:
    session: ort.InferenceSession
    provider: str  # the provider that really runs the graph
    fell_back: bool  # an explicitly asked-for GPU provider did not come up and the CPU runs instead
    cuda_graph: bool = False  # the CUDA provider replays a captured graph: call it through `runner` only
    no_graph: str = ""  # why a CUDA graph asked for was refused (the provider runs plain calls instead)

    def runner(
        self, output: str, example: Mapping[str, np.ndarray], output_shape: tuple[int, ...]
    ) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
        """How to call this session with feeds shaped like `example`: through buffers bound once when it replays a
        CUDA graph (which reads fixed device addresses), else plain `session.run`. Returns `output` with its batch
        axis."""
        if self.cuda_graph:
            return BoundRun.bind(self.session, example, output, output_shape, "cuda")
        session = self.session
        return lambda feeds: session.run([output], dict(feeds))[0]


def gpu_present() -> bool:
    """An NVIDIA device node exists (cheap; whether CUDA really works is decided by get_providers())."""
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def _options(config: SessionConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = config.threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    # Spinning workers keep spinning after Run() returns, burning the cores the loop, the decoder and a sim
    # need until the next tick; stop them when a run ends, so they spin only while there is work.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3  # ORT's own fallback notes are replaced by our explicit check below
    return options


def _provider_entries(chain: list[str], config: SessionConfig) -> list[str | tuple[str, dict[str, str]]]:
    entries: list[str | tuple[str, dict[str, str]]] = []
    for name in chain:
        if name == TRT:
            trt = {"trt_fp16_enable": "1" if config.fp16 else "0"}
            if config.trt_cache_dir is not None:
                trt |= {"trt_engine_cache_enable": "1", "trt_engine_cache_path": str(config.trt_cache_dir)}
            entries.append((TRT, trt))
        elif name == CUDA and config.cuda_graph:
            entries.append((CUDA, {"enable_cuda_graph": "1"}))
        else:
            entries.append(name)
    return entries


def open_session(path: Path, config: SessionConfig) -> Session:
    """A session for `path` on config.device, verified with get_providers(); raises ProviderUnavailable."""
    if config.device not in _CHAIN:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {config.device!r}")
    chain = [p for p in _CHAIN[config.device] if p in ort.get_available_providers()] or [CPU]
    if config.device == "auto" and not gpu_present():
        chain = [CPU]  # don't make ORT try (and loudly fail) to load CUDA libraries on a machine with no GPU
    try:
        session = ort.InferenceSession(str(path), _options(config), providers=_provider_entries(chain, config))
    except Exception as exc:  # noqa: BLE001 - ORT refuses a CUDA graph when a compute node is not on CUDA
        if not (config.cuda_graph and CUDA in chain):
            raise
        opened = open_session(path, replace(config, cuda_graph=False))
        return replace(opened, no_graph=_no_graph(path, exc))
    got = session.get_providers()[0]
    wanted = _WANTED.get(config.device)
    if wanted is not None and got != wanted:
        if got != CPU or not config.allow_cpu_fallback:
            raise ProviderUnavailable(not_obtained(wanted, got, ort.get_available_providers()))
        log.warning("%s did not come up: running on %s because --allow-cpu-fallback was given", wanted, got)
        return Session(session, got, fell_back=True)
    if config.device == "auto":
        log.info("device auto: running on %s", got)
    return Session(session, got, fell_back=False, cuda_graph=got == CUDA and config.cuda_graph)


class FirstCallFailed(RuntimeError):
    """An opened session (without a CUDA graph) raised on its first call, on the example input."""


@dataclass(frozen=True)
class Runner:
    """A session and the call the loop makes through it, already made once on the example input."""

    session: Session
    call: Callable[[Mapping[str, np.ndarray]], np.ndarray]  # Session.runner: feeds → the output with its batch axis
    first_output: np.ndarray  # the output for the example
    first_call_ms: float  # on CUDA with a graph, this call captured it


def open_runner(
    path: Path,
    config: SessionConfig,
    output: str,
    example: Mapping[str, np.ndarray],
    output_shape: tuple[int, ...],
    verify: Callable[[ort.InferenceSession], None] | None = None,
) -> Runner:
    """Open `path` (open_session), `verify` the session, and make the first call on `example` the loop's way.

    A CUDA graph can be refused twice: by ORT at session creation (open_session reopens without one) or by the
    capture at the first call. Both end the same way, here, for pac-run and pac-bench alike: the same provider
    without a graph, the reason logged and kept in `session.no_graph`. Any other first-call error raises
    FirstCallFailed; ProviderUnavailable and whatever `verify` raises propagate.
    """
    opened = open_session(path, config)
    if verify is not None:
        verify(opened.session)
    try:
        call = opened.runner(output, example, output_shape)
        started = time.perf_counter()
        first = call(example)
        first_ms = (time.perf_counter() - started) * 1e3
    except Exception as exc:  # noqa: BLE001 - ORT raises many types; each is either a refused capture or a refusal
        if not opened.cuda_graph:
            raise FirstCallFailed(f"on {opened.provider}: {one_line(exc)}") from exc
        no_graph = _no_graph(path, exc)
        runner = open_runner(path, replace(config, cuda_graph=False), output, example, output_shape, verify)
        return replace(runner, session=replace(runner.session, no_graph=no_graph))
    return Runner(opened, call, first, first_ms)


def _no_graph(path: Path, exc: BaseException) -> str:
    """Why a CUDA graph was refused (at session creation or at the capture), logged once: Session.no_graph."""
    reason = f"no CUDA graph for {Path(path).name} ({one_line(exc)}): every call launches its kernels"
    log.warning("%s", reason)
    return reason


def not_obtained(wanted: str, got: str, available: list[str]) -> str:
    """Why a session is refused: the provider asked for, the one that came up, and what to do instead."""
    advice = (
        "use --device cpu, or --allow-cpu-fallback to run on the CPU anyway"
        if got == CPU
        else f"use --device {_DEVICE_OF[got]}"
    )
    missing = " (TensorRT's libraries, libnvinfer, did not load)" if wanted == TRT else ""
    return (
        f"asked for {wanted} but ONNX Runtime runs this model on {got}{missing} "
        f"(available on paper: {', '.join(available)}); {advice}"
    )


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (ONNX Runtime's run over many), or its type when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

"""What runs a policy file, one `Setting` at a time: ONNX Runtime on the CPU (fp32 and int8), CUDA and
TensorRT, and torch (eager, torch.compile, CUDA graphs) as references.

A setting that cannot run here (no GPU, a provider missing from this onnxruntime, no int8 file) raises
`Unavailable` with the reason: it is reported as such, never replaced by the CPU. ORT sessions are opened
through `runtime.inference.providers.open_runner`, which checks the provider that really runs the graph.
The torch backends rebuild the file's architecture from its metadata (the model config it was exported
with); latency does not depend on weight values, and the file's weights are loaded where their names match.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from policies.export.metadata import PolicyMetadata
from runtime.inference.loader import read_metadata
from runtime.inference.providers import CUDA, TRT, ProviderUnavailable, SessionConfig, gpu_present, open_runner

BACKENDS = ("torch", "compile", "ort", "ort-int8", "cuda", "tensorrt", "torch-cuda")
CPU_BACKENDS = ("torch", "compile", "ort", "ort-int8")
SPINNING_BACKENDS = ("ort", "ort-int8")  # ORT's intra-op threads may spin between calls; torch's pool has no switch
GPU_BACKENDS = ("cuda", "tensorrt", "torch-cuda")
DEFAULT_BACKENDS = ("ort", "ort-int8", "torch", "compile", "cuda", "tensorrt")  # the first is what pac-run serves
TRT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pac-runtime" / "tensorrt"


class Unavailable(RuntimeError):
    """This setting cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class Setting:
    """One way to run the policy: a backend and, on the CPU, its thread count and spinning."""

    backend: str
    threads: int = 0  # intra-op threads on the CPU; 0 on a GPU
    spinning: bool = False

    @property
    def label(self) -> str:
        if self.backend in GPU_BACKENDS:
            return self.backend
        spin = " spin" if self.spinning else ""
        return f"{self.backend} {self.threads}t{spin}"


@dataclass
class PolicyFile:
    """The file under test: its metadata, a batch-1 input (its golden one) and what a call costs."""

    path: Path
    metadata: PolicyMetadata
    feeds: dict[str, np.ndarray]
    flops: int  # per call, analytic (policies/model/flops.py, written into the metadata at export)

    @classmethod
    def open(cls, path: Path) -> PolicyFile:
        meta = read_metadata(path)
        flops = int(meta.model.get("flops") or _actor_flops(meta))
        return cls(Path(path), meta, dict(meta.golden.inputs), flops)

    def int8_path(self) -> Path:
        """The int8 variant: this file if it is one, else `<stem>.int8.onnx` beside it (pac-export writes it)."""
        if self.metadata.variant == "int8":
            return self.path
        sibling = self.path.with_name(f"{self.path.stem}.int8.onnx")
        if not sibling.is_file():
            raise Unavailable(
                f"no int8 variant beside {self.path.name} ({sibling.name}; pac-export --variants fp32,int8)"
            )
        return sibling


def _actor_flops(meta: PolicyMetadata) -> int:
    from policies.model.config import PACConfig
    from policies.model.flops import actor_flops

    return actor_flops(PACConfig.from_dict(meta.model["config"]), meta.observation, meta.action)


def weight_bytes(path: Path) -> int:
    """Bytes of the graph's weights (initializers, inline or external) as stored: what a call must stream."""
    proto = onnx.load(str(path), load_external_data=False)
    total = 0
    for tensor in proto.graph.initializer:
        try:
            item = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError):
            continue  # packed 4-bit and string tensors: not a model's weights here
        total += int(np.prod([int(d) for d in tensor.dims])) * item
    return total


@dataclass
class Opened:
    """A setting ready to time: `run` makes one call; `enter` is called before each round (thread settings)."""

    setting: Setting
    run: Callable[[], object]
    provider: str  # what really runs it
    variant: str  # fp32, int8, fp16
    weight_bytes: int
    open_s: float  # session creation, model build, TensorRT engine build
    first_call_ms: float  # the first call after opening (lazy initialisation, torch.compile's compilation)
    enter: Callable[[], None] = lambda: None
    note: str = ""
    golden_error: float = float("nan")  # max |output − the file's golden output| (ORT backends)
    _keep: list = field(default_factory=list)  # objects the closures need alive

    def close(self) -> None:
        self._keep.clear()


def _first_call(run: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = run()
    return out, (time.perf_counter() - t) * 1e3


def open_setting(setting: Setting, policy: PolicyFile) -> Opened:
    """Open `setting` for `policy`, or raise Unavailable with the reason."""
    if setting.backend in ("ort", "ort-int8", "cuda", "tensorrt"):
        return _open_ort(setting, policy)
    if setting.backend in ("torch", "compile"):
        return _open_torch(setting, policy)
    if setting.backend == "torch-cuda":
        return _open_torch_cuda(policy)
    raise ValueError(f"unknown backend {setting.backend!r}; choose from {', '.join(BACKENDS)}")


def _ort_reason(backend: str) -> str | None:
    """Why ORT's GPU provider for `backend` cannot run here, or None when it may."""
    provider = {"cuda": CUDA, "tensorrt": TRT}.get(backend)
    if provider is None:
        return None
    if provider not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {provider} (it needs onnxruntime-gpu and a GPU)"
    if not gpu_present():
        return f"no NVIDIA GPU on this machine (onnxruntime lists {provider}, but it cannot come up)"
    return None


def _open_ort(setting: Setting, policy: PolicyFile) -> Opened:
    if (reason := _ort_reason(setting.backend)) is not None:
        raise Unavailable(reason)
    path = policy.int8_path() if setting.backend == "ort-int8" else policy.path
    meta = policy.metadata if path == policy.path else read_metadata(path)
    device = {"cuda": "cuda", "tensorrt": "tensorrt"}.get(setting.backend, "cpu")
    config = SessionConfig(
        device=device,
        threads=setting.threads,
        allow_spinning=setting.spinning,
        fp16=setting.backend == "tensorrt",
        trt_cache_dir=TRT_CACHE if setting.backend == "tensorrt" else None,
    )
    if config.trt_cache_dir is not None:
        config.trt_cache_dir.mkdir(parents=True, exist_ok=True)
    (output,) = meta.signature()[1]
    feeds = meta.golden.inputs
    started = time.perf_counter()
    try:  # as pac-run opens and calls it (providers.open_runner: on CUDA, one graph per call, or why not)
        runner = open_runner(path, config, output, feeds, meta.golden.outputs[output].shape)
    except ProviderUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    opened, call, first_ms = runner.session, runner.call, runner.first_call_ms
    open_s = time.perf_counter() - started - first_ms / 1e3  # a refused capture's attempt counts as opening

    def run() -> object:
        return call(feeds)

    error = float(np.abs(runner.first_output - meta.golden.outputs[output]).max())
    graph_note = "CUDA graph" if opened.cuda_graph else opened.no_graph
    return Opened(
        setting,
        run,
        opened.provider,
        meta.variant if setting.backend != "tensorrt" else f"{meta.variant}→fp16",
        weight_bytes(path),
        open_s,
        first_ms,
        golden_error=error,
        note=", ".join(filter(None, [path.name if path != policy.path else "", graph_note])),
        _keep=[opened, call],
    )


def _torch_actor(policy: PolicyFile):
    """The file's actor as a torch module: its architecture from the metadata, its weights where names match."""
    import torch
    from onnx import numpy_helper

    from policies.model.config import PACConfig
    from policies.model.perceiver import ActorGraph, build_model

    meta = policy.metadata
    actor = ActorGraph(build_model(PACConfig.from_dict(meta.model["config"]), meta.observation, meta.action)).eval()
    state = actor.state_dict()
    proto = onnx.load(str(policy.path))
    found = {}
    for tensor in proto.graph.initializer:
        if tensor.name in state and tuple(tensor.dims) == tuple(state[tensor.name].shape):
            found[tensor.name] = torch.from_numpy(numpy_helper.to_array(tensor).copy())
    actor.load_state_dict(found, strict=False)
    note = f"architecture from the file, {len(found)}/{len(state)} weight tensors from it (the rest seeded)"
    args = tuple(torch.from_numpy(np.ascontiguousarray(policy.feeds[name])) for name in actor.names)  # graph order
    return actor, args, note


def _open_torch(setting: Setting, policy: PolicyFile) -> Opened:
    import torch

    started = time.perf_counter()
    actor, args, note = _torch_actor(policy)
    threads = setting.threads or os.cpu_count() or 1
    module = torch.compile(actor) if setting.backend == "compile" else actor

    def enter() -> None:
        torch.set_num_threads(threads)

    def run() -> object:
        with torch.inference_mode():
            return module(*args)

    open_s = time.perf_counter() - started
    enter()
    _, first_ms = _first_call(run)  # torch.compile compiles here
    params = sum(p.numel() * p.element_size() for p in actor.parameters())
    return Opened(setting, run, "torch CPU", "fp32", params, open_s, first_ms, enter=enter, note=note, _keep=[actor])


def _open_torch_cuda(policy: PolicyFile) -> Opened:
    """fp16 weights in one CUDA graph. A call is what the loop would pay: the observation copied from pinned host
    memory into the graph's inputs, the replay, the logits copied back."""
    import torch

    if not torch.cuda.is_available():
        raise Unavailable(f"torch {torch.__version__} sees no CUDA device")
    started = time.perf_counter()
    actor, args, note = _torch_actor(policy)
    actor = actor.half().cuda()
    host = tuple(a.pin_memory() for a in args)
    inputs = tuple(a.cuda() for a in args)

    def forward() -> torch.Tensor:
        return actor(*inputs)  # the model casts its inputs to its weights' dtype (as in the fp16 export)

    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward()  # warm-up on a side stream before capture, as CUDA graphs need
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = forward()
    result = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)
    open_s = time.perf_counter() - started

    def run() -> object:
        for device_input, host_input in zip(inputs, host, strict=True):
            device_input.copy_(host_input, non_blocking=True)
        graph.replay()
        result.copy_(logits, non_blocking=True)
        torch.cuda.synchronize()
        return result

    _, first_ms = _first_call(run)
    params = sum(p.numel() * p.element_size() for p in actor.parameters())
    return Opened(
        Setting("torch-cuda"),
        run,
        f"torch CUDA ({torch.cuda.get_device_name()})",
        "fp16",
        params,
        open_s,
        first_ms,
        note=f"CUDA graph, host copies in and out timed; {note}",
        _keep=[actor, graph, inputs, host, logits, result],
    )


def thread_counts(cpus: int) -> list[int]:
    """Thread counts worth trying on `cpus` cores: powers of two below it, and all of them."""
    counts, n = [], 1
    while n < cpus:
        counts.append(n)
        n *= 2
    return [*counts, cpus]


def settings_for(backends: list[str], cpus: int, sweep: bool, threads: int | None = None) -> list[Setting]:
    """The settings to time: per CPU backend, each thread count (and spinning on or off for ORT) when
    sweeping, else the serving default (all cores, no spinning) or `threads`."""
    out: list[Setting] = []
    for backend in backends:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if backend in GPU_BACKENDS:
            out.append(Setting(backend))
            continue
        counts = [threads] if threads else thread_counts(cpus) if sweep else [cpus]
        spins = (False, True) if sweep and backend in SPINNING_BACKENDS else (False,)
        out += [Setting(backend, t, s) for t in counts for s in spins]
    return out

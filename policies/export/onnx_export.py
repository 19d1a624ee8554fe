"""Torch model → ONNX files that satisfy DESIGN §3: static batch-1 graphs, specs and golden pair inside.

The torch dynamo exporter (opset 20) writes the graph; weights go to one `<name>.onnx.data` file beside
it when they exceed EXTERNAL_DATA_BYTES. Variants:
- fp32: the reference; golden outputs are torch's, tolerance 1e-4.
- int8: ORT dynamic quantisation of MatMul/Gemm with QUInt8 weights (signed-int8 weights saturate on AVX2
  CPUs without VNNI and give logits off by ~1). Golden outputs are this file's own on ORT's CPU provider,
  tolerance 1e-2 for provider-to-provider differences in activation scaling.
- fp16: exported from a half copy of the model, for GPUs; inputs and outputs keep their fp32/uint8/int64
  types. Golden outputs are the fp32 torch outputs, tolerance FP16_ATOL.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from policies.export.metadata import Golden, PolicyMetadata
from policies.model.flops import model_cost
from policies.model.perceiver import ActorGraph, CriticGraph, PerceiverActorCritic
from policies.provenance import git_commit
from policies.tokenizer.language import InstructionTokenizer
from robots.tasks.tasks import TASK_INSTRUCTIONS

EXTERNAL_DATA_BYTES = 256 * 2**20
FP32_ATOL = 1e-4
INT8_ATOL = 1e-2
FP16_ATOL = 5e-2
OUTPUT_NAME = {"actor": "action_logits", "critic": "q_logits"}


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    graph: str
    variant: str
    bytes: int  # graph plus external data
    max_abs_error: float  # against torch fp32 on the golden inputs, on ORT's CPU provider (nan if not run)


def golden_inputs(
    model: PerceiverActorCritic, tokenizer: InstructionTokenizer, seed: int = 0, candidates: int = 0
) -> dict[str, np.ndarray]:
    """A reproducible observation (and candidate actions for the critic) exercising every input."""
    obs, act = model.obs_spec, model.action_spec
    rng = np.random.default_rng(seed)
    values = {
        "proprio": lambda: rng.normal(0.0, 0.5, (1, obs.proprio_size)).astype(np.float32),
        "images": lambda: rng.integers(0, 256, (1, *obs.image_shape), dtype=np.uint8),
        "objects": lambda: rng.normal(0.0, 0.3, (1, *obs.objects_shape)).astype(np.float32),
        "instruction": lambda: tokenizer.encode(TASK_INSTRUCTIONS["stack"], obs.instruction_length)[None, :],
    }
    inputs = {name: values[name]() for name in obs.modalities}
    if candidates:
        low, high = np.asarray(act.low), np.asarray(act.high)
        inputs["actions"] = rng.uniform(low, high, (1, candidates, act.size)).astype(np.float32)
    return inputs


def _graph_module(model: PerceiverActorCritic, graph: str) -> nn.Module:
    return ActorGraph(model) if graph == "actor" else CriticGraph(model)


def torch_outputs(model: PerceiverActorCritic, graph: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return _graph_module(model, graph)(*(torch.from_numpy(v) for v in inputs.values())).float().numpy()


def ort_cpu_outputs(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Run a file once on ORT's CPU provider (the reference every other provider is checked against)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # fp16 graphs log a warning per node ORT cannot constant-fold on the CPU
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def _provenance(weights: str, training: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "weights": weights,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "exporter": "torch.onnx.export(dynamo=True)",
        **({"training": training} if training else {}),
    }


@contextlib.contextmanager
def _quiet():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _set_props(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    kept = [p for p in proto.metadata_props if not p.key.startswith("pac.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def _file_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        if p.exists():
            p.unlink()  # save_as_external_data appends to an existing .data file


def _export_graph(module: nn.Module, inputs: dict[str, np.ndarray], output: str, path: Path, props: dict[str, str]):
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    # The exporter's notes ("skipping constant folding", "torchvision is not installed") are not problems.
    for name in ("onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            input_names=list(inputs),
            output_names=[output],
            optimize=True,
            verbose=False,
        )
    for key, value in props.items():
        program.model.metadata_props[key] = value
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    _remove(path)
    program.save(str(path), external_data=n_bytes > EXTERNAL_DATA_BYTES)


def export_policy(
    model: PerceiverActorCritic,
    out: Path,
    tokenizer: InstructionTokenizer,
    variants: tuple[str, ...] = ("fp32",),
    graph: str = "actor",
    candidates: int = 16,
    weights: str = "untrained",
    seed: int = 0,
    training: dict[str, Any] | None = None,
) -> list[ExportedFile]:
    """Write `out` (fp32) and `<stem>.<variant>.onnx` for the other variants; returns what was written.

    `training` (the run's command, dataset and checkpoint, for a trained model) goes into the provenance.

    fp32 is always written first: int8 is quantised from it.
    """
    if graph not in OUTPUT_NAME:
        raise ValueError(f"graph must be one of {list(OUTPUT_NAME)}")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids, the model embeds {model.config.vocab_size}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    candidates = candidates if graph == "critic" else 0
    inputs = golden_inputs(model, tokenizer, seed, candidates)
    reference = torch_outputs(model, graph, inputs)
    cost = model_cost(model.config, model.obs_spec, model.action_spec)
    meta = PolicyMetadata(
        graph=graph,
        variant="fp32",
        candidates=candidates,
        observation=model.obs_spec,
        action=model.action_spec,
        tokenizer_model=tokenizer.model_bytes,
        model={
            "size": model.config.size,
            "config": model.config.to_dict(),
            "parameters": cost.parameters,
            "flops": cost.actor_flops if graph == "actor" else cost.critic_flops,
        },
        provenance=_provenance(weights, training),
        golden=Golden(inputs, {OUTPUT_NAME[graph]: reference}, FP32_ATOL),
    )
    written: list[ExportedFile] = []
    fp32_path = out
    _export_graph(_graph_module(model, graph), inputs, OUTPUT_NAME[graph], fp32_path, meta.to_props())
    err = float(np.abs(ort_cpu_outputs(fp32_path, inputs) - reference).max())
    written.append(ExportedFile(fp32_path, graph, "fp32", _file_bytes(fp32_path), err))

    for variant in variants:
        if variant == "fp32":
            continue
        path = out.with_name(f"{out.stem}.{variant}.onnx")
        if variant == "int8":
            _remove(path)
            proto = onnx.load(str(fp32_path))
            # The exporter's value_info trips the quantiser's strict shape inference; ORT re-infers anyway.
            del proto.graph.value_info[:]
            with _quiet():  # the quantiser logs a generic "consider pre-processing" warning on the root logger
                quantize_dynamic(
                    proto,
                    path,
                    weight_type=QuantType.QUInt8,
                    op_types_to_quantize=["MatMul", "Gemm"],
                    use_external_data_format=False,
                )
            del proto
            own = ort_cpu_outputs(path, inputs)
            meta.variant, meta.golden = "int8", Golden(inputs, {OUTPUT_NAME[graph]: own}, INT8_ATOL)
            proto = onnx.load(str(path))
            _set_props(proto, meta.to_props())
            onnx.save(proto, str(path))
            err = float(np.abs(own - reference).max())
        elif variant == "fp16":
            half = copy.deepcopy(model).half()
            meta.variant, meta.golden = "fp16", Golden(inputs, {OUTPUT_NAME[graph]: reference}, FP16_ATOL)
            _export_graph(_graph_module(half, graph), inputs, OUTPUT_NAME[graph], path, meta.to_props())
            del half
            err = float("nan")
            if os.environ.get("PAC_FP16_CPU_CHECK", "1") == "1":
                try:
                    err = float(np.abs(ort_cpu_outputs(path, inputs) - reference).max())
                except Exception:  # noqa: BLE001 - ORT's CPU provider lacks some fp16 kernels; GPU checks it
                    err = float("nan")
        else:
            raise ValueError(f"unknown variant {variant!r}; choose from fp32, int8, fp16")
        written.append(ExportedFile(path, graph, variant, _file_bytes(path), err))
    return written

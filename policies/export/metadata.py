"""The `metadata_props` of an exported policy file: what the model expects, emits, and how it was made.

Every entry is a JSON string under a `pac.` key (DESIGN §3): observation and action specs, the tokenizer
(the SentencePiece model itself, base64, with its sha256), size and config, provenance, and a golden
input/output pair with the tolerance this file's variant must meet on any execution provider. Export
writes it with `to_props`; the runtime's loader reads it with `from_props`, which refuses a file that
lacks a key or has a malformed one, naming it: an embedded tokenizer must load, match its hash and fit the
model's embedding, because serving builds the tokenizer from these bytes. `Golden.check` holds the pair to
the graph's signature, so the loader never feeds a session arrays it cannot take.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policies.spec import ActionSpec, ObservationSpec
from policies.tokenizer.language import InstructionTokenizer

FORMAT_VERSION = 1
GRAPHS = ("actor", "critic")
VARIANTS = ("fp32", "int8", "fp16")
TOKENIZER_KIND = "sentencepiece"

Signature = dict[str, tuple[str, tuple[int, ...]]]  # name → (numpy dtype name, static shape)


class PolicyFileError(ValueError):
    """A policy file's metadata is missing, malformed, or disagrees with itself."""


def encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


@dataclass
class Golden:
    """Inputs and the outputs this file must reproduce within `atol` on any execution provider."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    atol: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": {k: encode_array(v) for k, v in self.inputs.items()},
            "outputs": {k: encode_array(v) for k, v in self.outputs.items()},
            "atol": self.atol,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Golden:
        golden = cls(
            inputs={k: decode_array(v) for k, v in d["inputs"].items()},
            outputs={k: decode_array(v) for k, v in d["outputs"].items()},
            atol=float(d["atol"]),
        )
        if not np.isfinite(golden.atol) or golden.atol < 0:
            raise ValueError(f"atol must be a finite tolerance >= 0, got {golden.atol}")
        return golden

    def check(self, signature: tuple[Signature, Signature]) -> None:
        """Raise PolicyFileError unless the pair has exactly the graph's inputs and outputs, each of the
        signature's dtype and shape: a pair that does not is no proof of anything, and would not even run."""
        for kind, arrays, want in (("input", self.inputs, signature[0]), ("output", self.outputs, signature[1])):
            if set(arrays) != set(want):
                raise PolicyFileError(f"pac.golden has {kind}s {sorted(arrays)}, expected {sorted(want)}")
            for name, (dtype, shape) in want.items():
                got = arrays[name]
                if got.dtype != np.dtype(dtype) or got.shape != shape:
                    raise PolicyFileError(
                        f"pac.golden {kind} {name!r} is {got.dtype} {list(got.shape)}, expected {dtype} {list(shape)}"
                    )


@dataclass
class PolicyMetadata:
    graph: str  # "actor" or "critic"
    variant: str  # "fp32", "int8" or "fp16"
    observation: ObservationSpec
    action: ActionSpec
    tokenizer_model: bytes  # the SentencePiece .model file
    model: dict[str, Any]  # size, config, parameters, flops
    provenance: dict[str, Any]
    golden: Golden
    candidates: int = 0  # critic only: S, the number of actions scored per call
    format: int = FORMAT_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    def signature(self) -> tuple[Signature, Signature]:
        """(inputs, outputs) of the graph: name → (numpy dtype name, static shape), batch 1."""
        obs, act = self.observation, self.action
        inputs = obs.input_shapes()
        if self.graph == "actor":
            return inputs, {"action_logits": ("float32", (1, act.size, act.bins))}
        inputs["actions"] = ("float32", (1, self.candidates, act.size))
        return inputs, {"q_logits": ("float32", (1, self.candidates, _count(self.model["config"]["q_bins"])))}

    def tokenizer(self) -> InstructionTokenizer:
        return InstructionTokenizer(self.tokenizer_model)

    def to_props(self) -> dict[str, str]:
        tok = self.tokenizer()
        values: dict[str, Any] = {
            "format": self.format,
            "graph": self.graph,
            "variant": self.variant,
            "candidates": self.candidates,
            "observation_spec": self.observation.to_dict(),
            "action_spec": self.action.to_dict(),
            "tokenizer": {
                "kind": TOKENIZER_KIND,
                "sha256": tok.sha256,
                "vocab_size": tok.vocab_size,
                "model": base64.b64encode(self.tokenizer_model).decode("ascii"),
            },
            "model": self.model,
            "provenance": self.provenance,
            "golden": self.golden.to_dict(),
        }
        return {f"pac.{k}": json.dumps(v, sort_keys=True) for k, v in values.items()} | self.extra

    @classmethod
    def from_props(cls, props: dict[str, str]) -> PolicyMetadata:
        def get(key: str) -> Any:
            raw = props.get(f"pac.{key}")
            if raw is None:
                present = sorted(k for k in props if k.startswith("pac."))
                raise PolicyFileError(f"metadata_props lacks 'pac.{key}' (has {present or 'no pac.* keys'})")
            try:
                return json.loads(raw)
            except RecursionError as exc:  # nested past the interpreter's limit: no spec is
                raise PolicyFileError(f"metadata_props 'pac.{key}' is nested too deeply to be metadata") from exc
            except ValueError as exc:  # JSONDecodeError, and an int past int_max_str_digits
                raise PolicyFileError(f"metadata_props 'pac.{key}' is not JSON: {_short(exc)}") from exc

        def parsed(key: str, parse: Callable[[Any], Any]) -> Any:
            """`parse` of pac.<key>'s value; whatever it cannot take is a PolicyFileError naming the key."""
            value = get(key)
            try:
                return parse(value)
            except PolicyFileError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
                raise PolicyFileError(f"metadata_props 'pac.{key}' is malformed: {_short(exc)}") from exc

        fmt = get("format")
        if fmt != FORMAT_VERSION:
            raise PolicyFileError(f"policy file format {_short(fmt)}; this runtime reads format {FORMAT_VERSION}")
        model = parsed("model", _mapping)
        try:
            meta = cls(
                graph=get("graph"),
                variant=get("variant"),
                candidates=parsed("candidates", _count),
                observation=parsed("observation_spec", ObservationSpec.from_dict),
                action=parsed("action_spec", ActionSpec.from_dict),
                tokenizer_model=_tokenizer_model(get("tokenizer"), model),
                model=model,
                provenance=parsed("provenance", _mapping),
                golden=_golden(get("golden")),
            )
            meta.signature()  # a critic's output shape comes from its config
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, PolicyFileError):
                raise
            raise PolicyFileError(f"malformed policy metadata: {exc!r}") from exc
        if meta.graph not in GRAPHS or meta.variant not in VARIANTS:
            raise PolicyFileError(f"unknown graph {meta.graph!r} or variant {meta.variant!r}")
        return meta


def _short(value: Any, limit: int = 200) -> str:
    """A bounded repr for messages: a hostile value may be megabytes long."""
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _count(value: Any) -> int:
    """A whole number >= 0 (JSON's 8 and 8.0 alike); inf, NaN, 1.5, "8" and true are not."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (isinstance(value, float) and not math.isfinite(value)) or value < 0 or value != int(value):
        raise ValueError(f"expected a whole number >= 0, got {_short(value)}")
    return int(value)


def _golden(raw: Any) -> Golden:
    try:
        return Golden.from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PolicyFileError(
            f"pac.golden is malformed ({exc!r}); expected {{inputs, outputs: name → base64 array, atol}}"
        ) from exc


def _tokenizer_model(tok: Any, model: Any) -> bytes:
    """The SentencePiece model bytes of `pac.tokenizer`, after checking they load as the tokenizer the model was
    trained with: its kind, its recorded sha256 and vocabulary size, ids within the model's embedding."""
    expected = f"a {TOKENIZER_KIND} model (base64) with its sha256 and vocab_size"
    if not isinstance(tok, dict) or tok.get("kind") != TOKENIZER_KIND or not isinstance(tok.get("model"), str):
        shown = {k: v for k, v in tok.items() if k != "model"} if isinstance(tok, dict) else tok
        raise PolicyFileError(f"pac.tokenizer is {shown!r}; expected {expected}")
    try:
        data = base64.b64decode(tok["model"], validate=True)
    except ValueError as exc:
        raise PolicyFileError(f"pac.tokenizer's model is not base64 ({exc}); expected {expected}") from exc
    try:
        tokenizer = InstructionTokenizer(data)
    except RuntimeError as exc:  # SentencePiece's parse failure: a C++ error about protobuf internals
        raise PolicyFileError(f"pac.tokenizer's bytes are not a SentencePiece model; expected {expected}") from exc
    except ValueError as exc:
        raise PolicyFileError(f"pac.tokenizer's model does not fit: {exc}; expected {expected}") from exc
    if tokenizer.sha256 != tok.get("sha256"):
        raise PolicyFileError("the embedded tokenizer model does not match its recorded sha256")
    if tok.get("vocab_size") != tokenizer.vocab_size:
        raise PolicyFileError(
            f"pac.tokenizer records vocab_size {tok.get('vocab_size')!r}, its model has {tokenizer.vocab_size}"
        )
    config = model.get("config") if isinstance(model, dict) else None
    embedding = config.get("vocab_size") if isinstance(config, dict) else None
    if isinstance(embedding, int) and tokenizer.vocab_size > embedding:
        raise PolicyFileError(
            f"pac.tokenizer has {tokenizer.vocab_size} token ids but the model embeds only {embedding}; "
            "it is not the tokenizer this model was trained with"
        )
    return data

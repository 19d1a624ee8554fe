"""One call of a batch-1 actor through ONNX Runtime's IO binding, so that a CUDA session replays a CUDA graph.

On a GPU a batch-1 PAC call is bound by kernel launches, not by arithmetic: in pac-bench, L fp16 on an H200 took
3.6 ms p50 and 5.1 ms p99 through `session.run`, and 1.7 / 1.8 ms with the whole graph captured once and replayed
(benchmarks/RESULTS.md, issue 13). A CUDA graph replays fixed device addresses, so the inputs and the output
live in buffers on the session's device that are bound once; each call copies the observation into them in
place and the logits back out. A feed of another shape or dtype than the one bound is an error, never a
silent re-bind (the loop's shapes never change; a changed one is a bug upstream).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort


@dataclass
class BoundRun:
    """`run(feeds)` → the output for `feeds`, through buffers bound once on `device` ("cuda" or "cpu")."""

    session: ort.InferenceSession
    binding: ort.IOBinding
    inputs: dict[str, ort.OrtValue]
    layouts: dict[str, tuple[tuple[int, ...], np.dtype]]  # each input's bound shape and dtype
    result: ort.OrtValue

    @classmethod
    def bind(
        cls,
        session: ort.InferenceSession,
        example: Mapping[str, np.ndarray],
        output: str,
        output_shape: tuple[int, ...],
        device: str,
    ) -> BoundRun:
        binding = session.io_binding()
        inputs, layouts = {}, {}
        for name, value in example.items():
            # a copy: on the CPU the OrtValue shares the array's memory, and the caller's array is not ours to refill
            inputs[name] = ort.OrtValue.ortvalue_from_numpy(np.array(value, order="C", copy=True), device, 0)
            layouts[name] = (tuple(value.shape), value.dtype)
            binding.bind_ortvalue_input(name, inputs[name])
        result = ort.OrtValue.ortvalue_from_shape_and_type(list(output_shape), np.float32, device, 0)
        binding.bind_ortvalue_output(output, result)
        return cls(session, binding, inputs, layouts, result)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        if feeds.keys() != self.inputs.keys():
            raise ValueError(f"feeds {sorted(feeds)} are not the bound inputs {sorted(self.inputs)}")
        for name, value in feeds.items():
            shape, dtype = self.layouts[name]
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(
                    f"input {name!r}: {value.dtype}{list(value.shape)} does not fit the bound {dtype}{list(shape)}"
                )
            self.inputs[name].update_inplace(np.ascontiguousarray(value))
        self.session.run_with_iobinding(self.binding)
        return self.result.numpy().copy()  # on the CPU numpy() is a view of the bound output: the next call refills it

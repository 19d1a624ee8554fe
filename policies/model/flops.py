"""Parameters and FLOPs per inference, computed from the config alone (no weights allocated).

FLOPs count 2 per multiply-accumulate of every matmul and convolution, the work a CPU's sgemm peak is
quoted in; norms, softmax and activations are left out (a few percent). tests/test_model.py checks this
count against torch's own flop counter for every size, so the benchmark's "ratio to the FLOP bound" rests
on a number that is checked, not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from policies.model.config import PACConfig
from policies.model.perceiver import PerceiverActorCritic, object_features
from policies.spec import ActionSpec, ObservationSpec


def _block_flops(d: int, r: int, nq: int, nk: int, cross: bool) -> int:
    """One pre-norm block: q, kv and output projections, two attention matmuls, the MLP."""
    proj = 2 * nq * d * d + 2 * nk * 2 * d * d + 2 * nq * d * d
    attn = 2 * (2 * nq * nk * d)
    mlp = 2 * (2 * nq * d * r * d)
    return proj + attn + mlp


def _conv_flops(c_in: int, c_out: int, k: int, h_out: int, w_out: int) -> int:
    return 2 * c_in * c_out * k * k * h_out * w_out


def encoder_flops(c: PACConfig, obs: ObservationSpec) -> int:
    d, r = c.width, c.mlp_ratio
    h, w, n_cam = obs.image_height, obs.image_width, len(obs.cameras)
    c1, c2, c3 = c.stem_channels // 4, c.stem_channels // 2, c.stem_channels
    stem = (
        _conv_flops(3, c1, 3, h // 2, w // 2)
        + _conv_flops(c1, c2, 3, h // 4, w // 4)
        + _conv_flops(c2, c3, 3, h // 8, w // 8)
        + 2 * _conv_flops(c3, c3, 3, h // 8, w // 8)
    )
    tokens_per_cam = (h // 8 // c.patch) * (w // 8 // c.patch)
    patch = _conv_flops(c3, d, c.patch, h // 8 // c.patch, w // 8 // c.patch)
    n_obj = len(obs.objects)
    objects = n_obj * (2 * object_features(obs, c.position_inputs) * d + 2 * d * d)  # the per-object MLP
    n_in = obs.proprio_size + n_cam * tokens_per_cam + n_obj + obs.instruction_length
    cross = _block_flops(d, r, c.latents, n_in, cross=True)
    trunk = c.depth * _block_flops(d, r, c.latents, c.latents, cross=False)
    return n_cam * (stem + patch) + objects + cross + trunk


def actor_flops(c: PACConfig, obs: ObservationSpec, act: ActionSpec) -> int:
    """One actor call: encode + policy decoder + head."""
    d = c.width
    decoder = _block_flops(d, c.mlp_ratio, act.size, c.latents, cross=True) + 2 * act.size * d * act.bins
    return encoder_flops(c, obs) + decoder


def critic_flops(c: PACConfig, obs: ObservationSpec, act: ActionSpec, candidates: int) -> int:
    """One critic call scoring `candidates` actions: encode once + the late-fusion decoder per candidate."""
    d, r, n = c.width, c.mlp_ratio, act.size + 1
    cross = _block_flops(d, r, candidates * n, c.latents, cross=True)
    mixer = candidates * _block_flops(d, r, n, n, cross=False)
    head = 2 * candidates * d * c.q_bins * (1 if c.q_readout == "readout" else n)
    return encoder_flops(c, obs) + cross + mixer + head


def parameter_count(c: PACConfig, obs: ObservationSpec, act: ActionSpec) -> int:
    """Exact parameter count, from a model built on the meta device (no memory, any size)."""
    with torch.device("meta"):
        model = PerceiverActorCritic(c, obs, act)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ModelCost:
    size: str
    parameters: int
    actor_flops: int
    critic_flops: int  # for `candidates` actions
    candidates: int


def model_cost(c: PACConfig, obs: ObservationSpec, act: ActionSpec, candidates: int = 16) -> ModelCost:
    return ModelCost(
        c.size,
        parameter_count(c, obs, act),
        actor_flops(c, obs, act),
        critic_flops(c, obs, act, candidates),
        candidates,
    )

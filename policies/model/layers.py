"""Pre-norm attention blocks: the only building block of the Perceiver trunk and both decoders.

Attention is written out (two matmuls and a softmax) rather than through scaled_dot_product_attention:
it exports to plain ONNX MatMul/Softmax that every execution provider and the int8 quantiser handle, and
torch's flop counter sees every multiply, which keeps the analytic FLOP count checkable.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of queries `x` (B, Nq, D) over a context (B, Nk, D), with an optional key mask."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nq, d = x.shape
        weights, v = self._weights_values(x, context, key_mask)
        return self.out((weights @ v).transpose(1, 2).reshape(b, nq, d))

    def weights(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention weights (B, heads, Nq, Nk) the forward pass uses: for probes of what a query reads."""
        return self._weights_values(x, context, key_mask)[0]

    def _weights_values(
        self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, nq, d = x.shape
        nk = context.shape[1]
        h = self.heads
        q = self.q(x).reshape(b, nq, h, d // h).transpose(1, 2)  # (B, h, Nq, d/h)
        k, v = self.kv(context).reshape(b, nk, 2, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, Nk, d/h)
        scores = (q * self.scale) @ k.transpose(-1, -2)
        if key_mask is not None:  # (B, Nk), True where a key may be attended to
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return scores.softmax(dim=-1), v


class Block(nn.Module):
    """x + Attn(LN(x), LN(context)); x + MLP(LN(x)). Self-attention when no context is given."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, cross: bool):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def attention_weights(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, heads, Nq, Nk): what each query of this block's attention reads, for probes."""
        q = self.norm_q(x)
        return self.attn.weights(q, q if self.norm_context is None else self.norm_context(context), key_mask)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = self.norm_q(x)
        kv = q if self.norm_context is None else self.norm_context(context)
        x = x + self.attn(q, kv, key_mask)
        return x + self.mlp(self.norm_mlp(x))

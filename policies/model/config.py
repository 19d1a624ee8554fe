"""The PAC size ladder: one table, the same code for every size (DESIGN §6).

Width, depth and latent count are our choices (the paper leaves them open, reference/pac.md). Parameter
targets are from the issue: XS ~1.5M for tests, S 30M, M 100M, L 300M, XL 1B; a test keeps every size
within ±15% of its target. Most parameters sit in the self-attention trunk (12·width² per block).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

Q_READOUTS = ("readout", "all_tokens")
POSITION_INPUTS = ("absolute", "relative")
ABSOLUTE_PROPRIO = ("joint_pos", "tcp_pos")  # the proprio fields that say where the arm is in the base frame


@dataclass(frozen=True)
class PACConfig:
    size: str
    width: int  # token width D of every encoder, the latents and the decoders
    depth: int  # self-attention blocks over the latents
    heads: int
    latents: int  # learned latent array length
    stem_channels: int  # channels of the image stem's last stage; earlier stages have /4 and /2
    patch: int = 2  # patch size on the stem's 1/8-resolution feature map
    mlp_ratio: int = 4
    vocab_size: int = 64  # instruction token ids (the shipped model has fewer; unused rows cost little)
    q_bins: int = 101  # return bins of the distributional critic
    q_low: float = 0.0  # return support, in the training objective's units
    q_high: float = 1.0
    target_parameters: float = 0.0
    # what the critic's head reads after the late-fusion mixer: "readout" (the readout token alone, which reaches
    # the action tokens only through attention) or "all_tokens" (every token, concatenated, so no action dimension
    # can be dropped by an attention that learned to ignore it). Issue 11's probe: in trained XS critics the
    # readout token's attention went 1.00 to the gripper in 3 of 4 heads, and Q stopped moving with the arm.
    q_readout: str = "readout"
    # where the model reads positions from: "absolute" (joint and TCP positions, object poses in the base frame) or
    # "relative" (each object's offset from the TCP only; joint and TCP positions and object poses are not read).
    # Issue 11: every episode of the study's data has its own object layout and one outcome, so absolute positions
    # name the episode; a return regressor on them held out 0.19 of the variance at placing states and gained
    # nothing from the action (0.18), one on relative positions 0.43 and 0.72 with the action
    # (benchmarks/return_regression.py).
    position_inputs: str = "absolute"

    def __post_init__(self) -> None:
        if self.q_readout not in Q_READOUTS:
            raise ValueError(f"q_readout must be one of {Q_READOUTS}, got {self.q_readout!r}")
        if self.position_inputs not in POSITION_INPUTS:
            raise ValueError(f"position_inputs must be one of {POSITION_INPUTS}, got {self.position_inputs!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PACConfig:
        return cls(**d)


SIZES: dict[str, PACConfig] = {
    c.size: c
    for c in (
        PACConfig("XS", width=128, depth=4, heads=4, latents=16, stem_channels=32, target_parameters=1.5e6),
        PACConfig("S", width=512, depth=6, heads=8, latents=32, stem_channels=128, target_parameters=30e6),
        PACConfig("M", width=768, depth=10, heads=12, latents=64, stem_channels=128, target_parameters=100e6),
        PACConfig("L", width=1024, depth=20, heads=16, latents=64, stem_channels=192, target_parameters=300e6),
        PACConfig("XL", width=1536, depth=31, heads=16, latents=96, stem_channels=256, target_parameters=1e9),
    )
}


def size_config(size: str, **overrides: Any) -> PACConfig:
    """The ladder entry for `size` ('XS'...'XL'), with optional field overrides."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; the ladder is {', '.join(SIZES)}")
    return replace(SIZES[size], **overrides)

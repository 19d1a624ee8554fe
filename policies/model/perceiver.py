"""The Perceiver-Actor-Critic network (Springenberg et al. 2024; what is known: reference/pac.md).

encode: modality tokens → a learned latent array cross-attends to them → `depth` self-attention blocks.
Actor: one learned query per action dimension cross-attends to the latents → K bin logits per dimension.
Critic (late fusion): each candidate action becomes A+1 query tokens (one per dimension plus a readout)
that cross-attend to the same latents, so S candidates are scored without re-encoding the state.

The model takes raw inputs (proprio in physical units, uint8 images, token ids) and normalises inside, so
the exported graph carries the normalisation and training and serving cannot drift apart. Missing
modalities are masked out of the cross-attention, never zero-filled: padded instruction ids always, and
whole modalities per sample through `present` (modality dropout in training).
"""

from __future__ import annotations

import torch
from torch import nn

from policies.model.config import PACConfig
from policies.model.encoders import ImageEncoder, InstructionEncoder, ProprioEncoder
from policies.model.layers import Block
from policies.spec import ActionSpec, ObservationSpec
from policies.tokenizer.language import PAD_ID

MODALITIES = ("proprio", "images", "instruction")


class PerceiverActorCritic(nn.Module):
    def __init__(self, config: PACConfig, obs: ObservationSpec, act: ActionSpec):
        super().__init__()
        self.config, self.obs_spec, self.action_spec = config, obs, act
        d, p, a = config.width, obs.proprio_size, act.size
        self.proprio_encoder = ProprioEncoder(p, d)
        self.image_encoder = ImageEncoder(
            len(obs.cameras), obs.image_height, obs.image_width, config.stem_channels, config.patch, d
        )
        self.instruction_encoder = InstructionEncoder(config.vocab_size, obs.instruction_length, d)
        self.latents = nn.Parameter(torch.randn(config.latents, d) * 0.02)
        self.encoder = Block(d, config.heads, config.mlp_ratio, cross=True)
        self.trunk = nn.ModuleList(Block(d, config.heads, config.mlp_ratio, cross=False) for _ in range(config.depth))
        self.trunk_norm = nn.LayerNorm(d)
        # Actor
        self.action_queries = nn.Parameter(torch.randn(a, d) * 0.02)
        self.policy_decoder = Block(d, config.heads, config.mlp_ratio, cross=True)
        self.policy_norm = nn.LayerNorm(d)
        self.policy_head = nn.Linear(d, act.bins)
        # Critic
        self.action_scale = nn.Parameter(torch.randn(a, d) * 0.02)
        self.action_offset = nn.Parameter(torch.randn(a, d) * 0.02)
        self.readout = nn.Parameter(torch.randn(1, d) * 0.02)
        self.q_decoder = Block(d, config.heads, config.mlp_ratio, cross=True)
        self.q_mixer = Block(d, config.heads, config.mlp_ratio, cross=False)
        self.q_norm = nn.LayerNorm(d)
        self.q_head = nn.Linear(d, config.q_bins)
        # Normalisation, part of the graph; training sets the proprio statistics from its dataset.
        self.register_buffer("proprio_mean", torch.zeros(p))
        self.register_buffer("proprio_std", torch.ones(p))
        self.register_buffer("image_mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 1, 3, 1, 1) * 255)
        self.register_buffer("image_std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 1, 3, 1, 1) * 255)
        self.register_buffer("action_low", torch.tensor(act.low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(act.high, dtype=torch.float32))

    def encode(
        self,
        proprio: torch.Tensor,
        images: torch.Tensor,
        instruction: torch.Tensor,
        present: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, P) float, (B, N, 3, H, W) uint8, (B, L) int64 → latents (B, N_lat, D).

        `present` maps a modality name to a (B,) bool tensor; a modality that is absent for a sample is
        masked out of the cross-attention for that sample. Proprioception must be present.
        """
        b, dtype = proprio.shape[0], self.latents.dtype  # float32, or float16 for the GPU export
        x_p = self.proprio_encoder((proprio.to(dtype) - self.proprio_mean) / self.proprio_std)
        x_i = self.image_encoder((images.to(dtype) - self.image_mean) / self.image_std)
        x_l = self.instruction_encoder(instruction)
        tokens = torch.cat([x_p, x_i, x_l], dim=1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=proprio.device)
        mask_p = ones.expand(b, x_p.shape[1])
        mask_i = ones.expand(b, x_i.shape[1])
        mask_l = instruction != PAD_ID
        if present is not None:
            if "proprio" in present and not bool(present["proprio"].all()):
                raise ValueError("proprioception must be present for every sample")
            if "images" in present:
                mask_i = mask_i & present["images"][:, None]
            if "instruction" in present:
                mask_l = mask_l & present["instruction"][:, None]
        key_mask = torch.cat([mask_p, mask_i, mask_l], dim=1)
        z = self.encoder(self.latents.expand(b, -1, -1), tokens, key_mask)
        for block in self.trunk:
            z = block(z)
        return self.trunk_norm(z)

    def policy_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N_lat, D) → (B, A, K) bin logits per action dimension."""
        q = self.action_queries.expand(latents.shape[0], -1, -1)
        return self.policy_head(self.policy_norm(self.policy_decoder(q, latents)))

    def q_logits(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, N_lat, D), physical actions (B, S, A) → (B, S, N_q) return-bin logits.

        All S·(A+1) query tokens attend to the latents in one cross-attention (each query independently),
        then each candidate's A+1 tokens mix among themselves; the readout token gives the logits.
        """
        b, s, a = actions.shape
        d = self.config.width
        unit = (
            2 * (actions.to(self.latents.dtype) - self.action_low) / (self.action_high - self.action_low) - 1
        )  # [-1, 1]
        tokens = unit[..., None] * self.action_scale + self.action_offset  # (B, S, A, D)
        tokens = torch.cat([self.readout.expand(b, s, 1, d), tokens], dim=2).reshape(b, s * (a + 1), d)
        tokens = self.q_decoder(tokens, latents)
        tokens = self.q_mixer(tokens.reshape(b * s, a + 1, d))
        return self.q_head(self.q_norm(tokens[:, 0])).reshape(b, s, -1)

    def forward(self, proprio: torch.Tensor, images: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """The actor: raw observation → (B, A, K) action-bin logits."""
        return self.policy_logits(self.encode(proprio, images, instruction))


class CriticGraph(nn.Module):
    """The exported critic: raw observation and S candidate actions → (B, S, N_q) logits."""

    def __init__(self, model: PerceiverActorCritic):
        super().__init__()
        self.model = model

    def forward(
        self, proprio: torch.Tensor, images: torch.Tensor, instruction: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        return self.model.q_logits(self.model.encode(proprio, images, instruction), actions)


def build_model(config: PACConfig, obs: ObservationSpec, act: ActionSpec, seed: int | None = 0) -> PerceiverActorCritic:
    """A freshly initialised model (deterministic for a given seed)."""
    if seed is not None:
        torch.manual_seed(seed)
    return PerceiverActorCritic(config, obs, act)

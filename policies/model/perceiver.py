"""The Perceiver-Actor-Critic network (Springenberg et al. 2024; what is known: reference/pac.md).

encode: modality tokens → a learned latent array cross-attends to them → `depth` self-attention blocks.
Actor: one learned query per action dimension cross-attends to the latents → K bin logits per dimension.
Critic (late fusion): each candidate action becomes A+1 query tokens (one per dimension plus a readout)
that cross-attend to the same latents, so S candidates are scored without re-encoding the state.

The model takes raw inputs (proprio in physical units, uint8 images, token ids) and normalises inside, so
the exported graph carries the normalisation and training and serving cannot drift apart. Which inputs a
model has is its observation spec's `modalities` (images only with cameras, objects only with tracked
objects); every method takes them as one mapping, name → tensor. Missing modalities are masked out of the
cross-attention, never zero-filled: padded instruction ids always, and whole modalities per sample through
`present` (modality dropout in training).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from policies.model.config import ABSOLUTE_PROPRIO, PACConfig
from policies.model.encoders import ImageEncoder, InstructionEncoder, ObjectEncoder, ProprioEncoder
from policies.model.layers import Block
from policies.spec import POSE_SIZE, ActionSpec, ObservationSpec
from policies.tokenizer.language import PAD_ID

Inputs = Mapping[str, torch.Tensor]
RELATIVE_SCALE_M = 0.1  # object-to-TCP offsets are fed in units of 10 cm


def object_features(obs: ObservationSpec, position_inputs: str = "absolute") -> int:
    """Features per object token: its pose, plus its offset from the TCP when proprio carries the TCP; with
    relative position inputs (PACConfig.position_inputs), the offset alone."""
    offset = 3 if obs.proprio_offset("tcp_pos") is not None else 0
    return offset if position_inputs == "relative" else POSE_SIZE + offset


class PerceiverActorCritic(nn.Module):
    def __init__(self, config: PACConfig, obs: ObservationSpec, act: ActionSpec):
        super().__init__()
        self.config, self.obs_spec, self.action_spec = config, obs, act
        d, p, a = config.width, obs.proprio_size, act.size
        self.proprio_encoder = ProprioEncoder(p, d)
        self.image_encoder = (
            ImageEncoder(len(obs.cameras), obs.image_height, obs.image_width, config.stem_channels, config.patch, d)
            if obs.cameras
            else None
        )
        # Each object token also sees its position relative to the TCP: the relation every reaching and placing
        # decision turns on, given linearly instead of left for attention to discover from two tokens.
        self.tcp_index = obs.proprio_offset("tcp_pos")
        self.relative = config.position_inputs == "relative"
        if self.relative and (self.tcp_index is None or not obs.objects or obs.cameras):
            raise ValueError("relative position inputs need tracked objects and the TCP in proprio, and no camera")
        self.object_encoder = (
            ObjectEncoder(len(obs.objects), object_features(obs, config.position_inputs), d) if obs.objects else None
        )
        # 1 for each proprio input the model reads, 0 for the absolute positions it does not (relative inputs);
        # not saved: it follows from the config and the spec
        keep = torch.ones(p)
        if self.relative:
            for name in ABSOLUTE_PROPRIO:
                at, size = obs.proprio_offset(name), next((f.size for f in obs.proprio if f.name == name), 0)
                if at is not None:
                    keep[at : at + size] = 0.0
        self.register_buffer("proprio_keep", keep, persistent=False)
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
        self.q_head = nn.Linear(d if config.q_readout == "readout" else (a + 1) * d, config.q_bins)
        # Normalisation, part of the graph; training sets the proprio statistics from its dataset.
        self.register_buffer("proprio_mean", torch.zeros(p))
        self.register_buffer("proprio_std", torch.ones(p))
        self.register_buffer("image_mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 1, 3, 1, 1) * 255)
        self.register_buffer("image_std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 1, 3, 1, 1) * 255)
        if obs.objects:
            self.register_buffer("objects_mean", torch.zeros(len(obs.objects), POSE_SIZE))
            self.register_buffer("objects_std", torch.ones(len(obs.objects), POSE_SIZE))
        self.register_buffer("action_low", torch.tensor(act.low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(act.high, dtype=torch.float32))

    def encode(self, inputs: Inputs, present: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The spec's modalities → latents (B, N_lat, D). Inputs: proprio (B, P) float, images
        (B, N, 3, H, W) uint8, objects (B, N_obj, 7) float, instruction (B, L) int64.

        `present` maps a modality name to a (B,) bool tensor; a modality that is absent for a sample is
        masked out of the cross-attention for that sample. Proprioception must be present.
        """
        proprio, instruction = inputs["proprio"], inputs["instruction"]
        b, dtype = proprio.shape[0], self.latents.dtype  # float32, or float16 for the GPU export
        ones = torch.ones(b, 1, dtype=torch.bool, device=proprio.device)
        normalised = (proprio.to(dtype) - self.proprio_mean) / self.proprio_std
        tokens = [self.proprio_encoder(normalised * self.proprio_keep if self.relative else normalised)]
        masks = [ones.expand(b, tokens[0].shape[1])]
        if present is not None and "proprio" in present and not bool(present["proprio"].all()):
            raise ValueError("proprioception must be present for every sample")
        if self.image_encoder is not None:
            tokens.append(self.image_encoder((inputs["images"].to(dtype) - self.image_mean) / self.image_std))
            masks.append(ones.expand(b, tokens[-1].shape[1]))
        if self.object_encoder is not None:
            objects = inputs["objects"].to(dtype)
            features = [] if self.relative else [(objects - self.objects_mean) / self.objects_std]
            if self.tcp_index is not None:
                tcp = proprio.to(dtype)[:, self.tcp_index : self.tcp_index + 3]
                features.append((objects[..., :3] - tcp[:, None, :]) / RELATIVE_SCALE_M)
            tokens.append(self.object_encoder(torch.cat(features, dim=-1)))
            masks.append(ones.expand(b, tokens[-1].shape[1]))
        tokens.append(self.instruction_encoder(instruction))
        masks.append(instruction != PAD_ID)
        if present is not None:
            for i, name in enumerate(self.obs_spec.modalities):
                if name != "proprio" and name in present:
                    masks[i] = masks[i] & present[name][:, None]
        z = self.encoder(self.latents.expand(b, -1, -1), torch.cat(tokens, dim=1), torch.cat(masks, dim=1))
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
        then each candidate's A+1 tokens mix among themselves; the head reads the readout token, or all A+1
        tokens concatenated (config.q_readout).
        """
        b, s, a = actions.shape
        d = self.config.width
        tokens = self.q_norm(self.q_mixer(self.q_fused(latents, actions)))
        read = tokens[:, 0] if self.config.q_readout == "readout" else tokens.reshape(b * s, (a + 1) * d)
        return self.q_head(read).reshape(b, s, -1)

    def q_fused(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, N_lat, D), physical actions (B, S, A) → the (B·S, A+1, D) tokens that enter q_mixer: per candidate,
        the readout token then one per action dimension, each after its cross-attention to the latents."""
        b, s, a = actions.shape
        d = self.config.width
        unit = (
            2 * (actions.to(self.latents.dtype) - self.action_low) / (self.action_high - self.action_low) - 1
        )  # [-1, 1]
        tokens = unit[..., None] * self.action_scale + self.action_offset  # (B, S, A, D)
        tokens = torch.cat([self.readout.expand(b, s, 1, d), tokens], dim=2).reshape(b, s * (a + 1), d)
        return self.q_decoder(tokens, latents).reshape(b * s, a + 1, d)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        """The actor: raw observation → (B, A, K) action-bin logits."""
        return self.policy_logits(self.encode(inputs))


class ActorGraph(nn.Module):
    """The exported actor: the spec's modalities as positional inputs (graph order) → (B, A, K) fp32 logits,
    whatever the weights' dtype."""

    def __init__(self, model: PerceiverActorCritic):
        super().__init__()
        self.model, self.names = model, model.obs_spec.modalities

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, inputs, strict=True))).float()


class CriticGraph(nn.Module):
    """The exported critic: the modalities then S candidate actions (B, S, A) → (B, S, N_q) fp32 logits."""

    def __init__(self, model: PerceiverActorCritic):
        super().__init__()
        self.model, self.names = model, model.obs_spec.modalities

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *observation, actions = inputs
        latents = self.model.encode(dict(zip(self.names, observation, strict=True)))
        return self.model.q_logits(latents, actions).float()


def build_model(config: PACConfig, obs: ObservationSpec, act: ActionSpec, seed: int | None = 0) -> PerceiverActorCritic:
    """A freshly initialised model (deterministic for a given seed)."""
    if seed is not None:
        torch.manual_seed(seed)
    return PerceiverActorCritic(config, obs, act)

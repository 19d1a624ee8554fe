"""One encoder per modality, each turning its raw input into width-D tokens (reference/pac.md).

Proprioception: one token per dimension (a learned vector scaled by the value, plus a learned offset).
Objects: one token per tracked object, its 7-D pose through a small MLP plus a learned per-object embedding
(a pose's position and orientation belong together; the trunk relates objects to the TCP by attention).
Images: a small ResNet-style conv stem to 1/8 resolution, then non-overlapping patches, plus learned camera
and position embeddings. Instruction: a learned embedding of the SentencePiece ids plus positions.
Inputs arrive already normalised (the model does that, see perceiver.py).
"""

from __future__ import annotations

import torch
from torch import nn


class ProprioEncoder(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(size, dim) * 0.02)
        self.offset = nn.Parameter(torch.randn(size, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, P) → (B, P, D)
        return x[:, :, None] * self.scale + self.offset


class ObjectEncoder(nn.Module):
    def __init__(self, objects: int, pose_size: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(pose_size, dim), nn.GELU(), nn.Linear(dim, dim))
        self.embedding = nn.Parameter(torch.randn(objects, dim) * 0.02)

    def forward(self, poses: torch.Tensor) -> torch.Tensor:  # (B, N_obj, 7) → (B, N_obj, D)
        return self.mlp(poses) + self.embedding


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class ImageEncoder(nn.Module):
    """(B, N_cam, 3, H, W) normalised images → (B, N_cam · T, D) tokens, T = (H/8/patch) · (W/8/patch)."""

    def __init__(self, cameras: int, height: int, width: int, channels: int, patch: int, dim: int):
        super().__init__()
        stride = 8 * patch
        if height % stride or width % stride:
            raise ValueError(f"image {height}x{width} is not divisible by the stem's stride {stride}")
        c1, c2 = channels // 4, channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            ResBlock(channels),
        )
        self.patchify = nn.Conv2d(channels, dim, patch, stride=patch)
        self.tokens_per_camera = (height // stride) * (width // stride)
        self.camera_embedding = nn.Parameter(torch.randn(cameras, 1, dim) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(1, self.tokens_per_camera, dim) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = images.shape
        x = self.patchify(self.stem(images.reshape(b * n, c, h, w)))  # (B·N, D, h', w')
        x = x.flatten(2).transpose(1, 2).reshape(b, n, self.tokens_per_camera, -1)
        x = x + self.camera_embedding + self.position_embedding
        return x.reshape(b, n * self.tokens_per_camera, -1)


class InstructionEncoder(nn.Module):
    def __init__(self, vocab_size: int, length: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Parameter(torch.randn(1, length, dim) * 0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) int64 → (B, L, D)
        return self.embedding(ids) + self.position_embedding

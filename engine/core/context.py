"""Context encoder: a MixSTE-style spatial/temporal transformer (sequence to sequence).

Maps a window of F normalised 2D poses (seen through :func:`engine.core.input_norm.network_input`) to per-frame
context features f_2D (the conditioning of the denoiser) and an initial root-relative 3D estimate (the anchor
the diffusion refines).
Structure follows MixSTE (anchors.md section 4): Linear 2 -> C, learned spatial and temporal
position embeddings, ``depth`` pairs of (spatial block over J joints, temporal block over F
frames), a LayerNorm + Linear head. Windows shorter than F are padded by the caller.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ContextConfig
from .input_norm import network_input
from .layers import TransformerBlock


class ContextEncoder(nn.Module):
    def __init__(self, cfg: ContextConfig, num_joints: int, root: int = 0, input_norm: str = "screen"):
        super().__init__()
        self.cfg = cfg
        self.root = root
        self.input_norm = input_norm
        c = cfg.dim
        self.embed = nn.Linear(2, c)
        self.spatial_pos = nn.Parameter(torch.zeros(1, num_joints, c))
        self.temporal_pos = nn.Parameter(torch.zeros(1, cfg.frames, c))
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        self.spatial = nn.ModuleList([TransformerBlock(c, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.temporal = nn.ModuleList([TransformerBlock(c, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, 3)

    def forward(self, kp2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """kp2d: (B, F, J, 2) normalised screen coords -> (f_2D (B, F, J, C), init3d (B, F, J, 3))."""
        b, f, j, _ = kp2d.shape
        if f != self.cfg.frames:
            raise ValueError(f"context window has {f} frames, the encoder expects {self.cfg.frames}")
        x = self.embed(network_input(kp2d, self.input_norm)) + self.spatial_pos   # (B, F, J, C)
        c = x.shape[-1]
        for i, (sblk, tblk) in enumerate(zip(self.spatial, self.temporal)):
            x = sblk(x.reshape(b * f, j, c)).reshape(b, f, j, c)      # attention over joints
            x = x.permute(0, 2, 1, 3).reshape(b * j, f, c)           # (B*J, F, C)
            if i == 0:
                x = x + self.temporal_pos
            x = tblk(x).reshape(b, j, f, c).permute(0, 2, 1, 3)      # attention over frames
        feats = self.norm(x)                                          # (B, F, J, C)
        pose = self.head(feats)                                       # (B, F, J, 3)
        pose = pose - pose[:, :, self.root:self.root + 1]
        return feats, pose

"""GraFormer-style GCN-Attention denoiser D_theta (paper section IV-B, DiffPose anchors.md 2.4).

D(h_k, f_2D, f_his, k) predicts the GMM noise epsilon of Eq. 1 (epsilon parameterisation, as
Algorithm 1 and Eq. 8 use it). The conditions that do not change across DDIM steps (f_2D, f_his,
the 2D keypoints) are projected once per frame by :meth:`Denoiser.condition`; each step then
costs only :meth:`Denoiser.forward` on the N hypotheses.

Per step: x = Linear(pose_k) + cond + joint embedding; then ``blocks`` GCN-Attention blocks:
    x = x + Attn(LN1 x)                                   # self-attention over the J joints
    x = x + GC2(ReLU(GC1(LN2 x)) + Linear(temb))          # two graph convolutions, step injection
and a LayerNorm + Linear head to (J, 3). temb = MLP(sinusoidal(k)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DenoiserConfig
from .layers import Attention, GraphConv, sinusoidal_embedding
from .skeleton import Skeleton


class GCNAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, adj: torch.Tensor):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.gc1 = GraphConv(dim, dim, adj)
        self.gc2 = GraphConv(dim, dim, adj)
        self.temb = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # x: (R, J, D); temb: (R, D) already passed through the step MLP
        x = x + self.attn(self.norm1(x))
        h = F.relu(self.gc1(self.norm2(x))) + self.temb(temb)[:, None, :]
        return x + self.gc2(h)


class Denoiser(nn.Module):
    def __init__(self, cfg: DenoiserConfig, skeleton: Skeleton, context_dim: int, history_dim: int | None):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        j = skeleton.num_joints
        adj = torch.from_numpy(skeleton.adjacency(self_loops=True))
        self.in_proj = nn.Linear(3, d)
        self.joint_embed = nn.Parameter(torch.zeros(1, j, d))
        nn.init.trunc_normal_(self.joint_embed, std=0.02)
        self.cond_2d = nn.Linear(context_dim + 2, d)            # [f_2D, 2D keypoint] per joint
        self.cond_his = nn.Linear(history_dim, d) if history_dim else None
        self.step_mlp = nn.Sequential(nn.Linear(cfg.step_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([GCNAttentionBlock(d, cfg.heads, adj) for _ in range(cfg.blocks)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def condition(self, f2d: torch.Tensor, kp2d: torch.Tensor, f_his: torch.Tensor | None) -> torch.Tensor:
        """f2d (B, J, C_ctx), kp2d (B, J, 2), f_his (B, J, C_his) or None -> cond (B, J, D)."""
        cond = self.cond_2d(torch.cat([f2d, kp2d], dim=-1)) + self.joint_embed
        if self.cond_his is not None:
            if f_his is None:
                raise ValueError("this denoiser was built with HPIM: f_his is required")
            cond = cond + self.cond_his(f_his)
        return cond

    def step_embedding(self, k: torch.Tensor) -> torch.Tensor:
        """k (R,) integer steps -> (R, D)."""
        return self.step_mlp(sinusoidal_embedding(k, self.cfg.step_dim))

    def forward(self, pose_k: torch.Tensor, cond: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """pose_k (R, J, 3) metres, cond (R, J, D), k (R,) -> predicted noise (R, J, 3)."""
        x = self.in_proj(pose_k) + cond                          # (R, J, D)
        temb = self.step_embedding(k)                            # (R, D)
        for blk in self.blocks:
            x = blk(x, temb)
        return self.head(self.norm(x))

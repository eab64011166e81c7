"""Historical Pose Integration Module (paper section III-B, Fig. 3).

Inputs are the L frames strictly before the current frame t: their 2D keypoints (observed) and
the 3D poses the model itself predicted for them. Frame slot l = L - 1 holds frame t - 1. For
the first frames of a video, with fewer than L predecessors, only the available ones are used
(as the paper says): a (B, L) mask marks the valid slots, which are always the most recent ones.
With no predecessor at all (t = 0) the pooled feature is zero and f_his = FC(0), a learned bias.

a) Multi-dimensional spatial encoders: Linear 2 -> C (3 -> C) + learned spatial position
   embedding, then transformer layer(s) over the J joints of each frame; then learned temporal
   position embeddings per slot (separate for 2D and 3D).
b) Skeleton Integration Graph over 2J nodes per frame (the 2D and the 3D joints) with the three
   edge kinds: skeleton bones (within 2D and within 3D), 2D-to-3D edges of the same joint, and
   the same node in consecutive valid frames. Self-loops are added and the adjacency is
   symmetrically normalised per sample (degrees depend on which frames are valid).
c) Graph and attention integration: ``layers`` parallel (GCN, attention over all L x 2J nodes)
   pairs fused by addition, f' = f_G + f_A (Eq. 4), with pre-norm and a residual path; the
   final f_G' + f_A' is pooled over the valid frames (masked mean; our choice, the paper does
   not say how the L frames collapse to one condition), the 2D and 3D node of each joint are
   concatenated, and a linear layer gives f_his (Eq. 5), (B, J, C).

``use_2d=False`` drops the 2D nodes (the "HPIM w/o 2D" ablation of Table VII).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import HPIMConfig
from .layers import Attention, TransformerBlock
from .skeleton import Skeleton

_MASK_NEG = -1e9   # additive attention bias for invalid frames (finite: an all-invalid row stays finite)


class SpatialEncoder(nn.Module):
    def __init__(self, in_dim: int, cfg: HPIMConfig, num_joints: int, history: int):
        super().__init__()
        self.embed = nn.Linear(in_dim, cfg.dim)
        self.spatial_pos = nn.Parameter(torch.zeros(1, num_joints, cfg.dim))
        self.temporal_pos = nn.Parameter(torch.zeros(1, history, 1, cfg.dim))
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        self.blocks = nn.ModuleList([TransformerBlock(cfg.dim, cfg.heads) for _ in range(cfg.spatial_depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, hist_len, j, _ = x.shape
        z = (self.embed(x) + self.spatial_pos).reshape(b * hist_len, j, -1)   # (B*L, J, C)
        for blk in self.blocks:
            z = blk(z)
        return z.reshape(b, hist_len, j, -1) + self.temporal_pos              # (B, L, J, C)


class HPIM(nn.Module):
    def __init__(self, cfg: HPIMConfig, skeleton: Skeleton):
        super().__init__()
        self.cfg = cfg
        j = skeleton.num_joints
        self.num_joints = j
        self.enc3d = SpatialEncoder(3, cfg, j, cfg.history)
        self.enc2d = SpatialEncoder(2, cfg, j, cfg.history) if cfg.use_2d else None
        parts = 2 if cfg.use_2d else 1
        bone = torch.from_numpy(skeleton.adjacency(self_loops=True))       # (J, J)
        a = torch.zeros(parts * j, parts * j)
        for p in range(parts):
            a[p * j:(p + 1) * j, p * j:(p + 1) * j] = bone
        if cfg.use_2d:
            eye = torch.eye(j)
            a[:j, j:] = eye
            a[j:, :j] = eye
        self.register_buffer("spatial_adj", a, persistent=False)           # (n, n), self-loops included
        self.gcn = nn.ModuleList([nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.layers)])
        self.attn = nn.ModuleList([Attention(cfg.dim, cfg.heads) for _ in range(cfg.layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(cfg.dim) for _ in range(cfg.layers)])
        self.out = nn.Linear(parts * cfg.dim, cfg.dim)

    def _propagate(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised Skeleton-Integration-Graph aggregation D^-1/2 (A + I) D^-1/2 x.

        x: (B, L, n, C); mask: (B, L) in {0, 1}.
        """
        link = mask[:, 1:] * mask[:, :-1]                                  # (B, L-1) temporal edge l-1 <-> l
        prev = F.pad(link, (1, 0))                                         # edge to l-1 exists
        nxt = F.pad(link, (0, 1))                                          # edge to l+1 exists
        deg = self.spatial_adj.sum(-1)[None, None, :] + (prev + nxt)[:, :, None]   # (B, L, n)
        dinv = deg.rsqrt()[..., None]                                      # (B, L, n, 1)
        y = x * dinv
        agg = torch.einsum("nm,blmc->blnc", self.spatial_adj, y)
        agg = agg + prev[:, :, None, None] * F.pad(y, (0, 0, 0, 0, 1, 0))[:, :-1]
        agg = agg + nxt[:, :, None, None] * F.pad(y, (0, 0, 0, 0, 0, 1))[:, 1:]
        return agg * dinv

    def forward(self, hist2d: torch.Tensor, hist3d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hist2d (B, L, J, 2), hist3d (B, L, J, 3), mask (B, L) -> f_his (B, J, C)."""
        b, hist_len, j, _ = hist3d.shape
        if hist_len != self.cfg.history:
            raise ValueError(f"HPIM history has {hist_len} frames, expected {self.cfg.history}")
        z = self.enc3d(hist3d)                                             # (B, L, J, C)
        if self.enc2d is not None:
            z = torch.cat([self.enc2d(hist2d), z], dim=2)                  # (B, L, 2J, C)
        n, c = z.shape[2], z.shape[3]
        m = mask.to(z.dtype)
        node_mask = m[:, :, None, None]                                    # (B, L, 1, 1)
        bias = ((1 - m) * _MASK_NEG)[:, :, None].expand(b, hist_len, n).reshape(b, 1, 1, hist_len * n)
        f = z * node_mask
        for gcn, attn, norm in zip(self.gcn, self.attn, self.norms):
            h = norm(f)
            f_g = F.gelu(self._propagate(gcn(h), m))                       # short-distance (GCN)
            f_a = attn(h.reshape(b, hist_len * n, c), bias).reshape(b, hist_len, n, c)   # long-distance (attention)
            f = (f + f_g + f_a) * node_mask                                # Eq. 4 (+ residual)
        pooled = f.sum(1) / m.sum(1).clamp_min(1.0)[:, None, None]         # (B, n, C)
        pooled = pooled.reshape(b, n // j, j, c).permute(0, 2, 1, 3).reshape(b, j, -1)  # (B, J, parts*C)
        return self.out(pooled)                                            # Eq. 5: (B, J, C)

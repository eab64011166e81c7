"""Shared building blocks: multi-head attention, MLP, pre-norm transformer block, graph conv.

Small and explicit on purpose: every block here has an ONNX export and a Triton counterpart
that must match it, so none of them hides state or branches on the device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, S, C); bias: additive (B, 1, 1, S) or broadcastable to (B, H, S, S)
        b, s, c = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                           # (B, H, S, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # softmax(q k^T / sqrt(D) + bias) v
        out = out.transpose(1, 2).reshape(b, s, c)                # (B, S, C)
        return self.proj(out)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN x), then x + MLP(LN x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of a (n, n) adjacency that already holds its self-loops."""
    d = adj.sum(-1).clamp_min(1e-6).rsqrt()
    return d[:, None] * adj * d[None, :]


class GraphConv(nn.Module):
    """Kipf-Welling graph convolution with a fixed normalised adjacency: A_hat X W + b."""

    def __init__(self, in_dim: int, out_dim: int, adj: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.register_buffer("adj", normalized_adjacency(adj), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, n, C_in) -> (B, n, C_out)
        return self.adj @ self.linear(x)


def sinusoidal_embedding(k: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal step embedding: (B,) float steps -> (B, dim) [sin, cos]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=k.device) / half)
    ang = k.float()[:, None] * freqs[None, :]                   # (B, half)
    return torch.cat([ang.sin(), ang.cos()], dim=-1)

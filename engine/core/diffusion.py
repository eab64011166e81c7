"""Noise schedule, forward noising (Eq. 1) and the DDIM update of Algorithm 1.

alpha_k = prod_{i<=k} (1 - beta_i) with beta linear between beta_start and beta_end over K steps
(section IV-B), and alpha_0 := 1. DDIM with S steps visits k = round(linspace(K, 0, S + 1)), e.g.
50, 40, 30, 20, 10 -> 0 for S = 5, deterministically (eta = 0).

Algorithm 1 line 5 writes h_{k-1} = sqrt(alpha_{k-1}) h_0|k + sqrt(1 - alpha_{k-1}) D(...), which
drops the GMM mean mu that Eq. 1 and line 4 carry. We use the form consistent with Eq. 1:
    h_{k-1} = mu + sqrt(alpha_{k-1}) (h_0|k - mu) + sqrt(1 - alpha_{k-1}) eps_hat.
The two agree when mu = 0.
"""
from __future__ import annotations

import torch

from .config import DiffusionConfig


def alphas_bar(cfg: DiffusionConfig) -> torch.Tensor:
    """(K + 1,) float64 with alphas_bar[0] = 1 and alphas_bar[k] = prod_{i<=k} (1 - beta_i)."""
    betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.train_steps, dtype=torch.float64)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


def ddim_timesteps(train_steps: int, sample_steps: int) -> list[tuple[int, int]]:
    """Pairs (k, k_next) visited by DDIM, from K down to 0."""
    if not 1 <= sample_steps <= train_steps:
        raise ValueError(f"sample_steps must be in [1, {train_steps}], got {sample_steps}")
    ks = torch.linspace(train_steps, 0, sample_steps + 1).round().long().tolist()
    return list(zip(ks[:-1], ks[1:]))


def q_sample(x0: torch.Tensor, eps: torch.Tensor, mu: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eq. 1: h_k = mu + sqrt(alpha_k) (h_0 - mu) + sqrt(1 - alpha_k) eps. alpha broadcasts."""
    return mu + alpha.sqrt() * (x0 - mu) + (1 - alpha).sqrt() * eps


def predict_x0(xk: torch.Tensor, eps: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 8 / Algorithm 1 line 4. Plain arithmetic: tensors or numpy arrays; ``alpha`` a number or
    a tensor that broadcasts."""
    return mu + (xk - mu - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5


def ddim_next(x0: torch.Tensor, eps: torch.Tensor, mu: torch.Tensor, alpha_next: float) -> torch.Tensor:
    """Algorithm 1 line 5 (with mu, see module docstring); tensors or numpy arrays, like :func:`predict_x0`."""
    return mu + alpha_next ** 0.5 * (x0 - mu) + (1 - alpha_next) ** 0.5 * eps

"""Gaussian mixture noise model H_K (paper section III-A, M components fitted by EM).

What it models (our choice; the paper follows DiffPose, whose fitting code is unpublished): the
residual between the ground-truth root-relative 3D pose and the context encoder's initial
estimate, flattened to D = 3J values and divided by one global ``scale`` (metres, the residual's
overall standard deviation), with diagonal covariances. The diffusion runs in this normalised
residual space: pose = init3d + scale * x. Eq. 1's epsilon is a GMM sample minus the GMM mean
mu, so h_K converges to a GMM sample when alpha_K -> 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_VAR_FLOOR = 1e-6


@dataclass
class GMMParams:
    weights: torch.Tensor    # (M,)
    means: torch.Tensor      # (M, D)
    variances: torch.Tensor  # (M, D)
    scale: float             # metres per normalised unit

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean mu = sum_m pi_m mu_m, (D,)."""
        return (self.weights[:, None] * self.means).sum(0)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "GMMParams":
        return GMMParams(self.weights.to(device, dtype), self.means.to(device, dtype),
                         self.variances.to(device, dtype), self.scale)

    def validate(self, dim: int | None = None) -> None:
        m = self.weights.shape[0]
        if self.weights.ndim != 1 or self.means.shape != self.variances.shape or self.means.shape[0] != m:
            raise ValueError(f"GMM shapes disagree: weights {tuple(self.weights.shape)}, means "
                             f"{tuple(self.means.shape)}, variances {tuple(self.variances.shape)}")
        if dim is not None and self.means.shape[1] != dim:
            raise ValueError(f"GMM dimension {self.means.shape[1]} does not match the model's {dim}")
        for name, t in (("weights", self.weights), ("means", self.means), ("variances", self.variances)):
            if not torch.isfinite(t).all():
                raise ValueError(f"GMM {name} contain non-finite values")
        if (self.variances <= 0).any() or (self.weights < 0).any() or not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError("GMM variances, weights and scale must be positive")
        if abs(float(self.weights.double().sum()) - 1.0) > 1e-3:     # mean and sample assume a distribution
            raise ValueError(f"GMM weights must sum to 1, got {float(self.weights.double().sum()):.6g}")

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Draw samples (*shape, D) from the mixture with an explicit generator."""
        n = int(np.prod(shape)) if shape else 1
        comp = torch.multinomial(self.weights.cpu().double(), n, replacement=True, generator=generator)
        z = torch.randn((n, self.means.shape[1]), generator=generator)
        out = self.means.cpu()[comp] + self.variances.cpu()[comp].sqrt() * z
        return out.reshape(*shape, -1).to(device)


def fit_gmm(x: torch.Tensor, components: int, iters: int = 100, tol: float = 1e-5,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit a diagonal-covariance GMM by EM.

    Args:
        x: (S, D) samples.
        components: M.
    Returns:
        weights (M,), means (M, D), variances (M, D), all float32.
    """
    x = x.double()
    s, d = x.shape
    if s < components:
        raise ValueError(f"need at least {components} samples to fit {components} components, got {s}")
    # k-means++-style init: first centre random, next ones far from the chosen ones
    idx = [int(torch.randint(s, (1,), generator=generator))]
    for _ in range(1, components):
        dist = torch.cdist(x, x[idx]).min(1).values ** 2
        total = dist.sum()      # 0 when all samples coincide with the chosen centres: pick uniformly
        probs = dist / total if total > 0 else torch.full_like(dist, 1.0 / s)
        idx.append(int(torch.multinomial(probs, 1, generator=generator)))
    means = x[idx].clone()
    var = x.var(0, unbiased=False).clamp_min(_VAR_FLOOR).expand(components, d).clone()
    weights = torch.full((components,), 1.0 / components, dtype=torch.float64)
    prev = -np.inf
    for _ in range(iters):
        # E step: log responsibilities (S, M)
        logp = -0.5 * (((x[:, None, :] - means[None]) ** 2) / var[None] + var.log()[None]
                       + np.log(2 * np.pi)).sum(-1) + weights.log()[None]
        ll = torch.logsumexp(logp, dim=1)
        resp = (logp - ll[:, None]).exp()                              # (S, M)
        # M step
        nk = resp.sum(0).clamp_min(1e-10)
        weights = nk / s
        means = (resp.T @ x) / nk[:, None]
        var = ((resp.T @ (x * x)) / nk[:, None] - means ** 2).clamp_min(_VAR_FLOOR)
        cur = ll.mean().item()
        if abs(cur - prev) < tol:
            break
        prev = cur
    return weights.float(), means.float(), var.float()

"""Synthetic HPIM histories for stage 3 (see :mod:`train.config` for the recipe and its knobs).

At inference HPIM sees the model's own past predictions, which carry the errors of the context
encoder (bias shared with the current frame, slowly varying) and a consistent bone-length error.
Training on exact ground-truth histories would teach the denoiser to copy the past and drift; so
each sample mixes the encoder's own estimate of those frames with ground truth plus temporally
smooth noise and per-bone length perturbations, at a random magnitude.
"""
from __future__ import annotations

import torch

from engine.core.skeleton import Skeleton

from .config import TrainConfig


def perturb_bones(pose: torch.Tensor, parents: tuple[int, ...], factor: torch.Tensor) -> torch.Tensor:
    """Rescale every bone (child - parent) by ``factor`` (B, J) via forward kinematics. pose (B, L, J, 3)."""
    out = pose.clone()
    for j, p in enumerate(parents):
        if p < 0:
            continue
        out[:, :, j] = out[:, :, p] + (pose[:, :, j] - pose[:, :, p]) * factor[:, None, j, None]
    return out


def smooth_noise(b: int, length: int, j: int, sigma: torch.Tensor, gen: torch.Generator,
                 coeff: float = 0.8) -> torch.Tensor:
    """(B, L, J, 3): per-joint constant offset + AR(1) drift, per-sample std ``sigma`` (B,)."""
    const = torch.randn(b, 1, j, 3, generator=gen)
    white = torch.randn(b, length, j, 3, generator=gen)
    drift = torch.empty_like(white)
    drift[:, 0] = white[:, 0]
    k = (1 - coeff ** 2) ** 0.5
    for i in range(1, length):
        drift[:, i] = coeff * drift[:, i - 1] + k * white[:, i]
    n = 0.8 * const + 0.6 * drift
    return n * sigma[:, None, None, None] / 3 ** 0.5        # per-joint 3D norm ~ sigma


def synth_history(gt: torch.Tensor, init: torch.Tensor, valid: torch.Tensor, skeleton: Skeleton,
                  tcfg: TrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """gt, init: (B, L, J, 3) metres root-relative; valid (B, L) -> (hist3d (B, L, J, 3), mask (B, L))."""
    b, length, j, _ = gt.shape
    sigma = torch.rand(b, generator=gen) * tcfg.hist_noise_max
    noisy = gt + smooth_noise(b, length, j, sigma, gen)
    factor = 1 + tcfg.hist_bone_std * torch.randn(b, j, generator=gen)
    noisy = perturb_bones(noisy, skeleton.parents, factor)
    u = torch.rand(b, generator=gen)
    alpha = torch.rand(b, generator=gen)
    alpha = torch.where(u < tcfg.hist_p_init, torch.ones_like(alpha), alpha)
    alpha = torch.where((u >= tcfg.hist_p_init) & (u < tcfg.hist_p_init + tcfg.hist_p_gt),
                        torch.zeros_like(alpha), alpha)
    hist = alpha[:, None, None, None] * init + (1 - alpha[:, None, None, None]) * noisy
    hist = hist - hist[:, :, skeleton.root:skeleton.root + 1]
    mask = valid.float().clone()
    short = torch.rand(b, generator=gen) < tcfg.hist_p_short
    keep = torch.randint(0, length, (b,), generator=gen)                 # 0..L-1 most recent frames
    slot = torch.arange(length)[None]
    mask = torch.where(short[:, None], mask * (slot >= length - keep[:, None]).float(), mask)
    hist = hist * mask[:, :, None, None]
    return hist, mask

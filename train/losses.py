"""Training losses.

Stage 1 (MixSTE): weighted MPJPE with ``skeleton.joint_weights`` + 0.5 * TC (weighted mean square
of the predicted frame-to-frame displacement) + 2.0 * velocity error (mean per-joint velocity error).

Stage 3 (Eq. 17): L = L_diff + lambda_p L_p + lambda_s L_s + lambda_b L_b + lambda_d L_d, with L_diff
the MSE between the predicted and the true GMM noise epsilon of Eq. 1 and the STPG terms
(:func:`engine.core.guidance.stpg_terms`) of the clean estimate h_0|k, averaged over the batch.
"""
from __future__ import annotations

import torch

from engine.core.diffusion import predict_x0
from engine.core.energies import ENERGY_KEYS
from engine.core.guidance import GuidanceInputs, stpg_terms


def weighted_mpjpe(pred: torch.Tensor, gt: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(..., J, 3) metres, w (J,) -> scalar."""
    return (torch.linalg.vector_norm(pred - gt, dim=-1) * w).mean()


def temporal_consistency(pred: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """MixSTE TC loss: mean of w_j * ||P[t+1] - P[t]||^2 over (B, F-1, J). pred (B, F, J, 3)."""
    d = pred[:, 1:] - pred[:, :-1]
    return (d.square() * w[:, None]).mean()


def velocity_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean per-joint velocity error along dim 1 (frames)."""
    return torch.linalg.vector_norm((pred[:, 1:] - pred[:, :-1]) - (gt[:, 1:] - gt[:, :-1]), dim=-1).mean()


def context_loss(pred: torch.Tensor, gt: torch.Tensor, w: torch.Tensor, tc_weight: float = 0.5,
                 vel_weight: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    wm = weighted_mpjpe(pred, gt, w)
    tc = temporal_consistency(pred, w)
    ve = velocity_error(pred, gt)
    loss = wm + tc_weight * tc + vel_weight * ve
    return loss, {"wmpjpe": wm.item(), "tc": tc.item(), "vel": ve.item()}


def diffusion_loss(eps_hat: torch.Tensor, eps: torch.Tensor, x_k: torch.Tensor, mu: torch.Tensor,
                   alpha: torch.Tensor, init3d: torch.Tensor, scale: float, gin: GuidanceInputs | None,
                   terms, lambdas: tuple[float, ...],
                   weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 17 for a batch of frames.

    eps_hat, eps, x_k: (B, J, 3) normalised residual space; mu (J, 3); alpha (B, 1, 1) alpha_bar_k;
    init3d (B, J, 3) metres; gin: the frames' STPG conditions (None: L_diff only); lambdas: the
    energy weights in the order of engine.core.energies.ENERGIES; weight: optional (B,) per-sample
    weights of the epsilon MSE.
    """
    se = (eps_hat - eps).square()
    l_diff = se.mean() if weight is None else (weight[:, None, None] * se).mean()
    logs = {"diff": l_diff.item()}
    loss = l_diff
    if gin is not None and any(lam > 0 for lam in lambdas):
        # h_0|k from Eq. 8 with the predicted noise, back to metres
        x0 = predict_x0(x_k, eps_hat, mu, alpha)
        h0 = init3d + scale * x0
        h0 = h0 - h0[:, :1]
        t = stpg_terms(h0[:, None], gin, terms)
        for lam, key in zip(lambdas, ENERGY_KEYS, strict=True):
            v = t[key].mean()
            logs[key] = v.item()
            if lam > 0:
                loss = loss + lam * v
    return loss, logs


__all__ = ["weighted_mpjpe", "temporal_consistency", "velocity_error", "context_loss", "diffusion_loss",
           "predict_x0"]

"""Reverse process for one frame (Algorithm 1): DDIM steps over N hypotheses with STPG.

The diffusion variable is the normalised residual x (engine/core/gmm.py): pose = init3d + scale * x.
h_K is drawn as Eq. 1 applied to the context encoder's estimate (x_0 := 0) with GMM noise:
    x_K = mu + sqrt(alpha_K) (0 - mu) + sqrt(1 - alpha_K) (s - mu),  s ~ GMM,
so the N hypotheses spread around the initial estimate the way its residuals do. (alpha_K is
about 0.95 with the paper's schedule, far from 0, so starting from a bare GMM sample would put
h_K outside what the denoiser saw in training.)

Guidance (Eq. 9), step scale rho (metres per unit gradient, constant over steps):
- ``x0`` mode: g = dE/dh_0|k in closed form (engine/core/guidance.py), no backprop through D.
- ``full`` mode: g = dE(h_0|k(h_k))/dh_k by autograd through the denoiser, exactly Eq. 9.
Then pose_{k-1} -= rho * g, i.e. x_{k-1} -= rho * g / scale, with each joint's displacement
clipped to ``max_step`` metres (a trust region: Eq. 9 unchanged for ordinary gradients, but a
degenerate frame, e.g. 2D keypoints that put the solved root almost on the camera, cannot throw
a hypothesis metres away).
"""
from __future__ import annotations

import torch

from .config import GuidanceConfig
from .diffusion import ddim_next, ddim_timesteps, predict_x0
from .guidance import GuidanceInputs, stpg_energy, stpg_grad
from .model import StarPose


def initial_noise(model: StarPose, gmm_samples: torch.Tensor) -> torch.Tensor:
    """GMM samples s (B, N, 3J) -> x_K (B, N, J, 3) per Eq. 1 with x_0 = 0."""
    mu = model.gmm.mean.to(gmm_samples)
    a_k = model.alphas_bar[-1].to(gmm_samples)
    x = mu * (1 - a_k.sqrt()) + (1 - a_k).sqrt() * (gmm_samples - mu)
    return x.reshape(*gmm_samples.shape[:-1], model.num_joints, 3)


def sample_frame(model: StarPose, cond: torch.Tensor, init3d: torch.Tensor, x_k: torch.Tensor,
                 steps: int, guidance: GuidanceConfig, gin: GuidanceInputs | None) -> torch.Tensor:
    """Run the reverse process for one frame.

    Args:
        cond: (B, J, D) denoiser condition of the frame.
        init3d: (B, J, 3) context encoder estimate, metres, root-relative.
        x_k: (B, N, J, 3) starting state x_K (see :func:`initial_noise`).
        steps: DDIM steps S.
        guidance: STPG settings (``enabled`` False skips it).
        gin: energy conditions; required when guidance is enabled.
    Returns:
        (B, N, J, 3) hypotheses, metres, root-relative.
    """
    b, n, j, _ = x_k.shape
    gmm = model.gmm
    scale = gmm.scale
    mu = gmm.mean.to(x_k).reshape(j, 3)
    ab = model.alphas_bar
    cond_r = cond[:, None].expand(b, n, j, -1).reshape(b * n, j, -1)     # (B*N, J, D)
    init_r = init3d[:, None]                                              # (B, 1, J, 3)
    use_guidance = guidance.enabled and gin is not None and guidance.rho > 0
    x = x_k
    for k, k_next in ddim_timesteps(model.cfg.diffusion.train_steps, steps):
        a_k, a_next = float(ab[k]), float(ab[k_next])
        kk = torch.full((b * n,), k, device=x.device, dtype=torch.long)
        full = use_guidance and guidance.mode == "full"
        with torch.enable_grad() if full else torch.no_grad():
            if full:
                x = x.detach().requires_grad_(True)
            pose = init_r + scale * x                                     # (B, N, J, 3)
            eps = model.denoiser(pose.reshape(b * n, j, 3), cond_r, kk).reshape(b, n, j, 3)
            x0 = predict_x0(x, eps, mu, a_k)
            if use_guidance:
                h0 = init_r + scale * x0
                if full:
                    energy = stpg_energy(h0, gin, model.terms, guidance)
                    g = torch.autograd.grad(energy.sum(), x)[0] / scale   # dE/dh_k in metres
                else:
                    g = stpg_grad(h0, gin, model.terms, guidance)
            x = ddim_next(x0, eps, mu, a_next)
            if use_guidance:
                x = x - guidance_step(g, guidance) / scale
        x = x.detach()
    pose = init_r + scale * x
    return pose - pose[:, :, model.skeleton.root:model.skeleton.root + 1]


def guidance_step(g: torch.Tensor, guidance: GuidanceConfig) -> torch.Tensor:
    """rho * g with every joint's displacement clipped to max_step: (..., J, 3) metres."""
    step = guidance.rho * g
    norm = step.norm(dim=-1, keepdim=True)
    # the floor keeps max_step = 0 (allowed by the config: no guidance displacement) from giving 0/0
    return step * (guidance.max_step / norm.clamp_min(max(guidance.max_step, 1e-12)))


def aggregate(hyps: torch.Tensor, mode: str, gin: GuidanceInputs | None = None) -> torch.Tensor:
    """(B, N, J, 3) -> (B, J, 3).

    ``mean``: average of the hypotheses (the paper). ``reproj``: per joint, the hypothesis whose
    reprojection (root translation solved in closed form from the mean pose) is closest to the
    2D keypoint; needs no ground truth.
    """
    mean = hyps.mean(1)
    if mode == "mean":
        return mean
    if mode != "reproj":
        raise ValueError(f"unknown aggregation {mode!r}")
    if gin is None:
        raise ValueError("reproj aggregation needs the 2D keypoints and intrinsics")
    from .camera import project, solve_root_translation
    root = solve_root_translation(mean, gin.kp2d, gin.intr, gin.conf)        # (B, 3)
    proj = project(hyps + root[:, None, None], gin.intr[:, None])            # (B, N, J, 2)
    err = ((proj - gin.kp2d[:, None]) ** 2).sum(-1)                          # (B, N, J)
    best = err.argmin(1)                                                     # (B, J)
    idx = best[:, None, :, None].expand(-1, 1, -1, 3)
    return hyps.gather(1, idx).squeeze(1)

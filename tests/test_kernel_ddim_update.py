"""kernels/ddim_update.py (the fused DDIM + STPG update) against the eager step."""
from __future__ import annotations

import pytest
import torch
from helpers import (  # noqa: F401
    J,
    default_intrinsics,
    make_gin,
    make_model,
    noisy_hypotheses,
    video_keypoints,
)
from kernel_common import DEVICE, check_close, gin_on

from engine.core.config import GuidanceConfig
from engine.core.diffusion import ddim_next, predict_x0
from engine.core.guidance import stpg_grad as stpg_grad_ref
from engine.core.sampler import guidance_step
from kernels.ddim_update import ddim_update
from kernels.stpg_grad import skeleton_indices


@pytest.mark.parametrize("guided, rho", [(False, 0.0), (True, 0.002), (True, 5.0)])  # 5.0: trust region clips
def test_ddim_update_matches_eager_step(guided, rho):
    model = make_model(0).to(DEVICE)
    b, n, history = 3, 5, model.cfg.hpim.history
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, n, J, 3, generator=g).to(DEVICE)
    eps = torch.randn(b, n, J, 3, generator=g).to(DEVICE)
    init = noisy_hypotheses(b, 1, dtype=torch.float32)[:, 0].to(DEVICE)
    mu = model.gmm.mean.to(DEVICE).reshape(J, 3).contiguous()
    scale, a_k, a_next = model.gmm.scale, float(model.alphas_bar[40]), float(model.alphas_bar[30])
    gin = gin_on(b, history, 2)
    cfg = GuidanceConfig(enabled=guided, rho=rho)
    x0 = predict_x0(x, eps, mu, a_k)
    ref = ddim_next(x0, eps, mu, a_next)
    if guided:
        grad = stpg_grad_ref(init[:, None] + scale * x0, gin, model.terms, cfg)
        ref = ref - guidance_step(grad, cfg) / scale
    out = ddim_update(x, eps, mu, init, a_k, a_next, scale, cfg, gin, skeleton_indices(model.terms))
    check_close(out, ref, f"ddim_update guided={guided} rho={rho}", (1e-5, 1e-5))


# ---- TritonBackend ----------------------------------------------------------------------------

"""kernels/denoiser_step.py (the whole denoiser in one launch) against the eager denoiser."""
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
from kernel_common import DEVICE, TOL, check_close, perturbed_model

from kernels.denoiser_step import denoiser_step, pack_denoiser


@pytest.mark.parametrize("preset, b, n, dtype", [
    ("tiny", 1, 1, torch.float32),
    ("tiny", 37, 1, torch.float32),    # 37 rows: 13 programs, last one holds a single pose
    ("small", 1, 5, torch.float32),
    ("small", 3, 5, torch.float16),
])
def test_denoiser_step_matches_module(preset, b, n, dtype):
    model = perturbed_model(preset)
    den, d = model.denoiser, model.cfg.denoiser.hidden
    g = torch.Generator().manual_seed(b * 10 + n)
    x = torch.randn(b, n, J, 3, generator=g).to(DEVICE)
    init = (0.2 * torch.randn(b, J, 3, generator=g)).to(DEVICE)
    cond = torch.randn(b, J, d, generator=g).to(DEVICE)
    scale, k = 0.05, 30
    with torch.no_grad():
        temb = den.step_embedding(torch.tensor([k], device=DEVICE))[0].contiguous()
        ref = den((init[:, None] + scale * x).reshape(b * n, J, 3),
                  cond[:, None].expand(b, n, J, d).reshape(b * n, J, d),
                  torch.full((b * n,), k, device=DEVICE)).reshape(b, n, J, 3)
    out = denoiser_step(x, init, cond, temb, pack_denoiser(den, dtype), scale)
    # fp16 weights, fp32 output: ~1e-3 of the O(1) noise prediction after three blocks
    tol = TOL[torch.float32] if dtype == torch.float32 else (5e-3, 1e-2)
    check_close(out, ref, f"denoiser {preset} B={b} N={n} {dtype}", tol)


# ---- STPG gradient ----------------------------------------------------------------------------

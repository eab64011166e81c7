"""Shared set-up of the Triton kernel tests (tests/test_kernel_*.py, tests/test_triton_backend.py):
device, tolerances, perturbed modules and inputs.

Runs on CPU under TRITON_INTERPRET=1 (tests/conftest.py sets it when CUDA is unavailable), where
a launch costs ~0.1 s per program: shapes are small, but awkward (1, 3, 37 rows; N = 1 and 5;
J = 17 padded to 32 / 64 rows; head dim 8 and 24 padded to 16 and 32). CUDA-only tests carry
the ``cuda`` marker.
"""
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
from torch.testing import assert_close

from engine.core.config import StarPoseConfig
from engine.core.denoiser import GCNAttentionBlock
from engine.core.guidance import GuidanceInputs
from engine.core.sampler import initial_noise
from engine.core.skeleton import H36M17
from kernels._utils import INTERPRET
from kernels.denoiser_block import block_constants, pack_block_params

DEVICE = torch.device("cpu" if INTERPRET else "cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET,
                                reason="needs a CUDA GPU with compiled Triton (not the interpreter)")

# Tolerances (atol, rtol) of a kernel against the fp32 eager reference, by activation dtype.
TOL = {
    # Same math in fp32 (IEEE dots in the interpreter, 3xTF32 ~ fp32 on a GPU): only the summation
    # order differs from ATen. Blocks on O(10) activations give ~1e-5 absolute (measured <= 1.3e-5).
    torch.float32: (1e-4, 1e-4),
    # fp16 operands (11-bit mantissa, 4.9e-4 relative) into fp32 accumulators and one fp16 store:
    # a few ulp of O(10) activations. Also bounded relative to eager fp16 (scale-free rule below).
    torch.float16: (6e-2, 1e-2),
}
STPG_TOL = (1e-5, 1e-4)     # fp32 closed form, same op order: errors ~1e-6 on O(1) gradients
SAMPLE_TOL = (1e-5, 1e-5)   # 5 DDIM steps in metres on ~0.1 m poses: rounding only
FP16_VS_TORCH = 2.0         # kernel fp16 error <= 2 x eager-fp16 error (flash-attn's rule) + atol floor


def check_close(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: tuple[float, float]) -> None:
    """assert_close with a header naming the case; torch reports mismatch count and worst index."""
    assert_close(actual.float().cpu(), expected.float().cpu(), atol=tol[0], rtol=tol[1],
                 msg=lambda m: f"{what}: {m}")


def perturbed_block(dim: int, heads: int, seed: int) -> GCNAttentionBlock:
    """A block whose LayerNorm weights and biases are not 1 / 0, so their indexing is tested."""
    torch.manual_seed(seed)
    blk = GCNAttentionBlock(dim, heads, torch.from_numpy(H36M17.adjacency()))
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return blk.eval().to(DEVICE)


def perturbed_model(preset: str, seed: int = 0):
    model = make_model(seed, StarPoseConfig.from_name(preset))
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.to(DEVICE)


def gin_on(b: int, history: int, valid: int | None = None, seed: int = 0) -> GuidanceInputs:
    g = make_gin(b, seed=seed, valid=valid, history=history, dtype=torch.float32)
    return GuidanceInputs(*(t.to(DEVICE) for t in (g.kp2d, g.conf, g.intr, g.hist3d, g.hist_mask)))


# ---- denoiser block -------------------------------------------------------------------------


def _frame_inputs(model, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d, n = model.cfg.denoiser.hidden, model.cfg.diffusion.hypotheses
    cond = torch.randn(b, J, d, generator=g).to(DEVICE)
    init = noisy_hypotheses(b, 1, seed=seed, dtype=torch.float32)[:, 0].to(DEVICE)
    x_k = initial_noise(model, model.gmm.sample((b * n,), g).reshape(b, n, 3 * J).to(DEVICE))
    return cond, init, x_k, gin_on(b, model.cfg.hpim.history, 2, seed)


def _block_args(dim: int = 64, heads: int = 4, rows: int = 3):
    blk = perturbed_block(dim, heads, 0)
    adj, _ = block_constants(blk)
    return torch.randn(rows, J, dim, device=DEVICE), torch.randn(rows, dim, device=DEVICE), \
        pack_block_params(blk), adj

"""kernels/denoiser_block.py (one GCN-attention block) against engine.core.denoiser.GCNAttentionBlock,
and its launcher's checks."""
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
from kernel_common import DEVICE, FP16_VS_TORCH, TOL, _block_args, check_close, perturbed_block

from kernels.denoiser_block import block_constants, block_settings, denoiser_block, pack_block_params


@pytest.mark.parametrize("rows, dim, heads, rows_per_program, shared_temb", [
    (1, 16, 2, 3, False),     # tiny: head dim 8 padded to 16; one partial program
    (3, 64, 4, 1, True),      # small, one pose per 32-row tile, temb broadcast (row stride 0)
    (37, 96, 4, 3, False),    # paper: head dim 24 padded to 32, D padded to 128; 13 programs, last partial
    (5, 96, 4, 7, True),      # 7 poses packed in a 128-row tile, 2 of them missing
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_denoiser_block_matches_module(rows, dim, heads, rows_per_program, shared_temb, dtype):
    blk = perturbed_block(dim, heads, seed=rows)
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(J, rows, dim, generator=g).to(DEVICE).transpose(0, 1)        # non-contiguous (R, J, D)
    temb = torch.randn(1 if shared_temb else rows, dim, generator=g).to(DEVICE)
    adj, eps = block_constants(blk)
    with torch.no_grad():
        ref = blk(x, temb.expand(rows, dim))
    out = denoiser_block(x.to(dtype), temb.to(dtype), pack_block_params(blk, dtype), adj, heads, eps,
                         rows_per_program=rows_per_program)
    assert out.dtype == dtype and out.shape == (rows, J, dim)
    check_close(out, ref, f"block R={rows} D={dim} H={heads} {dtype}", TOL[dtype])
    if dtype == torch.float16:
        with torch.no_grad():
            ref16 = blk.half()(x.half(), temb.half().expand(rows, dim)).float()
        err, err_torch = (out.float() - ref).abs().max(), (ref16 - ref).abs().max()
        assert err <= FP16_VS_TORCH * err_torch + 1e-2, \
            f"fp16 kernel error {err:.3g} > {FP16_VS_TORCH} x eager fp16 error {err_torch:.3g} + 1e-2"


# ---- whole denoiser ---------------------------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    (lambda a: {**a, "x": a["x"][..., :32], "temb": a["temb"][:, :32]}, "params has shape"),  # D vs params
    (lambda a: {**a, "x": a["x"][0]}, "x has shape"),                              # missing row axis
    (lambda a: {**a, "temb": a["temb"][:2]}, "temb has 2 rows"),
    (lambda a: {**a, "params": a["params"].half()}, "params has dtype"),
    (lambda a: {**a, "params": torch.stack([a["params"]] * 2, 1)[:, 0]}, "must be contiguous"),
    (lambda a: {**a, "adj": a["adj"][:16, :16]}, "adj has shape"),
    (lambda a: {**a, "heads": 5}, "not divisible by heads"),
    (lambda a: {**a, "heads": 8, "block_hd": 8}, r"tl.dot needs every dimension >= 16.*BLOCK_HD"),  # GPU-only rule
    (lambda a: {**a, "block_c": 24}, r"powers of two.*BLOCK_C"),
    (lambda a: {**a, "rows_per_program": 0}, "rows_per_program must be >= 1"),
])
def test_denoiser_block_rejects_bad_inputs(change, match):
    x, temb, params, adj = _block_args()
    args = change({"x": x, "temb": temb, "params": params, "adj": adj, "heads": 4})
    with pytest.raises(ValueError, match=match):
        denoiser_block(**args)


def test_block_settings_checks_padding_and_gpu_rules():
    assert block_settings(17, 96, 4) == {"ROWS": 3, "BLOCK_M": 64, "BLOCK_D": 128, "BLOCK_HD": 32, "BLOCK_C": 32}
    assert block_settings(17, 16, 2)["BLOCK_HD"] == 16             # head dim 8 padded up to the tl.dot minimum
    with pytest.raises(ValueError, match=r"BLOCK_M 32 < J 17 x rows_per_program 3"):
        block_settings(17, 64, 4, rows_per_program=3, block_m=32)
    with pytest.raises(ValueError, match=r"powers of two.*BLOCK_M"):
        block_settings(17, 64, 4, rows_per_program=1, block_m=48)
    with pytest.raises(ValueError, match=r"BLOCK_HD 16 < head dim 24"):
        block_settings(17, 96, 4, block_hd=16)

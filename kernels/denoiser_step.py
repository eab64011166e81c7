"""The whole denoiser D(h_k, cond, k) of one DDIM step in one launch.

Eager reference: :meth:`engine.core.denoiser.Denoiser.forward` (imported below as ``reference``),
applied as :func:`engine.core.sampler.sample_frame` applies it, to pose = init3d + scale * x_k:

    x   = in_proj(pose) + cond                   (cond already holds the joint embedding)
    x   = block_b(x, temb)  for b = 1 .. blocks  (kernels.denoiser_block.gcn_attention_block)
    eps = head(LayerNorm(x))                     (R, J, 3)

Each program keeps ``ROWS`` hypotheses on chip from the 3-vector input to the 3-vector output:
the activations never touch memory between blocks, only the weights are streamed (L2-resident
after the first program). The step embedding temb = step_mlp(sinusoidal(k)) is the same for
every row of a step, so it is an input (D,), computed once per k by the caller. The condition
(B, J, D) is shared by the N hypotheses of a video (row r reads cond[r // N]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from engine.core.denoiser import Denoiser as reference  # noqa: F401  (the eager module this matches)

from ._utils import FP32_DOT_PRECISION, check_device, check_tensor, num_warps_for
from .denoiser_block import (
    _layer_norm,
    block_constants,
    block_param_offsets,
    block_settings,
    gcn_attention_block,
    pack_block_params,
    pose_tile_masks,
)


@dataclass
class DenoiserParams:
    """A Denoiser's weights packed for :func:`denoiser_step`."""
    blocks: torch.Tensor    # (NB, 7 D^2 + 11 D) packed GCN-attention blocks, fp32 or fp16
    io: torch.Tensor        # (9 D + 3,) fp32: in_proj.weight (D, 3), in_proj.bias, norm w, b, head.weight (3, D),
                            # head.bias
    adj: torch.Tensor       # (J, J) fp32 normalised adjacency
    dim: int
    heads: int
    ln_eps: float


def pack_denoiser(den: torch.nn.Module, dtype: torch.dtype = torch.float32) -> DenoiserParams:
    """Denoiser -> DenoiserParams; ``dtype`` is the storage of the block weights (fp32 / fp16)."""
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"block weights must be stored as float32 or float16, got {dtype}")
    consts = [block_constants(b) for b in den.blocks]
    adj, ln_eps = consts[0]
    for a, e in consts[1:]:
        if not torch.equal(a, adj) or e != ln_eps:
            raise ValueError("all denoiser blocks must share one adjacency and one LayerNorm eps")
    if den.norm.eps != ln_eps:
        raise ValueError(f"final norm eps {den.norm.eps} != block eps {ln_eps}")
    blocks = torch.stack([pack_block_params(b, dtype) for b in den.blocks]).contiguous()
    io = torch.cat([den.in_proj.weight.reshape(-1), den.in_proj.bias, den.norm.weight, den.norm.bias,
                    den.head.weight.reshape(-1), den.head.bias]).detach().float().contiguous()
    return DenoiserParams(blocks, io, adj, den.cfg.hidden, den.cfg.heads, ln_eps)


@triton.jit
def _denoiser_step_kernel(
    x_ptr,        # (B, N, J, 3) diffusion state x_k, fp32
    init_ptr,     # (B, J, 3) context estimate, metres, fp32
    cond_ptr,     # (B, J, D) frame condition, fp32
    temb_ptr,     # (D,) step embedding step_mlp(sinusoidal(k)), fp32, contiguous
    blocks_ptr,   # (NB, 7 D^2 + 11 D) packed blocks, fp32 or fp16, contiguous
    io_ptr,       # (9 D + 3,) fp32 in_proj / norm / head, contiguous (DenoiserParams.io)
    adj_ptr,      # (J, J) fp32 normalised adjacency, contiguous
    eps_ptr,      # (B, N, J, 3) predicted noise, fp32
    R, N, scale,
    s_xb, s_xn, s_xj, s_xc,
    s_ib, s_ij, s_ic,
    s_cb, s_cj, s_cd,
    s_eb, s_en, s_ej, s_ec,
    J: tl.constexpr, D: tl.constexpr, H: tl.constexpr, HD: tl.constexpr, NB: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_HD: tl.constexpr,
    BLOCK_C: tl.constexpr, LN_EPS: tl.constexpr, SCALE: tl.constexpr,
    USE_FP16: tl.constexpr, DOT_PREC: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row, joint, valid, adj, attn_ok = pose_tile_masks(pid, R, adj_ptr, J, ROWS, BLOCK_M)
    b = row // N
    n = row % N
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    mask = valid[:, None] & mask_d[None, :]

    # x = in_proj(init + scale * x_k) + cond: K = 3 is below the tl.dot minimum, so three FMAs
    xp = x_ptr + b * s_xb + n * s_xn + joint * s_xj
    ip = init_ptr + b * s_ib + joint * s_ij
    x = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for c in tl.static_range(3):
        pc = tl.load(ip + c * s_ic, mask=valid, other=0.0) + scale * tl.load(xp + c * s_xc, mask=valid, other=0.0)
        wc = tl.load(io_ptr + offs_d * 3 + c, mask=mask_d, other=0.0)       # in_proj.weight[:, c]
        x += pc[:, None] * wc[None, :]
    x += tl.load(io_ptr + 3 * D + offs_d, mask=mask_d, other=0.0)[None, :]
    x += tl.load(cond_ptr + b[:, None] * s_cb + joint[:, None] * s_cj + offs_d[None, :] * s_cd,
                 mask=mask, other=0.0).to(tl.float32)
    x = tl.where(mask, x, 0.0)

    temb = tl.load(temb_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    p_size: tl.constexpr = 7 * D * D + 11 * D
    for blk in range(NB):
        x = gcn_attention_block(x, temb, blocks_ptr + blk * p_size, adj, attn_ok, offs_d, mask_d, D, H, HD,
                                BLOCK_M, BLOCK_D, BLOCK_HD, BLOCK_C, True, LN_EPS, SCALE, USE_FP16, DOT_PREC)
        x = tl.where(mask, x, 0.0)

    # eps = head(LayerNorm(x)): N = 3 outputs, three row reductions
    xn = _layer_norm(x, io_ptr + 4 * D, io_ptr + 5 * D, offs_d, mask_d, D, LN_EPS)
    ep = eps_ptr + b * s_eb + n * s_en + joint * s_ej
    for c in tl.static_range(3):
        wc = tl.load(io_ptr + 6 * D + c * D + offs_d, mask=mask_d, other=0.0)  # head.weight[c, :]
        out = tl.sum(xn * wc[None, :], axis=1) + tl.load(io_ptr + 9 * D + c)
        tl.store(ep + c * s_ec, out, mask=valid)


def denoiser_step(x: torch.Tensor, init3d: torch.Tensor, cond: torch.Tensor, temb: torch.Tensor,
                  params: DenoiserParams, scale: float, rows_per_program: int = 3) -> torch.Tensor:
    """Predicted noise for every hypothesis: Denoiser(init3d + scale * x, cond, k).

    Args:
        x: (B, N, J, 3) fp32 state x_k (any strides).
        init3d: (B, J, 3) fp32 context estimate, metres.
        cond: (B, J, D) fp32 denoiser condition of the frame (shared by the N hypotheses).
        temb: (D,) fp32 step embedding ``denoiser.step_embedding(k)`` of this step.
        params: :func:`pack_denoiser` of the model's denoiser.
        scale: GMM residual scale.
        rows_per_program: hypotheses per program (see kernels.denoiser_block).
    Returns:
        (B, N, J, 3) fp32 predicted noise.
    """
    check_tensor("x", x, (None, None, None, 3))
    b, n, j, _ = x.shape
    d = params.dim
    if b * n == 0:
        raise ValueError(f"x has no hypotheses: shape {tuple(x.shape)}")
    check_tensor("init3d", init3d, (b, j, 3))
    check_tensor("cond", cond, (b, j, d))
    check_tensor("temb", temb, (d,), contiguous=True)
    p_size = block_param_offsets(d)["total"][0]
    check_tensor("params.blocks", params.blocks, (None, p_size), (torch.float32, torch.float16), contiguous=True)
    check_tensor("params.io", params.io, (9 * d + 3,), contiguous=True)
    check_tensor("params.adj", params.adj, (j, j), contiguous=True)
    check_device(("x", x), ("init3d", init3d), ("cond", cond), ("temb", temb), ("params.blocks", params.blocks),
                 ("params.io", params.io), ("params.adj", params.adj))
    s = block_settings(j, d, params.heads, rows_per_program)
    eps = torch.empty(b, n, j, 3, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(b * n, s["ROWS"]),)
    _denoiser_step_kernel[grid](
        x, init3d, cond, temb, params.blocks, params.io, params.adj, eps, b * n, n, float(scale),
        *x.stride(), *init3d.stride(), *cond.stride(), *eps.stride(),
        J=j, D=d, H=params.heads, HD=d // params.heads, NB=params.blocks.shape[0], **s,
        LN_EPS=params.ln_eps, SCALE=1.0 / math.sqrt(d // params.heads),
        USE_FP16=params.blocks.dtype == torch.float16, DOT_PREC=FP32_DOT_PRECISION,
        num_warps=num_warps_for(s["BLOCK_M"], s["BLOCK_D"]), num_stages=1)
    return eps

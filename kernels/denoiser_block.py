"""Fused GCN-Attention block of the denoiser: one launch for the whole block.

Eager reference: :class:`engine.core.denoiser.GCNAttentionBlock` (imported below as ``reference``),
for x (R, J, D) and temb (R, D):

    x = x + Attn(LN1 x)                                    # multi-head self-attention over J joints
    x = x + A_hat (ReLU(A_hat (LN2 x) W1^T + b1) + temb W_t^T + b_t) W2^T + A_hat b2

Layout: each program keeps ``ROWS`` whole poses on chip, packed joint-row by joint-row into one
(BLOCK_M, BLOCK_D) tile (BLOCK_M = next_pow2(ROWS * J) >= 16), so every Linear is one tl.dot
with M = BLOCK_M. Attention and the graph convolution are done on the whole tile with a
block-diagonal mask (a joint only sees joints of its own pose): that wastes ROWS x the (small)
attention / adjacency FLOPs but keeps them on tensor cores. The hidden size is padded to
BLOCK_D = next_pow2(D) and each head to BLOCK_HD = next_pow2(max(16, D / H)) (D = 96, 4 heads:
head dim 24 padded to 32); the graph-conv hidden is walked in BLOCK_C-wide chunks, so W1/W2 never
sit whole in registers. fp32 (IEEE dots) or fp16 storage with fp32 accumulation and fp32
LayerNorm / softmax statistics.

fp32 dots use 3xTF32 (``_utils.FP32_DOT_PRECISION``); launches use ``num_stages=1`` (no software
pipelining: the loops walk L2-resident weights, and pipelining the whole-denoiser block loop
multiplied shared memory past the 227 KB of an H100).

Where it stops working: everything for one pose tile lives in registers. Compiled offline for
sm_90 (ptxas -v, not run): fp16 tiles of 64 x 64 do not spill; fp32 (3xTF32 keeps hi/lo operand
halves) spills a few hundred bytes at D = 64 and a few KB at D = 96 / BLOCK_D = 128; 7 poses x
D = 96 in fp32 with 16 warps needs ~290 KB of shared memory in the whole-denoiser kernel and
would not launch. D > 256 would need a K-loop over the hidden size (not written).

The parameters travel as one flat buffer per block (:func:`pack_block_params`), offsets in
:func:`block_param_offsets`; the kernel recomputes the same offsets from D.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from engine.core.denoiser import GCNAttentionBlock as reference  # noqa: F401  (the eager module this matches)

from ._utils import (
    FP32_DOT_PRECISION,
    check_device,
    check_dot_dims,
    check_pow2,
    check_tensor,
    next_pow2,
    num_warps_for,
    pose_tile,
)

_MASKED = tl.constexpr(-1.0e30)   # score of masked keys (finite: a fully masked padding row stays finite)


def block_param_offsets(d: int) -> dict[str, tuple[int, tuple[int, ...]]]:
    """name -> (offset, shape) in the packed parameter buffer of one block; 7 D^2 + 11 D values."""
    shapes = [("ln1_w", (d,)), ("ln1_b", (d,)), ("qkv_w", (3 * d, d)), ("qkv_b", (3 * d,)),
              ("proj_w", (d, d)), ("proj_b", (d,)), ("ln2_w", (d,)), ("ln2_b", (d,)),
              ("gc1_w", (d, d)), ("gc1_b", (d,)), ("gc2_w", (d, d)), ("gc2_b", (d,)),
              ("temb_w", (d, d)), ("temb_b", (d,))]
    out, off = {}, 0
    for name, shape in shapes:
        out[name] = (off, shape)
        off += math.prod(shape)
    out["total"] = (off, ())
    return out


def pack_block_params(block: torch.nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """GCNAttentionBlock -> (7 D^2 + 11 D,) contiguous buffer in :func:`block_param_offsets` order."""
    src = {"ln1_w": block.norm1.weight, "ln1_b": block.norm1.bias,
           "qkv_w": block.attn.qkv.weight, "qkv_b": block.attn.qkv.bias,
           "proj_w": block.attn.proj.weight, "proj_b": block.attn.proj.bias,
           "ln2_w": block.norm2.weight, "ln2_b": block.norm2.bias,
           "gc1_w": block.gc1.linear.weight, "gc1_b": block.gc1.linear.bias,
           "gc2_w": block.gc2.linear.weight, "gc2_b": block.gc2.linear.bias,
           "temb_w": block.temb.weight, "temb_b": block.temb.bias}
    layout = block_param_offsets(block.norm1.normalized_shape[0])
    for name, t in src.items():
        if tuple(t.shape) != layout[name][1]:
            raise ValueError(f"block parameter {name} has shape {tuple(t.shape)}, expected {layout[name][1]}")
    return torch.cat([src[name].detach().reshape(-1) for name in src]).to(dtype).contiguous()


def block_constants(block: torch.nn.Module) -> tuple[torch.Tensor, float]:
    """The block's normalised adjacency (J, J) fp32 and LayerNorm eps, checked for consistency."""
    adj = block.gc1.adj
    if not torch.equal(adj, block.gc2.adj):
        raise ValueError("gc1 and gc2 of a block use different adjacencies; the kernel assumes one")
    if block.norm1.eps != block.norm2.eps:
        raise ValueError(f"norm1.eps {block.norm1.eps} != norm2.eps {block.norm2.eps}")
    return adj.detach().float().contiguous(), float(block.norm1.eps)


# ------------------------------------------------------------------------------------------------
@triton.jit
def _layer_norm(x, w_ptr, b_ptr, offs_d, mask_d, D: tl.constexpr, LN_EPS: tl.constexpr):
    # x: (BLOCK_M, BLOCK_D) fp32, zero in the padded channels; w_ptr, b_ptr: (D,)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask_d[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + LN_EPS)
    w = tl.load(w_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return xc * rstd[:, None] * w[None, :] + b[None, :]


@triton.jit
def _load_wt(w_ptr, row0, n_rows, n_cols: tl.constexpr, offs_k, offs_n):
    # W (n_rows_total, n_cols) row-major; returns W[row0 + n, k] as a (len(offs_k), len(offs_n)) tile
    ptrs = w_ptr + (row0 + offs_n)[None, :] * n_cols + offs_k[:, None]
    mask = (offs_k[:, None] < n_cols) & (offs_n[None, :] < n_rows)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def gcn_attention_block(
    x,          # (BLOCK_M, BLOCK_D) fp32 activations, zero in padded channels
    temb,       # (BLOCK_D,) step embedding shared by all rows, or (BLOCK_M, BLOCK_D) per joint-row
    p_ptr,      # (7 D^2 + 11 D,) packed block parameters, see block_param_offsets
    adj,        # (BLOCK_M, BLOCK_M) fp32 block-diagonal normalised adjacency (0 across poses / padding)
    attn_ok,    # (BLOCK_M, BLOCK_M) bool, query i may attend key j (same pose, valid key)
    offs_d, mask_d,
    D: tl.constexpr, H: tl.constexpr, HD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_HD: tl.constexpr, BLOCK_C: tl.constexpr,
    TEMB_SHARED: tl.constexpr, LN_EPS: tl.constexpr, SCALE: tl.constexpr,
    USE_FP16: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One GCNAttentionBlock on a pose tile; returns the new (BLOCK_M, BLOCK_D) fp32 tile."""
    # packed-parameter offsets (block_param_offsets)
    o_ln1b: tl.constexpr = D
    o_qkvw: tl.constexpr = 2 * D
    o_qkvb: tl.constexpr = o_qkvw + 3 * D * D
    o_projw: tl.constexpr = o_qkvb + 3 * D
    o_projb: tl.constexpr = o_projw + D * D
    o_ln2w: tl.constexpr = o_projb + D
    o_ln2b: tl.constexpr = o_ln2w + D
    o_gc1w: tl.constexpr = o_ln2b + D
    o_gc1b: tl.constexpr = o_gc1w + D * D
    o_gc2w: tl.constexpr = o_gc1b + D
    o_gc2b: tl.constexpr = o_gc2w + D * D
    o_tw: tl.constexpr = o_gc2b + D
    o_tb: tl.constexpr = o_tw + D * D
    dot_t = tl.float16 if USE_FP16 else tl.float32

    # ---- x = x + Attn(LN1 x) ------------------------------------------------------------------
    xn = _layer_norm(x, p_ptr, p_ptr + o_ln1b, offs_d, mask_d, D, LN_EPS).to(dot_t)
    offs_hd = tl.arange(0, BLOCK_HD)
    mask_hd = offs_hd < HD
    attn = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for h in tl.static_range(H):
        wq = _load_wt(p_ptr + o_qkvw, h * HD, HD, D, offs_d, offs_hd).to(dot_t)           # (BLOCK_D, BLOCK_HD)
        wk = _load_wt(p_ptr + o_qkvw, D + h * HD, HD, D, offs_d, offs_hd).to(dot_t)
        wv = _load_wt(p_ptr + o_qkvw, 2 * D + h * HD, HD, D, offs_d, offs_hd).to(dot_t)
        bq = tl.load(p_ptr + o_qkvb + h * HD + offs_hd, mask=mask_hd, other=0.0).to(tl.float32)
        bk = tl.load(p_ptr + o_qkvb + D + h * HD + offs_hd, mask=mask_hd, other=0.0).to(tl.float32)
        bv = tl.load(p_ptr + o_qkvb + 2 * D + h * HD + offs_hd, mask=mask_hd, other=0.0).to(tl.float32)
        q = tl.dot(xn, wq, input_precision=DOT_PREC) + bq[None, :]                         # (BLOCK_M, BLOCK_HD)
        k = tl.dot(xn, wk, input_precision=DOT_PREC) + bk[None, :]
        v = tl.dot(xn, wv, input_precision=DOT_PREC) + bv[None, :]
        s = tl.dot(q.to(dot_t), tl.trans(k.to(dot_t)), input_precision=DOT_PREC) * SCALE   # (BLOCK_M, BLOCK_M)
        s = tl.where(attn_ok, s, _MASKED)
        p = tl.exp(s - tl.max(s, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        o = tl.dot(p.to(dot_t), v.to(dot_t), input_precision=DOT_PREC)                    # (BLOCK_M, BLOCK_HD)
        # proj_w[c, h * HD + n] as a (BLOCK_HD, BLOCK_D) tile [n, c]
        wp_ptrs = p_ptr + o_projw + offs_d[None, :] * D + h * HD + offs_hd[:, None]
        wp = tl.load(wp_ptrs, mask=mask_hd[:, None] & mask_d[None, :], other=0.0).to(dot_t)
        attn += tl.dot(o.to(dot_t), wp, input_precision=DOT_PREC)
    bp = tl.load(p_ptr + o_projb + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    x = x + attn + bp[None, :]

    # ---- x = x + A (ReLU(A (LN2 x) W1^T + A b1) + temb W_t^T + b_t) W2^T + A b2 ----------------
    xn = _layer_norm(x, p_ptr + o_ln2w, p_ptr + o_ln2b, offs_d, mask_d, D, LN_EPS).to(dot_t)
    adj_t = adj.to(dot_t)
    offs_c = tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for c0 in tl.static_range(0, D, BLOCK_C):                     # hidden channels c0 .. c0 + BLOCK_C
        mask_c = (c0 + offs_c) < D
        w1 = _load_wt(p_ptr + o_gc1w, c0, D - c0, D, offs_d, offs_c).to(dot_t)            # (BLOCK_D, BLOCK_C)
        b1 = tl.load(p_ptr + o_gc1b + c0 + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        t = tl.dot(xn, w1, input_precision=DOT_PREC) + b1[None, :]                         # (BLOCK_M, BLOCK_C)
        g = tl.maximum(tl.dot(adj_t, t.to(dot_t), input_precision=DOT_PREC), 0.0)
        wt = _load_wt(p_ptr + o_tw, c0, D - c0, D, offs_d, offs_c)                          # (BLOCK_D, BLOCK_C)
        bt = tl.load(p_ptr + o_tb + c0 + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        if TEMB_SHARED:
            g += (tl.sum(temb[:, None] * wt.to(tl.float32), axis=0) + bt)[None, :]
        else:
            g += tl.dot(temb.to(dot_t), wt.to(dot_t), input_precision=DOT_PREC) + bt[None, :]
        # gc2_w[c, c0 + n] as a (BLOCK_C, BLOCK_D) tile [n, c]
        w2_ptrs = p_ptr + o_gc2w + offs_d[None, :] * D + c0 + offs_c[:, None]
        w2 = tl.load(w2_ptrs, mask=mask_c[:, None] & mask_d[None, :], other=0.0).to(dot_t)
        acc += tl.dot(g.to(dot_t), w2, input_precision=DOT_PREC)
    b2 = tl.load(p_ptr + o_gc2b + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return x + tl.dot(adj_t, (acc + b2[None, :]).to(dot_t), input_precision=DOT_PREC)


@triton.jit
def pose_tile_masks(pid, R, adj_ptr, J: tl.constexpr, ROWS: tl.constexpr, BLOCK_M: tl.constexpr):
    """Joint-row bookkeeping of a packed tile: pose index, joint index, validity, adjacency, attention mask."""
    offs_m = tl.arange(0, BLOCK_M)
    local = offs_m // J                                           # pose within the program
    joint = offs_m % J
    row = pid * ROWS + local                                      # (BLOCK_M,) int64 global pose index
    valid = (offs_m < ROWS * J) & (row < R)
    same = (local[:, None] == local[None, :]) & valid[:, None] & valid[None, :]
    adj = tl.load(adj_ptr + joint[:, None] * J + joint[None, :], mask=same, other=0.0)   # (BLOCK_M, BLOCK_M)
    attn_ok = (local[:, None] == local[None, :]) & valid[None, :]
    return row, joint, valid, adj, attn_ok


@triton.jit
def _denoiser_block_kernel(
    x_ptr,      # (R, J, D) input activations, fp32 or fp16
    temb_ptr,   # (R, D) step embedding (after the step MLP); row stride 0 when shared
    out_ptr,    # (R, J, D) output, dtype of x
    p_ptr,      # (7 D^2 + 11 D,) packed parameters, dtype of x, contiguous
    adj_ptr,    # (J, J) normalised adjacency, fp32, contiguous
    R,
    stride_xr, stride_xj, stride_xd,
    stride_tr, stride_td,
    stride_or, stride_oj, stride_od,
    J: tl.constexpr, D: tl.constexpr, H: tl.constexpr, HD: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_HD: tl.constexpr, BLOCK_C: tl.constexpr,
    TEMB_SHARED: tl.constexpr, LN_EPS: tl.constexpr, SCALE: tl.constexpr,
    USE_FP16: tl.constexpr, DOT_PREC: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row, joint, valid, adj, attn_ok = pose_tile_masks(pid, R, adj_ptr, J, ROWS, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    mask = valid[:, None] & mask_d[None, :]
    x = tl.load(x_ptr + row[:, None] * stride_xr + joint[:, None] * stride_xj + offs_d[None, :] * stride_xd,
                mask=mask, other=0.0).to(tl.float32)
    if TEMB_SHARED:
        temb = tl.load(temb_ptr + offs_d * stride_td, mask=mask_d, other=0.0).to(tl.float32)
    else:
        temb = tl.load(temb_ptr + row[:, None] * stride_tr + offs_d[None, :] * stride_td,
                       mask=mask, other=0.0).to(tl.float32)
    y = gcn_attention_block(x, temb, p_ptr, adj, attn_ok, offs_d, mask_d, D, H, HD, BLOCK_M, BLOCK_D,
                            BLOCK_HD, BLOCK_C, TEMB_SHARED, LN_EPS, SCALE, USE_FP16, DOT_PREC)
    tl.store(out_ptr + row[:, None] * stride_or + joint[:, None] * stride_oj + offs_d[None, :] * stride_od,
             y.to(out_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------
def block_settings(joints: int, dim: int, heads: int, rows_per_program: int = 3, block_c: int | None = None,
                   block_hd: int | None = None, block_m: int | None = None) -> dict[str, int]:
    """Tile sizes for one block, validated (power of two, padding covers the sizes, tl.dot >= 16).

    Defaults: BLOCK_M = next_pow2(J x rows_per_program), BLOCK_D = next_pow2(D),
    BLOCK_HD = next_pow2(max(16, D / H)), BLOCK_C = 32 (16 for D <= 16); overrides are checked.
    """
    if dim % heads:
        raise ValueError(f"hidden {dim} is not divisible by heads {heads}")
    hd = dim // heads
    default_m = pose_tile(joints, rows_per_program)       # also rejects rows_per_program < 1
    s = {"ROWS": rows_per_program, "BLOCK_M": default_m if block_m is None else block_m,
         "BLOCK_D": next_pow2(dim), "BLOCK_HD": max(16, next_pow2(hd)) if block_hd is None else block_hd,
         "BLOCK_C": min(32, max(16, next_pow2(dim))) if block_c is None else block_c}
    check_pow2(BLOCK_M=s["BLOCK_M"], BLOCK_D=s["BLOCK_D"], BLOCK_HD=s["BLOCK_HD"], BLOCK_C=s["BLOCK_C"])
    if s["BLOCK_M"] < joints * rows_per_program:
        raise ValueError(f"BLOCK_M {s['BLOCK_M']} < J {joints} x rows_per_program {rows_per_program}")
    if s["BLOCK_HD"] < hd:
        raise ValueError(f"BLOCK_HD {s['BLOCK_HD']} < head dim {hd}")
    check_dot_dims("GCN-attention block", BLOCK_M=s["BLOCK_M"], BLOCK_D=s["BLOCK_D"],
                   BLOCK_HD=s["BLOCK_HD"], BLOCK_C=s["BLOCK_C"])
    return s


def denoiser_block(x: torch.Tensor, temb: torch.Tensor, params: torch.Tensor, adj: torch.Tensor,
                   heads: int, ln_eps: float = 1e-5, rows_per_program: int = 3, block_c: int | None = None,
                   block_hd: int | None = None, block_m: int | None = None) -> torch.Tensor:
    """Fused :class:`engine.core.denoiser.GCNAttentionBlock` forward.

    Args:
        x: (R, J, D) activations, fp32 or fp16 (any strides).
        temb: (R, D) or (1, D) step embedding after the step MLP (the block's ``temb`` input);
            (1, D) (or row stride 0) is shared by all rows.
        params: (7 D^2 + 11 D,) :func:`pack_block_params` buffer, dtype of x, contiguous.
        adj: (J, J) normalised adjacency (``block.gc1.adj``), fp32, contiguous.
        heads: attention heads H (D % H == 0).
        rows_per_program: poses per program (J = 17: 1 / 3 / 7 fill a 32 / 64 / 128-row tile).
        block_c, block_hd, block_m: tile overrides (see :func:`block_settings`).
    Returns:
        (R, J, D) in the dtype of x; the math runs in fp32 (fp16 operands for tl.dot when x is fp16).
    """
    check_tensor("x", x, (None, None, None), (torch.float32, torch.float16))
    r, j, d = x.shape
    check_tensor("temb", temb, (None, d), (torch.float32, torch.float16))
    if temb.shape[0] not in (1, r):
        raise ValueError(f"temb has {temb.shape[0]} rows, expected 1 or R = {r}")
    check_tensor("params", params, (block_param_offsets(d)["total"][0],), (x.dtype,), contiguous=True)
    check_tensor("adj", adj, (j, j), (torch.float32,), contiguous=True)
    check_device(("x", x), ("temb", temb), ("params", params), ("adj", adj))
    if r == 0:
        raise ValueError("x has no rows")
    s = block_settings(j, d, heads, rows_per_program, block_c, block_hd, block_m)
    shared = temb.shape[0] == 1 or temb.stride(0) == 0
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    grid = (triton.cdiv(r, s["ROWS"]),)
    _denoiser_block_kernel[grid](
        x, temb, out, params, adj, r,
        *x.stride(), temb.stride(0), temb.stride(1), *out.stride(),
        J=j, D=d, H=heads, HD=d // heads, **s, TEMB_SHARED=shared, LN_EPS=ln_eps,
        SCALE=1.0 / math.sqrt(d // heads), USE_FP16=x.dtype == torch.float16, DOT_PREC=FP32_DOT_PRECISION,
        num_warps=num_warps_for(s["BLOCK_M"], s["BLOCK_D"]), num_stages=1)
    return out

"""STPG energy gradient dE/dh_0|k for all B x N hypotheses in one launch.

Eager reference: :func:`engine.core.guidance.stpg_grad` (imported below as ``reference``), the closed
form of the gradient of Eq. 16 with the root translation held fixed. One program per hypothesis
(b, n) keeps its J joints as three (BLOCK_J,) vectors and computes, in registers:

1. the closed-form root translation T (weighted normal equations, 3x3 adjugate solve with
   eps = ROOT_SOLVE_EPS on the diagonal: :func:`engine.core.camera.solve_root_translation`);
2. the reprojection term (Eq. 10) with confidences and the MIN_DEPTH clamp;
3. bone vectors and lengths through a one-hot incidence built from (child, parent) index
   vectors, the symmetry term (Eq. 12) through a one-hot (left, right) pair matrix;
4. the bone-length variance (Eqs. 13-14) over the masked history window (window bones are
   gathered straight from hist3d, (BLOCK_L, BLOCK_Q) per component);
5. the differential term (Eq. 15) against frame t-1.

:func:`stpg_grad_pose` is the per-pose device function; :mod:`kernels.ddim_update` calls it on
h_0|k computed in registers. Skeleton constants come from :func:`skeleton_indices`.
Where it stops working: J, Q, P <= a few hundred and L <= ~256 (all tiles are per-program).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.core import guidance as _eager
from engine.core.camera import ROOT_SOLVE_EPS
from engine.core.energies import ENERGY_KEYS
from engine.core.guidance import stpg_grad as reference  # noqa: F401  (the eager function this matches)

from ._utils import check_device, check_pow2, check_tensor, next_pow2

# the energies this kernel implements, in the order of its weight arguments lam_<key>
KERNEL_ENERGIES = ("p", "s", "b", "d")
if ENERGY_KEYS != KERNEL_ENERGIES:
    raise ImportError(f"kernels/stpg_grad.py implements the energies {KERNEL_ENERGIES}, but engine.core.energies "
                      f"lists {ENERGY_KEYS}: add the new energy's gradient to the kernel")

# Constants of the eager code, as constexpr globals (the only globals a compiled kernel may read).
EPS_PIX = tl.constexpr(_eager.EPS_PIX)
EPS_LEN = tl.constexpr(_eager.EPS_LEN)
MIN_DEPTH = tl.constexpr(_eager.MIN_DEPTH)
SOLVE_EPS = tl.constexpr(ROOT_SOLVE_EPS)   # engine.core.camera: added to the 3x3 diagonal of the root solve


def skeleton_indices(terms: torch.nn.Module) -> dict[str, torch.Tensor]:
    """SkeletonTerms -> int32 child/parent (Q,), left/right (P,) bone indices and fp32 weights (J,).

    Checks that incidence rows are exactly one +1 (child) and one -1 (parent), and symmetry rows
    one +1 (left bone) and one -1 (right bone): the kernel rebuilds both from these indices. Done
    once per model, so the launchers stay free of device syncs (CUDA-graph capturable).
    """
    def plus_minus(m: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        pos, neg = (m == 1).int(), (m == -1).int()
        if not (pos.sum(1) == 1).all() or not (neg.sum(1) == 1).all() or ((m != 0).sum(1) != 2).any():
            raise ValueError(f"{name} rows must hold exactly one +1 and one -1")
        return pos.argmax(1).int().contiguous(), neg.argmax(1).int().contiguous()

    child, parent = plus_minus(terms.incidence, "incidence")
    left, right = plus_minus(terms.symmetry, "symmetry")
    if terms.symmetry.shape[1] != terms.incidence.shape[0]:
        raise ValueError(f"symmetry has {terms.symmetry.shape[1]} bone columns, "
                         f"incidence {terms.incidence.shape[0]} bones")
    return {"child": child, "parent": parent, "left": left, "right": right,
            "joint_weights": terms.joint_weights.float().contiguous()}


# ------------------------------------------------------------------------------------------------
@triton.jit
def stpg_grad_pose(
    hx, hy, hz,                       # (BLOCK_J,) fp32 pose h_0|k (metres), any value beyond J
    b,                                # int64 video index of this hypothesis
    kp_ptr,                           # (B, J, 2) 2D keypoints, normalised screen units
    conf_ptr,                         # (B, J) confidences
    intr_ptr,                         # (B, 4) normalised [fx, fy, cx, cy]
    hist_ptr,                         # (B, L, J, 3) previous predictions, slot L-1 = frame t-1
    hmask_ptr,                        # (B, L) 1 where a history slot is a real frame
    child_ptr, parent_ptr,            # (Q,) int32 bone child / parent joints
    left_ptr, right_ptr,              # (P,) int32 left / right bone of each symmetric pair
    jw_ptr,                           # (J,) fp32 joint weights w_j
    s_kb, s_kj, s_kc, s_cb, s_cj, s_ib, s_ic,
    s_hb, s_hl, s_hj, s_hc, s_mb, s_ml,
    lam_p, lam_s, lam_b, lam_d,
    J: tl.constexpr, Q: tl.constexpr, P: tl.constexpr, L: tl.constexpr,
    BLOCK_J: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """dE/dh for one hypothesis: returns (gx, gy, gz), each (BLOCK_J,) fp32, zero beyond J."""
    offs_j = tl.arange(0, BLOCK_J)
    mj = offs_j < J
    kx = tl.load(kp_ptr + b * s_kb + offs_j * s_kj, mask=mj, other=0.0).to(tl.float32)
    ky = tl.load(kp_ptr + b * s_kb + offs_j * s_kj + s_kc, mask=mj, other=0.0).to(tl.float32)
    w = tl.load(conf_ptr + b * s_cb + offs_j * s_cj, mask=mj, other=0.0).to(tl.float32)
    fx = tl.load(intr_ptr + b * s_ib).to(tl.float32)
    fy = tl.load(intr_ptr + b * s_ib + s_ic).to(tl.float32)
    cx = tl.load(intr_ptr + b * s_ib + 2 * s_ic).to(tl.float32)
    cy = tl.load(intr_ptr + b * s_ib + 3 * s_ic).to(tl.float32)
    hx = tl.where(mj, hx, 0.0)
    hy = tl.where(mj, hy, 0.0)
    hz = tl.where(mj, hz, 0.0)

    # ---- 1. root translation: normal equations A T = r, solved by the adjugate ---------------
    u = (kx - cx) / fx
    v = (ky - cy) / fy
    sw = tl.sum(w, axis=0)
    su = tl.sum(w * u, axis=0)
    sv = tl.sum(w * v, axis=0)
    suu = tl.sum(w * (u * u + v * v), axis=0)
    rx = u * hz - hx
    ry = v * hz - hy
    r0 = tl.sum(w * rx, axis=0)
    r1 = tl.sum(w * ry, axis=0)
    r2 = -tl.sum(w * (u * rx + v * ry), axis=0)
    a00 = sw + SOLVE_EPS               # A = [[sw, 0, -su], [0, sw, -sv], [-su, -sv, suu]] + eps I
    a11 = sw + SOLVE_EPS
    a22 = suu + SOLVE_EPS
    a02 = -su
    a12 = -sv
    a20 = -su
    a21 = -sv
    c00 = a11 * a22 - a12 * a21        # cofactors (a01 = a10 = 0)
    c01 = a12 * a20
    c02 = -(a11 * a20)
    inv_det = 1.0 / (a00 * c00 + a02 * c02)
    tx = (c00 * r0 + (a02 * a21) * r1 + (-(a02 * a11)) * r2) * inv_det
    ty = (c01 * r0 + (a00 * a22 - a02 * a20) * r1 + (-(a00 * a12)) * r2) * inv_det
    tz = (c02 * r0 + (-(a00 * a21)) * r1 + (a00 * a11) * r2) * inv_det

    # ---- 2. reprojection (Eq. 10) ----------------------------------------------------------
    qx = hx + tx
    qy = hy + ty
    zc = hz + tz
    front = (zc > MIN_DEPTH).to(tl.float32)
    z = tl.maximum(zc, MIN_DEPTH)
    ex = qx / z * fx + cx - kx
    ey = qy / z * fy + cy - ky
    nrm = tl.sqrt(ex * ex + ey * ey + EPS_PIX * EPS_PIX)
    gfx = w * ex / nrm * lam_p * fx / z
    gfy = w * ey / nrm * lam_p * fy / z
    gx = gfx
    gy = gfy
    gz = -(gfx * qx + gfy * qy) / z * front

    # ---- 3. bones and symmetry (Eq. 12) ----------------------------------------------------
    offs_q = tl.arange(0, BLOCK_Q)
    mq = offs_q < Q
    child = tl.load(child_ptr + offs_q, mask=mq, other=-1)
    parent = tl.load(parent_ptr + offs_q, mask=mq, other=-1)
    inc = (offs_j[None, :] == child[:, None]).to(tl.float32) - (offs_j[None, :] == parent[:, None]).to(tl.float32)
    vx = tl.sum(inc * hx[None, :], axis=1)                                  # (BLOCK_Q,)
    vy = tl.sum(inc * hy[None, :], axis=1)
    vz = tl.sum(inc * hz[None, :], axis=1)
    length = tl.sqrt(vx * vx + vy * vy + vz * vz + EPS_LEN * EPS_LEN)
    offs_p = tl.arange(0, BLOCK_P)
    mp = offs_p < P
    left = tl.load(left_ptr + offs_p, mask=mp, other=-1)
    right = tl.load(right_ptr + offs_p, mask=mp, other=-1)
    sym = (offs_q[None, :] == left[:, None]).to(tl.float32) - (offs_q[None, :] == right[:, None]).to(tl.float32)
    delta = tl.sum(sym * length[None, :], axis=1)                           # (BLOCK_P,)
    g_len = lam_s * tl.sum(sym * (delta / tl.sqrt(delta * delta + EPS_LEN * EPS_LEN))[:, None], axis=0)

    # ---- 4. bone-length variance over the history window (Eqs. 13-14) ----------------------
    offs_l = tl.arange(0, BLOCK_L)
    ml = offs_l < L
    m = tl.load(hmask_ptr + b * s_mb + offs_l * s_ml, mask=ml, other=0.0).to(tl.float32)
    hb = hist_ptr + b * s_hb + offs_l[:, None] * s_hl
    mlq = ml[:, None] & mq[None, :]
    pc = hb + child[None, :] * s_hj
    pp = hb + parent[None, :] * s_hj
    wx = tl.load(pc, mask=mlq, other=0.0).to(tl.float32) - tl.load(pp, mask=mlq, other=0.0).to(tl.float32)
    wy = tl.load(pc + s_hc, mask=mlq, other=0.0).to(tl.float32) - tl.load(pp + s_hc, mask=mlq, other=0.0).to(tl.float32)
    wz = tl.load(pc + 2 * s_hc, mask=mlq, other=0.0).to(tl.float32) \
        - tl.load(pp + 2 * s_hc, mask=mlq, other=0.0).to(tl.float32)
    win = tl.sqrt(wx * wx + wy * wy + wz * wz + EPS_LEN * EPS_LEN)           # (BLOCK_L, BLOCK_Q)
    cnt = tl.sum(m, axis=0) + 1.0
    mean = (tl.sum(m[:, None] * win, axis=0) + length) / cnt                 # (BLOCK_Q,)
    d_win = win - mean[None, :]
    s_win = tl.sum(m[:, None] * d_win / tl.sqrt(d_win * d_win + EPS_LEN * EPS_LEN), axis=0)
    d_cur = length - mean
    s_cur = d_cur / tl.sqrt(d_cur * d_cur + EPS_LEN * EPS_LEN)
    g_var = (s_cur - (s_cur + s_win) / cnt) / cnt * (cnt >= 2.0).to(tl.float32)
    g_len = tl.where(mq, g_len + lam_b * g_var, 0.0)
    coef = g_len / length                                                   # dE/dvec = coef * vec
    gx += tl.sum(inc * (coef * vx)[:, None], axis=0)
    gy += tl.sum(inc * (coef * vy)[:, None], axis=0)
    gz += tl.sum(inc * (coef * vz)[:, None], axis=0)

    # ---- 5. differential term against frame t-1 (Eq. 15) -----------------------------------
    prev = hist_ptr + b * s_hb + (L - 1) * s_hl + offs_j * s_hj
    ok = tl.load(hmask_ptr + b * s_mb + (L - 1) * s_ml).to(tl.float32)
    wd = lam_d * 2.0 * tl.load(jw_ptr + offs_j, mask=mj, other=0.0) * ok
    gx += wd * (hx - tl.load(prev, mask=mj, other=0.0).to(tl.float32))
    gy += wd * (hy - tl.load(prev + s_hc, mask=mj, other=0.0).to(tl.float32))
    gz += wd * (hz - tl.load(prev + 2 * s_hc, mask=mj, other=0.0).to(tl.float32))
    return tl.where(mj, gx, 0.0), tl.where(mj, gy, 0.0), tl.where(mj, gz, 0.0)


@triton.jit
def _stpg_grad_kernel(
    h_ptr,                            # (B, N, J, 3) h_0|k, fp32
    g_ptr,                            # (B, N, J, 3) output dE/dh, fp32
    kp_ptr, conf_ptr, intr_ptr, hist_ptr, hmask_ptr,   # see stpg_grad_pose
    child_ptr, parent_ptr, left_ptr, right_ptr, jw_ptr,
    N,
    s_xb, s_xn, s_xj, s_xc,           # strides of h
    s_gb, s_gn, s_gj, s_gc,           # strides of g
    s_kb, s_kj, s_kc, s_cb, s_cj, s_ib, s_ic,
    s_hb, s_hl, s_hj, s_hc, s_mb, s_ml,
    lam_p, lam_s, lam_b, lam_d,
    J: tl.constexpr, Q: tl.constexpr, P: tl.constexpr, L: tl.constexpr,
    BLOCK_J: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)                # one hypothesis (b, n)
    b = pid // N
    n = pid % N
    offs_j = tl.arange(0, BLOCK_J)
    mj = offs_j < J
    hp = h_ptr + b * s_xb + n * s_xn + offs_j * s_xj
    hx = tl.load(hp, mask=mj, other=0.0)
    hy = tl.load(hp + s_xc, mask=mj, other=0.0)
    hz = tl.load(hp + 2 * s_xc, mask=mj, other=0.0)
    gx, gy, gz = stpg_grad_pose(hx, hy, hz, b, kp_ptr, conf_ptr, intr_ptr, hist_ptr, hmask_ptr,
                                child_ptr, parent_ptr, left_ptr, right_ptr, jw_ptr,
                                s_kb, s_kj, s_kc, s_cb, s_cj, s_ib, s_ic, s_hb, s_hl, s_hj, s_hc, s_mb, s_ml,
                                lam_p, lam_s, lam_b, lam_d, J, Q, P, L, BLOCK_J, BLOCK_Q, BLOCK_P, BLOCK_L)
    gp = g_ptr + b * s_gb + n * s_gn + offs_j * s_gj
    tl.store(gp, gx, mask=mj)
    tl.store(gp + s_gc, gy, mask=mj)
    tl.store(gp + 2 * s_gc, gz, mask=mj)


# ------------------------------------------------------------------------------------------------
def guidance_launch_args(gin, skel: dict[str, torch.Tensor], batch: int, joints: int) -> tuple[list, dict]:
    """Validate the energy conditions and turn them into (positional args, constexprs) of stpg_grad_pose.

    Metadata checks only (no device sync), so this can run inside CUDA-graph capture.
    """
    check_tensor("gin.kp2d", gin.kp2d, (batch, joints, 2))
    check_tensor("gin.conf", gin.conf, (batch, joints))
    check_tensor("gin.intr", gin.intr, (batch, 4))
    check_tensor("gin.hist3d", gin.hist3d, (batch, None, joints, 3))
    hist_len = gin.hist3d.shape[1]
    check_tensor("gin.hist_mask", gin.hist_mask, (batch, hist_len))
    q, p = skel["child"].numel(), skel["left"].numel()
    for name in ("child", "parent"):
        check_tensor(f"skeleton {name}", skel[name], (q,), (torch.int32,), contiguous=True)
    for name in ("left", "right"):
        check_tensor(f"skeleton {name}", skel[name], (p,), (torch.int32,), contiguous=True)
    check_tensor("skeleton joint_weights", skel["joint_weights"], (joints,), contiguous=True)
    if hist_len < 1:
        raise ValueError(f"gin.hist3d needs at least one history slot, got L = {hist_len}")
    blocks = {"BLOCK_J": next_pow2(joints), "BLOCK_Q": next_pow2(max(q, 1)),
              "BLOCK_P": next_pow2(max(p, 1)), "BLOCK_L": next_pow2(hist_len)}
    check_pow2(**blocks)
    args = [gin.kp2d, gin.conf, gin.intr, gin.hist3d, gin.hist_mask,
            skel["child"], skel["parent"], skel["left"], skel["right"], skel["joint_weights"]]
    strides = [*gin.kp2d.stride(), *gin.conf.stride(), *gin.intr.stride(), *gin.hist3d.stride(),
               *gin.hist_mask.stride()]
    return args + strides, {"J": joints, "Q": q, "P": p, "L": hist_len, **blocks}


def stpg_grad(h: torch.Tensor, gin, skel: dict[str, torch.Tensor], cfg) -> torch.Tensor:
    """dE/dh_0|k for every hypothesis, as :func:`engine.core.guidance.stpg_grad`.

    Args:
        h: (B, N, J, 3) fp32 clean estimates h_0|k, metres, root-relative (any strides).
        gin: :class:`engine.core.guidance.GuidanceInputs` (fp32; kp2d (B, J, 2), conf (B, J),
            intr (B, 4), hist3d (B, L, J, 3), hist_mask (B, L)).
        skel: :func:`skeleton_indices` of the model's SkeletonTerms.
        cfg: :class:`engine.core.config.GuidanceConfig` (its energy weights are used).
    Returns:
        (B, N, J, 3) fp32 gradient.
    """
    check_tensor("h", h, (None, None, None, 3))
    b, n, j, _ = h.shape
    if b * n == 0:
        raise ValueError(f"h has no hypotheses: shape {tuple(h.shape)}")
    args, meta = guidance_launch_args(gin, skel, b, j)
    check_device(("h", h), *((f"guidance arg {i}", t) for i, t in enumerate(args[:10])))
    g = torch.empty(b, n, j, 3, dtype=torch.float32, device=h.device)
    _stpg_grad_kernel[(b * n,)](
        h, g, *args[:10], n, *h.stride(), *g.stride(), *args[10:],
        *cfg.weights(), **meta,
        num_warps=1)
    return g

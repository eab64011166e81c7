"""One fused DDIM update: x0 prediction, STPG gradient, trust-region step and the DDIM next state.

Eager reference: the body of the step loop of :func:`engine.core.sampler.sample_frame` in guidance
mode ``x0`` (imported below as ``reference``), i.e. :func:`engine.core.diffusion.predict_x0`,
:func:`engine.core.guidance.stpg_grad`, :func:`engine.core.diffusion.ddim_next` and
:func:`engine.core.sampler.guidance_step`:

    x0   = mu + (x - mu - sqrt(1 - a_k) eps) / sqrt(a_k)
    h0   = init + scale * x0                          (metres)
    g    = dE/dh0                                     (kernels.stpg_grad.stpg_grad_pose)
    step = rho g * max_step / max(|rho g|_joint, max_step)
    x'   = mu + sqrt(a_next) (x0 - mu) + sqrt(1 - a_next) eps - step / scale

One program per hypothesis; x, eps and the result never leave registers between the four
stages, so a guided DDIM step costs this launch plus the denoiser's. With ``GUIDED`` false only
the two DDIM lines run (guidance disabled, rho = 0, or no conditions).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.core.sampler import sample_frame as reference  # noqa: F401  (the eager loop this step matches)

from ._utils import check_device, check_tensor, next_pow2
from .stpg_grad import KERNEL_ENERGIES, guidance_launch_args, stpg_grad_pose


@triton.jit
def _ddim_update_kernel(
    x_ptr,                            # (B, N, J, 3) state x_k (normalised residual), fp32
    eps_ptr,                          # (B, N, J, 3) predicted noise, fp32
    mu_ptr,                           # (J, 3) GMM mean, fp32, contiguous
    init_ptr,                         # (B, J, 3) context estimate, metres
    out_ptr,                          # (B, N, J, 3) x_{k-1}, fp32
    kp_ptr, conf_ptr, intr_ptr, hist_ptr, hmask_ptr,   # see stpg_grad_pose (unused if not GUIDED)
    child_ptr, parent_ptr, left_ptr, right_ptr, jw_ptr,
    N,
    s_xb, s_xn, s_xj, s_xc,
    s_eb, s_en, s_ej, s_ec,
    s_ib0, s_ij0, s_ic0,              # strides of init
    s_ob, s_on, s_oj, s_oc,
    s_kb, s_kj, s_kc, s_cb, s_cj, s_ib, s_ic,
    s_hb, s_hl, s_hj, s_hc, s_mb, s_ml,
    sq_1mak, sq_ak, sq_anext, sq_1manext,   # sqrt(1 - a_k), sqrt(a_k), sqrt(a_next), sqrt(1 - a_next)
    scale, rho, max_step,
    lam_p, lam_s, lam_b, lam_d,
    GUIDED: tl.constexpr,
    J: tl.constexpr, Q: tl.constexpr, P: tl.constexpr, L: tl.constexpr,
    BLOCK_J: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)                # one hypothesis (b, n)
    b = pid // N
    n = pid % N
    offs_j = tl.arange(0, BLOCK_J)
    mj = offs_j < J
    xp = x_ptr + b * s_xb + n * s_xn + offs_j * s_xj
    ep = eps_ptr + b * s_eb + n * s_en + offs_j * s_ej
    mp = mu_ptr + offs_j * 3
    mux = tl.load(mp, mask=mj, other=0.0)
    muy = tl.load(mp + 1, mask=mj, other=0.0)
    muz = tl.load(mp + 2, mask=mj, other=0.0)
    ex = tl.load(ep, mask=mj, other=0.0)
    ey = tl.load(ep + s_ec, mask=mj, other=0.0)
    ez = tl.load(ep + 2 * s_ec, mask=mj, other=0.0)
    x0x = mux + (tl.load(xp, mask=mj, other=0.0) - mux - sq_1mak * ex) / sq_ak          # Eq. 8
    x0y = muy + (tl.load(xp + s_xc, mask=mj, other=0.0) - muy - sq_1mak * ey) / sq_ak
    x0z = muz + (tl.load(xp + 2 * s_xc, mask=mj, other=0.0) - muz - sq_1mak * ez) / sq_ak
    nx = mux + sq_anext * (x0x - mux) + sq_1manext * ex                                  # DDIM, eta = 0
    ny = muy + sq_anext * (x0y - muy) + sq_1manext * ey
    nz = muz + sq_anext * (x0z - muz) + sq_1manext * ez
    if GUIDED:
        ip = init_ptr + b * s_ib0 + offs_j * s_ij0
        hx = tl.load(ip, mask=mj, other=0.0) + scale * x0x
        hy = tl.load(ip + s_ic0, mask=mj, other=0.0) + scale * x0y
        hz = tl.load(ip + 2 * s_ic0, mask=mj, other=0.0) + scale * x0z
        gx, gy, gz = stpg_grad_pose(hx, hy, hz, b, kp_ptr, conf_ptr, intr_ptr, hist_ptr, hmask_ptr,
                                    child_ptr, parent_ptr, left_ptr, right_ptr, jw_ptr,
                                    s_kb, s_kj, s_kc, s_cb, s_cj, s_ib, s_ic, s_hb, s_hl, s_hj, s_hc, s_mb, s_ml,
                                    lam_p, lam_s, lam_b, lam_d, J, Q, P, L, BLOCK_J, BLOCK_Q, BLOCK_P, BLOCK_L)
        sx = rho * gx
        sy = rho * gy
        sz = rho * gz
        shrink = max_step / tl.maximum(tl.sqrt(sx * sx + sy * sy + sz * sz), max_step)   # trust region
        nx = nx - sx * shrink / scale
        ny = ny - sy * shrink / scale
        nz = nz - sz * shrink / scale
    op = out_ptr + b * s_ob + n * s_on + offs_j * s_oj
    tl.store(op, nx, mask=mj)
    tl.store(op + s_oc, ny, mask=mj)
    tl.store(op + 2 * s_oc, nz, mask=mj)


def ddim_update(x: torch.Tensor, eps: torch.Tensor, mu: torch.Tensor, init3d: torch.Tensor,
                alpha_k: float, alpha_next: float, scale: float, guidance=None, gin=None,
                skel: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """x_{k-1} from x_k and the predicted noise, with the STPG step when ``guidance`` applies.

    Args:
        x, eps: (B, N, J, 3) fp32 state and predicted noise (any strides).
        mu: (J, 3) fp32 GMM mean (contiguous).
        init3d: (B, J, 3) fp32 context estimate, metres.
        alpha_k, alpha_next: alpha_bar at k and at the next visited step.
        scale: GMM residual scale (metres per unit of x).
        guidance: :class:`engine.core.config.GuidanceConfig`; guided when enabled, rho > 0 and gin given.
            Mode ``full`` is not fused (it differentiates through the denoiser): ValueError.
        gin, skel: energy conditions and :func:`kernels.stpg_grad.skeleton_indices`.
    Returns:
        (B, N, J, 3) fp32 x_{k-1}.
    """
    check_tensor("x", x, (None, None, None, 3))
    b, n, j, _ = x.shape
    if b * n == 0:
        raise ValueError(f"x has no hypotheses: shape {tuple(x.shape)}")
    check_tensor("eps", eps, (b, n, j, 3))
    check_tensor("mu", mu, (j, 3), contiguous=True)
    check_tensor("init3d", init3d, (b, j, 3))
    if not (0.0 < alpha_k <= 1.0 and 0.0 < alpha_next <= 1.0):
        raise ValueError(f"alphas must lie in (0, 1], got alpha_k={alpha_k}, alpha_next={alpha_next}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    guided = guidance is not None and guidance.enabled and gin is not None and guidance.rho > 0
    if guided and guidance.mode != "x0":
        raise ValueError(f"the fused update implements guidance mode 'x0' only, got {guidance.mode!r}")
    if guided:
        if skel is None:
            raise ValueError("guided update needs skel (kernels.stpg_grad.skeleton_indices)")
        gargs, meta = guidance_launch_args(gin, skel, b, j)
        lams = list(guidance.weights())
        step = [float(guidance.rho), float(guidance.max_step)]
        if step[1] <= 0:
            raise ValueError(f"guidance max_step must be positive for the trust region, got {step[1]}")
    else:   # placeholders: never dereferenced when GUIDED is false
        gargs = [x] * 10 + [0] * 13
        meta = {"J": j, "Q": 1, "P": 1, "L": 1, "BLOCK_J": next_pow2(j), "BLOCK_Q": 1, "BLOCK_P": 1, "BLOCK_L": 1}
        lams, step = [0.0] * len(KERNEL_ENERGIES), [0.0, 1.0]
    check_device(("x", x), ("eps", eps), ("mu", mu), ("init3d", init3d),
                 *((f"guidance arg {i}", t) for i, t in enumerate(gargs[:10])))
    out = torch.empty(b, n, j, 3, dtype=torch.float32, device=x.device)
    _ddim_update_kernel[(b * n,)](
        x, eps, mu, init3d, out, *gargs[:10], n,
        *x.stride(), *eps.stride(), *init3d.stride(), *out.stride(), *gargs[10:],
        (1 - alpha_k) ** 0.5, alpha_k ** 0.5, alpha_next ** 0.5, (1 - alpha_next) ** 0.5,
        float(scale), *step, *lams, GUIDED=guided, **meta, num_warps=1)
    return out

"""Spatial-Temporal Physical Guidance (STPG, paper section III-C): energies and their gradients.

Energy per hypothesis (Eq. 16): E = lambda_p L_p + lambda_s L_s + lambda_b L_b + lambda_d L_d,
evaluated on the clean estimate h_0|k (B, N, J, 3), metres, root-relative, camera orientation.

- L_p (Eq. 10): sum_j c_j ||R(h_j + T) - x_j||_2 in normalised screen units, c_j the 2D
  confidence. The root translation T is not taken from ground truth: it is solved in closed form
  from the 2D keypoints and the intrinsics (:func:`engine.core.camera.solve_root_translation`), per
  hypothesis, and held fixed when differentiating (T depends on h only through an algebraic
  least-squares fit; treating it as a constant keeps the gradient local and cheap). Projection is
  linear (no lens distortion): undistort 2D keypoints before lifting.
- L_s (Eq. 12): sum over left/right bone pairs of |len_left - len_right|.
- L_b (Eqs. 13-14): per bone, the mean absolute deviation of its length over the window made of
  the valid previously predicted frames (the HPIM history, up to L) and the current hypothesis.
- L_d (Eq. 15): sum_j w_j ||h_j - h_prev_j||^2 against the previous frame's prediction.
Absolute values and norms are smoothed, sqrt(x^2 + eps^2), so gradients exist everywhere.

:func:`stpg_energy` is the autograd reference; :func:`stpg_grad` computes the same gradient
in closed form with plain tensor ops (no autograd), which is what the ONNX graph, the C++ runner
and the Triton kernel reproduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .camera import solve_root_translation
from .config import GuidanceConfig
from .energies import ENERGY_KEYS
from .skeleton import Skeleton

EPS_PIX = 1e-4     # normalised screen units (~0.05 px at 1000 px)
EPS_LEN = 1e-4     # metres
MIN_DEPTH = 1e-3   # metres


@dataclass
class GuidanceInputs:
    """Per-frame conditions c of the energy, batched over B videos."""
    kp2d: torch.Tensor       # (B, J, 2) normalised screen units
    conf: torch.Tensor       # (B, J) weights of the reprojection term
    intr: torch.Tensor       # (B, 4) normalised [fx, fy, cx, cy]
    hist3d: torch.Tensor     # (B, L, J, 3) previous predictions, slot L-1 = frame t-1
    hist_mask: torch.Tensor  # (B, L) 1 where the slot holds a real frame


class SkeletonTerms(torch.nn.Module):
    """Constant matrices of the skeleton terms, as buffers so they follow the model's device.

    incidence (Q, J): +1 at a bone's child, -1 at its parent, so bone vectors = incidence @ h.
    symmetry (P, Q): +1 at the left bone, -1 at the right bone of each pair.
    joint_weights (J,): w_j of Eq. 15.
    """

    def __init__(self, skeleton: Skeleton):
        super().__init__()
        bones = skeleton.bones
        inc = torch.zeros(len(bones), skeleton.num_joints)
        for q, (p, c) in enumerate(bones):
            inc[q, c], inc[q, p] = 1.0, -1.0
        index = {b: q for q, b in enumerate(bones)}
        pairs = skeleton.symmetric_bone_pairs
        sym = torch.zeros(len(pairs), len(bones))
        for i, (left, right) in enumerate(pairs):
            sym[i, index[left]], sym[i, index[right]] = 1.0, -1.0
        self.register_buffer("incidence", inc, persistent=False)
        self.register_buffer("symmetry", sym, persistent=False)
        self.register_buffer("joint_weights", torch.tensor(skeleton.joint_weights), persistent=False)


def _smooth_abs(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt(x * x + eps * eps)


def bone_lengths(h: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
    """(..., J, 3) -> (..., Q)."""
    return _smooth_abs_norm(torch.einsum("qj,...jc->...qc", incidence, h), EPS_LEN)


def stpg_terms(h: torch.Tensor, c: GuidanceInputs, terms: SkeletonTerms) -> dict[str, torch.Tensor]:
    """The energies by key (:data:`engine.core.energies.ENERGIES`), each (B, N), differentiable
    w.r.t. h (T held fixed)."""
    b, n = h.shape[:2]
    kp = c.kp2d[:, None].expand(b, n, -1, -1)                               # (B, N, J, 2)
    conf = c.conf[:, None].expand(b, n, -1)
    intr = c.intr[:, None].expand(b, n, -1)
    with torch.no_grad():
        root = solve_root_translation(h.detach(), kp, intr, conf)           # (B, N, 3)
    q = h + root[:, :, None]
    z = q[..., 2:3].clamp_min(MIN_DEPTH)
    proj = q[..., :2] / z * intr[:, :, None, :2] + intr[:, :, None, 2:]
    l_p = (conf * _smooth_abs_norm(proj - kp, EPS_PIX)).sum(-1)

    lengths = bone_lengths(h, terms.incidence)                              # (B, N, Q)
    l_s = _smooth_abs(lengths @ terms.symmetry.T, EPS_LEN).sum(-1)

    win = bone_lengths(c.hist3d, terms.incidence)                           # (B, L, Q)
    m = c.hist_mask.to(h.dtype)
    cnt = m.sum(1) + 1                                                      # (B,)
    mean = ((m[:, :, None] * win).sum(1)[:, None] + lengths) / cnt[:, None, None]   # (B, N, Q)
    dev = (m[:, None, :, None] * _smooth_abs(win[:, None] - mean[:, :, None], EPS_LEN)).sum(2) \
        + _smooth_abs(lengths - mean, EPS_LEN)
    l_b = (dev / cnt[:, None, None]).sum(-1) * (cnt >= 2).to(h.dtype)[:, None]

    prev, prev_ok = c.hist3d[:, -1], c.hist_mask[:, -1].to(h.dtype)
    l_d = (terms.joint_weights * ((h - prev[:, None]) ** 2).sum(-1)).sum(-1) * prev_ok[:, None]
    return {"p": l_p, "s": l_s, "b": l_b, "d": l_d}


def _smooth_abs_norm(v: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt((v * v).sum(-1) + eps * eps)


def stpg_energy(h: torch.Tensor, c: GuidanceInputs, terms: SkeletonTerms, cfg: GuidanceConfig) -> torch.Tensor:
    """Eq. 16 per hypothesis: (B, N)."""
    t = stpg_terms(h, c, terms)
    return sum(w * t[key] for key, w in zip(ENERGY_KEYS, cfg.weights()))


def stpg_grad(h: torch.Tensor, c: GuidanceInputs, terms: SkeletonTerms, cfg: GuidanceConfig) -> torch.Tensor:
    """Closed-form gradient dE/dh, (B, N, J, 3); equals autograd of :func:`stpg_energy`."""
    b, n = h.shape[:2]
    kp = c.kp2d[:, None]                                                     # (B, 1, J, 2)
    conf = c.conf[:, None, :, None]                                          # (B, 1, J, 1)
    intr = c.intr[:, None, None, :]                                          # (B, 1, 1, 4)
    root = solve_root_translation(h, kp.expand(b, n, -1, -1), c.intr[:, None].expand(b, n, -1),
                                  c.conf[:, None].expand(b, n, -1))          # (B, N, 3)
    q = h + root[:, :, None]                                                 # (B, N, J, 3)
    zc = q[..., 2:3]
    front = (zc > MIN_DEPTH).to(h.dtype)
    z = zc.clamp_min(MIN_DEPTH)
    f = intr[..., :2]
    e = q[..., :2] / z * f + intr[..., 2:] - kp                              # (B, N, J, 2)
    ge = conf * e / torch.sqrt((e * e).sum(-1, keepdim=True) + EPS_PIX ** 2) * cfg.lambda_p   # dE/dproj
    gf = ge * f / z                                                          # (B, N, J, 2)
    gz = -(gf * q[..., :2]).sum(-1, keepdim=True) / z * front                # (B, N, J, 1)
    grad = torch.cat([gf, gz], -1)

    inc = terms.incidence                                                    # (Q, J)
    vec = torch.einsum("qj,bnjc->bnqc", inc, h)                              # (B, N, Q, 3)
    lengths = torch.sqrt((vec * vec).sum(-1) + EPS_LEN ** 2)                 # (B, N, Q)
    delta = lengths @ terms.symmetry.T                                       # (B, N, P)
    g_len = cfg.lambda_s * (delta / _smooth_abs(delta, EPS_LEN)) @ terms.symmetry

    win_vec = torch.einsum("qj,bljc->blqc", inc, c.hist3d)
    win = torch.sqrt((win_vec * win_vec).sum(-1) + EPS_LEN ** 2)             # (B, L, Q)
    m = c.hist_mask.to(h.dtype)
    cnt = (m.sum(1) + 1)[:, None, None]                                      # (B, 1, 1)
    mean = ((m[:, :, None] * win).sum(1)[:, None] + lengths) / cnt           # (B, N, Q)
    d_win = win[:, None] - mean[:, :, None]                                  # (B, N, L, Q)
    s_win = (m[:, None, :, None] * d_win / _smooth_abs(d_win, EPS_LEN)).sum(2)
    d_cur = lengths - mean
    s_cur = d_cur / _smooth_abs(d_cur, EPS_LEN)
    g_var = (s_cur - (s_cur + s_win) / cnt) / cnt * (cnt >= 2).to(h.dtype)
    g_len = g_len + cfg.lambda_b * g_var

    grad = grad + torch.einsum("bnq,bnqc,qj->bnjc", g_len, vec / lengths[..., None], inc)
    prev, prev_ok = c.hist3d[:, -1], c.hist_mask[:, -1].to(h.dtype)
    grad = grad + cfg.lambda_d * 2 * terms.joint_weights[:, None] * (h - prev[:, None]) * prev_ok[:, None, None, None]
    return grad

"""Evaluation metrics for 3D pose: MPJPE, P-MPJPE, N-MPJPE, MPJVE, ACC-ERR, PCK and AUC.

This module owns the definitions of every reported pose-error number (see
../shared/reference/anchors.md sections on Human3.6M and MPI-INF-3DHP protocols). It is torch-only:
inputs may be ``torch.Tensor`` or ``numpy.ndarray`` (converted with ``torch.as_tensor`` on entry)
and every metric returns a plain Python ``float`` whatever the input type, so results can be
logged, compared and serialised without caring where they came from. Gradients are not tracked.

Shapes: ``pred`` and ``gt`` must have identical shapes ``(..., T, J, 3)`` (or ``(N, J, 3)``, where
``N`` is treated as the frame axis by the temporal metrics), coordinates in millimetres. The number
of joints ``J`` is read from the input and never assumed. Spatial metrics need at least ``(J, 3)``;
temporal metrics (:func:`mpjve`, :func:`acc_err`) differentiate along axis ``-3`` and need at least
``(T, J, 3)``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "MPI_PCK_JOINTS_H36M",
    "mpjpe",
    "p_mpjpe",
    "n_mpjpe",
    "mpjve",
    "acc_err",
    "pck",
    "auc",
    "evaluate_all",
]

#: The 14 joints scored by PCK/AUC on MPI-INF-3DHP, as 0-based indices into the Human3.6M 17-joint
#: order (0 pelvis, 1 r_hip, 2 r_knee, 3 r_ankle, 4 l_hip, 5 l_knee, 6 l_ankle, 7 spine, 8 thorax,
#: 9 neck_nose, 10 head, 11 l_shoulder, 12 l_elbow, 13 l_wrist, 14 r_shoulder, 15 r_elbow,
#: 16 r_wrist). The official MPI-INF-3DHP evaluation (mpii_get_pck_auc_joint_groups.m) scores the
#: groups head(-top), neck, shoulders, elbows, wrists, hips, knees and ankles and excludes pelvis,
#: spine and the MPI "head" joint. Mapped onto the H36M layout these are head=10, thorax(neck)=8,
#: shoulders 11/14, elbows 12/15, wrists 13/16, hips 1/4, knees 2/5, ankles 3/6; excluded are
#: pelvis(0), spine(7) and neck_nose(9).
MPI_PCK_JOINTS_H36M: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)

_DEFAULT_AUC_THRESHOLDS = range(0, 151, 5)


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------
def _to_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _prepare(pred, gt, min_ndim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert, validate and cast ``pred``/``gt`` to a common floating dtype.

    Raises ``ValueError`` on mismatched shapes, a last dimension other than 3, too few
    dimensions, different devices or non-finite values.
    """
    p = _to_tensor(pred, "pred")
    g = _to_tensor(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred shape {tuple(p.shape)} does not match gt shape {tuple(g.shape)}")
    if p.ndim < min_ndim:
        raise ValueError(f"expected at least {min_ndim} dims (..., J, 3), got shape {tuple(p.shape)}")
    if p.shape[-1] != 3:
        raise ValueError(f"last dim must be 3 (x, y, z), got shape {tuple(p.shape)}")
    if p.shape[-2] == 0:
        raise ValueError(f"need at least one joint, got shape {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError(f"empty input of shape {tuple(p.shape)}")
    if p.device != g.device:
        raise ValueError(f"pred on {p.device} but gt on {g.device}")
    dtype = torch.promote_types(p.dtype, g.dtype)
    if not dtype.is_floating_point or dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float64 if not dtype.is_floating_point else torch.float32
    p, g = p.to(dtype), g.to(dtype)
    for name, t in (("pred", p), ("gt", g)):
        bad = ~torch.isfinite(t)
        n_bad = int(bad.sum())
        if n_bad:
            first = t[bad][0].item()
            raise ValueError(f"{name} of shape {tuple(t.shape)} contains {n_bad} non-finite "
                             f"value(s) (first: {first})")
    return p, g


def _check_frames(p: torch.Tensor, needed: int, metric: str) -> None:
    if p.ndim < 3:
        raise ValueError(f"{metric} needs a frame axis: expected (..., T, J, 3), "
                         f"got shape {tuple(p.shape)}")
    if p.shape[-3] < needed:
        raise ValueError(f"{metric} needs T >= {needed} frames along axis -3, "
                         f"got shape {tuple(p.shape)}")


def _mean_norm(diff: torch.Tensor) -> float:
    """Mean Euclidean norm over the last axis, accumulated in float64."""
    return torch.linalg.vector_norm(diff, dim=-1).double().mean().item()


def _joint_errors(pred, gt) -> torch.Tensor:
    p, g = _prepare(pred, gt)
    return torch.linalg.vector_norm(p - g, dim=-1)  # (..., J)


def _joint_index(joints: Sequence[int] | None, num_joints: int) -> list[int] | None:
    if joints is None:
        return None
    idx = [int(j) for j in joints]
    if not idx:
        raise ValueError("joints must be a non-empty sequence of joint indices")
    bad = [j for j in idx if not 0 <= j < num_joints]
    if bad:
        raise ValueError(f"joint indices {bad} out of range for {num_joints} joints")
    return idx


# ----------------------------------------------------------------------------------------------
# position metrics
# ----------------------------------------------------------------------------------------------
def mpjpe(pred, gt) -> float:
    """Mean per-joint position error (Protocol 1), in the input units (mm).

    ``pred``, ``gt``: ``(..., J, 3)``, typically ``(..., T, J, 3)`` or ``(N, J, 3)``.
    Returns ``mean ||pred - gt||_2`` over every frame and joint, as a Python float.
    """
    p, g = _prepare(pred, gt)
    return _mean_norm(p - g)


def _procrustes_align(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Align each ``(J, 3)`` pose of ``p`` to ``g`` with a proper similarity transform.

    ``p``, ``g``: ``(..., J, 3)``. Returns aligned ``p`` of the same shape. VideoPose3D's
    ``p_mpjpe``: X = gt, Y = pred, both centred and divided by their Frobenius norms,
    ``H = X0^T Y0 = U S V^T``, ``R = V U^T``; if ``det R < 0`` the last column of V and the last
    singular value are negated (no reflections), ``a = trace(S) normX / normY``,
    ``t = muX - a muY R``, aligned = ``a Y R + t``.
    """
    mu_x = g.mean(dim=-2, keepdim=True)
    mu_y = p.mean(dim=-2, keepdim=True)
    x0 = g - mu_x
    y0 = p - mu_y
    tiny = torch.finfo(p.dtype).tiny
    norm_x = torch.linalg.vector_norm(x0, dim=(-2, -1), keepdim=True)
    norm_y = torch.linalg.vector_norm(y0, dim=(-2, -1), keepdim=True)
    # A degenerate pose (all joints coincide) has norm 0; clamping makes its Y0 zero, hence
    # S = 0, a = 0 and aligned = muX, the correct optimum, instead of NaN.
    x0 = x0 / norm_x.clamp_min(tiny)
    y0 = y0 / norm_y.clamp_min(tiny)

    h = x0.transpose(-2, -1) @ y0                          # (..., 3, 3)
    u, s, vh = torch.linalg.svd(h)
    v = vh.transpose(-2, -1)
    r = v @ u.transpose(-2, -1)
    sign = torch.where(torch.linalg.det(r) < 0, -1.0, 1.0).to(p.dtype)  # (...)
    v = torch.cat([v[..., :, :-1], v[..., :, -1:] * sign[..., None, None]], dim=-1)
    s = torch.cat([s[..., :-1], s[..., -1:] * sign[..., None]], dim=-1)
    r = v @ u.transpose(-2, -1)                            # proper rotation

    a = s.sum(dim=-1)[..., None, None] * norm_x / norm_y.clamp_min(tiny)
    t = mu_x - a * (mu_y @ r)
    return a * (p @ r) + t


def p_mpjpe(pred, gt) -> float:
    """Procrustes-aligned MPJPE (Protocol 2), in mm.

    ``pred``, ``gt``: ``(..., J, 3)``. Every ``(J, 3)`` pose of ``pred`` is aligned to the matching
    ``gt`` pose by the best rotation (reflections excluded), uniform scale and translation
    (VideoPose3D's definition), then MPJPE is taken over all frames and joints. Python float.
    """
    p, g = _prepare(pred, gt)
    return _mean_norm(_procrustes_align(p, g) - g)


def n_mpjpe(pred, gt) -> float:
    """Scale-normalised MPJPE (Protocol 3), in mm.

    ``pred``, ``gt``: ``(..., J, 3)``. Per pose, ``s = sum(gt * pred) / sum(pred * pred)`` over
    joints and coordinates (the least-squares scale), then MPJPE of ``s * pred`` vs ``gt``.
    A pose of ``pred`` that is all zeros gets ``s = 0``. Python float.
    """
    p, g = _prepare(pred, gt)
    num = (g * p).sum(dim=(-2, -1), keepdim=True)
    den = (p * p).sum(dim=(-2, -1), keepdim=True)
    scale = num / den.clamp_min(torch.finfo(p.dtype).tiny)
    return _mean_norm(scale * p - g)


# ----------------------------------------------------------------------------------------------
# temporal metrics
# ----------------------------------------------------------------------------------------------
def mpjve(pred, gt) -> float:
    """Mean per-joint velocity error, in mm per frame.

    ``pred``, ``gt``: ``(..., T, J, 3)`` with ``T >= 2`` (frames on axis -3; ``(N, J, 3)`` treats N
    as frames). Returns the mean over ``t, j`` (and batch) of
    ``||(P[t+1] - P[t]) - (G[t+1] - G[t])||``. Raises ``ValueError`` if ``T < 2``.
    """
    p, g = _prepare(pred, gt, min_ndim=3)
    _check_frames(p, 2, "mpjve")
    return _mean_norm(torch.diff(p - g, dim=-3))


def acc_err(pred, gt) -> float:
    """Mean per-joint acceleration error, in mm per frame^2.

    ``pred``, ``gt``: ``(..., T, J, 3)`` with ``T >= 3``. Returns the mean over ``t, j`` (and
    batch) of ``||(P[t-1] - 2P[t] + P[t+1]) - (G[t-1] - 2G[t] + G[t+1])||``. Raises
    ``ValueError`` if ``T < 3``.
    """
    p, g = _prepare(pred, gt, min_ndim=3)
    _check_frames(p, 3, "acc_err")
    return _mean_norm(torch.diff(p - g, n=2, dim=-3))


# ----------------------------------------------------------------------------------------------
# MPI-INF-3DHP metrics
# ----------------------------------------------------------------------------------------------
def pck(pred, gt, threshold: float = 150.0, joints: Sequence[int] | None = None) -> float:
    """Percentage of correct keypoints, in [0, 100].

    ``pred``, ``gt``: ``(..., J, 3)``. A joint is correct when its Euclidean error is strictly
    below ``threshold`` (mm). ``joints``: optional joint indices to score (e.g.
    :data:`MPI_PCK_JOINTS_H36M`); default all joints. Python float.
    """
    err = _joint_errors(pred, gt)
    idx = _joint_index(joints, err.shape[-1])
    if idx is not None:
        err = err[..., idx]
    return 100.0 * (err < float(threshold)).double().mean().item()


def auc(pred, gt, thresholds: Iterable[float] = _DEFAULT_AUC_THRESHOLDS,
        joints: Sequence[int] | None = None) -> float:
    """Area under the PCK curve, in [0, 100] (MPI-INF-3DHP convention).

    ``pred``, ``gt``: ``(..., J, 3)``. ``100 * mean_k PCK_fraction(thresholds[k])`` with the
    strict ``<`` of :func:`pck`; the default thresholds are 0, 5, ..., 150 mm (31 values, 0
    included, so an error of exactly 0 still scores 30/31). ``joints`` as in :func:`pck`.
    """
    thr = [float(t) for t in thresholds]
    if not thr:
        raise ValueError("thresholds must be non-empty")
    err = _joint_errors(pred, gt)
    idx = _joint_index(joints, err.shape[-1])
    if idx is not None:
        err = err[..., idx]
    thr_t = torch.tensor(thr, dtype=err.dtype, device=err.device)
    frac = (err.reshape(1, -1) < thr_t[:, None]).double().mean(dim=1)  # (K,)
    return 100.0 * frac.mean().item()


def evaluate_all(pred, gt) -> dict[str, float]:
    """All Human3.6M-style metrics at once.

    ``pred``, ``gt``: ``(..., T, J, 3)`` or ``(N, J, 3)``. Returns a dict with ``mpjpe``,
    ``p_mpjpe``, ``n_mpjpe`` always, ``mpjve`` only when there is a frame axis with ``T >= 2`` and
    ``acc_err`` only when ``T >= 3``; a metric that cannot be computed is omitted, never NaN.
    """
    p, g = _prepare(pred, gt)
    out = {"mpjpe": mpjpe(p, g), "p_mpjpe": p_mpjpe(p, g), "n_mpjpe": n_mpjpe(p, g)}
    frames = p.shape[-3] if p.ndim >= 3 else 0
    if frames >= 2:
        out["mpjve"] = mpjve(p, g)
    if frames >= 3:
        out["acc_err"] = acc_err(p, g)
    return out

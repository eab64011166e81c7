"""Unknown cameras: the focal length from 2D keypoints + predicted 3D, and the root trajectory.

Root trajectory (:func:`root_trajectory`): per frame, the camera-frame position of the pelvis that
best reprojects the root-relative 3D pose onto the 2D keypoints, in closed form
(:func:`engine.core.camera.solve_root_translation`, weighted by the 2D confidences; joints filled in
for missing detections have confidence 0 and so are given a token weight 1e-3, which only
matters in a frame where every joint was filled).

Focal length (:func:`estimate_focal`): with square pixels (fx = fy = f) and the principal point at
the image centre, f minimises the confidence-weighted squared pixel reprojection error
``E(f) = sum_t sum_j c_tj || pi_f(P_tj + T_t(f)) - x_tj ||^2`` where ``T_t(f)`` is the closed-form
root for that f. E is evaluated on a log-spaced grid f / max(W, H) in [0.25, 4] (41 values), then
refined by golden-section search (in log f) around the best grid point; at most 2000 frames,
evenly spaced, enter the sum.

Caveat: a pose of known metric size fixes only f / depth under weak perspective; f itself shows
only through perspective effects (depth differences within the body, changes of distance over the
clip), so the estimate is reliable only when those are visible and the 3D is accurate. The
estimate is therefore *used* only when it explains the 2D clearly better than the default
(Human3.6M ratio f = 1.145 max(W, H)): ``E(f_default) > (1 + rel_tol) * E(f_best)``, rel_tol = 5 %;
otherwise the default is kept and reported as such.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import H36M_FOCAL_RATIO, Intrinsics, solve_root_translation

MIN_WEIGHT = 1e-3
MIN_DEPTH_M = 0.05


def _weights(conf: np.ndarray | None, shape) -> torch.Tensor:
    if conf is None:
        return torch.ones(shape, dtype=torch.float64)
    return torch.as_tensor(np.clip(np.asarray(conf, np.float64), MIN_WEIGHT, 1.0))


ROOT_CHUNK = 4096      # frames per block of the root solve: a bounded float64 working set


def root_trajectory(poses_m: np.ndarray, keypoints_px: np.ndarray, intr: Intrinsics,
                    conf: np.ndarray | None = None) -> np.ndarray:
    """(T, J, 3) root-relative metres + (T, J, 2) pixels -> (T, 3) camera-frame root, metres.

    Solved per frame, so in blocks of :data:`ROOT_CHUNK` frames (memory independent of T)."""
    k = torch.tensor([intr.fx, intr.fy, intr.cx, intr.cy], dtype=torch.float64)
    out = np.empty((len(poses_m), 3), np.float64)
    for a in range(0, len(poses_m), ROOT_CHUNK):
        b = a + ROOT_CHUNK
        rel = torch.as_tensor(np.asarray(poses_m[a:b], np.float64))                 # (t, J, 3)
        kp = torch.as_tensor(np.asarray(keypoints_px[a:b, :, :2], np.float64))     # (t, J, 2)
        w = _weights(None if conf is None else conf[a:b], kp.shape[:-1])
        out[a:b] = solve_root_translation(rel, kp, k, w, eps=1e-9).numpy()
    return out


def reprojection_error(poses_m, keypoints_px, intr: Intrinsics, conf=None) -> float:
    """Mean confidence-weighted squared pixel error with the closed-form root (see module doc)."""
    rel = torch.as_tensor(np.asarray(poses_m, np.float64))
    kp = torch.as_tensor(np.asarray(keypoints_px, np.float64)[..., :2])
    w = _weights(conf, kp.shape[:-1])
    k = torch.tensor([intr.fx, intr.fy, intr.cx, intr.cy], dtype=torch.float64)
    root = solve_root_translation(rel, kp, k, w, eps=1e-9)
    q = rel + root[..., None, :]
    z = q[..., 2:3].clamp_min(MIN_DEPTH_M)
    proj = q[..., :2] / z * k[:2] + k[2:]
    err = ((proj - kp) ** 2).sum(-1)
    return float((w * err).sum() / w.sum())


@dataclass(frozen=True)
class FocalEstimate:
    focal_px: float           # the focal length to use (estimate, or the default when inconclusive)
    estimated_px: float       # the argmin of E(f)
    default_px: float
    used_estimate: bool
    error_px: float           # RMS reprojection error at focal_px
    error_default_px: float   # ... at the default


def estimate_focal(poses_m: np.ndarray, keypoints_px: np.ndarray, width: int, height: int,
                   conf: np.ndarray | None = None, rel_tol: float = 0.05, max_frames: int = 2000,
                   ratio_range: tuple[float, float] = (0.25, 4.0)) -> FocalEstimate:
    frames = len(poses_m)
    idx = np.linspace(0, frames - 1, max_frames).round().astype(int) if frames > max_frames else slice(None)
    poses = np.asarray(poses_m[idx], np.float64)                # subsampled first: bounded memory
    kp = np.asarray(keypoints_px[idx], np.float64)[..., :2]
    c = None if conf is None else np.asarray(conf[idx], np.float64)
    size = float(max(width, height))
    cx, cy = width / 2.0, height / 2.0

    def err(f: float) -> float:
        return reprojection_error(poses, kp, Intrinsics(f, f, cx, cy, int(width), int(height)), c)

    grid = np.geomspace(ratio_range[0], ratio_range[1], 41) * size
    errs = np.array([err(f) for f in grid])
    i = int(np.argmin(errs))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    ea, eb = err(np.exp(a)), err(np.exp(b))
    for _ in range(30):
        if ea < eb:
            hi, b, eb = b, a, ea
            a = hi - g * (hi - lo)
            ea = err(np.exp(a))
        else:
            lo, a, ea = a, b, eb
            b = lo + g * (hi - lo)
            eb = err(np.exp(b))
    cands = [(errs[i], grid[i]), (ea, np.exp(a)), (eb, np.exp(b))]
    e_best, f_best = min(cands)
    f_def = H36M_FOCAL_RATIO * size
    e_def = err(f_def)
    use = bool(e_def > (1 + rel_tol) * e_best)
    return FocalEstimate(float(f_best if use else f_def), float(f_best), float(f_def), use,
                         float(np.sqrt(e_best if use else e_def)), float(np.sqrt(e_def)))

"""Operations along time: filling missing joints, and resampling between frame rates.

Missing joints (:func:`fill_missing`). A joint is missing in a frame when its coordinates are NaN
(see :func:`engine.front.io.check_keypoints`: a missing joint has NaN in both x and y) or, when a
threshold is given, when its confidence is below it. Each joint is filled on its own, by linear
interpolation in time between the nearest frames where it is valid; before its first and after its
last valid frame it holds the nearest valid position (no extrapolation). A frame in which no joint
is valid is therefore filled from its neighbours. A joint that is never valid in the clip is copied,
frame by frame, from the nearest joint along the skeleton (breadth-first over the bones) that is.
Every filled joint gets confidence 0, so the reprojection energy of the physics guidance (and the
``reproj`` aggregation) ignores it; the context encoder sees the interpolated position. A clip with
no valid joint at all is an error.

Frame rates (:func:`resample`): linear interpolation between the two nearest source frames;
times outside the source span take the nearest frame. ``frames_at_rate`` gives how many frames
a clip of T frames at ``src`` Hz has at ``dst`` Hz over the same time span.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ..core.errors import InputError


def fill_missing(keypoints: np.ndarray, conf_threshold: float | None = None,
                 parents: tuple[int, ...] | None = None, where: str = "keypoints") -> tuple[np.ndarray, np.ndarray]:
    """Fill missing joints of (T, J, 3) keypoints (x, y, confidence; NaN xy = missing).

    Returns the filled float32 array (finite everywhere) and the (T, J) bool mask of filled joints.
    """
    kp = np.array(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] != 3:
        raise ValueError(f"expected (T, J, 3) keypoints with confidence, got {kp.shape}")
    t_len, j_len = kp.shape[:2]
    missing = np.isnan(kp[..., :2]).any(-1) | np.isnan(kp[..., 2])
    if conf_threshold is not None:
        with np.errstate(invalid="ignore"):
            missing |= kp[..., 2] < conf_threshold
    if missing.all():
        why = f" (no confidence reaches --conf-threshold {conf_threshold:g})" if conf_threshold else ""
        raise InputError(f"{where}: no valid joint in any frame{why}")
    if not missing.any():
        return kp.astype(np.float32), missing
    times = np.arange(t_len, dtype=np.float64)
    never = []
    for j in range(j_len):
        ok = ~missing[:, j]
        if not ok.any():
            never.append(j)
            continue
        if ok.all():
            continue
        for c in range(2):
            kp[:, j, c] = np.interp(times, times[ok], kp[ok, j, c])
    if never:
        donors = _nearest_valid_joints(never, [j for j in range(j_len) if j not in never], parents, j_len)
        for j in never:
            kp[:, j, :2] = kp[:, donors[j], :2]
    kp[..., 2] = np.where(missing, 0.0, kp[..., 2])
    return kp.astype(np.float32), missing


def _nearest_valid_joints(targets, sources, parents, j_len) -> dict[int, int]:
    if parents is None:
        from ..core.skeleton import H36M17
        parents = H36M17.parents if j_len == H36M17.num_joints else None
    if parents is None:                       # no skeleton known: the lowest valid index
        return {j: sources[0] for j in targets}
    adj: dict[int, list[int]] = {j: [] for j in range(j_len)}
    for c, p in enumerate(parents):
        if p >= 0:
            adj[c].append(p)
            adj[p].append(c)
    ok = set(sources)
    out = {}
    for j in targets:
        seen, queue = {j}, deque([j])
        while queue:
            k = queue.popleft()
            if k in ok:
                out[j] = k
                break
            for n in sorted(adj[k]):
                if n not in seen:
                    seen.add(n)
                    queue.append(n)
    return out


def frames_at_rate(frames: int, src_fps: float, dst_fps: float) -> int:
    """Frames at ``dst_fps`` covering the span [0, (frames - 1) / src_fps] (at least 1)."""
    span = (frames - 1) / src_fps
    return int(np.floor(span * dst_fps + 1e-9)) + 1


def resample(x: np.ndarray, src_fps: float, dst_fps: float, frames: int | None = None) -> np.ndarray:
    """Linear resampling along axis 0 from ``src_fps`` to ``dst_fps``.

    Output frame i sits at time i / dst_fps; ``frames`` (default :func:`frames_at_rate`) sets
    how many. Returns float32.
    """
    x = np.asarray(x, dtype=np.float64)
    if not (np.isfinite(src_fps) and np.isfinite(dst_fps) and src_fps > 0 and dst_fps > 0):
        raise ValueError(f"frame rates must be positive and finite, got {src_fps}, {dst_fps}")
    n = frames if frames is not None else frames_at_rate(x.shape[0], src_fps, dst_fps)
    pos = np.arange(n, dtype=np.float64) * (src_fps / dst_fps)        # in source frames
    pos = np.clip(pos, 0, x.shape[0] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[0] - 1)
    w = (pos - lo).reshape(-1, *([1] * (x.ndim - 1)))
    return ((1 - w) * x[lo] + w * x[hi]).astype(np.float32)

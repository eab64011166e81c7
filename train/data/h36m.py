"""Human3.6M in the VideoPose3D npz format (anchors.md section 5.2).

* ``data_3d_h36m.npz``: ``positions_3d`` -> {subject: {action: (T, 32, 3) float32 metres, world}}.
  The 32 mocap joints are reduced to the 17 of :data:`engine.core.skeleton.H36M17` by keeping
  :data:`H36M32_TO_17` and converted to millimetres, then to each camera's frame with
  ``X_cam = qrot(q^-1, X_world - translation)`` (table in :mod:`train.data.h36m_cameras`).
* ``data_2d_h36m_*.npz``: ``positions_2d`` -> {subject: {action: [4 x (T2, 17, 2) px]}}, cameras in
  the order 54138969, 55011271, 58860488, 60457274. Detector files (e.g. CPN) may be longer than
  the mocap: both are truncated to the shorter length (VideoPose3D truncates the 2D).

Missing subjects, actions (S11 'Directions' is absent from the real data) or camera entries are
skipped silently. The clip intrinsics include the lens distortion (k1, k2, k3, p1, p2).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine.core.skeleton import H36M17, Skeleton

from .clip import Clip
from .h36m_cameras import H36M_CAMERAS, H36M_EXTRINSICS, H36M_FPS, H36M_TEST, H36M_TRAIN, camera_index

__all__ = ["H36M32_TO_17", "H36M_TRAIN", "H36M_TEST", "load_h36m", "world_to_camera", "qrot"]

#: Indices into the 32 original Human3.6M joints that form the 17-joint layout (anchors 5.1).
H36M32_TO_17: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v (..., 3) by the unit quaternion q (4,) = (w, x, y, z) (VideoPose3D's qrot)."""
    q = np.asarray(q, dtype=np.float64)
    qvec = np.broadcast_to(q[1:], v.shape)
    uv = np.cross(qvec, v)
    uuv = np.cross(qvec, uv)
    return v + 2 * (q[0] * uv + uuv)


def world_to_camera(x_world: np.ndarray, orientation, translation) -> np.ndarray:
    """``qrot(q^-1, X - t)``: world (..., 3) -> camera frame, same unit as ``translation``."""
    q = np.asarray(orientation, dtype=np.float64)
    q = q / np.linalg.norm(q)
    q_inv = q * np.array([1.0, -1.0, -1.0, -1.0])
    return qrot(q_inv, np.asarray(x_world, dtype=np.float64) - np.asarray(translation, dtype=np.float64))


def _load_dict(path: str | Path, key: str) -> dict:
    with np.load(path, allow_pickle=True) as d:
        if key not in d.files:
            raise KeyError(f"{path}: no key {key!r} (keys: {d.files})")
        obj = d[key]
    return obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object else obj


def load_h36m(path_3d: str | Path, path_2d: str | Path, subjects: Iterable[str] = H36M_TRAIN,
              skeleton: Skeleton = H36M17, cameras: Iterable[int | str] | None = None,
              distortion: bool = True) -> list[Clip]:
    """One :class:`Clip` per (subject, action, camera) with camera-frame 3D in mm.

    Args:
        path_3d: ``data_3d_h36m.npz``.
        path_2d: a ``data_2d_h36m_*.npz`` (ground truth or detections).
        subjects: e.g. :data:`H36M_TRAIN` (S1, S5, S6, S7, S8) or :data:`H36M_TEST` (S9, S11).
        skeleton: must have 17 joints (the 32 -> 17 reduction is Human3.6M-17 specific).
        cameras: camera indices 0..3 or ids; default all four.
        distortion: keep the lens distortion in the clip intrinsics.
    Returns:
        Clips named ``"<subject>/<action>/<camera id>"`` with ``action`` set, fps 50.
    """
    if skeleton.num_joints != len(H36M32_TO_17):
        raise ValueError(f"load_h36m reduces to {len(H36M32_TO_17)} joints; skeleton "
                         f"{skeleton.name} has {skeleton.num_joints}")
    if isinstance(subjects, str):
        subjects = [subjects]
    cam_idx = list(range(len(H36M_CAMERAS))) if cameras is None else \
        [camera_index(c) for c in ([cameras] if isinstance(cameras, (int, str)) else cameras)]
    pos3d = _load_dict(path_3d, "positions_3d")
    pos2d = _load_dict(path_2d, "positions_2d")
    keep = np.asarray(H36M32_TO_17)
    out: list[Clip] = []
    for subject in subjects:
        if subject not in pos3d or subject not in pos2d or subject not in H36M_EXTRINSICS:
            continue
        for action in sorted(pos3d[subject]):
            kps = pos2d[subject].get(action)
            if kps is None:
                continue
            world = np.asarray(pos3d[subject][action], dtype=np.float64)
            if world.ndim != 3 or world.shape[-1] != 3:
                raise ValueError(f"{path_3d}: {subject}/{action} has shape {world.shape}, expected (T, 32, 3)")
            if world.shape[1] == 32:
                world = world[:, keep]
            elif world.shape[1] != skeleton.num_joints:
                raise ValueError(f"{path_3d}: {subject}/{action} has {world.shape[1]} joints, expected 32 or 17")
            world_mm = world * 1000.0
            for c in cam_idx:
                if c >= len(kps) or kps[c] is None:
                    continue
                kp = np.asarray(kps[c], dtype=np.float32)
                if kp.ndim != 3 or kp.shape[1:] != (skeleton.num_joints, 2):
                    raise ValueError(f"{path_2d}: {subject}/{action} camera {c} has shape {kp.shape}, "
                                     f"expected (T, {skeleton.num_joints}, 2)")
                n = min(len(kp), len(world_mm))
                if n == 0:
                    continue
                ext = H36M_EXTRINSICS[subject][c]
                cam = world_to_camera(world_mm[:n], ext.orientation, ext.translation)
                cam_info = H36M_CAMERAS[c]
                out.append(Clip(name=f"{subject}/{action}/{cam_info.id}", subject=subject,
                                keypoints_2d=kp[:n], positions_3d=cam.astype(np.float32),
                                intrinsics=cam_info.to_intrinsics(distortion), fps=H36M_FPS,
                                action=action, camera=cam_info.id))
    return out

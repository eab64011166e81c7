"""MPI-INF-3DHP test set in the P-STMO / D3DP npz format (anchors.md sections 6.2-6.4).

``data_test_3dhp.npz``: key ``data`` -> {'TS1'..'TS6': {'data_2d': (N,17,2) px, 'data_3d': (N,17,3) mm,
'valid': (N,)}} (a pickled dict, stored as a 0-d object array). Joints are in the MPI 17
"relevant" order and are reordered to Human3.6M-17 with :data:`MPI3DHP_TO_H36M`.

Joint correspondence (MPI name -> Human3.6M name). The MPI set has no separate "thorax" and "nose":
  * MPI ``neck`` (between the shoulders, 1) -> H36M ``thorax`` (8),
  * MPI ``head`` (head centre / upper neck, 16) -> H36M ``neck_nose`` (9),
  * MPI ``head_top`` (0) -> H36M ``head`` (10),
  * pelvis, spine, hips, knees, ankles, shoulders, elbows and wrists map by name.
This is the mapping used by the VideoPose3D-style 3DHP evaluations (it is exact for the joints
the PCK/AUC protocol scores; the head/neck pairs are the closest available equivalents).

3D: ``data_3d`` is kept **as given** (mm). In the standard files it is ``univ_annot3`` -- the
annotations rescaled to the Human3.6M "universal" skeleton height -- so its root translation and
scale are generally NOT consistent with the 2D under the intrinsics below (the D3DP ``_ori`` files
hold ``annot3``, which is). Use it root-relative for MPJPE/PCK/AUC; do not train a
reprojection term on it unless you know the file holds ``annot3``.

Intrinsics (anchors 6.4, pixels): TS1-TS4 2048x2048, f 1500.17, c (1017.39, 1043.03);
TS5-TS6 1920x1080, f 1683.98, c (939.86, 560.14); distortion is ignored (D3DP zeroes it).
Frame rates (:data:`MPI3DHP_TEST_FPS`): 50 fps for the studio sequences TS1-TS4 and 25 fps for
the outdoor TS5-TS6 as commonly stated for the test set (not in the anchors; only matters for
time-based quantities). ``valid`` is the ``valid_frame`` flag: evaluate on valid frames only.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine.core.camera import Intrinsics
from engine.core.skeleton import H36M17, Skeleton

from .clip import Clip

#: MPI-INF-3DHP 17 "relevant" joint names, in file order (anchors 6.2).
MPI3DHP_JOINTS: tuple[str, ...] = (
    "head_top", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "pelvis", "spine", "head")

#: For each Human3.6M-17 joint, the MPI joint index it takes: ``h36m = mpi[:, MPI3DHP_TO_H36M]``.
#: pelvis<-pelvis(14), r_hip<-8, r_knee<-9, r_ankle<-10, l_hip<-11, l_knee<-12, l_ankle<-13,
#: spine<-15, thorax<-neck(1), neck_nose<-head(16), head<-head_top(0), l_shoulder<-5, l_elbow<-6,
#: l_wrist<-7, r_shoulder<-2, r_elbow<-3, r_wrist<-4.
MPI3DHP_TO_H36M: tuple[int, ...] = (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4)

_STUDIO = Intrinsics(1500.17, 1500.17, 1017.39, 1043.03, 2048, 2048)
_OUTDOOR = Intrinsics(1683.98, 1683.98, 939.86, 560.14, 1920, 1080)

#: Test-sequence intrinsics (pixels, no distortion).
MPI3DHP_TEST_INTRINSICS: dict[str, Intrinsics] = {
    "TS1": _STUDIO, "TS2": _STUDIO, "TS3": _STUDIO, "TS4": _STUDIO, "TS5": _OUTDOOR, "TS6": _OUTDOOR}
MPI3DHP_TEST_FPS: dict[str, float] = {
    "TS1": 50.0, "TS2": 50.0, "TS3": 50.0, "TS4": 50.0, "TS5": 25.0, "TS6": 25.0}


def mpi_to_h36m(x: np.ndarray) -> np.ndarray:
    """Reorder (..., 17, D) from the MPI order to the Human3.6M order."""
    return np.asarray(x)[..., MPI3DHP_TO_H36M, :]


def _as_dict(obj) -> dict:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        obj = obj.item()
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict, got {type(obj).__name__}")
    return obj


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace non-finite frames that are flagged invalid by the nearest finite frame."""
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not bad.any():
        return x
    if (bad & valid).any():
        raise ValueError(f"{int((bad & valid).sum())} valid frames have non-finite values")
    good = np.flatnonzero(~bad)
    if len(good) == 0:
        raise ValueError("no finite frame")
    idx = good[np.clip(np.searchsorted(good, np.arange(len(x))), 0, len(good) - 1)]
    return x[idx]


def load_3dhp_test(path: str | Path, sequences: Iterable[str] | None = None,
                   skeleton: Skeleton = H36M17) -> list[Clip]:
    """One :class:`Clip` per test sequence (TS1..TS6), joints in Human3.6M order.

    Args:
        path: ``data_test_3dhp.npz``.
        sequences: e.g. ``["TS1", "TS5"]``; default all present, in name order.
        skeleton: must have 17 joints (Human3.6M-17).
    Returns:
        Clips named and with subject ``"TS<k>"``, 2D in px, 3D in mm as stored (see the module
        docstring), ``valid`` set from the file (all True if absent).
    """
    if skeleton.num_joints != len(MPI3DHP_TO_H36M):
        raise ValueError(f"3DHP has {len(MPI3DHP_TO_H36M)} joints; skeleton {skeleton.name} has {skeleton.num_joints}")
    with np.load(path, allow_pickle=True) as d:
        if "data" not in d.files:
            raise KeyError(f"{path}: no key 'data' (keys: {d.files})")
        data = _as_dict(d["data"])
    names = sorted(data, key=lambda s: (len(s), s)) if sequences is None else list(sequences)
    out: list[Clip] = []
    for name in names:
        if name not in data:
            continue
        seq = _as_dict(data[name])
        kp = np.asarray(seq["data_2d"], dtype=np.float32)
        pos = np.asarray(seq["data_3d"], dtype=np.float32)
        if kp.ndim != 3 or kp.shape[1:] != (17, 2) or pos.ndim != 3 or pos.shape[1:] != (17, 3):
            raise ValueError(f"{path}: {name} has data_2d {kp.shape}, data_3d {pos.shape}; expected (N,17,2), (N,17,3)")
        n = min(len(kp), len(pos))
        valid = np.asarray(seq["valid"]).reshape(-1)[:n].astype(bool) if "valid" in seq else np.ones(n, bool)
        if len(valid) != n:
            raise ValueError(f"{path}: {name} valid has {len(valid)} entries for {n} frames")
        kp, pos = _fill_invalid(kp[:n], valid), _fill_invalid(pos[:n], valid)
        intr = MPI3DHP_TEST_INTRINSICS.get(name, _STUDIO)
        out.append(Clip(name=name, subject=name, keypoints_2d=mpi_to_h36m(kp), positions_3d=mpi_to_h36m(pos),
                        intrinsics=intr, fps=MPI3DHP_TEST_FPS.get(name, 50.0), valid=valid))
    return out

"""Loader for the CMU mocap set in Human3.6M-17 format (``../shared/data/cmu_h36m17``).

The files are read in place (never copied into the project). One ``<clip_id>.npz`` per clip with
(see that folder's README.md) ``positions_3d_world`` [T,17,3] mm (Z up), ``positions_3d_cam``
[C,T,17,3] mm, ``keypoints_2d`` [C,T,17,2] px (exact pinhole projections, no distortion),
``intrinsics`` [C,6] = fx, fy, cx, cy, w, h, ``R`` [C,3,3], ``t`` [C,3] (``X_cam = R X_world + t``),
``cam_names`` [C], ``subject``, ``clip_id``, ``description``, ``fps`` (50).

Validation split (:data:`CMU_VAL_SUBJECTS`): CMU subjects 3, 9 and 16 -- three different people
(none of them appears in training), about 7k frames (4,201 + 1,440 + 1,312 = 6,953 at 50 Hz,
~15 % of the set), covering walking on uneven terrain (3), running (9) and jumps (16): common
locomotion plus a fast, high-acceleration action. The remaining subjects 1, 2, 5, 7, 8, 10, 11
train. (The held-out evaluation subjects 6, 13, 14, 131 are not in this folder at all.)
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core.camera import Intrinsics

from .clip import Clip

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CMU_ROOT = REPO_ROOT.parent / "shared" / "data" / "cmu_h36m17"

#: CMU subjects held out for validation (see the module docstring).
CMU_VAL_SUBJECTS: tuple[int, ...] = (3, 9, 16)


@dataclass(frozen=True, eq=False)
class WorldClip:
    """One CMU clip in the world frame (for virtual-camera augmentation).

    Attributes:
        name: clip id, e.g. ``"09_01"``.
        subject: CMU subject as a string (``"9"``).
        positions_3d: (T, J, 3) float32 mm, world frame, Z up (ground near z = 0).
        fps: frame rate.
        action: CMU description.
        R: (C, 3, 3) float32 rotations of the data set's C cameras; ``X_cam = R @ X_world + t``.
        t: (C, 3) float32 translations (mm).
        intrinsics: the C cameras' intrinsics.
        camera_names: the C cameras' ids.
    """
    name: str
    subject: str
    positions_3d: np.ndarray
    fps: float
    action: str | None = None
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    intrinsics: tuple[Intrinsics, ...] = ()
    camera_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions_3d, dtype=np.float32)
        if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape[0] == 0:
            raise ValueError(f"world clip {self.name!r}: positions_3d must be (T, J, 3) with T > 0, got {pos.shape}")
        if not np.isfinite(pos).all():
            raise ValueError(f"world clip {self.name!r}: positions_3d has non-finite values")
        object.__setattr__(self, "positions_3d", pos)

    @property
    def num_frames(self) -> int:
        return int(self.positions_3d.shape[0])


def resolve_root(root: str | Path | None) -> Path:
    """``root`` or the default ``<repo>/../shared/data/cmu_h36m17``; raises if it does not exist."""
    path = DEFAULT_CMU_ROOT if root is None else Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"CMU data folder not found: {path} (pass root=...)")
    return path


def _subject_set(subjects: Iterable[int | str] | None) -> set[int] | None:
    if subjects is None:
        return None
    if isinstance(subjects, (int, str)):
        subjects = [subjects]
    return {int(str(s)) for s in subjects}


def _scalar(x) -> object:
    return np.asarray(x).item()


def _iter_files(root: Path, subjects: set[int] | None):
    files = sorted(root.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no .npz clips in {root}")
    for f in files:
        with np.load(f, allow_pickle=False) as d:
            subject = int(_scalar(d["subject"]))
            if subjects is not None and subject not in subjects:
                continue
            yield f, subject, {k: d[k] for k in d.files}


def _intrinsics(row: np.ndarray) -> Intrinsics:
    fx, fy, cx, cy, w, h = (float(v) for v in row)
    return Intrinsics(fx, fy, cx, cy, int(round(w)), int(round(h)))


def _camera_indices(cameras: Iterable[int | str] | None, names: list[str]) -> list[int]:
    if cameras is None:
        return list(range(len(names)))
    if isinstance(cameras, (int, str)):
        cameras = [cameras]
    out = []
    for c in cameras:
        if isinstance(c, (int, np.integer)):
            if not 0 <= int(c) < len(names):
                raise ValueError(f"camera index {c} out of range 0..{len(names) - 1}")
            out.append(int(c))
        elif str(c) in names:
            out.append(names.index(str(c)))
        else:
            raise ValueError(f"unknown camera {c!r}; known: {names}")
    return out


def load_cmu(root: str | Path | None = None, subjects: Iterable[int | str] | None = None,
             cameras: Iterable[int | str] | None = None) -> list[Clip]:
    """One :class:`Clip` per (clip, camera), clips in file-name order.

    Args:
        root: data folder; default ``<repo>/../shared/data/cmu_h36m17``.
        subjects: CMU subject numbers to keep (ints or strings, e.g. ``[3, "9"]``); default all.
        cameras: camera indices (0..C-1) or ids (``"54138969"``) to keep; default all.
    Returns:
        Clips named ``"<clip_id>/<camera id>"``, subject ``str(subject number)``, positions in mm
        in the camera frame, intrinsics without distortion (the data has none).
    """
    root = resolve_root(root)
    out: list[Clip] = []
    for f, subject, d in _iter_files(root, _subject_set(subjects)):
        clip_id = str(_scalar(d["clip_id"])) if "clip_id" in d else f.stem
        names = [str(n) for n in d["cam_names"]] if "cam_names" in d else \
            [str(i) for i in range(d["keypoints_2d"].shape[0])]
        fps = float(_scalar(d["fps"]))
        action = str(_scalar(d["description"])) if "description" in d else None
        for c in _camera_indices(cameras, names):
            out.append(Clip(name=f"{clip_id}/{names[c]}", subject=str(subject),
                            keypoints_2d=d["keypoints_2d"][c], positions_3d=d["positions_3d_cam"][c],
                            intrinsics=_intrinsics(d["intrinsics"][c]), fps=fps, action=action,
                            camera=names[c]))
    return out


def load_cmu_world(root: str | Path | None = None,
                   subjects: Iterable[int | str] | None = None) -> list[WorldClip]:
    """World-frame joints (mm, Z up) of every clip plus its cameras' R, t and intrinsics."""
    root = resolve_root(root)
    out: list[WorldClip] = []
    for f, subject, d in _iter_files(root, _subject_set(subjects)):
        clip_id = str(_scalar(d["clip_id"])) if "clip_id" in d else f.stem
        n_cam = d["R"].shape[0] if "R" in d else 0
        names = tuple(str(n) for n in d["cam_names"]) if "cam_names" in d else \
            tuple(str(i) for i in range(n_cam))
        out.append(WorldClip(
            name=clip_id, subject=str(subject), positions_3d=d["positions_3d_world"],
            fps=float(_scalar(d["fps"])),
            action=str(_scalar(d["description"])) if "description" in d else None,
            R=np.asarray(d["R"], dtype=np.float32) if "R" in d else None,
            t=np.asarray(d["t"], dtype=np.float32) if "t" in d else None,
            intrinsics=tuple(_intrinsics(r) for r in d["intrinsics"]) if "intrinsics" in d else (),
            camera_names=names))
    return out


def cmu_split(root: str | Path | None = None,
              cameras: Iterable[int | str] | None = None) -> tuple[list[Clip], list[Clip]]:
    """(train clips, validation clips): validation = :data:`CMU_VAL_SUBJECTS`, train = the rest."""
    clips = load_cmu(root, cameras=cameras)
    val = {str(s) for s in CMU_VAL_SUBJECTS}
    return [c for c in clips if c.subject not in val], [c for c in clips if c.subject in val]


# ------------------------------------------------------------------------------------------------
# every real motion set in ../shared/data

#: HDM05 actor held out for validation: mm (subject 504), 44 clips of all 11 motion classes.
HDM05_VAL_SUBJECTS: tuple[int, ...] = (504,)
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
#: validation subjects per set (folder name): never trained on
VAL_SUBJECTS: dict[str, tuple[int, ...]] = {"cmu_h36m17": CMU_VAL_SUBJECTS, "hdm05_h36m17": HDM05_VAL_SUBJECTS}


def motion_sets(root: str | Path | None = None) -> list[Path]:
    """Every ``*_h36m17`` folder under the shared data root (the CMU file format), sorted."""
    base = Path(root) if root is not None else DEFAULT_DATA_ROOT
    return sorted(p for p in base.glob("*_h36m17") if p.is_dir() and any(p.glob("*.npz")))


def load_world_sets(root: str | Path | None = None, split: str = "train") -> list[WorldClip]:
    """World clips of every real motion set: ``train`` (all but :data:`VAL_SUBJECTS`) or ``val``.

    Sets without an entry in :data:`VAL_SUBJECTS` (new ones) are used for training only.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    sets = motion_sets(root)
    if not sets:
        raise FileNotFoundError(f"no *_h36m17 motion set under {Path(root) if root else DEFAULT_DATA_ROOT}")
    out = []
    for folder in sets:
        val = set(VAL_SUBJECTS.get(folder.name, ()))
        for c in load_cmu_world(folder):
            if (int(c.subject) in val) == (split == "val"):
                out.append(c)
    return out


def subject_weights(clips: list[WorldClip], frames: int, power: float = 0.5) -> np.ndarray:
    """Sampling probability per clip: a subject's share grows as (its windows) ** ``power``.

    ``power`` 1 samples every window equally (CMU subject 1 would be 48 % of the CMU frames);
    0.5 tempers large subjects; 0 gives every subject the same share. Within a subject, clips are
    drawn in proportion to their windows.
    """
    n = np.array([max(1, c.num_frames - frames + 1) for c in clips], dtype=np.float64)
    subj = np.array([c.subject for c in clips])
    p = np.zeros_like(n)
    for s in np.unique(subj):
        m = subj == s
        p[m] = n[m] / n[m].sum() * n[m].sum() ** power
    return p / p.sum()

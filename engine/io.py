"""Input checks and atomic output writing for the CLI (files are read by engine.readers).

Every problem with a user's file raises :class:`InputError` with a one-line message; the CLI
prints it and exits with status 2. Outputs are written atomically (temporary file in the same
folder, then rename), so a failed or interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """A user input that cannot be lifted; the message is one line."""


def check_keypoints(arr: np.ndarray, num_joints: int, where: str = "keypoints", allow_missing: bool = False,
                    layout: str = "Human3.6M") -> np.ndarray:
    """Validate a (T, J, 2|3) keypoint array and return it as float32.

    Non-finite values: inf is always an error. NaN is an error unless ``allow_missing``; then a
    joint whose x and y are both NaN is a *missing* joint (its confidence, if any, is ignored and
    may be NaN too), while NaN in only one of x, y, or a NaN confidence of a joint with finite
    coordinates, is an error (a malformed file, not a missing joint), and so is a clip in which
    every joint is missing.
    """
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{where}: keypoints must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3):
        raise InputError(f"{where}: keypoints must have shape (T, {num_joints}, 2) or (T, {num_joints}, 3), "
                         f"got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{where}: the clip has zero frames")
    if arr.shape[1] != num_joints:
        hint = "" if layout != "Human3.6M" else " (other layouts: pass --format, see --help)"
        raise InputError(f"{where}: expected {num_joints} joints in {layout} order, got {arr.shape[1]}{hint}")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(np.float32)
    if allow_missing:
        inf = np.isinf(arr)
        if inf.any():
            t, j, _ = np.argwhere(inf)[0]
            raise InputError(f"{where}: {int(inf.sum())} non-finite values (infinite, or too large for float32), "
                             f"first at frame {t}, joint {j}")
        nan_xy = np.isnan(arr[..., :2])
        missing = nan_xy.all(-1)
        half = nan_xy.any(-1) & ~missing
        if arr.shape[-1] == 3:
            half |= np.isnan(arr[..., 2]) & ~missing
        if half.any():
            t, j = np.argwhere(half)[0]
            raise InputError(f"{where}: non-finite values: frame {t}, joint {j} has NaN in only part of "
                             "(x, y, confidence); a missing joint needs NaN in both x and y")
        if missing.all():
            raise InputError(f"{where}: non-finite values only: every joint of every frame is missing (NaN)")
    else:
        bad = ~np.isfinite(arr)
        if bad.any():
            t, j, _ = np.argwhere(bad)[0]
            raise InputError(f"{where}: {int(bad.sum())} non-finite values (NaN or inf), first at frame {t}, joint {j}")
    if arr.shape[-1] == 3:
        c = arr[..., 2]
        if allow_missing:
            c = c[~np.isnan(arr[..., :2]).all(-1)]
        if (c < 0).any() or (c > 1).any():
            raise InputError(f"{where}: confidence channel must be in [0, 1], got range "
                             f"[{c.min():.3g}, {c.max():.3g}]")
    return arr


def write_atomic(path: str | Path, write, binary: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file in the target's folder, then rename it into place.

    Nothing is left behind on failure or interruption. ``binary`` False opens the file as UTF-8
    text (newline translation off, for CSV).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; give the usual permissions
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_npz_atomic(path: str | Path, **arrays) -> Path:
    """np.savez_compressed, written atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda f: np.savez_compressed(f, **arrays))


def result_arrays(poses_m: np.ndarray, spread_m: np.ndarray, joint_names: tuple[str, ...], meta: dict) -> dict:
    """The output contract of engine.run: mm, camera frame, root-relative."""
    return {
        "poses_3d": (poses_m * 1000.0).astype(np.float32),
        "poses_3d_std": (spread_m * 1000.0).astype(np.float32),
        "joint_names": np.array(joint_names),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }

"""Exports of a 3D result: JSON, CSV and BVH (all written atomically; BVH itself in :mod:`engine.front.bvh`).

All take the arrays of an engine.run output (``poses_3d`` (T, J, 3) mm root-relative camera frame,
``poses_3d_std`` (T, J), optional ``root_trajectory`` (T, 3) mm) plus the joint names and fps.

- JSON: ``{"joint_names", "units": "mm", "fps", "frame": ..., "meta", "frames": [{"frame": i,
  "time_s": t, "joints": {name: [x, y, z]}, "std_mm": {name: s}, "root": [x, y, z]}]}``.
- CSV: one row per frame; columns ``frame, time_s, <joint>_x, <joint>_y, <joint>_z`` ... (mm,
  root-relative camera frame), then ``root_x, root_y, root_z`` when a trajectory exists.
- BVH: the Human3.6M tree, Y-up, centimetres (:mod:`engine.front.bvh`).
"""
from __future__ import annotations

import io as _io
import json
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .bvh import dump_bvh
from .io import OutputGroup, write_atomic


def write_text_atomic(path: str | Path, text) -> Path:
    """Write ``text`` (a str, or a callable that writes into the open text file) atomically."""
    return write_atomic(path, text if callable(text) else (lambda f: f.write(text)), binary=False)


def _r(x, nd=2):
    return [round(float(v), nd) for v in x]


def dump_json(f, poses_mm, joint_names, fps: float, std_mm=None, root_mm=None, meta: dict | None = None) -> None:
    """Stream the JSON document into the text file ``f`` frame by frame."""
    poses = np.asarray(poses_mm, np.float64)
    head = {"joint_names": list(joint_names), "units": "mm", "fps": fps,
            "frame": "camera (x right, y down, z forward); joints root-relative (pelvis = 0); "
                     "root = pelvis position in the camera frame",
            "meta": meta or {}}
    f.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"frames":[')
    for t in range(poses.shape[0]):
        fr = {"frame": t, "time_s": round(t / fps, 6),
              "joints": {n: _r(poses[t, j]) for j, n in enumerate(joint_names)}}
        if std_mm is not None:
            fr["std_mm"] = {n: round(float(std_mm[t, j]), 2) for j, n in enumerate(joint_names)}
        if root_mm is not None:
            fr["root"] = _r(root_mm[t])
        f.write(("," if t else "") + json.dumps(fr, separators=(",", ":")))
    f.write("]}\n")


def dump_csv(f, poses_mm, joint_names, fps: float, root_mm=None) -> None:
    poses = np.asarray(poses_mm, np.float64)
    cols = ["frame", "time_s"] + [f"{n}_{a}" for n in joint_names for a in "xyz"]
    if root_mm is not None:
        cols += ["root_x", "root_y", "root_z"]
    f.write(",".join(cols) + "\n")
    for t in range(poses.shape[0]):
        vals = [str(t), f"{t / fps:.6f}"] + [f"{v:.2f}" for v in poses[t].ravel()]
        if root_mm is not None:
            vals += [f"{v:.2f}" for v in root_mm[t]]
        f.write(",".join(vals) + "\n")


def _to_str(fn, *a, **k) -> str:
    buf = _io.StringIO()
    fn(buf, *a, **k)
    return buf.getvalue()


def to_json(*a, **k) -> str:
    """:func:`dump_json` into a string."""
    return _to_str(dump_json, *a, **k)


def to_csv(*a, **k) -> str:
    """:func:`dump_csv` into a string."""
    return _to_str(dump_csv, *a, **k)


# -- BVH -----------------------------------------------------------------------------------------
EXPORTS = ("json", "csv", "bvh")


def check_exports(kinds) -> None:
    bad = [k for k in kinds if k not in EXPORTS]
    if bad:
        raise InputError(f"--export: unknown kind {bad[0]!r}; choose from {','.join(EXPORTS)}")


def parse_exports(text: str) -> tuple[str, ...]:
    """``--export`` ("json, CSV,json") -> the kinds, lower case, each once, in order; checked."""
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",")))
    check_exports(kinds)
    return kinds


def stage_output(group: OutputGroup, out_npz: Path, arrays: dict, exports, meta: dict) -> list[Path]:
    """Stage one lifted clip's files in ``group`` (committed together, or none): the requested
    exports, then the .npz of ``arrays`` (:func:`engine.front.io.npz_arrays`). Returns their paths."""
    paths = write_exports(out_npz, list(exports), arrays, meta["fps"], meta, group) if exports else []
    paths.append(group.add(out_npz, lambda f: np.savez_compressed(f, **arrays)))
    return paths


def export_paths(out_npz: Path, kinds: list[str]) -> list[Path]:
    """Where :func:`write_exports` puts each kind: ``<out stem>.<kind>`` beside the .npz."""
    return [Path(out_npz).with_suffix("." + kind) for kind in kinds]


def write_exports(out_npz: Path, kinds: list[str], arrays: dict, fps: float, meta: dict,
                  group: OutputGroup | None = None) -> list[Path]:
    """Write ``<out stem>.json/.csv/.bvh`` next to the .npz for each kind requested; into ``group``
    (committed together with the .npz) when given, else each file atomically on its own."""
    poses = arrays["poses_3d"]
    names = [str(n) for n in arrays["joint_names"]]
    root = arrays.get("root_trajectory")
    written = []
    for kind, path in zip(kinds, export_paths(out_npz, kinds)):
        if kind == "json":
            fn = lambda f: dump_json(f, poses, names, fps, arrays.get("poses_3d_std"), root, meta)  # noqa: E731
        elif kind == "csv":
            fn = lambda f: dump_csv(f, poses, names, fps, root)  # noqa: E731
        elif kind == "bvh":
            fn = lambda f: dump_bvh(f, poses, fps, root)  # noqa: E731
        else:
            raise ValueError(f"unknown export {kind!r}; choose from {EXPORTS}")
        written.append(group.add(path, fn, binary=False) if group is not None else write_text_atomic(path, fn))
    return written

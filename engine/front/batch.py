"""Several inputs in one command: folders, globs, lists; one file after another.

``--input`` takes one or more of:

- a file (.npy, .npz, .json) or an OpenPose JSON folder: one clip;
- a folder of clips: every .npy, .npz and .json file in it and every OpenPose sub-folder (not
  recursive), in natural name order;
- a glob pattern, quoted so that the shell leaves it alone (``--input 'clips/*.npz'``).

Outputs of earlier runs (names ending in ``_3d.npz``, ``_3d.json``, ``_3d.csv``, ``_3d.bvh``) and
hidden files are skipped, so running the same command twice does not lift its own outputs.
Clips are processed one after another; each output is written atomically when its clip is done,
so after Ctrl-C the finished outputs are complete and the clip in progress left no file.

Memory for long clips (measured, ``/usr/bin/time -f %M`` on ``python -m engine.run`` with 1,000
and 10,000 frames of the walking example tiled, shipped model): peak RSS grows by about 1.8 KB per
frame on the torch backend and 1.9 KB on cpp, above a ~255-305 MB base (an hour at 50 Hz: about
0.33 GB more). What holds it: the filled float64 copy of the keypoints (kept for the root solve and
the output), the normalised frames while they are lifted, the per-frame outputs (poses, spread,
initial estimate, the person-view rotations) in the pipeline and again in the returned arrays, and
the written arrays (``poses_3d``, ``poses_3d_std``, ``root_trajectory``, ``keypoints_2d``: 0.5 KB
per frame). The file's arrays are dropped once the clip is prepared, the normalised frames once
they are lifted, and each result once it is finished. The focal-length estimate (at most 2,000 sampled frames) and
the root solve (blocks of 4,096 frames) work in bounded memory. :class:`engine.core.pipeline.StreamingLifter`
keeps only the last context window of frames, so an endless live stream runs in bounded memory.
The JSON/CSV/BVH writers stream frame by frame.
"""
from __future__ import annotations

import glob as _glob
import os
from pathlib import Path

from ..core.errors import InputError
from .readers import _natural_key, check_input_path, is_openpose_folder

CLIP_SUFFIXES = (".npy", ".npz", ".json")
OUTPUT_ENDINGS = ("_3d.npz", "_3d.json", "_3d.csv", "_3d.bvh")


def is_clip_name(name: str) -> bool:
    """A file name that is a clip: not hidden, not an output of ours, a clip suffix."""
    return (not name.startswith(".") and not name.endswith(OUTPUT_ENDINGS)
            and os.path.splitext(name)[1].lower() in CLIP_SUFFIXES)


def _is_clip(p: Path) -> bool:
    if p.is_file():
        return is_clip_name(p.name)
    return (not p.name.startswith(".") and not p.name.endswith(OUTPUT_ENDINGS)
            and p.is_dir() and is_openpose_folder(p))


def expand_inputs(items: list[str | Path]) -> tuple[list[Path], bool]:
    """Inputs -> (clips, batch?). ``batch`` is False only for a single file or OpenPose folder."""
    clips: list[Path] = []
    batch = len(items) > 1
    for item in items:
        p = Path(item)
        check_input_path(p)
        if p.is_dir() and not is_openpose_folder(p):
            found = sorted((c for c in p.iterdir() if _is_clip(c)), key=lambda c: _natural_key(c.name))
            if not found:
                raise InputError(f"{p}: no inputs in this folder (.npy, .npz, .json or OpenPose folders)")
            clips.extend(found)
            batch = True
        elif not p.exists() and any(ch in str(item) for ch in "*?["):
            found = sorted((Path(m) for m in _glob.glob(str(item)) if _is_clip(Path(m))),
                           key=lambda c: _natural_key(str(c)))
            if not found:
                raise InputError(f"no inputs match {item}")
            clips.extend(found)
            batch = True
        else:
            clips.append(p)
    seen, unique = set(), []
    for c in clips:
        key = c.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique, batch


def default_output(clip: Path, person: int | None = None) -> Path:
    """<stem>_3d.npz (or <stem>_p<ID>_3d.npz) beside the input; an OpenPose folder's stem is its name."""
    stem = clip.name if clip.is_dir() else clip.stem
    tag = f"_p{person}" if person is not None else ""
    return clip.with_name(f"{stem}{tag}_3d.npz")


def output_path(clip: Path, person: int | None, output: Path | None, batch: bool) -> Path:
    """Where one result goes, given ``--output`` (a file for one result, a folder for several)."""
    if output is None:
        return default_output(clip, person)
    if batch or output.is_dir():
        if output.exists() and not output.is_dir():
            raise InputError(f"--output {output}: with several inputs --output must be a folder")
        return output / default_output(clip, person).name
    if person is not None:
        return output.with_name(f"{output.stem}_p{person}{output.suffix}")
    return output

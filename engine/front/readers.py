"""Input file readers: every supported file becomes ``{person_id: (T, J_src, C) array}``.

Supported inputs (the layout, ``--format``, is separate; see :mod:`engine.front.formats`):

- ``.npy``: (T, J, C) one person, or (P, T, J, C) several people with IDs 0..P-1 (NaN where a
  person is absent).
- ``.npz``: key ``keypoints`` shaped as for .npy; optional ``image_size`` (W, H), ``fps`` and, for
  4-D keypoints, ``person_ids`` (P,) integers; optional ``gt_poses_3d``: ground-truth 3D poses
  (T, 17, 3) mm in the Human3.6M-17 order and the camera frame ((P, T, 17, 3) for 4-D keypoints),
  against which engine.run reports the root-relative MPJPE (``extras["gt_poses_3d"]``: person id ->
  (T, 17, 3) float64). An ``intrinsics`` key is not read (pass ``--intrinsics``).
- MMPose / rtmlib JSON (``.json``): a list of frames, each ``{"frame_id": i, "instances": [...]}``
  (MMPose inferencer ``--pred-out-dir``), or ``{"instance_info": [frames...], "meta_info": ...}``
  (MMPose demo ``--save-predictions``), or a bare list of instances (one image). An instance has
  ``keypoints`` [[x, y], ...] and optionally ``keypoint_scores`` [s, ...] and ``track_id``.
  AlphaPose results (a list of ``{"image_id", "keypoints": [x, y, s, ...], "idx"}``) are read too.
  Scores are clipped to [0, 1] (heatmap and SimCC scores can exceed 1). Frames are ordered by
  ``frame_id`` / ``image_id`` when present, else by position. Person ID: ``track_id`` (MMPose) or
  ``idx`` (AlphaPose) when present, else the instance's position in its frame, which is only stable
  if the detector returns people in a stable order (use a tracker when several people are visible).
- An OpenPose JSON folder: one ``*.json`` per frame with ``people[].pose_keypoints_2d`` = [x, y, c,
  ...] (BODY_25), frames in natural order of the file names; ``person_id`` is used when it is not
  -1, else the position in ``people``.

A person absent from a frame gets NaN coordinates there (missing; filled by
:func:`engine.front.resample.fill_missing`). Every problem raises :class:`~engine.core.errors.InputError`.
"""
from __future__ import annotations

import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import InputError

GT_KEY = "gt_poses_3d"      # optional ground truth in an .npz, (T, 17, 3) mm
GT_JOINTS = 17              # Human3.6M-17, the layout every output is in


@dataclass
class RawInput:
    """What a file holds, before layout conversion."""
    people: dict[int, np.ndarray]           # person id -> (T, J_src, C)
    kind: str                                # npy | npz | mmpose-json | alphapose-json | openpose-folder
    format_hint: str | None = None           # layout implied by the file kind (openpose -> openpose25)
    extras: dict = field(default_factory=dict)   # image_size, fps, gt_poses_3d when the file says

    @property
    def frames(self) -> int:
        return next(iter(self.people.values())).shape[0]


def check_input_path(p: Path) -> None:
    """Raise :class:`InputError` for an input the file system will not give: too long a name, a
    symlink loop, a folder that cannot be listed, a file that cannot be opened."""
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            next(os.scandir(p), None)
        else:
            with open(p, "rb"):
                pass
    except FileNotFoundError:
        return                                  # reported as 'not found' (or tried as a glob) later
    except OSError as e:
        raise InputError(f"cannot read input {p}: {e.strerror or type(e).__name__}") from None


def is_openpose_folder(path: Path) -> bool:
    """A folder of OpenPose frames: every JSON file named ``*_keypoints.json`` (OpenPose's own
    naming), or a first JSON file (natural order) with a ``people`` list. Decided by the names
    first, so a broken first frame is reported as such instead of the folder being read as a
    folder of separate clips."""
    try:
        if not path.is_dir():
            return False
        files = _json_files(path)
    except OSError:
        return False
    if not files:
        return False
    if all(f.name.lower().endswith("_keypoints.json") for f in files):
        return True
    try:
        with open(files[0], encoding="utf-8-sig") as f:
            doc = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("people"), list)


def read_input(path: str | Path) -> RawInput:
    path = Path(path)
    check_input_path(path)
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if path.is_dir():
        if is_openpose_folder(path):
            return _read_openpose_folder(path)
        raise InputError(f"{path}: a folder is read as OpenPose output (one JSON per frame with 'people'), "
                         "and none was found")
    if not path.is_file():
        raise InputError(f"input is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _read_numpy(path, _numpy_kind(path, suffix))
    if suffix == ".json":
        return _read_json(path)
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; use .npy, .npz, .json "
                     "(MMPose/rtmlib/AlphaPose) or an OpenPose JSON folder")


# -- numpy -------------------------------------------------------------------------------------
def _numpy_kind(path: Path, suffix: str) -> str:
    """'.npy' or '.npz' from the file's first bytes (a .npy renamed .npz is still read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    if head.startswith(b"PK"):
        return ".npz"
    if head == b"\x93NUMPY":
        return ".npy"
    raise InputError(f"{path}: not a NumPy {suffix} file (it starts with {head!r})")


def _check_npy_header(f, available: int, where: str) -> None:
    """Refuse a .npy whose header claims more data than the file holds, before allocating it."""
    try:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(f"{where}: not a valid .npy header "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > available:
        raise InputError(f"{where}: the header claims shape {tuple(shape)} ({claimed:,} bytes) but the file holds "
                         f"{available:,}; the file is truncated or corrupt")


def _check_numpy_sizes(path: Path, suffix: str) -> None:
    if suffix == ".npy":
        with open(path, "rb") as f:
            _check_npy_header(f, os.fstat(f.fileno()).st_size, str(path))
        return
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename.endswith(".npy"):
                with z.open(info) as f:
                    _check_npy_header(f, info.file_size, f"{path}: '{info.filename[:-4]}'")


def _read_numpy(path: Path, suffix: str) -> RawInput:
    extras: dict = {}
    ids = None
    gt = None
    try:
        _check_numpy_sizes(path, suffix)
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                if "keypoints" not in z.files:
                    raise InputError(f"{path}: .npz has no 'keypoints' array (found {sorted(z.files)})")
                arr = z["keypoints"]
                if "image_size" in z.files:
                    size = np.asarray(z["image_size"]).ravel()
                    if size.size < 2 or not np.issubdtype(size.dtype, np.number) or not np.isfinite(size[:2]).all():
                        raise InputError(f"{path}: 'image_size' must hold two numbers W, H")
                    extras["image_size"] = tuple(int(v) for v in size[:2])
                if "fps" in z.files:
                    fps = np.asarray(z["fps"]).ravel()
                    if fps.size == 1 and np.issubdtype(fps.dtype, np.number):
                        extras["fps"] = float(fps[0])
                if "person_ids" in z.files:
                    ids = np.asarray(z["person_ids"]).ravel()
                gt = _load_gt(z, path) if GT_KEY in z.files else None
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot read keypoints ({why}); the file is corrupt or not a NumPy file") from None
    arr = np.asarray(arr)
    if arr.ndim == 4:
        if ids is None:
            ids = np.arange(arr.shape[0])
        if len(ids) != arr.shape[0] or not np.issubdtype(ids.dtype, np.integer) or len(set(ids.tolist())) != len(ids):
            raise InputError(f"{path}: 'person_ids' must be {arr.shape[0]} distinct integers")
        if arr.shape[0] == 0:
            raise InputError(f"{path}: keypoints hold zero people")
        if gt is not None:
            extras[GT_KEY] = _check_gt(gt, (arr.shape[0], arr.shape[1]), path, [int(i) for i in ids])
        return RawInput({int(i): arr[k] for k, i in enumerate(ids)}, suffix[1:], None, extras)
    if gt is not None and arr.ndim == 3:     # other shapes: prepare_keypoints reports the keypoints
        extras[GT_KEY] = _check_gt(gt, arr.shape[:1], path, [0])
    return RawInput({0: arr}, suffix[1:], None, extras)


def _load_gt(z, path: Path) -> np.ndarray:
    try:
        return np.asarray(z[GT_KEY])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot read '{GT_KEY}' ({why})") from None


def _check_gt(gt: np.ndarray, lead: tuple, path: Path, ids: list[int]) -> dict[int, np.ndarray]:
    """``gt_poses_3d`` of shape ``(*lead, 17, 3)`` (lead = (T,) or (P, T)), numeric and finite."""
    want = (*lead, GT_JOINTS, 3)
    if gt.shape != want:
        raise InputError(f"{path}: '{GT_KEY}' must have shape {want} to match the keypoints "
                         f"(mm, Human3.6M-17 order), got {gt.shape}")
    if not (np.issubdtype(gt.dtype, np.integer) or np.issubdtype(gt.dtype, np.floating)):
        raise InputError(f"{path}: '{GT_KEY}' must hold numbers, got dtype {gt.dtype}")
    gt = gt.astype(np.float64)
    if not np.isfinite(gt).all():
        raise InputError(f"{path}: '{GT_KEY}' holds {int((~np.isfinite(gt)).sum())} non-finite values")
    if gt.ndim == 3:
        return {ids[0]: gt}
    return {pid: gt[k] for k, pid in enumerate(ids)}


# -- JSON ----------------------------------------------------------------------------------------
def _parse_int(text: str):
    """JSON integers: beyond 64 bits they become floats (inf past float range), so an absurd
    number is reported as a bad value rather than overflowing a conversion later."""
    return int(text) if len(text) <= 18 else float(text)


def _load_json(path: Path):
    """Parse a JSON file (a UTF-8 byte-order mark is allowed); errors are one line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f, parse_int=_parse_int)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to be keypoints") from None
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None


def _person_id(value, default: int, where: str) -> int:
    """A track/person id: an integer (or an integral float) in int64 range; absent -> default."""
    if value is None:
        return default
    if isinstance(value, bool) or not _num(value) or not np.isfinite(value) or value != int(value) \
            or abs(value) >= 2 ** 63:
        raise InputError(f"{where}: person id must be an integer, got {str(value)[:40]}")
    return int(value)


def _image_size(value, where: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(_num(v) and np.isfinite(v) and 0 < v < 2 ** 31
                                                               for v in value)):
        raise InputError(f"{where}: image_size must be two positive numbers [W, H], got {str(value)[:60]}")
    return int(value[0]), int(value[1])


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _points(kps, scores, where: str, flat: bool = False) -> np.ndarray:
    """Keypoints [[x, y], ...] (or flat [x, y, s, ...]) + scores -> (J, 3) float64."""
    if flat:
        if not isinstance(kps, list) or len(kps) % 3 or not all(_num(v) or v is None for v in kps):
            raise InputError(f"{where}: flat keypoints must be a list of x, y, score triplets")
        a = np.array([np.nan if v is None else v for v in kps], np.float64).reshape(-1, 3)
    else:
        if not isinstance(kps, list) or not kps:
            raise InputError(f"{where}: 'keypoints' must be a non-empty list of [x, y]")
        rows = []
        for p in kps:
            if not isinstance(p, list) or len(p) < 2 or not all(_num(v) or v is None for v in p[:3]):
                raise InputError(f"{where}: each keypoint must be [x, y] or [x, y, score], got {str(p)[:40]}")
            rows.append([np.nan if v is None else v for v in p[:3]] + ([1.0] if len(p) == 2 else []))
        a = np.array(rows, np.float64)
        if scores is not None:
            if not isinstance(scores, list) or len(scores) != len(kps) or not all(_num(v) for v in scores):
                raise InputError(f"{where}: 'keypoint_scores' must be a list of {len(kps)} numbers")
            a[:, 2] = scores
    with np.errstate(invalid="ignore"):
        a[:, 2] = np.clip(a[:, 2], 0.0, 1.0)
    return a


def _read_json(path: Path) -> RawInput:
    doc = _load_json(path)
    extras: dict = {}
    if isinstance(doc, dict) and "instance_info" in doc:
        meta = doc.get("meta_info") or {}
        if isinstance(meta, dict) and meta.get("image_size") is not None:
            extras["image_size"] = _image_size(meta["image_size"], f"{path}: meta_info")
        doc = doc["instance_info"]
    if isinstance(doc, dict) and "people" in doc:
        raise InputError(f"{path}: this is one OpenPose frame; pass the folder that holds all frames")
    if not isinstance(doc, list) or not doc:
        raise InputError(f"{path}: expected a non-empty list of frames (MMPose/rtmlib) or of detections "
                         "(AlphaPose)")
    if all(isinstance(d, dict) and "instances" in d for d in doc):
        frames = []
        for i, d in enumerate(doc):
            fid = d.get("frame_id", i)
            if not _num(fid) or not np.isfinite(fid):
                raise InputError(f"{path}: frame {i} has a frame_id that is not a finite number")
            if not isinstance(d["instances"], list):
                raise InputError(f"{path}: frame {i}: 'instances' must be a list")
            people = {}
            for k, inst in enumerate(d["instances"]):
                where = f"{path}: frame {i}, instance {k}"
                if not isinstance(inst, dict) or "keypoints" not in inst:
                    raise InputError(f"{where}: no 'keypoints'")
                pid = _person_id(inst.get("track_id"), k, f"{where}: track_id")
                if pid in people:
                    raise InputError(f"{where}: person id {pid} appears twice in one frame")
                people[pid] = _points(inst["keypoints"], inst.get("keypoint_scores"), where)
            frames.append((fid, people))
        frames.sort(key=lambda fr: fr[0])
        return RawInput(_stack(frames, path), "mmpose-json", None, extras)
    if all(isinstance(d, dict) and "image_id" in d and "keypoints" in d for d in doc):
        by_image: dict = {}
        order = []
        for k, d in enumerate(doc):
            img = d["image_id"]
            if not isinstance(img, (str, int)) or isinstance(img, bool):
                raise InputError(f"{path}: detection {k}: image_id must be a string or an integer")
            if img not in by_image:
                by_image[img] = {}
                order.append(img)
            pid = d.get("idx")
            if isinstance(pid, list):           # AlphaPose tracking writes idx as [id] or [id, ...]
                pid = pid[0] if pid else None
            pid = _person_id(pid, len(by_image[img]), f"{path}: detection {k}: idx")
            if pid in by_image[img]:
                raise InputError(f"{path}: image {img}: person id {pid} appears twice")
            by_image[img][pid] = _points(d["keypoints"], None, f"{path}: detection {k}", flat=True)
        frames = sorted([(_natural_key(str(img)), by_image[img]) for img in order], key=lambda fr: fr[0])
        return RawInput(_stack(frames, path), "alphapose-json", None, extras)
    if all(isinstance(d, dict) and "keypoints" in d for d in doc):
        people = {}
        for k, inst in enumerate(doc):
            people[k] = _points(inst["keypoints"], inst.get("keypoint_scores"), f"{path}: instance {k}")
        return RawInput(_stack([(0, people)], path), "mmpose-json", None, extras)
    raise InputError(f"{path}: unrecognised JSON layout; expected MMPose/rtmlib frames with 'instances', "
                     "AlphaPose detections or an OpenPose folder")


def _stack(frames: list, path: Path) -> dict[int, np.ndarray]:
    """[(key, {pid: (J, 3)})] -> {pid: (T, J, 3)} with NaN where a person is absent."""
    joints = {a.shape[0] for _, people in frames for a in people.values()}
    if not joints:
        raise InputError(f"{path}: no person in any frame")
    if len(joints) > 1:
        raise InputError(f"{path}: instances have different keypoint counts {sorted(joints)}")
    j = joints.pop()
    ids = sorted({pid for _, people in frames for pid in people})
    out = {pid: np.full((len(frames), j, 3), np.nan) for pid in ids}
    for t, (_, people) in enumerate(frames):
        for pid, a in people.items():
            out[pid][t] = a
    return out


def _natural_key(s: str):
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s)]


def _json_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".json" and p.is_file()),
                  key=lambda p: _natural_key(p.name))


def _read_openpose_folder(folder: Path) -> RawInput:
    frames = []
    for i, f in enumerate(_json_files(folder)):
        doc = _load_json(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("people"), list):
            raise InputError(f"{f}: not an OpenPose frame (no 'people' list)")
        people = {}
        for k, p in enumerate(doc["people"]):
            if not isinstance(p, dict) or "pose_keypoints_2d" not in p:
                raise InputError(f"{f}: person {k} has no 'pose_keypoints_2d'")
            pid = p.get("person_id", -1)
            pid = pid[0] if isinstance(pid, list) and pid else (None if isinstance(pid, list) else pid)
            pid = _person_id(pid, k, f"{f}: person {k}: person_id")
            pid = pid if pid >= 0 else k                 # OpenPose writes -1 when it does not track
            if pid in people:
                raise InputError(f"{f}: person id {pid} appears twice")
            a = _points(p["pose_keypoints_2d"], None, f"{f}: person {k}", flat=True)
            people[pid] = a
        frames.append((i, people))
    if not any(people for _, people in frames):
        raise InputError(f"{folder}: no person in any OpenPose frame")
    out = _stack(frames, folder)
    return RawInput(out, "openpose-folder", "openpose25" if next(iter(out.values())).shape[1] == 25 else None, {})


def select_people(raw: RawInput, person: int | None, all_people: bool,
                  where: str) -> list[tuple[int | None, np.ndarray]]:
    """The (id, array) pairs to lift; id None means 'the only person' (no _p<ID> suffix)."""
    ids = sorted(raw.people)
    if person is not None:
        if person not in raw.people:
            raise InputError(f"{where}: no person with id {person}; ids in the file: {_ids(ids)}")
        return [(person, raw.people[person])]
    if all_people:
        return [(i, raw.people[i]) for i in ids]
    if len(ids) > 1:
        raise InputError(f"{where}: {len(ids)} people (ids {_ids(ids)}); choose one with --person ID "
                         "or lift each with --all-people")
    return [(None, raw.people[ids[0]])]


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")

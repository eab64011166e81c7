"""Write examples/cmu_walk_2d.npz and examples/cmu_phone_2d.npz: real motion with ground truth.

Both clips are real motion capture from the CMU Graphics Lab Motion Capture Database
(mocap.cs.cmu.edu), as converted to Human3.6M-17 joints at 50 Hz in
``../shared/data/cmu_h36m17`` (see its README.md), of subjects the shipped model never trained on
(CMU validation subjects 3, 9, 16). Only the cameras are virtual.

* ``cmu_walk_2d.npz``: clip 03_03 (subject 3, "walk on uneven terrain"), frames 0-399, seen by the
  set's camera 0 (Human3.6M camera 54138969 intrinsics, 1000 x 1002 px); exact pinhole 2D (T, 17, 2).
* ``cmu_phone_2d.npz``: clip 16_02 (subject 16, "jump"), frames 220-559, seen by a
  users'-footage ``phone_portrait`` camera (:data:`train.data.wild.WILD_KINDS`: 1080 x 1920,
  upright phone at chest height panning to follow, :func:`~train.data.wild.wild_camera_track`
  with ``np.random.default_rng(CAMERA_SEED)``) and made detector-like by
  :func:`~train.data.wild.detector_artefacts` (``np.random.default_rng(DETECTOR_SEED)``): jitter,
  outliers, joint-definition offsets, missing joints filled in time; (T, 17, 3) with confidence.

Keys in each file: ``keypoints`` px, ``image_size`` (W, H), ``intrinsics`` (fx, fy, cx, cy) of the
true camera (not read by engine.run; pass them with ``--intrinsics``), ``fps``, ``gt_poses_3d``
(T, 17, 3) float32 mm, camera frame, root-relative (pelvis = joint 0 at the origin; engine.run
reports the MPJPE against it), ``source`` (attribution) and ``description``.

    python -m examples.make_cmu_examples [--data ../shared/data/cmu_h36m17] [--out examples]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.core.skeleton import H36M17

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cmu_h36m17"
OUT = Path(__file__).resolve().parent

WALK = {"clip": "03_03", "start": 0, "frames": 400, "camera": 0}
PHONE = {"clip": "16_02", "start": 220, "frames": 340, "kind": "phone_portrait"}
CAMERA_SEED = 0         # wild_camera_track
DETECTOR_SEED = 2       # detector_artefacts; the first seed (of 0, 1, 2, ...) that draws every artefact
                        # kind: detector joint definitions with the COCO rule, jitter, a missing-joint burst

ACK = ("CMU Graphics Lab Motion Capture Database, mocap.cs.cmu.edu; created with funding from NSF "
       "EIA-0196217")


def _load(data: Path, clip: str) -> dict:
    path = data / f"{clip}.npz"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (pass --data, the cmu_h36m17 folder)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _source(d: dict, start: int, frames: int, how: str) -> str:
    return (f"{ACK}; clip {d['clip_id']}, subject {int(d['subject'])}; converted to Human3.6M-17 joints "
            f"on the subject's own CMU skeleton at 50 Hz (../shared/data/cmu_h36m17, from {d['source_file']}); "
            f"CMU description \"{d['description']}\"; frames {start}-{start + frames - 1}; {how}; "
            "made by examples/make_cmu_examples.py")


def _root_relative(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam, np.float64)
    return (cam - cam[:, H36M17.root:H36M17.root + 1]).astype(np.float32)


def _inside(kp: np.ndarray, w: int, h: int) -> float:
    return float(((kp[..., 0] >= 0) & (kp[..., 0] < w) & (kp[..., 1] >= 0) & (kp[..., 1] < h)).mean())


def make_walk(data: Path) -> dict:
    d = _load(data, WALK["clip"])
    s, n, c = WALK["start"], WALK["frames"], WALK["camera"]
    fx, fy, cx, cy, w, h = (float(v) for v in d["intrinsics"][c])
    kp = d["keypoints_2d"][c, s:s + n].astype(np.float32)
    how = (f"virtual camera {c} of that set (Human3.6M camera {d['cam_names'][c]} intrinsics, "
           f"{int(w)}x{int(h)} px, no distortion), exact pinhole 2D (no detector noise)")
    return {
        "keypoints": kp,
        "image_size": np.array([int(w), int(h)], np.int64),
        "intrinsics": np.array([fx, fy, cx, cy], np.float32),
        "fps": np.float32(d["fps"]),
        "gt_poses_3d": _root_relative(d["positions_3d_cam"][c, s:s + n]),
        "source": np.array(_source(d, s, n, how)),
        "description": np.array(f"CMU subject {int(d['subject'])} walking on uneven terrain (clip "
                                f"{d['clip_id']}), static camera 0 of the CMU set, exact 2D; {n} frames at "
                                "50 Hz"),
    }


def make_phone(data: Path) -> dict:
    from train.data.wild import WILD_KINDS, detector_artefacts, project_track, wild_camera_track
    d = _load(data, PHONE["clip"])
    s, n = PHONE["start"], PHONE["frames"]
    kind = next(k for k in WILD_KINDS if k.name == PHONE["kind"])
    world = d["positions_3d_world"][s:s + n]
    Rs, ts, intr = wild_camera_track(world, kind, np.random.default_rng(CAMERA_SEED))
    kp, cam = project_track(world, Rs, ts, intr)
    noisy, conf = detector_artefacts(kp, intr, H36M17, np.random.default_rng(DETECTOR_SEED))
    keypoints = np.concatenate([noisy, conf[..., None]], -1).astype(np.float32)
    how = (f"virtual users'-footage camera of kind {kind.name} ({kind.description}; "
           f"train.data.wild.wild_camera_track, seed {CAMERA_SEED}; f = {intr.fx:.1f} px), 2D made "
           f"detector-like by train.data.wild.detector_artefacts (seed {DETECTOR_SEED})")
    return {
        "keypoints": keypoints,
        "image_size": np.array([intr.width, intr.height], np.int64),
        "intrinsics": np.array([intr.fx, intr.fy, intr.cx, intr.cy], np.float32),
        "fps": np.float32(d["fps"]),
        "gt_poses_3d": _root_relative(cam),
        "source": np.array(_source(d, s, n, how)),
        "description": np.array(f"CMU subject {int(d['subject'])} jumping (clip {d['clip_id']}), filmed by an "
                                f"upright phone that pans to follow ({kind.name}), detector-like 2D with "
                                f"confidence; {n} frames at 50 Hz"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the cmu_h36m17 folder")
    ap.add_argument("--out", type=Path, default=OUT, help="folder to write the two clips to")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in (("cmu_walk_2d.npz", make_walk), ("cmu_phone_2d.npz", make_phone)):
        arrays = make(args.data)
        kp, gt = arrays["keypoints"], arrays["gt_poses_3d"]
        w, h = (int(v) for v in arrays["image_size"])
        inside = _inside(kp, w, h)
        assert np.isfinite(kp).all() and np.isfinite(gt).all(), name
        assert np.abs(gt[:, H36M17.root]).max() == 0.0, name
        path = args.out / name
        np.savez_compressed(path, **arrays)
        print(f"wrote {path}: {kp.shape[0]} frames, keypoints {kp.shape}, {w}x{h} px, "
              f"{100 * inside:.1f} % of joints in the image, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()

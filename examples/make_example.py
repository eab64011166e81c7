"""Write examples/walk_2d.npz: a synthetic 2D walking clip made by this project's own code.

A procedural walker (forward kinematics of the Human3.6M skeleton with sinusoidal hip, knee,
shoulder and elbow angles, bone lengths of an average adult, 50 Hz) walks a circle of 2 m radius
around a point 5.5 m in front of a default 1000 x 1000 camera (f = 1145 px); its joints are
projected to pixels. No motion-capture data is involved.

The walker's world frame is right-handed (x, y up, z; the left side is ``up x forward``), and
:func:`to_camera` maps it to the camera's right-handed x right, y down, z forward by a rotation
(180 degrees about x), so left and right stay anatomically correct in the image. (Before, only y
was flipped, a reflection that mirrored the walker: its left side faced against its knees and the
direction of travel.)

    python -m examples.make_example [--frames 300] [--out examples/walk_2d.npz]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.core.camera import Intrinsics
from engine.core.skeleton import H36M17

# bone lengths (m) per child joint of H36M17 (index = child)
_LENGTH = {1: 0.13, 2: 0.44, 3: 0.44, 4: 0.13, 5: 0.44, 6: 0.44, 7: 0.23, 8: 0.26, 9: 0.11, 10: 0.12,
           11: 0.15, 12: 0.28, 13: 0.25, 14: 0.15, 15: 0.28, 16: 0.25}


def walker(frames: int, fps: float = 50.0) -> np.ndarray:
    """(T, J, 3) world joints in metres, y up, walking a circle."""
    t = np.arange(frames) / fps
    phase = 2 * np.pi * 0.9 * t                          # 0.9 strides per second
    heading = t * 1.1 / 2.0                              # 1.1 m/s on a 2 m radius
    out = np.zeros((frames, H36M17.num_joints, 3))
    for i in range(frames):
        fwd = np.array([-np.sin(heading[i]), 0, np.cos(heading[i])])
        side = np.array([np.cos(heading[i]), 0, np.sin(heading[i])])
        up = np.array([0.0, 1.0, 0.0])
        pelvis = np.array([2.0 * np.cos(heading[i]), 0.93 + 0.02 * np.cos(2 * phase[i]), 2.0 * np.sin(heading[i])])
        j = {0: pelvis}
        for s, hip, knee, ankle, sign in ((1, 1, 2, 3, -1.0), (-1, 4, 5, 6, 1.0)):
            swing = 0.45 * np.sin(phase[i] + (0 if s == 1 else np.pi))
            bend = 0.6 * max(0.0, np.sin(phase[i] + (0 if s == 1 else np.pi) + 1.2))
            j[hip] = pelvis + sign * side * _LENGTH[hip]
            thigh = -up * np.cos(swing) + fwd * np.sin(swing)
            j[knee] = j[hip] + thigh * _LENGTH[knee]
            shin = -up * np.cos(swing - bend) + fwd * np.sin(swing - bend)
            j[ankle] = j[knee] + shin * _LENGTH[ankle]
        j[7] = pelvis + up * _LENGTH[7] + fwd * 0.02
        j[8] = j[7] + up * _LENGTH[8]
        j[9] = j[8] + up * _LENGTH[9] + fwd * 0.03
        j[10] = j[9] + up * _LENGTH[10]
        for s, sh, el, wr, sign in ((1, 14, 15, 16, -1.0), (-1, 11, 12, 13, 1.0)):
            swing = -0.35 * np.sin(phase[i] + (0 if s == 1 else np.pi))
            j[sh] = j[8] + sign * side * _LENGTH[sh]
            upper = -up * np.cos(swing) + fwd * np.sin(swing)
            j[el] = j[sh] + upper * _LENGTH[el]
            fore = -up * np.cos(swing + 0.4) + fwd * np.sin(swing + 0.4)
            j[wr] = j[el] + fore * _LENGTH[wr]
        out[i] = np.stack([j[k] for k in range(H36M17.num_joints)])
    return out


CAMERA_HEIGHT_M = 1.2      # above the walker's floor (world y = 0)
CAMERA_DISTANCE_M = 5.5    # to the centre of the circle


def to_camera(world: np.ndarray) -> np.ndarray:
    """World joints (..., 3) metres (y up) -> camera axes (x right, y down, z forward), metres.

    A rotation by 180 degrees about x (y and z flip, det +1) plus a translation: the camera stands
    CAMERA_HEIGHT_M above the floor, CAMERA_DISTANCE_M from the circle centre, looking along world -z.
    """
    world = np.asarray(world, dtype=np.float64)
    return np.stack([world[..., 0], CAMERA_HEIGHT_M - world[..., 1], CAMERA_DISTANCE_M - world[..., 2]], -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("walk_2d.npz"))
    args = ap.parse_args()
    world = walker(args.frames)
    cam = to_camera(world)
    intr = Intrinsics.default_for(1000, 1000)
    kp = np.stack([intr.fx * cam[..., 0] / cam[..., 2] + intr.cx,
                   intr.fy * cam[..., 1] / cam[..., 2] + intr.cy], -1).astype(np.float32)
    np.savez_compressed(args.out, keypoints=kp, image_size=np.array([1000, 1000]))
    print(f"wrote {args.out}: {kp.shape[0]} frames")


if __name__ == "__main__":
    main()

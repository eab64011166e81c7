"""The common currency of the data loaders: one video seen by one camera.

A :class:`Clip` holds 2D keypoints in pixels and the matching 3D joints in millimetres in the
**camera frame** (absolute: the root keeps its camera-frame position, nothing is made
root-relative here; :class:`train.data.windows.WindowDataset` does that when it cuts windows).
Joint order is the skeleton's (Human3.6M 17 for every loader in this package); a clip does not
know its skeleton, only its joint count J.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.camera import Intrinsics


@dataclass(frozen=True, eq=False)
class Clip:
    """One video from one camera.

    Attributes:
        name: unique id, e.g. ``"09_01/54138969"`` (CMU), ``"S9/Walking 1/55011271"`` (H36M).
        subject: who performs it (``"9"`` for CMU subject 9, ``"S9"``, ``"TS1"``).
        keypoints_2d: (T, J, 2) float32 pixels.
        positions_3d: (T, J, 3) float32 millimetres, camera frame (x right, y down, z forward),
            absolute (not root-relative).
        intrinsics: the camera's pixel intrinsics and image size.
        fps: frame rate of the arrays.
        action: optional action / description.
        valid: optional (T,) bool frame-validity mask (e.g. MPI-INF-3DHP ``valid_frame``);
            ``None`` means every frame is valid.
        camera: optional camera id (e.g. ``"54138969"``).
    """
    name: str
    subject: str
    keypoints_2d: np.ndarray
    positions_3d: np.ndarray
    intrinsics: Intrinsics
    fps: float
    action: str | None = None
    valid: np.ndarray | None = None
    camera: str | None = None

    def __post_init__(self) -> None:
        kp = np.asarray(self.keypoints_2d, dtype=np.float32)
        pos = np.asarray(self.positions_3d, dtype=np.float32)
        where = f"clip {self.name!r}"
        if kp.ndim != 3 or kp.shape[-1] != 2:
            raise ValueError(f"{where}: keypoints_2d must be (T, J, 2), got {kp.shape}")
        if pos.ndim != 3 or pos.shape[-1] != 3:
            raise ValueError(f"{where}: positions_3d must be (T, J, 3), got {pos.shape}")
        if kp.shape[:2] != pos.shape[:2]:
            raise ValueError(f"{where}: keypoints_2d {kp.shape} and positions_3d {pos.shape} differ in (T, J)")
        if kp.shape[0] == 0 or kp.shape[1] == 0:
            raise ValueError(f"{where}: empty clip (T={kp.shape[0]}, J={kp.shape[1]})")
        if not np.isfinite(kp).all():
            raise ValueError(f"{where}: keypoints_2d has {int((~np.isfinite(kp)).sum())} non-finite values")
        if not np.isfinite(pos).all():
            raise ValueError(f"{where}: positions_3d has {int((~np.isfinite(pos)).sum())} non-finite values")
        if not isinstance(self.intrinsics, Intrinsics):
            raise ValueError(f"{where}: intrinsics must be engine.core.camera.Intrinsics, "
                             f"got {type(self.intrinsics).__name__}")
        fps = float(self.fps)
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"{where}: fps must be positive, got {self.fps}")
        valid = self.valid
        if valid is not None:
            valid = np.asarray(valid)
            if valid.shape != (kp.shape[0],):
                raise ValueError(f"{where}: valid must be ({kp.shape[0]},), got {valid.shape}")
            valid = valid.astype(bool)
        object.__setattr__(self, "keypoints_2d", kp)
        object.__setattr__(self, "positions_3d", pos)
        object.__setattr__(self, "fps", fps)
        object.__setattr__(self, "valid", valid)

    @property
    def num_frames(self) -> int:
        return int(self.keypoints_2d.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.keypoints_2d.shape[1])

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"Clip(name={self.name!r}, subject={self.subject!r}, T={self.num_frames}, "
                f"J={self.num_joints}, fps={self.fps:g}, {self.intrinsics.width}x{self.intrinsics.height})")

"""Training windows: cut clips into fixed-length frame windows and turn them into model tensors.

Each item is a dict of tensors for one window of ``frames`` consecutive frames (F) of one clip:

=========  ============  ===================================================================
key        shape         content
=========  ============  ===================================================================
kp2d       (F, J, 2)     2D keypoints in normalised screen units (``normalize_screen`` with
                         the clip's image width/height); noisy if detector noise is on
conf       (F, J)        2D confidences (1 without detector noise)
pose3d     (F, J, 3)     metres, camera frame, root-relative (root joint = 0)
root       (F, 3)        metres, camera-frame position of the root joint
intr       (4,)          normalised intrinsics fx, fy, cx, cy (``Intrinsics.normalized()``)
dist       (5,)          distortion k1, k2, k3, p1, p2 (zeros when none; unit-free)
valid      (F,)          bool: a real frame (not padding) that the clip marks valid
flipped    ()            bool: the window was mirrored
clip       ()            int64 index of the clip in ``dataset.clips``
start      ()            int64 first frame of the window in the clip
=========  ============  ===================================================================

Clips shorter than ``frames`` give one window padded by repeating their last frame
(``valid`` False on the padding). Longer clips give windows at ``0, stride, 2 stride, ...`` plus,
with ``include_tail``, one window ending at the clip's last frame.

Augmentation (optional, on the fly): horizontal flip with probability ``flip_prob``
(:func:`train.data.augment.flip_clip`) and detector noise (:func:`train.data.augment.detector_noise`).
Every item draws from its own generator ``np.random.default_rng((seed, epoch, index))``, so the
result depends only on (seed, epoch, index) -- not on the worker or the order of access. Call
:meth:`WindowDataset.set_epoch` to get fresh augmentations each epoch (with persistent DataLoader
workers the epoch must be set before the workers are created).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.core.camera import normalize_screen
from engine.core.skeleton import H36M17, Skeleton

from .augment import detector_noise, flip_clip
from .clip import Clip


def window_starts(num_frames: int, frames: int, stride: int, include_tail: bool = True) -> list[int]:
    """Start frames of the windows of one clip."""
    if num_frames <= frames:
        return [0]
    starts = list(range(0, num_frames - frames + 1, stride))
    if include_tail and starts[-1] != num_frames - frames:
        starts.append(num_frames - frames)
    return starts


class WindowDataset(Dataset):
    """Fixed-length windows over a list of :class:`Clip` (see the module docstring).

    Args:
        clips: the clips (all with ``skeleton.num_joints`` joints).
        frames: window length F.
        stride: distance between window starts; default ``frames`` (no overlap).
        skeleton: joint layout (root joint, flip permutation).
        flip_prob: probability of a horizontal flip per window.
        noise: detector noise: False/None (off), True (defaults of ``detector_noise``) or a dict of
            its keyword arguments.
        seed: base seed of the per-item generators.
        include_tail: add a last window that ends at each clip's last frame.
    """

    def __init__(self, clips: Sequence[Clip], frames: int, stride: int | None = None,
                 skeleton: Skeleton = H36M17, flip_prob: float = 0.0,
                 noise: bool | Mapping | None = None, seed: int = 0, include_tail: bool = True) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        stride = frames if stride is None else int(stride)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        for c in clips:
            if c.num_joints != skeleton.num_joints:
                raise ValueError(f"clip {c.name!r} has {c.num_joints} joints; skeleton "
                                 f"{skeleton.name} has {skeleton.num_joints}")
        self.clips = list(clips)
        self.frames = int(frames)
        self.stride = stride
        self.skeleton = skeleton
        self.flip_prob = float(flip_prob)
        self.noise_kwargs: dict | None = None if not noise else ({} if noise is True else dict(noise))
        self.seed = int(seed)
        self.epoch = 0
        ci, st = [], []
        for i, c in enumerate(self.clips):
            s = window_starts(c.num_frames, self.frames, stride, include_tail)
            ci.extend([i] * len(s))
            st.extend(s)
        self._clip_idx = np.asarray(ci, dtype=np.int64)
        self._starts = np.asarray(st, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._starts)

    def window(self, index: int) -> tuple[int, int]:
        """(clip index, start frame) of item ``index``."""
        return int(self._clip_idx[index]), int(self._starts[index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        ci, start = self.window(index)
        clip = self.clips[ci]
        F = self.frames
        pos_idx = np.arange(start, start + F)
        valid = pos_idx < clip.num_frames
        idx = np.minimum(pos_idx, clip.num_frames - 1)
        if clip.valid is not None:
            valid = valid & clip.valid[idx]
        kp = clip.keypoints_2d[idx]
        pos = clip.positions_3d[idx]
        intr = clip.intrinsics

        rng = np.random.default_rng((self.seed, self.epoch, index))
        flipped = False
        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            kp, pos, intr = flip_clip(kp, pos, intr, self.skeleton)
            flipped = True
        if self.noise_kwargs is not None:
            kp, conf = detector_noise(kp, rng, **self.noise_kwargs)
        else:
            conf = np.ones(kp.shape[:2], dtype=np.float32)

        r = self.skeleton.root
        pos_m = pos.astype(np.float32) / 1000.0
        root = pos_m[:, r].copy()
        rel = pos_m - pos_m[:, r:r + 1]
        rel[:, r] = 0.0
        dist = np.zeros(5, np.float32) if intr.distortion is None else np.asarray(intr.distortion, np.float32)
        return {
            "kp2d": torch.from_numpy(
                normalize_screen(kp.astype(np.float32), intr.width, intr.height).astype(np.float32)),
            "conf": torch.from_numpy(conf.astype(np.float32)),
            "pose3d": torch.from_numpy(rel),
            "root": torch.from_numpy(root),
            "intr": torch.from_numpy(intr.normalized()),
            "dist": torch.from_numpy(dist),
            "valid": torch.from_numpy(valid),
            "flipped": torch.tensor(flipped),
            "clip": torch.tensor(ci, dtype=torch.int64),
            "start": torch.tensor(start, dtype=torch.int64),
        }

"""Step-indexed batch sources: ``source.batch(step, size, stream)`` -> dict of tensors.

Every batch is a pure function of (seed, stream, step, rank), so a resumed run sees exactly the
batches it would have seen without the interruption, and each DDP rank draws its own shard.

Keys (B windows of F frames, J joints): ``kp2d`` (B, F, J, 2) normalised screen units, ``conf``
(B, F, J), ``pose3d`` (B, F, J, 3) metres root-relative camera frame, ``intr`` (B, 4) normalised.

* :class:`CMUWorldSource` -- world-frame motion (CMU, HDM05: every real set) seen by a **fresh
  random camera per window**: with probability ``cam_wild_prob`` a users'-footage camera
  (:func:`train.data.random_wild_camera`: portrait or landscape, focal 0.4-4x the long side, the
  person 0.1-0.9 of the frame height, 0.1-6 m high, off-centre, partly out of frame), otherwise a
  Human3.6M-like one (:func:`train.data.random_virtual_camera`: any azimuth, 0.8-2.2 m high, 3.5-8 m away,
  focal 1145 px +- 5 %; aimed at the whole clip with probability ``cam_clip_aim``, else at the
  window, the look-at point jittered by ``cam_target_jitter``, so the person appears anywhere in
  the image as with a fixed real camera; always-centred cameras made the encoder 3x worse on the
  CMU set's own cameras), horizontal flips (``flip_prob``) and, on a fraction ``noise_prob`` of
  the windows, detector-like 2D (:func:`train.data.detector_artefacts`: jitter relative to the
  person's size, outliers, missing joints, detector joint definitions; or with ``noise_wild``
  off :func:`train.data.detector_noise`). Clips are drawn with
  :func:`train.data.subject_weights` (``subject_power``) so no subject dominates.
* :class:`ClipWindowSource` -- fixed-camera clips (Human3.6M): :class:`train.data.WindowDataset`
  windows drawn through a :class:`torch.utils.data.DistributedSampler` (one epoch = one pass over
  all windows; the sampler's epoch is the step's epoch), flips and the same noise fraction.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from engine.core.camera import Intrinsics, normalize_screen
from engine.core.input_norm import person_view, to_view
from engine.core.skeleton import Skeleton

from .config import TrainConfig
from .data import (
    Clip,
    WindowDataset,
    WorldClip,
    detector_artefacts,
    detector_noise,
    flip_clip,
    project_world,
    random_virtual_camera,
    random_wild_camera,
    subject_weights,
)


def person_view_item(item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn one training window into its per-frame person-centred cameras (:mod:`engine.core.input_norm`).

    ``kp2d`` (F, J, 2) and ``intr`` (4,) in normalised units, ``conf`` (F, J), ``pose3d`` (F, J, 3)
    root-relative: the 2D is re-projected into each frame's rotated camera and the 3D target
    rotated with it, exactly what :class:`engine.core.pipeline.Lifter` does at inference.
    """
    kp, intr = torch.from_numpy(item["kp2d"]), torch.from_numpy(item["intr"])
    rot = person_view(kp, torch.from_numpy(item["conf"]), intr)                  # (F, 3, 3)
    pose = torch.from_numpy(item["pose3d"]) @ rot.transpose(-1, -2)              # (F, J, 3)
    return {**item, "kp2d": to_view(kp, rot, intr).numpy(), "pose3d": pose.numpy()}


def _stack(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([it[k] for it in items]).astype(np.float32)) for k in items[0]}


class CMUWorldSource:
    def __init__(self, clips: Sequence[WorldClip], frames: int, skeleton: Skeleton, tcfg: TrainConfig,
                 rank: int = 0, world_size: int = 1, person_view: bool = False):
        if not clips:
            raise ValueError("no training clips")
        self.clips = list(clips)
        self.frames = int(frames)
        self.skeleton = skeleton
        self.tcfg = tcfg
        self.rank, self.world_size = rank, world_size
        self.person_view = person_view
        self.p = subject_weights(self.clips, self.frames, tcfg.subject_power)

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        t = self.tcfg
        c = self.clips[int(rng.choice(len(self.clips), p=self.p))]
        start = int(rng.integers(0, max(1, c.num_frames - self.frames + 1)))
        idx = np.minimum(np.arange(start, start + self.frames), c.num_frames - 1)
        world = c.positions_3d[idx]
        if rng.random() < t.cam_wild_prob:
            R, tr, intr = random_wild_camera(world, rng, root=self.skeleton.root)
        else:
            aim = c.positions_3d[::10] if rng.random() < t.cam_clip_aim else world   # (T', J, 3)
            R, tr, intr = random_virtual_camera(world, rng, root=self.skeleton.root, aim=aim,
                                                target_jitter=t.cam_target_jitter)
        kp, cam = project_world(world, R, tr, intr)
        if rng.random() < t.flip_prob:
            kp, cam, intr = flip_clip(kp, cam, intr, self.skeleton)
        if rng.random() < t.noise_prob:
            if t.noise_wild:
                kp, conf = detector_artefacts(kp, intr, self.skeleton, rng)
            else:
                s = rng.uniform(*t.noise_scale_range)
                kp, conf = detector_noise(kp, rng, jitter_px=2.5 * s, outlier_px=60.0 * s)
        else:
            conf = np.ones(kp.shape[:2], np.float32)
        r = self.skeleton.root
        pos = cam.astype(np.float32) / 1000.0
        rel = pos - pos[:, r:r + 1]
        if self.person_view and rng.random() < t.view_default_k:      # as a user who gives only the image size
            intr = Intrinsics.default_for(intr.width, intr.height)
        item = {"kp2d": normalize_screen(kp.astype(np.float32), intr.width, intr.height),
                "conf": conf.astype(np.float32), "pose3d": rel, "intr": intr.normalized()}
        return person_view_item(item) if self.person_view else item

    def batch(self, step: int, size: int, stream: int = 0) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.tcfg.seed, stream, step, self.rank))
        return _stack([self.sample(rng) for _ in range(size)])


class ClipWindowSource:
    """Fixed-camera windows (e.g. Human3.6M) through a DistributedSampler."""

    def __init__(self, clips: Sequence[Clip], frames: int, skeleton: Skeleton, tcfg: TrainConfig,
                 rank: int = 0, world_size: int = 1, stride: int | None = None, person_view: bool = False):
        stride = stride or max(1, frames // 3)
        self.clean = WindowDataset(clips, frames, stride, skeleton, flip_prob=tcfg.flip_prob, seed=tcfg.seed)
        self.noisy = WindowDataset(clips, frames, stride, skeleton, flip_prob=tcfg.flip_prob,
                                   noise=True, seed=tcfg.seed)
        self.tcfg = tcfg
        self.person_view = person_view
        self.sampler = DistributedSampler(self.clean, num_replicas=world_size, rank=rank,
                                          shuffle=True, seed=tcfg.seed, drop_last=True)
        self._epoch, self._order = -1, []

    def batch(self, step: int, size: int, stream: int = 0) -> dict[str, torch.Tensor]:
        per_epoch = max(1, len(self.sampler) // size)
        epoch, pos = divmod(step, per_epoch)
        epoch += 1000 * stream
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self.clean.set_epoch(epoch)
            self.noisy.set_epoch(epoch)
            self._order, self._epoch = list(self.sampler), epoch
        idx = self._order[pos * size:(pos + 1) * size]
        rng = np.random.default_rng((self.tcfg.seed, stream, step))
        items = []
        for i in idx:
            ds = self.noisy if rng.random() < self.tcfg.noise_prob else self.clean
            it = ds[i]
            item = {k: it[k].numpy() for k in ("kp2d", "conf", "pose3d", "intr")}
            items.append(person_view_item(item) if self.person_view else item)
        return _stack(items)

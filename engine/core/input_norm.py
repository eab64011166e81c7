"""What the networks see of the 2D: the camera-robust input representation.

The model's geometry (STPG's reprojection, the root solve, the output trajectory) runs on 2D in
true camera units (normalised screen coordinates and intrinsics, :mod:`engine.core.camera`). The
networks (context encoder, denoiser condition, HPIM's 2D history) see the 2D through one of two
representations, chosen by :attr:`engine.core.config.StarPoseConfig.input_norm` and stored in every
checkpoint:

``person`` (the default of every preset)
    Each frame is centred on the mean of its joints and divided by their RMS distance to that
    mean. What real footage varies and a lifter must not depend on is gone: image size and
    aspect (portrait or landscape), where the person is in the frame, how many pixels tall the
    person is, and the focal length (a pinhole's focal length and the person's distance act on a
    frame as one scale, up to the perspective within the body). Per frame, not per window, so
    every backend computes it inside the exported graphs, a C++ application needs no extra code,
    and streaming needs no look-ahead. Costs measured on the CMU validation set are in the
    README; the temporal encoder smooths the per-frame scale's jitter under detector noise.
``screen``
    The normalised screen coordinates as they are (VideoPose3D): the representation of
    checkpoints written before ``input_norm`` existed. Such checkpoints have no ``input_norm``
    field and load as ``screen``, so they still give exactly their old results.

Person-centred view (:attr:`engine.core.config.StarPoseConfig.input_view`): centring a frame throws
away where the person is in the image, and with it the viewing direction. A person 9 degrees
off the optical axis of a wide-angle camera is seen obliquely; a network that sees only the
centred 2D answers in a frame turned by that angle (44 mm MPJPE of pure rotation, measured on
the wild validation's high wide-angle camera). With ``input_view = "person"`` the lifter
therefore turns every frame's camera about its centre until the ray through the person (the
confidence-weighted mean of the joints) is the optical axis (:func:`person_view`, the minimal
rotation), re-projects the 2D into that virtual camera (:func:`to_view`, same intrinsics), lifts
there, and turns the 3D back (:func:`from_view`). Exact pinhole geometry, so STPG's reprojection
stays exact in the virtual camera. It needs the focal length: with only the image size the
default focal length is used, which corrects part of the angle (training draws 30 % of its
rotations with that default too). Done by :class:`engine.core.pipeline.Lifter` and
:class:`engine.core.pipeline.StreamingLifter` around every backend; lens distortion is ignored here.
``camera`` (old checkpoints) lifts in the real camera.
"""
from __future__ import annotations

import numpy as np
import torch

INPUT_NORMS = ("person", "screen")
INPUT_VIEWS = ("person", "camera")
MIN_SCALE = 1e-4    # normalised screen units (1e-4 of half the image width): a collapsed frame stays finite


def person_normalize(kp: torch.Tensor) -> torch.Tensor:
    """(..., J, 2) -> (..., J, 2): centred on the joints' mean, unit RMS distance to it."""
    centred = kp - kp.mean(-2, keepdim=True)                                   # (..., J, 2)
    scale = centred.pow(2).sum(-1).mean(-1, keepdim=True).sqrt()               # (..., 1)
    return centred / scale.clamp_min(MIN_SCALE)[..., None]


def network_input(kp: torch.Tensor, kind: str) -> torch.Tensor:
    """The 2D as the networks see it (see the module docstring); ``kp`` is (..., J, 2)."""
    if kind == "person":
        return person_normalize(kp)
    if kind == "screen":
        return kp
    raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {kind!r}")


def person_view(kp: torch.Tensor, conf: torch.Tensor, intr: torch.Tensor) -> torch.Tensor:
    """Per-frame rotations (T, 3, 3) that turn the camera to look straight at the person.

    Args:
        kp: (T, J, 2) 2D in the units of ``intr`` (normalised screen units in the pipeline).
        conf: (T, J) confidences (weights of the person's centre; all zero falls back to the mean).
        intr: (4,) [fx, fy, cx, cy].
    Returns:
        R (T, 3, 3) with ``R @ ray(centre) ∝ (0, 0, 1)``: the minimal rotation (no roll added).
    """
    w = conf.clamp_min(0)                                                       # (T, J)
    w = torch.where(w.sum(-1, keepdim=True) > 0, w, torch.ones_like(w))
    centre = (kp * w[..., None]).sum(-2) / w.sum(-1)[..., None]                 # (T, 2)
    ray = torch.cat([(centre - intr[2:4]) / intr[0:2], torch.ones_like(centre[..., :1])], -1)   # (T, 3)
    d = ray / ray.norm(dim=-1, keepdim=True)
    v = torch.stack([d[..., 1], -d[..., 0], torch.zeros_like(d[..., 0])], -1)   # d x z
    c = d[..., 2]
    zero = torch.zeros_like(c)
    vx = torch.stack([torch.stack([zero, -v[..., 2], v[..., 1]], -1),
                      torch.stack([v[..., 2], zero, -v[..., 0]], -1),
                      torch.stack([-v[..., 1], v[..., 0], zero], -1)], -2)       # (T, 3, 3)
    eye = torch.eye(3, dtype=kp.dtype, device=kp.device).expand_as(vx)
    return eye + vx + vx @ vx / (1 + c)[..., None, None]


def to_view(kp: torch.Tensor, rot: torch.Tensor, intr: torch.Tensor) -> torch.Tensor:
    """2D (T, J, 2) seen by the real camera -> as seen by the rotated camera (same intrinsics)."""
    ray = torch.cat([(kp - intr[2:4]) / intr[0:2], torch.ones_like(kp[..., :1])], -1)   # (T, J, 3)
    r = ray @ rot.transpose(-1, -2)                                             # (T, J, 3)
    return r[..., :2] / r[..., 2:3].clamp_min(1e-3) * intr[0:2] + intr[2:4]


def from_view(poses: torch.Tensor | np.ndarray, rot: torch.Tensor) -> np.ndarray:
    """3D (T, J, 3) in the rotated camera -> the real camera (``R^T p`` per frame)."""
    p = torch.as_tensor(np.asarray(poses), dtype=rot.dtype)
    return np.asarray((p @ rot).numpy(), dtype=np.float32)                      # row vectors: (R^T p)^T = p^T R

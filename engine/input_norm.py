"""What the networks see of the 2D: the camera-robust input representation.

The model's geometry (STPG's reprojection, the root solve, the output trajectory) runs on 2D in
true camera units (normalised screen coordinates and intrinsics, :mod:`engine.camera`). The
networks (context encoder, denoiser condition, HPIM's 2D history) see the 2D through one of two
representations, chosen by :attr:`engine.config.StarPoseConfig.input_norm` and stored in every
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
"""
from __future__ import annotations

import torch

INPUT_NORMS = ("person", "screen")
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

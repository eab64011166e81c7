"""Shared helpers and fixtures for the engine tests (config, camera, modules, GMM, diffusion,
guidance, pipeline, checkpoint, CLI).

Import what a test module needs with ``from helpers import ...`` (this folder is put on sys.path
below, so it works whatever pytest's rootdir / import mode). Fixtures defined here become active in
a test module only when imported into it.

Everything is sized for the ``tiny`` preset and runs single-threaded: the CI machine has two
cores shared with other jobs, where torch's default intra-op threading is many times slower for
these small tensors than one thread.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.core.camera import Intrinsics, normalize_screen  # noqa: E402
from engine.core.checkpoint import save_checkpoint  # noqa: E402
from engine.core.config import StarPoseConfig  # noqa: E402
from engine.core.gmm import GMMParams  # noqa: E402
from engine.core.guidance import GuidanceInputs  # noqa: E402
from engine.core.model import StarPose  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402

J = H36M17.num_joints
TINY = StarPoseConfig.from_name("tiny")
IMAGE_W, IMAGE_H = 1000, 800


# ----------------------------------------------------------------------------------------------
# poses

# Offsets (metres, camera axes: x right, y down, z forward) of each joint from its parent, by
# joint name; left and right mirror each other in x, so this pose is exactly symmetric.
_OFFSETS = {
    "pelvis": (0.0, 0.0, 0.0),
    "r_hip": (-0.13, 0.02, 0.0), "r_knee": (0.0, 0.44, 0.03), "r_ankle": (0.0, 0.43, -0.04),
    "l_hip": (0.13, 0.02, 0.0), "l_knee": (0.0, 0.44, 0.03), "l_ankle": (0.0, 0.43, -0.04),
    "spine": (0.0, -0.23, 0.01), "thorax": (0.0, -0.25, -0.02), "neck_nose": (0.0, -0.11, -0.06),
    "head": (0.0, -0.12, 0.02),
    "l_shoulder": (0.16, 0.03, 0.01), "l_elbow": (0.02, 0.27, 0.06), "l_wrist": (0.0, 0.25, -0.08),
    "r_shoulder": (-0.16, 0.03, 0.01), "r_elbow": (-0.02, 0.27, 0.06), "r_wrist": (0.0, 0.25, -0.08),
}


def reference_pose(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A plausible, exactly left/right symmetric root-relative pose (J, 3) in metres."""
    sk = H36M17
    pose = torch.zeros(sk.num_joints, 3, dtype=torch.float64)
    for j in range(sk.num_joints):            # parents precede children in H36M17
        p = sk.parents[j]
        off = torch.tensor(_OFFSETS[sk.joint_names[j]], dtype=torch.float64)
        pose[j] = off if p < 0 else pose[p] + off
    return (pose - pose[sk.root]).to(dtype)


def moving_poses(frames: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A smooth (T, J, 3) root-relative sequence around :func:`reference_pose`."""
    g = torch.Generator().manual_seed(seed)
    base = reference_pose(torch.float64)
    t = torch.arange(frames, dtype=torch.float64)[:, None, None]
    phase = torch.rand(1, base.shape[0], 3, generator=g, dtype=torch.float64) * 6.28
    poses = base[None] + 0.03 * torch.sin(0.3 * t + phase)
    return (poses - poses[:, H36M17.root:H36M17.root + 1]).to(dtype)


def default_intrinsics(width: int = IMAGE_W, height: int = IMAGE_H) -> Intrinsics:
    return Intrinsics.default_for(width, height)


def project_pixels(poses: torch.Tensor, root: torch.Tensor, intr: Intrinsics) -> np.ndarray:
    """Root-relative poses (..., J, 3) + root (3,) metres -> pixel keypoints (..., J, 2) float32."""
    q = poses.double() + root.double()
    xy = q[..., :2] / q[..., 2:3]
    px = xy * torch.tensor([intr.fx, intr.fy], dtype=torch.float64) + torch.tensor([intr.cx, intr.cy],
                                                                                    dtype=torch.float64)
    return px.numpy().astype(np.float32)


def video_keypoints(frames: int, seed: int = 0, intr: Intrinsics | None = None,
                    noise_px: float = 2.0) -> np.ndarray:
    """(T, J, 2) pixel keypoints of a person ~4 m in front of the camera, plus detector noise."""
    intr = intr or default_intrinsics()
    kp = project_pixels(moving_poses(frames, seed), torch.tensor([0.1, 0.2, 4.0]), intr)
    rng = np.random.default_rng(seed)
    return (kp + rng.normal(0, noise_px, kp.shape)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# model

def make_gmm(cfg: StarPoseConfig = TINY, seed: int = 0, scale: float = 0.04) -> GMMParams:
    """A valid GMM with a non-zero mixture mean (so mu != 0 paths are exercised)."""
    g = torch.Generator().manual_seed(seed)
    m, d = cfg.diffusion.gmm_components, 3 * cfg.num_joints
    w = torch.rand(m, generator=g) + 0.5
    return GMMParams(w / w.sum(), 0.5 * torch.randn(m, d, generator=g),
                     0.5 + torch.rand(m, d, generator=g), scale)


def make_model(seed: int = 0, cfg: StarPoseConfig = TINY, gmm: bool = True) -> StarPose:
    """A tiny StarPose with deterministic random weights (and a fitted-looking GMM)."""
    torch.manual_seed(seed)
    model = StarPose(cfg)
    if gmm:
        model.set_gmm(make_gmm(cfg, seed))
    return model.eval()


def make_gin(b: int = 2, seed: int = 0, valid: int | None = None, history: int | None = None,
             dtype: torch.dtype = torch.float64, conf: str = "random") -> GuidanceInputs:
    """Guidance conditions for B videos: 2D of a symmetric pose (normalised units), intrinsics,
    a history of ``valid`` real frames (the most recent slots), random confidences."""
    g = torch.Generator().manual_seed(seed)
    history = history or TINY.hpim.history
    valid = history if valid is None else valid
    intr_px = default_intrinsics()
    intr_n = torch.from_numpy(intr_px.normalized()).to(dtype)
    seq = moving_poses(history + 1, seed)
    root = torch.tensor([0.1, -0.1, 4.0], dtype=torch.float64)
    kp_px = torch.from_numpy(project_pixels(seq[-1], root, intr_px)).double()
    kp = normalize_screen(kp_px, float(intr_px.width), float(intr_px.height))
    kp = kp + 0.002 * torch.randn(b, J, 2, generator=g, dtype=torch.float64)
    if conf == "random":
        c = 0.3 + 0.7 * torch.rand(b, J, generator=g, dtype=torch.float64)
    else:
        c = torch.ones(b, J, dtype=torch.float64)
    hist3d = seq[:-1][None].repeat(b, 1, 1, 1) + 0.01 * torch.randn(b, history, J, 3, generator=g,
                                                                      dtype=torch.float64)
    mask = torch.zeros(b, history, dtype=torch.float64)
    if valid:
        mask[:, history - valid:] = 1
    hist3d = hist3d * mask[:, :, None, None]          # invalid slots hold zeros, as in the pipeline
    return GuidanceInputs(kp.to(dtype), c.to(dtype), intr_n[None].repeat(b, 1), hist3d.to(dtype), mask.to(dtype))


def noisy_hypotheses(b: int, n: int, seed: int = 0, sigma: float = 0.03, dtype=torch.float64) -> torch.Tensor:
    """(B, N, J, 3) hypotheses around the reference pose (not symmetric any more)."""
    g = torch.Generator().manual_seed(seed)
    h = reference_pose(torch.float64)[None, None] + sigma * torch.randn(b, n, J, 3, generator=g, dtype=torch.float64)
    return (h - h[:, :, H36M17.root:H36M17.root + 1]).to(dtype)


class LinearEps(torch.nn.Module):
    """Stand-in denoiser with a known output: eps = a * pose + b (ignores cond and k)."""

    def __init__(self, a: float, b: torch.Tensor):
        super().__init__()
        self.a = a
        self.register_buffer("b", b)
        self.calls: list[torch.Tensor] = []

    def forward(self, pose_k, cond, k):
        self.calls.append(k.detach().clone())
        return self.a * pose_k + self.b


# ----------------------------------------------------------------------------------------------
# files

def write_checkpoint(path: Path, seed: int = 0) -> Path:
    return save_checkpoint(make_model(seed), path, notes={"test": True})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny-preset checkpoint file written once per test session."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env

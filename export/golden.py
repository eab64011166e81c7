"""The cross-backend golden file: one .npz that eager torch, ORT and the C++ runner must reproduce.

Usage::

    python -m export.golden --out tests/golden/golden_tiny.npz

Content (all float32 unless noted; ``i`` is the video index 0 or 1):

- ``config``: the ``tiny`` preset's config JSON (str); ``weight.<name>``: the full state_dict
  (random weights from ``torch.manual_seed(SEED)``, plus a non-trivial GMM: random weights and
  means, variances 0.3..0.7, scale 0.02), so :func:`load_golden` rebuilds the exact model.
- ``v{i}_kp_px`` (T_i, J, 3): pixel keypoints + confidence of a walking, arm-swinging person
  ~4.5 m from the camera; ``v{i}_camera`` (6,): fx, fy, cx, cy, width, height (pixels).
  Lengths 11 and 6 frames (context window F = 9: full windows, a tail window, a padded video).
- ``v{i}_noise`` (T_i, N, 3J): the GMM samples every backend uses instead of its own RNG.
- ``v{i}_{mean|reproj}_{poses|spread|initial}``: the eager pipeline's output (guidance on,
  mode x0) with mean and with reproj aggregation, seed ``SEED``.
- ``step_pose_k`` (S, R, J, 3), ``step_cond`` (R, J, D), ``step_k`` (S,) int64, ``step_eps``
  (S, R, J, 3): the denoiser's inputs and outputs at every DDIM step of frame 0 (both videos,
  R = 2N rows), to check a denoiser in isolation.

The file stays below ~100 KB (compressed); the test suite asserts < 300 KB.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.core.camera import Intrinsics
from engine.core.config import StarPoseConfig
from engine.core.gmm import GMMParams
from engine.core.model import StarPose
from engine.core.pipeline import Lifter, LiftResult, VideoInput

from .graphs import standing_pose

__all__ = ["SEED", "LENGTHS", "PIPE_TOL", "PIPE_TOL_MAX", "Golden", "build_model", "make_videos", "write_golden",
           "load_golden", "frames_differ"]

# the rule for a whole autoregressive lift against the reference (metres; the reasons are in
# tests/test_onnx.py): every frame within PIPE_TOL_MAX, all but max(1, 10 %) of them within PIPE_TOL
PIPE_TOL, PIPE_TOL_MAX = 1e-4, 2e-3
SEED = 1234
LENGTHS = (11, 6)
CAMERAS = ((1145.0, 1145.0, 500.0, 500.0, 1000, 1000), (1000.0, 1010.0, 650.0, 350.0, 1280, 720))


def build_model(seed: int = SEED) -> StarPose:
    """The ``tiny`` preset with seeded random weights and a seeded non-trivial GMM."""
    torch.manual_seed(seed)
    model = StarPose(StarPoseConfig.from_name("tiny")).eval()
    g = torch.Generator().manual_seed(seed + 1)
    m, d = model.cfg.diffusion.gmm_components, 3 * model.num_joints
    w = torch.rand(m, generator=g) + 0.5
    model.set_gmm(GMMParams(w / w.sum(), torch.randn(m, d, generator=g) * 0.5,
                            0.3 + 0.4 * torch.rand(m, d, generator=g), 0.02))
    return model


def make_videos(num_joints: int, seed: int = SEED) -> tuple[list[np.ndarray], list[Intrinsics]]:
    """Pixel keypoints (T, J, 3) with confidence, and the cameras, of the golden videos."""
    rng = np.random.default_rng(seed)
    base = standing_pose(num_joints).numpy().astype(np.float64)
    kps, cams = [], []
    for i, (frames, cam) in enumerate(zip(LENGTHS, CAMERAS)):
        intr = Intrinsics(*cam)
        pts = []
        for t in range(frames):
            p = base.copy()
            if num_joints == 17:                            # swing the wrists and ankles
                p[[13, 16], 2] += 0.15 * math.sin(0.6 * t + i)
                p[[3, 6], 2] -= 0.1 * math.sin(0.6 * t + i)
            root = np.array([0.3 * (i - 0.5) + 0.02 * t, 0.1, 4.5 - 0.03 * t])
            pts.append(p + root + rng.normal(0, 0.01, p.shape))
        cam3d = np.stack(pts)                               # (T, J, 3) metres, camera frame
        uv = cam3d[..., :2] / cam3d[..., 2:] * [intr.fx, intr.fy] + [intr.cx, intr.cy]
        uv += rng.normal(0, 1.5, uv.shape)                  # detector noise, pixels
        conf = rng.uniform(0.5, 1.0, uv.shape[:-1] + (1,))
        kps.append(np.concatenate([uv, conf], -1).astype(np.float32))
        cams.append(intr)
    return kps, cams


@dataclass
class Golden:
    model: StarPose
    videos: list[VideoInput]
    kp_px: list[np.ndarray]              # (T, J, 3) pixels + confidence
    cameras: list[Intrinsics]
    noise: list[torch.Tensor]            # (T, N, 3J)
    ref: dict[str, list[LiftResult]]     # aggregation -> per-video reference output
    steps: dict[str, np.ndarray]         # step_pose_k, step_cond, step_k, step_eps
    seed: int


def _reference(model: StarPose, videos, noise, aggregation: str) -> list[LiftResult]:
    cfg = model.cfg.with_overrides(diffusion={"aggregation": aggregation})
    return Lifter(model, cfg=cfg).lift(videos, seed=SEED, noise=noise)


def write_golden(out: str | Path, seed: int = SEED) -> Path:
    model = build_model(seed)
    kps, cams = make_videos(model.num_joints, seed)
    videos = [VideoInput.from_pixels(k, c) for k, c in zip(kps, cams)]
    n = model.cfg.diffusion.hypotheses
    g = torch.Generator().manual_seed(seed + 2)
    noise = [model.gmm.sample((v.frames, n), g) for v in videos]

    calls: list[tuple[torch.Tensor, ...]] = []
    hook = model.denoiser.register_forward_hook(
        lambda mod, args, out: calls.append(tuple(a.detach().clone() for a in args) + (out.detach().clone(),)))
    try:
        refs = {"mean": _reference(model, videos, noise, "mean")}
    finally:
        hook.remove()
    refs["reproj"] = _reference(model, videos, noise, "reproj")
    s = model.cfg.diffusion.sample_steps
    first = calls[:s]                                       # frame 0: both videos, S DDIM steps

    arrays: dict[str, np.ndarray] = {"config": np.array(model.cfg.to_json()), "seed": np.array(seed)}
    for name, t in model.state_dict().items():
        arrays[f"weight.{name}"] = t.detach().cpu().numpy()
    for i, (k, cam, nz) in enumerate(zip(kps, cams, noise)):
        arrays[f"v{i}_kp_px"] = k
        arrays[f"v{i}_camera"] = np.array([cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height], np.float32)
        arrays[f"v{i}_noise"] = nz.numpy().astype(np.float32)
        for agg, res in refs.items():
            arrays[f"v{i}_{agg}_poses"] = res[i].poses
            arrays[f"v{i}_{agg}_spread"] = res[i].spread
            arrays[f"v{i}_{agg}_initial"] = res[i].initial
    arrays["step_pose_k"] = torch.stack([c[0] for c in first]).numpy()
    arrays["step_cond"] = first[0][1].numpy()
    arrays["step_k"] = torch.stack([c[2][0] for c in first]).numpy().astype(np.int64)
    arrays["step_eps"] = torch.stack([c[3] for c in first]).numpy()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def load_golden(path: str | Path) -> Golden:
    """Rebuild the model, the inputs, the noise and the references from a golden file."""
    z = np.load(path)
    model = StarPose(StarPoseConfig.from_json(str(z["config"]))).eval()
    model.load_state_dict({k[len("weight."):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("weight.")})
    kps, cams, videos, noise = [], [], [], []
    refs: dict[str, list[LiftResult]] = {"mean": [], "reproj": []}
    i = 0
    while f"v{i}_kp_px" in z.files:
        c = z[f"v{i}_camera"]
        cam = Intrinsics(float(c[0]), float(c[1]), float(c[2]), float(c[3]), int(c[4]), int(c[5]))
        kps.append(z[f"v{i}_kp_px"])
        cams.append(cam)
        videos.append(VideoInput.from_pixels(kps[-1], cam))
        noise.append(torch.from_numpy(z[f"v{i}_noise"]))
        for agg in refs:
            refs[agg].append(LiftResult(z[f"v{i}_{agg}_poses"], z[f"v{i}_{agg}_spread"], z[f"v{i}_{agg}_initial"]))
        i += 1
    steps = {k: z[k] for k in ("step_pose_k", "step_cond", "step_k", "step_eps")}
    return Golden(model, videos, kps, cams, noise, refs, steps, int(z["seed"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.golden", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="tests/golden/golden_tiny.npz")
    p.add_argument("--seed", type=int, default=SEED)
    a = p.parse_args(argv)
    out = write_golden(a.out, a.seed)
    g = load_golden(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB): preset {g.model.cfg.name}, videos "
          f"{[v.frames for v in g.videos]} frames, {json.loads(g.model.cfg.to_json())['diffusion']['hypotheses']} "
          f"hypotheses")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def frames_differ(got: np.ndarray, want: np.ndarray) -> str | None:
    """(T, ...) arrays against the reference by the PIPE_TOL rule: None when it holds, else why not."""
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    per_frame = np.abs(got - want).reshape(len(got), -1).max(1)
    worst = int(per_frame.argmax())
    if per_frame[worst] > PIPE_TOL_MAX:
        return f"frame {worst} off by {per_frame[worst]:.2e} m > {PIPE_TOL_MAX:.0e}"
    off, allowed = int((per_frame > PIPE_TOL).sum()), max(1, len(per_frame) // 10)
    if off > allowed:
        return (f"{off} of {len(per_frame)} frames off by > {PIPE_TOL:.0e} m (allowed {allowed}; worst "
                f"{per_frame[worst]:.2e} m at frame {worst})")
    return None

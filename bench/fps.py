"""End-to-end frames per second of the engine against the paper's Table VIII.

    python -m bench.fps [--preset paper] [--backends torch,onnx,cpp,triton] [--device cpu]
                        [--frames 243] [--videos 16] [--repeats 3]

Three configurations run by the same engine (random weights: speed does not depend on them):
- ``starpose``: the preset as is (HPIM, STPG guidance, N and DDIM steps of the preset);
- ``diffpose-like``: no HPIM, no STPG (DiffPose's GMM diffusion with a GCN denoiser);
- ``d3dp-like``: Gaussian start (a one-component standard-normal GMM), N = 20, 10 DDIM steps,
  per-joint reprojection aggregation, no HPIM, no STPG.
Each runs single-video (one autoregressive stream of ``--frames`` frames) and batched
(``--videos`` streams at once). Frames/s = frames lifted / wall time, after one warm-up run;
median of ``--repeats`` runs with min..max. Parameters and FLOPs per frame (attention included,
torch FlopCounterMode on the eager path) are reported beside. Backends that cannot run here are
listed with the reason. Results: a markdown table on stdout and, with --record, a JSON line appended to
bench/results/fps.jsonl.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from engine.core.backend import BackendUnavailable, make_backend
from engine.core.camera import Intrinsics
from engine.core.config import StarPoseConfig
from engine.core.errors import InputError
from engine.core.gmm import GMMParams
from engine.core.model import StarPose
from engine.core.pipeline import Lifter, VideoInput

from .common import append_record, count_flops, git_revision, hardware, time_runs, versions

# Table VIII of the paper (RTX 4090), reported, not measured here.
PAPER_TABLE_VIII = [
    ("MHFormer", 351, 3, "-", 43.0, 24.7, 19.2, 825),
    ("P-STMO", 243, "-", "-", 42.8, 6.7, 3.5, 3960),
    ("D3DP", 243, 20, 10, 39.5, 34.6, 456.4, 102),
    ("DiffPose", 243, 5, 50, 36.9, 38.2, 17.4, 1918),
    ("StarPose (paper)", 243, 5, 50, 29.9, 49.5, 20.2, 1370),
]


def variant(cfg: StarPoseConfig, name: str) -> StarPoseConfig:
    if name == "starpose":
        return cfg
    if name == "diffpose-like":
        return cfg.with_overrides(hpim={"enabled": False}, guidance={"enabled": False})
    if name == "d3dp-like":
        return cfg.with_overrides(hpim={"enabled": False}, guidance={"enabled": False},
                                  diffusion={"hypotheses": 20, "sample_steps": 10, "gmm_components": 1,
                                             "aggregation": "reproj"})
    raise ValueError(f"unknown configuration {name!r}")


def build_model(cfg: StarPoseConfig, device: str) -> StarPose:
    torch.manual_seed(0)
    model = StarPose(cfg)
    m, d = cfg.diffusion.gmm_components, 3 * model.num_joints
    if m == 1:   # Gaussian start
        model.set_gmm(GMMParams(torch.ones(1), torch.zeros(1, d), torch.ones(1, d), 0.05))
    return model.to(device).eval()


def make_videos(count: int, frames: int, joints: int, seed: int = 0) -> list[VideoInput]:
    rng = np.random.default_rng(seed)
    intr = Intrinsics.default_for(1000, 1000)
    base = rng.uniform(300, 700, size=(1, joints, 2)).astype(np.float32)
    walk = np.cumsum(rng.normal(0, 2, size=(count, frames, joints, 2)), axis=1).astype(np.float32)
    return [VideoInput.from_pixels(base + walk[i], intr) for i in range(count)]


def measure(model: StarPose, backend_name: str, device: str, videos: list[VideoInput], repeats: int) -> dict:
    backend = make_backend(backend_name, model, device)
    lifter = Lifter(model, backend, model.cfg)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    t = time_runs(lambda: lifter.lift(videos, seed=0), repeats=repeats, sync=sync)
    frames = sum(v.frames for v in videos)
    return {"fps": frames / t["median"], "fps_min": frames / t["max"], "fps_max": frames / t["min"],
            "providers": backend.providers}


def flops_per_frame(model: StarPose, frames: int) -> float:
    video = make_videos(1, frames, model.num_joints)
    lifter = Lifter(model)
    return count_flops(lambda: lifter.lift(video, seed=0)) / frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--configs", default="starpose,diffpose-like,d3dp-like")
    ap.add_argument("--backends", default="torch,onnx,cpp,triton")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=243)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--record", action="store_true",
                    help="append the result to bench/results/ (tracked; off by default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = StarPoseConfig.from_name(args.preset)
    rows, skipped = [], {}
    for cname in args.configs.split(","):
        cfg = variant(base, cname)
        model = build_model(cfg, args.device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        gflops = flops_per_frame(build_model(cfg, "cpu"), min(args.frames, 2 * cfg.context.frames)) / 1e9
        for bname in args.backends.split(","):
            for mode, count in (("single", 1), ("batched", args.videos)):
                videos = make_videos(count, args.frames, model.num_joints)
                try:
                    r = measure(model, bname, args.device, videos, args.repeats)
                except (BackendUnavailable, InputError) as e:
                    skipped[bname] = str(e)
                    break
                rows.append({"config": cname, "backend": bname, "mode": mode, "videos": count,
                             "frames": args.frames, "N": cfg.diffusion.hypotheses,
                             "steps": cfg.diffusion.sample_steps, "params_M": round(params, 3),
                             "gflops_per_frame": round(gflops, 4), **r})
                print(f"  {cname:14s} {bname:7s} {mode:8s} {r['fps']:9.1f} frames/s", file=sys.stderr)
    hw = hardware(args.device)
    print(f"\n### Frames per second, preset `{args.preset}` ({args.frames} frames per video)\n")
    print("| method | source | hardware | f | N | steps | params (M) | GFLOPs/frame | backend | mode | frames/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, f, n, k, _mpjpe, p, g, fps in PAPER_TABLE_VIII:
        print(f"| {name} | reported (paper) | RTX 4090 | {f} | {n} | {k} | {p} | {g} | - | - | {fps} |")
    for r in rows:
        spread = f"{r['fps']:.1f} ({r['fps_min']:.1f}..{r['fps_max']:.1f})"
        print(f"| {r['config']} | measured | {hw} | {base.context.frames} | {r['N']} | {r['steps']} | "
              f"{r['params_M']} | {r['gflops_per_frame']} | {r['backend']} | {r['mode']} x{r['videos']} | {spread} |")
    for b, why in skipped.items():
        print(f"\nnot measured: backend {b}: {why}")
    if args.record:
        path = append_record("fps", {"git": git_revision(), "hardware": hw, "versions": versions(),
                                     "preset": args.preset, "device": args.device, "frames": args.frames,
                                     "videos": args.videos, "repeats": args.repeats, "rows": rows,
                                     "skipped": skipped})
        print(f"\nrecorded in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

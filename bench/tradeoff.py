"""Speed/accuracy trade-off of the shipped model (the paper's Fig. 7): frames/s and MPJPE against
the number of hypotheses N and of DDIM steps S.

    python -m bench.tradeoff [--checkpoint PATH] [--max-frames 600] [--out bench/results/tradeoff.png]

Accuracy: MPJPE (mm) on the CMU validation subjects (train.data.cmu_split), camera 0 of each clip,
the first ``--max-frames`` frames of each clip, exact 2D. Speed: frames/s of the same run (all
clips batched in one autoregressive pass, eager torch, this machine). Writes a PNG with two
panels and appends a JSON record to bench/results/tradeoff.jsonl.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from engine.core.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from engine.core.metrics import mpjpe
from engine.core.pipeline import Lifter, VideoInput

from .common import RESULTS, append_record, git_revision, hardware, versions


def run_point(model, videos, gts, hypotheses: int, steps: int) -> tuple[float, float]:
    cfg = model.cfg.with_overrides(diffusion={"hypotheses": hypotheses, "sample_steps": steps})
    lifter = Lifter(model, cfg=cfg)
    t0 = time.perf_counter()
    results = lifter.lift(videos, seed=0)
    dt = time.perf_counter() - t0
    pred = np.concatenate([r.poses for r in results]) * 1000
    return mpjpe(pred, np.concatenate(gts)), sum(v.frames for v in videos) / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--max-frames", type=int, default=600)
    ap.add_argument("--hypotheses", default="1,2,5,10")
    ap.add_argument("--steps", default="1,2,5,10")
    ap.add_argument("--out", type=Path, default=RESULTS / "tradeoff.png")
    args = ap.parse_args(argv)

    from train.data import cmu_split
    _, val = cmu_split(cameras=[0])
    model = load_checkpoint(args.checkpoint)
    videos, gts = [], []
    for clip in val:
        n = min(args.max_frames, clip.num_frames)
        videos.append(VideoInput.from_pixels(clip.keypoints_2d[:n], clip.intrinsics))
        g = clip.positions_3d[:n]
        gts.append(g - g[:, model.skeleton.root:model.skeleton.root + 1])
    base_n, base_s = model.cfg.diffusion.hypotheses, model.cfg.diffusion.sample_steps
    by_n = [(n, *run_point(model, videos, gts, n, base_s)) for n in map(int, args.hypotheses.split(","))]
    by_s = [(s, *run_point(model, videos, gts, base_n, s)) for s in map(int, args.steps.split(","))]

    print("| N | steps | MPJPE (mm) | frames/s |\n|---|---|---|---|")
    for n, e, f in by_n:
        print(f"| {n} | {base_s} | {e:.1f} | {f:.1f} |")
    for s, e, f in by_s:
        print(f"| {base_n} | {s} | {e:.1f} | {f:.1f} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, rows, label in ((axes[0], by_n, f"hypotheses N (steps = {base_s})"),
                            (axes[1], by_s, f"DDIM steps (N = {base_n})")):
        x = [r[0] for r in rows]
        ax.plot(x, [r[1] for r in rows], "o-", color="tab:red")
        ax.set_xlabel(label)
        ax.set_ylabel("MPJPE (mm)", color="tab:red")
        ax2 = ax.twinx()
        ax2.plot(x, [r[2] for r in rows], "s--", color="tab:blue")
        ax2.set_ylabel("frames/s", color="tab:blue")
        ax.set_xscale("log")
        ax.set_xticks(x, [str(v) for v in x])
    fig.suptitle(f"{model.cfg.name} model, CMU validation, {hardware('cpu')}", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    append_record("tradeoff", {"git": git_revision(), "hardware": hardware("cpu"), "versions": versions(),
                               "checkpoint": str(args.checkpoint), "max_frames": args.max_frames,
                               "by_hypotheses": by_n, "by_steps": by_s})
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Streaming latency: wall time of each ``StreamingLifter.push`` for a live source, per mode.

    python -m bench.latency [--checkpoint PATH] [--input examples/walk_2d.npz] [--hypotheses N]
        [--modes causal,exact] [--threads 1] [--record]

``causal`` lifts every pushed frame at once from the last F frames, so its per-push time is the
latency. ``exact`` returns a whole context window every F pushes (equal to offline lifting), so
the pushes that return poses carry the compute, and a frame waits up to F - 1 pushes for its
window. Reports the median, p99 and max milliseconds of the pushes that returned poses, and the
number of frames returned per such push. The first window of pushes (warm-up) is not timed.
With ``--record``, appends a JSON record to ``bench/results/latency.jsonl``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from engine.core.camera import Intrinsics
from engine.core.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from engine.core.pipeline import Lifter, StreamingLifter

from .common import append_record, git_revision, hardware, versions

DEFAULT_INPUT = Path(__file__).resolve().parents[1] / "examples" / "walk_2d.npz"


def push_times(lifter: Lifter, keypoints: np.ndarray, intr: Intrinsics, mode: str) -> dict[str, float]:
    """Time every push after the first window; stats over the pushes that returned poses (ms)."""
    stream = StreamingLifter(lifter, intr, seed=0, mode=mode)
    warm = lifter.model.cfg.context.frames
    times, sizes = [], []
    with torch.no_grad():
        for i, frame in enumerate(keypoints):
            t0 = time.perf_counter()
            out = stream.push(frame)
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warm and len(out):
                times.append(dt)
                sizes.append(len(out))
    if not times:
        raise SystemExit(f"input too short: {len(keypoints)} frames, need more than {2 * warm} to time {mode}")
    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99)), "max_ms": float(t.max()),
            "frames_per_output": float(np.mean(sizes)), "timed_pushes": len(t)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help=".npz with keypoints (T, J, 2) and image_size")
    ap.add_argument("--hypotheses", type=int, default=None, help="N (default: the checkpoint's)")
    ap.add_argument("--modes", default="causal,exact")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--record", action="store_true",
                    help="append the result to bench/results/ (tracked; off by default)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = np.load(args.input)
    kp = np.asarray(data["keypoints"], dtype=np.float32)
    w, h = (int(v) for v in data["image_size"])
    model = load_checkpoint(args.checkpoint)
    cfg = model.cfg.with_overrides(diffusion={"hypotheses": args.hypotheses} if args.hypotheses else {})
    lifter = Lifter(model, cfg=cfg)
    intr = Intrinsics.default_for(w, h)
    d = cfg.diffusion
    print(f"streaming latency, {model.cfg.name} model, N = {d.hypotheses}, S = {d.sample_steps}, "
          f"guidance {'on' if cfg.guidance.enabled else 'off'}, {hardware('cpu')}, input {args.input.name}")
    print("| mode | median ms/push | p99 ms | max ms | frames per output |\n|---|---|---|---|---|")
    rows = {}
    for mode in args.modes.split(","):
        r = push_times(lifter, kp, intr, mode)
        rows[mode] = r
        print(f"| {mode} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | "
              f"{r['frames_per_output']:.0f} |")
    if args.record:
        append_record("latency", {
            "checkpoint": str(args.checkpoint), "input": str(args.input), "hypotheses": d.hypotheses,
            "steps": d.sample_steps, "threads": args.threads, "hardware": hardware("cpu"),
            "git": git_revision(), "versions": versions(), "modes": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Eager torch vs ONNX Runtime (Python) vs the C++ runner: frames/s of one long video, one run.

    python -m bench.bench_backends [--preset small] [--frames 500] [--repeats 3] [--threads 1]
                                   [--torch-threads 1] [--cpp-threads 1,2] [--checkpoint PATH]
                                   [--record]

One video (a random-walk 2D skeleton, 1000 x 1000 px) lifted autoregressively with the preset's
settings (HPIM, STPG guidance in x0 mode, N hypotheses, S DDIM steps, mean aggregation). Weights:
``--checkpoint``, else the shipped engine/weights/starpose_<preset>.safetensors when present, else random
(speed does not depend on the values). The repeats are interleaved across backends (round-robin)
so a change of machine load hits all of them alike; frames/s = frames / wall time, median of the
repeats with min..max, after one warm-up lift of 30 frames per backend. Exports and session
creation are timed separately ("setup"). The C++ runner also reports where its time goes
(context, condition, denoiser, guidance, other; ms per frame).

Output: a markdown table on stdout and with --record, one JSON record appended to bench/results/backends.jsonl
(git revision, CPU, load average before/after, versions, settings, results).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from engine.core.backend import BackendUnavailable, backend_class, make_backend
from engine.core.checkpoint import load_checkpoint
from engine.core.config import StarPoseConfig
from engine.core.errors import InputError
from engine.core.model import StarPose
from engine.core.pipeline import Lifter

from .common import append_record, git_revision, hardware, versions
from .fps import make_videos

WEIGHTS = Path(__file__).resolve().parents[1] / "engine" / "weights"     # the shipped starpose_<preset>


def load_model(preset: str, checkpoint: str | None) -> tuple[StarPose, str]:
    cfg = StarPoseConfig.from_name(preset)
    path = Path(checkpoint) if checkpoint else WEIGHTS / f"starpose_{preset}.safetensors"
    if path.is_file():
        model = load_checkpoint(path)
        if model.cfg.name != cfg.name:
            raise SystemExit(f"{path} holds preset {model.cfg.name!r}, not {preset!r}")
        return model, str(path)
    if checkpoint:
        raise SystemExit(f"checkpoint not found: {checkpoint}")
    torch.manual_seed(0)
    return StarPose(cfg).eval(), "random (seed 0)"


def make_runner(name: str, model: StarPose, threads: int):
    """(backend, setup seconds); torch rows differ only in torch's thread count."""
    t0 = time.perf_counter()
    kind = "torch" if name.startswith("torch") else name
    options = {"threads": threads} if "threads" in _option_names(kind) else {}
    backend = make_backend(kind, model, **options)
    return backend, time.perf_counter() - t0


def _option_names(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(backend_class(name).Options)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads of the onnx backend")
    ap.add_argument("--cpp-threads", default="1,2", help="comma-separated ORT intra-op thread counts for cpp rows")
    ap.add_argument("--torch-threads", default="1",
                    help="comma-separated torch thread counts for eager rows (e.g. 1,2); on the shared 2-core "
                         "machine 2 threads measured ~15x slower than 1 (OpenMP spin-waiting under load)")
    ap.add_argument("--backends", default="torch,onnx,cpp")
    ap.add_argument("--record", action="store_true",
                    help="append the result to bench/results/ (tracked; off by default)")
    args = ap.parse_args(argv)

    model, weights = load_model(args.preset, args.checkpoint)
    cfg = model.cfg
    video = make_videos(1, args.frames, model.num_joints)
    warm = make_videos(1, 30, model.num_joints, seed=1)
    load_before = os.getloadavg()

    rows: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for name in args.backends.split(","):
        if name == "torch":
            variants = [(f"torch ({t} thr)", int(t)) for t in args.torch_threads.split(",")]
        elif name == "cpp":
            variants = [("cpp" if i == 0 else f"cpp ({t} thr)", int(t))
                        for i, t in enumerate(args.cpp_threads.split(","))]
        else:
            variants = [(name, args.threads)]
        for label, threads in variants:
            try:
                backend, setup = make_runner(name, model, threads)
            except (BackendUnavailable, InputError) as e:
                skipped[name] = str(e)
                continue
            rows[label] = {"backend": name, "threads": threads, "setup_s": setup, "backend_obj": backend,
                           "times": [], "providers": backend.providers}

    def run(row):
        torch.set_num_threads(row["threads"] if row["backend"] == "torch" else 1)
        lifter = Lifter(model, row["backend_obj"])
        return lifter

    for row in rows.values():   # warm-up (first-call allocations, ORT arena growth)
        run(row).lift(warm, seed=0)
    for _ in range(args.repeats):
        for row in rows.values():
            lifter = run(row)
            t0 = time.perf_counter()
            lifter.lift(video, seed=0)
            row["times"].append(time.perf_counter() - t0)
    profile = None
    if "cpp" in rows:   # phase breakdown of the first cpp row
        be = rows["cpp"]["backend_obj"]
        vids = [(v.kp2d.numpy(), v.conf.numpy(), v.intr.numpy()) for v in video]
        _, st = be.runner.lift(vids, seed=0, settings=be.settings(), profile=True)
        profile = {k[:-2] + "_ms_per_frame": round(v * 1e3 / st["frames"], 4)
                   for k, v in st.items() if k.endswith("_s")}
    load_after = os.getloadavg()

    torch_fps = [args.frames / statistics.median(r["times"]) for r in rows.values() if r["backend"] == "torch"]
    best_torch = max(torch_fps) if torch_fps else None
    results = []
    for label, r in rows.items():
        med = statistics.median(r["times"])
        fps = args.frames / med
        results.append({"backend": label, "threads": r["threads"], "fps": round(fps, 1),
                        "fps_min": round(args.frames / max(r["times"]), 1),
                        "fps_max": round(args.frames / min(r["times"]), 1),
                        "ms_per_frame": round(1e3 * med / args.frames, 3), "setup_s": round(r["setup_s"], 2),
                        "speedup_vs_best_torch": round(fps / best_torch, 2) if best_torch else None,
                        "providers": r["providers"]})

    g = cfg.guidance
    print(f"\n### Backends, preset `{cfg.name}` ({weights}), 1 video x {args.frames} frames, N = "
          f"{cfg.diffusion.hypotheses}, S = {cfg.diffusion.sample_steps}, guidance "
          f"{'x0' if g.enabled else 'off'}, {cfg.diffusion.aggregation} aggregation")
    print(f"{hardware('cpu')}; load average {load_before[0]:.1f} -> {load_after[0]:.1f}; "
          f"median of {args.repeats} interleaved runs\n")
    print("| backend | threads | frames/s | min..max | ms/frame | vs best eager torch | setup s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        sp = f"{r['speedup_vs_best_torch']:.2f}x" if r["speedup_vs_best_torch"] else "-"
        print(f"| {r['backend']} | {r['threads']} | {r['fps']:.1f} | {r['fps_min']:.0f}..{r['fps_max']:.0f} | "
              f"{r['ms_per_frame']:.2f} | {sp} | {r['setup_s']:.1f} |")
    if profile:
        print(f"\nC++ runner ({rows['cpp']['threads']} thread), ms per frame: "
              + ", ".join(f"{k.replace('_ms_per_frame', '')} {v:.3f}" for k, v in profile.items()))
    for name, why in skipped.items():
        print(f"\n{name}: skipped ({why})")

    vers = versions()
    try:
        import onnx
        vers["onnx"] = onnx.__version__
    except ImportError:
        pass
    record = {"bench": "backends", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_revision(),
              "hardware": hardware("cpu"), "loadavg_before": load_before, "loadavg_after": load_after,
              "versions": vers, "weights": weights,
              "settings": {"preset": cfg.name, "frames": args.frames, "videos": 1, "repeats": args.repeats,
                           "ort_threads": args.threads, "torch_threads": args.torch_threads,
                           "cpp_threads": args.cpp_threads,
                           "hypotheses": cfg.diffusion.hypotheses, "sample_steps": cfg.diffusion.sample_steps,
                           "guidance": g.enabled, "guidance_mode": g.mode,
                           "aggregation": cfg.diffusion.aggregation},
              "results": results, "cpp_profile": profile, "skipped": skipped}
    if args.record:
        path = append_record("backends", record)
        print(f"\nappended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

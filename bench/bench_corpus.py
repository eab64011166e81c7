"""Corpus throughput: clip-by-clip engine.run against engine.corpus (batched, processes, Ray).

    python -m bench.bench_corpus [--clips 200] [--configs all] [--keep DIR] [--no-record]
    python -m bench.bench_corpus --clips 24 --configs run,batched      # a quick look (~1 min)

A corpus of ``--clips`` clips of mixed lengths (log-uniform in [20, 400] frames, seed 0) is cut
from the three shipped example clips (:func:`make_corpus`: CMU walk and phone with their ground
truth, the procedural walker) into three sub-folders, then lifted by each configuration as a
user would, one subprocess each, with the shipped model:

- ``run``: today's ``python -m engine.run --input DIR --output OUT`` (clip after clip, torch, one thread);
- ``unbatched``: ``engine.corpus --workers 1 --batch-size 1`` (torch);
- ``batched``: ``engine.corpus --workers 1`` (torch, the default batch);
- ``workers2``: ``engine.corpus --workers 2`` (torch, batched, two processes: the default here);
- ``ray1``, ``ray2``: ``engine.corpus --ray --workers 1|2`` (torch, batched, local Ray instance);
- ``cpp1``, ``cpp2``: ``engine.corpus --backend cpp --workers 1|2`` (one clip per pass);
- ``run_cpp``: ``engine.run --backend cpp``, the cpp baseline.

frames/s = corpus frames / wall time of the whole command (process start, model loading, Ray
start-up included), and the lifting-only rate the job reports. Every corpus output is compared
with the baseline of its backend (``run`` or ``run_cpp``) array by array: ``identical`` counts
the clips whose every array is bit-equal. Peak memory: the largest resident set of one worker
(the job's own summary; for engine.run the child's ru_maxrss). OMP_NUM_THREADS=1 for every
command. Output: a table on stdout and one JSON record per configuration appended to
bench/results/corpus_throughput.jsonl (git revision, CPU, load average, versions).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import append_record, git_revision, hardware, versions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SOURCES = {"walk": "cmu_walk_2d.npz", "phone": "cmu_phone_2d.npz", "synthetic": "walk_2d.npz"}
CONFIGS = {
    "run": ["engine.run"],
    "unbatched": ["engine.corpus", "--workers", "1", "--batch-size", "1"],
    "batched": ["engine.corpus", "--workers", "1"],
    "workers2": ["engine.corpus", "--workers", "2"],
    "ray1": ["engine.corpus", "--ray", "--workers", "1"],
    "ray2": ["engine.corpus", "--ray", "--workers", "2"],
    "run_cpp": ["engine.run", "--backend", "cpp"],
    "cpp1": ["engine.corpus", "--backend", "cpp", "--workers", "1"],
    "cpp2": ["engine.corpus", "--backend", "cpp", "--workers", "2"],
}
KEEP_KEYS = ("keypoints", "image_size", "fps")


def make_corpus(folder: str | Path, clips: int = 200, seed: int = 0, lo: int = 20, hi: int = 400) -> int:
    """Write ``clips`` .npz clips of mixed lengths under folder/{walk,phone,synthetic}/; returns frames.

    Each clip is a random segment of one shipped example (its keypoints, image_size, fps, and the
    ground truth when the example has it), length log-uniform in [lo, hi] (capped at the example's).
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    data = {}
    for name, file in SOURCES.items():
        with np.load(EXAMPLES / file) as z:
            data[name] = {k: z[k] for k in z.files if k in KEEP_KEYS + ("gt_poses_3d",)}
    names = list(SOURCES)
    total = 0
    for i in range(clips):
        name = names[i % len(names)]
        src = data[name]
        full = src["keypoints"].shape[0]
        length = min(full, int(round(np.exp(rng.uniform(np.log(lo), np.log(hi))))))
        start = int(rng.integers(0, full - length + 1))
        out = {k: v for k, v in src.items() if k not in ("keypoints", "gt_poses_3d")}
        out["keypoints"] = src["keypoints"][start:start + length]
        if "gt_poses_3d" in src:
            out["gt_poses_3d"] = src["gt_poses_3d"][start:start + length]
        (folder / name).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / name / f"clip_{i:05d}.npz", **out)
        total += length
    return total


def _outputs(root: Path) -> dict[str, Path]:
    """File name -> path (engine.run writes a flat folder, engine.corpus mirrors the tree; the
    corpus's clip names are unique across its folders)."""
    return {p.name: p for p in root.rglob("*_3d.npz")}


def compare(a: Path, b: Path) -> tuple[int, int]:
    """(clips whose arrays are all bit-equal, clips compared) between two output trees (meta aside)."""
    oa, ob = _outputs(a), _outputs(b)
    same = 0
    for key in sorted(set(oa) & set(ob)):
        with np.load(oa[key]) as x, np.load(ob[key]) as y:
            if set(x.files) == set(y.files) and all(
                    k == "meta" or np.array_equal(x[k], y[k]) for k in x.files):
                same += 1
    return same, len(set(oa) | set(ob))


def run_config(name: str, corpus: Path, out: Path) -> dict:
    """Run one configuration as a subprocess; wall time, the job's summary, peak memory."""
    argv = CONFIGS[name]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    summary_path = out.parent / f"{name}_summary.json"
    if argv[0] == "engine.run":
        cmd = [sys.executable, "-m", "engine.run", "--input", str(corpus / "*" / "*.npz"), "--output", str(out),
               "--quiet", *argv[1:]]
    else:
        cmd = [sys.executable, "-m", *argv, str(corpus), "--output", str(out), "--quiet",
               "--summary-json", str(summary_path)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rec = {"config": name, "command": " ".join(["python", "-m", *cmd[2:]]), "returncode": proc.returncode,
           "wall_s": round(wall, 2), "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
    if proc.returncode != 0:
        rec["stderr_tail"] = proc.stderr[-2000:]
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        rec.update({"lift_s": round(s["seconds"], 2), "startup_s": round(s["startup_seconds"], 2),
                    "lift_fps": round(s["fps"], 1), "errors": s["errors"], "executor": s["executor"],
                    "peak_rss_mb_per_worker": round(max((w["peak_rss_mb"] for w in s["workers"].values()),
                                                        default=0.0), 1)})
    else:
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rec["peak_rss_mb_per_worker"] = round(max(after, before) / 1024.0, 1)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--configs", default="all", help=f"comma separated, from {','.join(CONFIGS)}, or all")
    ap.add_argument("--keep", type=Path, default=None, help="keep the corpus and outputs in this folder")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/results")
    args = ap.parse_args(argv)
    names = list(CONFIGS) if args.configs == "all" else [c.strip() for c in args.configs.split(",")]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="starpose-bench-corpus-"))
    try:
        corpus = work / "corpus"
        if corpus.exists():
            shutil.rmtree(corpus)
        frames = make_corpus(corpus, args.clips)
        print(f"corpus: {args.clips} clips, {frames} frames, in {corpus}", flush=True)
        import torch
        torch.set_num_threads(1)                      # as every command runs (OMP_NUM_THREADS=1)
        common = {"git": git_revision(), "cpu": hardware("cpu"), "versions": versions(), "clips": args.clips,
                  "frames": frames, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        results = {}
        for name in names:
            out = work / f"out_{name}"
            if out.exists():
                shutil.rmtree(out)
            rec = run_config(name, corpus, out)
            rec["fps"] = round(frames / rec["wall_s"], 1)
            base = "run_cpp" if "cpp" in name else "run"
            if base != name and (work / f"out_{base}").is_dir():      # this run's, or an earlier one's with --keep
                same, n = compare(work / f"out_{base}", out)
                rec["identical_to"] = base
                rec["identical_clips"] = f"{same}/{n}"
            results[name] = rec
            print(json.dumps(rec), flush=True)
            if not args.no_record:
                append_record("corpus_throughput", {**common, **rec})
        print_table(results, frames)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def print_table(results: dict, frames: int) -> None:
    base = results.get("run", {}).get("fps")
    print("\n| config | command | wall s | frames/s | x engine.run | lifting frames/s | peak MiB/worker | identical |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        rel = f"{r['fps'] / base:.2f}" if base else ""
        print(f"| {name} | `{r['command']}` | {r['wall_s']} | {r['fps']} | {rel} | {r.get('lift_fps', '')} | "
              f"{r.get('peak_rss_mb_per_worker', '')} | {r.get('identical_clips', '')} |")


if __name__ == "__main__":
    sys.exit(main())

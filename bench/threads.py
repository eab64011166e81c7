"""Thread count versus speed, on an idle and on a busy machine: the measurement behind ``--threads``.

    python -m bench.threads [--input examples/cmu_walk_2d.npz] [--threads 1,2,4,8]
        [--backends torch,cpp] [--busy 0,1] [--record]

Each point runs the README's command (``python -m engine.run``) in a fresh process, end to end
(interpreter start, model load, lifting, writing), with ``--threads N`` and the matching
OMP/MKL variables, while ``busy`` other processes spin on the CPU (one busy process is a
browser tab or a second job; more threads than cores simulates a laptop's oversubscription).
Records wall seconds and the lifting frames/s the CLI reports, one JSON line per point in
``bench/results/threads.jsonl``.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import append_record, git_revision, hardware

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO / "examples" / "cmu_walk_2d.npz"


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100000):
            x += 1


def run_point(inp: Path, backend: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "engine.run", "--input", str(inp), "--output",
                              str(Path(tmp) / "o.npz"), "--backend", backend, "--threads", str(threads)],
                             cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"engine.run failed: {res.stderr.strip().splitlines()[-1:]}")
    fps = re.search(r"\(([\d.]+) frames/s", res.stderr)
    return {"wall_s": round(wall, 2), "lift_fps": float(fps.group(1)) if fps else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    p.add_argument("--threads", default="1,2,4,8", help="comma-separated thread counts")
    p.add_argument("--backends", default="torch,cpp")
    p.add_argument("--busy", default="0,1", help="comma-separated numbers of busy processes")
    p.add_argument("--record", action="store_true",
                   help="append the result to bench/results/ (tracked; off by default)")
    a = p.parse_args(argv)
    rows = []
    for busy in (int(b) for b in a.busy.split(",")):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for s in spinners:
            s.start()
        try:
            for backend in a.backends.split(","):
                for threads in (int(t) for t in a.threads.split(",")):
                    point = run_point(a.input, backend, threads)
                    row = {"backend": backend, "threads": threads, "busy_processes": busy, **point}
                    print(row, flush=True)
                    rows.append(row)
        finally:
            stop.set()
            for s in spinners:
                s.join()
    if a.record:
        append_record("threads", {"kind": "threads", "input": str(a.input.relative_to(REPO))
                                        if a.input.is_relative_to(REPO) else str(a.input),
                                        "cores": os.cpu_count(), "git": git_revision(), "hardware": hardware("cpu"),
                                        "points": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

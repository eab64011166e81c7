"""Shared benchmark helpers: hardware/version record, timing, FLOP counting, result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name, dists in (("onnxruntime", ("onnxruntime", "onnxruntime-gpu")), ("triton", ("triton",)),
                        ("numpy", ("numpy",))):
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                pass
    return out


def time_runs(fn, repeats: int, warmup: int = 1, sync=None) -> dict[str, float]:
    """Run fn warmup + repeats times; seconds: median, min, max."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def count_flops(fn) -> int:
    """FLOPs of one call (matmuls and attention included) via torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def append_record(name: str, record: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def frame_inputs(model, videos: int, device: str, seed: int = 0):
    """One frame of the sampler: cond (B, J, D), init3d (B, J, 3), x_K (B, N, J, 3), GuidanceInputs."""
    from engine.core.guidance import GuidanceInputs
    from engine.core.sampler import initial_noise
    J = model.num_joints
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    d, n, hist = cfg.denoiser.hidden, cfg.diffusion.hypotheses, cfg.hpim.history
    init = 0.2 * torch.randn(videos, J, 3, generator=g)
    intr = torch.tensor([2.29, 2.29, 0.0, 0.1]).repeat(videos, 1)
    q = init + torch.tensor([0.0, 0.0, 4.0])
    kp = q[..., :2] / q[..., 2:] * intr[:, None, :2] + intr[:, None, 2:]
    gin = GuidanceInputs(kp, torch.rand(videos, J, generator=g), intr,
                         init[:, None] + 0.01 * torch.randn(videos, hist, J, 3, generator=g), torch.ones(videos, hist))
    gin = GuidanceInputs(*(t.to(device) for t in (gin.kp2d, gin.conf, gin.intr, gin.hist3d, gin.hist_mask)))
    x_k = initial_noise(model, model.gmm.sample((videos * n,), g).reshape(videos, n, 3 * J).to(device))
    return torch.randn(videos, J, d, generator=g).to(device), init.to(device), x_k, gin

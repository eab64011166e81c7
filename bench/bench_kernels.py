"""Micro-benchmarks of the Triton kernels against eager PyTorch and torch.compile.

    pytest bench/bench_kernels.py                                   # GPU: every provider, timed
    TRITON_INTERPRET=1 pytest bench/bench_kernels.py --benchmark-disable   # CPU smoke run, once each

Ops (shapes from the presets, B x N hypotheses of J = 17 joints):
- ``block``: one GCN-Attention block (kernels.denoiser_block vs engine.core.denoiser.GCNAttentionBlock);
- ``stpg``: the STPG gradient of all hypotheses (kernels.stpg_grad vs engine.core.guidance.stpg_grad);
- ``sample``: one frame's reverse process, S DDIM steps with STPG (TritonBackend.sample, CUDA
  graph replay on a GPU, vs TorchBackend.sample).
Providers: ``torch`` (eager), ``compile`` (torch.compile of the eager module / function; CUDA
only unless BENCH_COMPILE=1: inductor's C++ build takes ~20 s per case on a 2-core CPU) and
``triton`` (CUDA; on CPU only under TRITON_INTERPRET=1 with --benchmark-disable, one call as a
smoke test, since the interpreter is ~1000x slower than eager and its times mean nothing).

Each case records in ``extra_info`` the analytic FLOPs and the compulsory bytes of one call
(:func:`block_cost`, :func:`stpg_cost`, :func:`sample_cost`), and after a timed run the achieved
TFLOP/s and GB/s and their share of the device peak (:data:`PEAKS`). What to expect on a GPU:
these ops are tiny (a block on 5 poses is ~2 MFLOP, 0.1 MB), so single-video numbers are latency
(launch + one wave), far below peak; B = 64 shows whether the fused kernels approach the memory
or FMA roofline. Save with ``--benchmark-json`` / ``--benchmark-save`` to keep results.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

from bench.common import frame_inputs, git_revision, hardware, versions
from engine.core.config import StarPoseConfig
from engine.core.model import StarPose
from engine.core.sampler import sample_frame
from engine.core.torch_backend import TorchBackend

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
CUDA = torch.cuda.is_available() and not INTERPRET
DEVICE = torch.device("cuda" if CUDA else "cpu")
J = 17
CASES = [("small", 1), ("small", 64), ("paper", 1), ("paper", 64)]   # (preset, videos B)

# Dense peaks per device (FLOP/s for IEEE fp32 on CUDA cores / fp16 tensor cores with fp32
# accumulation, bytes/s of DRAM), from the vendors' data sheets. Unknown devices: no % of peak.
PEAKS = {
    "H100": {"fp32": 67e12, "fp16": 989e12, "bytes": 3.35e12},   # SXM5
    "H200": {"fp32": 67e12, "fp16": 989e12, "bytes": 4.8e12},
    "A100": {"fp32": 19.5e12, "fp16": 312e12, "bytes": 2.0e12},
    "RTX 4090": {"fp32": 82.6e12, "fp16": 165e12, "bytes": 1.01e12},
}


# ---- analytic cost ----------------------------------------------------------------------------
def block_cost(rows: int, dim: int, joints: int = J, elem: int = 4) -> tuple[float, float]:
    """(FLOPs, bytes) of one GCN-Attention block on ``rows`` poses.

    FLOPs: per pose 6 D x D linears on J joints (qkv = 3, proj, gc1, gc2), attention scores and
    weighted sum (2 x J^2 D), two adjacency products (2 x J^2 D), the step-embedding linear
    (D^2); 2 FLOPs per multiply-add; LayerNorm / softmax / ReLU ignored (< 3 %).
    Bytes: read x and write the output once, the step embedding, the weights and adjacency once.
    """
    flops = rows * (2 * joints * dim * dim * 6 + 2 * 4 * joints * joints * dim + 2 * dim * dim)
    nbytes = elem * (2 * rows * joints * dim + rows * dim + 7 * dim * dim + 11 * dim) + 4 * joints * joints
    return float(flops), float(nbytes)


def stpg_cost(videos: int, hyps: int, history: int, joints: int = J) -> tuple[float, float]:
    """(FLOPs, bytes) of the STPG gradient: ~60 FLOPs per joint (root solve, reprojection,
    differential term), ~25 per bone and history slot (window lengths and deviations), J = Q + 1
    bones; bytes: h in and gradient out, the conditions (2D, conf, intr, hist3d, mask) once per video."""
    q = joints - 1
    flops = videos * hyps * (60 * joints + 25 * q * (history + 1) + 40 * q)
    nbytes = 4 * (2 * videos * hyps * joints * 3 + videos * (3 * joints + 4 + history * (3 * joints + 1)))
    return float(flops), float(nbytes)


def sample_cost(cfg: StarPoseConfig, videos: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one frame: S steps of the denoiser (blocks + in/out projections) and STPG."""
    d, n, s = cfg.denoiser.hidden, cfg.diffusion.hypotheses, cfg.diffusion.sample_steps
    rows = videos * n
    bf, bb = block_cost(rows, d)
    sf, sb = stpg_cost(videos, n, cfg.hpim.history)
    io_flops = rows * J * 2 * (3 * d + 3 * d)            # in_proj and head
    cond_bytes = 4 * videos * J * d
    return (float(s * (cfg.denoiser.blocks * bf + io_flops + sf)),
            float(s * (cfg.denoiser.blocks * bb + cond_bytes + sb)))


def _record(benchmark, flops: float, nbytes: float, precision: str, **info) -> None:
    benchmark.extra_info.update(info, flops=flops, bytes=nbytes, device=hardware(str(DEVICE)),
                                git=git_revision(), versions=versions())
    stats = getattr(benchmark, "stats", None)
    if stats is None:                        # --benchmark-disable: nothing was timed
        return
    sec = stats.stats.median
    benchmark.extra_info.update(tflops=flops / sec / 1e12, gbytes_per_s=nbytes / sec / 1e9)
    peak = next((p for name, p in PEAKS.items() if name in benchmark.extra_info["device"]), None)
    if peak:
        benchmark.extra_info.update(pct_flops_peak=100 * flops / sec / peak[precision],
                                    pct_bytes_peak=100 * nbytes / sec / peak["bytes"])


def _timed(fn):
    """fn with a device sync, so wall time covers the GPU work."""
    if DEVICE.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def _skip_unavailable(provider: str, benchmark, videos: int) -> None:
    if provider == "triton" and not CUDA:
        if not INTERPRET:
            pytest.skip("triton provider needs CUDA (or TRITON_INTERPRET=1 with --benchmark-disable for a smoke run)")
        if not benchmark.disabled:
            pytest.skip("the Triton interpreter is ~1000x slower than eager: run it with --benchmark-disable")
        if videos > 1:
            pytest.skip("interpreter smoke run uses B = 1 only")
    if provider == "compile" and not CUDA and os.environ.get("BENCH_COMPILE") != "1":
        pytest.skip("torch.compile on CPU builds C++ for ~20 s per case here; set BENCH_COMPILE=1 to include it")


def _model(preset: str) -> StarPose:
    torch.manual_seed(0)
    return StarPose(StarPoseConfig.from_name(preset)).eval().to(DEVICE)


def _frame(model: StarPose, videos: int):
    """Inputs of one frame: cond (B, J, D), init3d (B, J, 3), x_K (B, N, J, 3), GuidanceInputs."""
    return frame_inputs(model, videos, DEVICE)


# ---- benchmarks -------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["torch", "compile", "triton"])
@pytest.mark.parametrize("preset, videos", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_block(benchmark, provider, preset, videos, dtype):
    _skip_unavailable(provider, benchmark, videos)
    if dtype == torch.float16 and DEVICE.type != "cuda" and provider != "triton":
        pytest.skip("eager fp16 on CPU is not a meaningful baseline")
    model = _model(preset)
    cfg = model.cfg
    rows, d = videos * cfg.diffusion.hypotheses, cfg.denoiser.hidden
    blk = copy.deepcopy(model.denoiser.blocks[0]).to(dtype)
    x = torch.randn(rows, J, d, device=DEVICE, dtype=dtype)
    temb = torch.randn(1, d, device=DEVICE, dtype=dtype)
    if provider == "triton":
        from kernels.denoiser_block import block_constants, denoiser_block, pack_block_params
        params, (adj, eps) = pack_block_params(blk, dtype), block_constants(blk)
        fn = lambda: denoiser_block(x, temb, params, adj, cfg.denoiser.heads, eps)   # noqa: E731
    else:
        mod = torch.compile(blk) if provider == "compile" else blk
        te = temb.expand(rows, d)
        fn = lambda: mod(x, te)                                                      # noqa: E731
    with torch.no_grad():
        benchmark(_timed(fn))
    _record(benchmark, *block_cost(rows, d, elem=dtype.itemsize), "fp16" if dtype == torch.float16 else "fp32",
            op="block", provider=provider, preset=preset, videos=videos, rows=rows, dtype=str(dtype))


@pytest.mark.parametrize("provider", ["torch", "compile", "triton"])
@pytest.mark.parametrize("preset, videos", CASES)
def test_stpg(benchmark, provider, preset, videos):
    _skip_unavailable(provider, benchmark, videos)
    model = _model(preset)
    cfg = model.cfg
    _, init, x_k, gin = _frame(model, videos)
    h = init[:, None] + model.gmm.scale * x_k
    if provider == "triton":
        from kernels.stpg_grad import skeleton_indices, stpg_grad
        skel = {k: v.to(DEVICE) for k, v in skeleton_indices(model.terms).items()}
        fn = lambda: stpg_grad(h, gin, skel, cfg.guidance)                          # noqa: E731
    else:
        from engine.core.guidance import stpg_grad as ref
        f = torch.compile(ref) if provider == "compile" else ref
        fn = lambda: f(h, gin, model.terms, cfg.guidance)                          # noqa: E731
    benchmark(_timed(fn))
    _record(benchmark, *stpg_cost(videos, cfg.diffusion.hypotheses, cfg.hpim.history), "fp32",
            op="stpg", provider=provider, preset=preset, videos=videos)


@pytest.mark.parametrize("provider", ["torch", "compile", "triton"])
@pytest.mark.parametrize("preset, videos", CASES)
def test_sample(benchmark, provider, preset, videos):
    _skip_unavailable(provider, benchmark, videos)
    model = _model(preset)
    cfg = model.cfg
    cond, init, x_k, gin = _frame(model, videos)
    steps = cfg.diffusion.sample_steps
    if provider == "triton":
        from kernels.backend import TritonBackend
        backend = TritonBackend(model, DEVICE)
        fn = lambda: backend.sample(cond, init, x_k, steps, cfg.guidance, gin)      # noqa: E731
    elif provider == "compile":
        compiled = copy.deepcopy(model)
        compiled.denoiser = torch.compile(compiled.denoiser)      # the loop itself stays eager (float(alpha) breaks)
        fn = lambda: sample_frame(compiled, cond, init, x_k, steps, cfg.guidance, gin)  # noqa: E731
    else:
        backend = TorchBackend(model)
        fn = lambda: backend.sample(cond, init, x_k, steps, cfg.guidance, gin)      # noqa: E731
    benchmark(_timed(fn))
    _record(benchmark, *sample_cost(cfg, videos), "fp32", op="sample", provider=provider, preset=preset,
            videos=videos, steps=steps, hypotheses=cfg.diffusion.hypotheses,
            poses_per_call=videos * cfg.diffusion.hypotheses)

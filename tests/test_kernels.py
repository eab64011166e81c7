"""Triton kernels against their eager references in engine/ (kernels/*.py name the reference).

Runs on CPU under TRITON_INTERPRET=1 (tests/conftest.py sets it when CUDA is unavailable), where
a launch costs ~0.1 s per program: shapes are small, but awkward (1, 3, 37 rows; N = 1 and 5;
J = 17 padded to 32 / 64 rows; head dim 8 and 24 padded to 16 and 32). CUDA-only tests carry
the ``cuda`` marker.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from helpers import (  # noqa: F401
    J,
    default_intrinsics,
    make_gin,
    make_model,
    noisy_hypotheses,
    video_keypoints,
)
from torch.testing import assert_close

from engine.backends import BackendUnavailable, make_backend
from engine.config import GuidanceConfig, StarPoseConfig
from engine.denoiser import GCNAttentionBlock
from engine.diffusion import ddim_next, predict_x0
from engine.guidance import GuidanceInputs, SkeletonTerms
from engine.guidance import stpg_grad as stpg_grad_ref
from engine.pipeline import Lifter, TorchBackend, VideoInput
from engine.sampler import guidance_step, initial_noise
from engine.skeleton import H36M17
from kernels._utils import INTERPRET
from kernels.backend import TritonBackend
from kernels.ddim_update import ddim_update
from kernels.denoiser_block import block_constants, block_settings, denoiser_block, pack_block_params
from kernels.denoiser_step import denoiser_step, pack_denoiser
from kernels.stpg_grad import skeleton_indices, stpg_grad

DEVICE = torch.device("cpu" if INTERPRET else "cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET,
                                reason="needs a CUDA GPU with compiled Triton (not the interpreter)")

# Tolerances (atol, rtol) of a kernel against the fp32 eager reference, by activation dtype.
TOL = {
    # Same math in fp32 (IEEE dots in the interpreter, 3xTF32 ~ fp32 on a GPU): only the summation
    # order differs from ATen. Blocks on O(10) activations give ~1e-5 absolute (measured <= 1.3e-5).
    torch.float32: (1e-4, 1e-4),
    # fp16 operands (11-bit mantissa, 4.9e-4 relative) into fp32 accumulators and one fp16 store:
    # a few ulp of O(10) activations. Also bounded relative to eager fp16 (scale-free rule below).
    torch.float16: (6e-2, 1e-2),
}
STPG_TOL = (1e-5, 1e-4)     # fp32 closed form, same op order: errors ~1e-6 on O(1) gradients
SAMPLE_TOL = (1e-5, 1e-5)   # 5 DDIM steps in metres on ~0.1 m poses: rounding only
FP16_VS_TORCH = 2.0         # kernel fp16 error <= 2 x eager-fp16 error (flash-attn's rule) + atol floor


def check_close(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: tuple[float, float]) -> None:
    """assert_close with a header naming the case; torch reports mismatch count and worst index."""
    assert_close(actual.float().cpu(), expected.float().cpu(), atol=tol[0], rtol=tol[1],
                 msg=lambda m: f"{what}: {m}")


def perturbed_block(dim: int, heads: int, seed: int) -> GCNAttentionBlock:
    """A block whose LayerNorm weights and biases are not 1 / 0, so their indexing is tested."""
    torch.manual_seed(seed)
    blk = GCNAttentionBlock(dim, heads, torch.from_numpy(H36M17.adjacency()))
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return blk.eval().to(DEVICE)


def perturbed_model(preset: str, seed: int = 0):
    model = make_model(seed, StarPoseConfig.from_name(preset))
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.to(DEVICE)


def gin_on(b: int, history: int, valid: int | None = None, seed: int = 0) -> GuidanceInputs:
    g = make_gin(b, seed=seed, valid=valid, history=history, dtype=torch.float32)
    return GuidanceInputs(*(t.to(DEVICE) for t in (g.kp2d, g.conf, g.intr, g.hist3d, g.hist_mask)))


# ---- denoiser block -------------------------------------------------------------------------
@pytest.mark.parametrize("rows, dim, heads, rows_per_program, shared_temb", [
    (1, 16, 2, 3, False),     # tiny: head dim 8 padded to 16; one partial program
    (3, 64, 4, 1, True),      # small, one pose per 32-row tile, temb broadcast (row stride 0)
    (37, 96, 4, 3, False),    # paper: head dim 24 padded to 32, D padded to 128; 13 programs, last partial
    (5, 96, 4, 7, True),      # 7 poses packed in a 128-row tile, 2 of them missing
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_denoiser_block_matches_module(rows, dim, heads, rows_per_program, shared_temb, dtype):
    blk = perturbed_block(dim, heads, seed=rows)
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(J, rows, dim, generator=g).to(DEVICE).transpose(0, 1)        # non-contiguous (R, J, D)
    temb = torch.randn(1 if shared_temb else rows, dim, generator=g).to(DEVICE)
    adj, eps = block_constants(blk)
    with torch.no_grad():
        ref = blk(x, temb.expand(rows, dim))
    out = denoiser_block(x.to(dtype), temb.to(dtype), pack_block_params(blk, dtype), adj, heads, eps,
                         rows_per_program=rows_per_program)
    assert out.dtype == dtype and out.shape == (rows, J, dim)
    check_close(out, ref, f"block R={rows} D={dim} H={heads} {dtype}", TOL[dtype])
    if dtype == torch.float16:
        with torch.no_grad():
            ref16 = blk.half()(x.half(), temb.half().expand(rows, dim)).float()
        err, err_torch = (out.float() - ref).abs().max(), (ref16 - ref).abs().max()
        assert err <= FP16_VS_TORCH * err_torch + 1e-2, \
            f"fp16 kernel error {err:.3g} > {FP16_VS_TORCH} x eager fp16 error {err_torch:.3g} + 1e-2"


# ---- whole denoiser ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset, b, n, dtype", [
    ("tiny", 1, 1, torch.float32),
    ("tiny", 37, 1, torch.float32),    # 37 rows: 13 programs, last one holds a single pose
    ("small", 1, 5, torch.float32),
    ("small", 3, 5, torch.float16),
])
def test_denoiser_step_matches_module(preset, b, n, dtype):
    model = perturbed_model(preset)
    den, d = model.denoiser, model.cfg.denoiser.hidden
    g = torch.Generator().manual_seed(b * 10 + n)
    x = torch.randn(b, n, J, 3, generator=g).to(DEVICE)
    init = (0.2 * torch.randn(b, J, 3, generator=g)).to(DEVICE)
    cond = torch.randn(b, J, d, generator=g).to(DEVICE)
    scale, k = 0.05, 30
    with torch.no_grad():
        temb = den.step_embedding(torch.tensor([k], device=DEVICE))[0].contiguous()
        ref = den((init[:, None] + scale * x).reshape(b * n, J, 3),
                  cond[:, None].expand(b, n, J, d).reshape(b * n, J, d),
                  torch.full((b * n,), k, device=DEVICE)).reshape(b, n, J, 3)
    out = denoiser_step(x, init, cond, temb, pack_denoiser(den, dtype), scale)
    # fp16 weights, fp32 output: ~1e-3 of the O(1) noise prediction after three blocks
    tol = TOL[torch.float32] if dtype == torch.float32 else (5e-3, 1e-2)
    check_close(out, ref, f"denoiser {preset} B={b} N={n} {dtype}", tol)


# ---- STPG gradient ----------------------------------------------------------------------------
@pytest.mark.parametrize("b, n, history, valid", [
    (1, 1, 4, 0),       # no history: variance and differential terms vanish (cnt = 1)
    (3, 5, 4, 1),       # one past frame: cnt = 2, the variance term switches on
    (37, 1, 27, 20),    # paper window L = 27 (padded to 32), partly filled
])
def test_stpg_grad_matches_reference(b, n, history, valid):
    model = make_model(0)
    terms = SkeletonTerms(model.skeleton).to(DEVICE)
    gin = gin_on(b, history, valid, seed=b)
    gin.conf[:, 3] = 0.0                                                          # a dropped joint
    h = noisy_hypotheses(b, n, seed=n, dtype=torch.float32).to(DEVICE)
    cfg = GuidanceConfig(lambda_p=1.0, lambda_s=0.7, lambda_b=0.5, lambda_d=0.3)  # every term visible
    out = stpg_grad(h, gin, skeleton_indices(terms), cfg)
    check_close(out, stpg_grad_ref(h, gin, terms, cfg), f"stpg_grad B={b} N={n} L={history} valid={valid}",
                STPG_TOL)


def test_stpg_grad_behind_camera_matches_reference():
    """Joints pushed behind the MIN_DEPTH plane: the clamp and the 'front' mask must agree."""
    terms = SkeletonTerms(H36M17).to(DEVICE)
    gin = gin_on(2, 4, 2)
    gin.kp2d.mul_(40.0)                       # rays far off-axis: the solved root lands near the camera
    h = noisy_hypotheses(2, 3, sigma=0.3, dtype=torch.float32).to(DEVICE)
    cfg = GuidanceConfig()
    ref = stpg_grad_ref(h, gin, terms, cfg)
    check_close(stpg_grad(h, gin, skeleton_indices(terms), cfg), ref, "stpg_grad near camera",
                (1e-5 * max(1.0, ref.abs().max().item()), 1e-4))


# ---- fused DDIM update ------------------------------------------------------------------------
@pytest.mark.parametrize("guided, rho", [(False, 0.0), (True, 0.002), (True, 5.0)])  # 5.0: trust region clips
def test_ddim_update_matches_eager_step(guided, rho):
    model = make_model(0).to(DEVICE)
    b, n, history = 3, 5, model.cfg.hpim.history
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, n, J, 3, generator=g).to(DEVICE)
    eps = torch.randn(b, n, J, 3, generator=g).to(DEVICE)
    init = noisy_hypotheses(b, 1, dtype=torch.float32)[:, 0].to(DEVICE)
    mu = model.gmm.mean.to(DEVICE).reshape(J, 3).contiguous()
    scale, a_k, a_next = model.gmm.scale, float(model.alphas_bar[40]), float(model.alphas_bar[30])
    gin = gin_on(b, history, 2)
    cfg = GuidanceConfig(enabled=guided, rho=rho)
    x0 = predict_x0(x, eps, mu, a_k)
    ref = ddim_next(x0, eps, mu, a_next)
    if guided:
        grad = stpg_grad_ref(init[:, None] + scale * x0, gin, model.terms, cfg)
        ref = ref - guidance_step(grad, cfg) / scale
    out = ddim_update(x, eps, mu, init, a_k, a_next, scale, cfg, gin, skeleton_indices(model.terms))
    check_close(out, ref, f"ddim_update guided={guided} rho={rho}", (1e-5, 1e-5))


# ---- TritonBackend ----------------------------------------------------------------------------
def _frame_inputs(model, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d, n = model.cfg.denoiser.hidden, model.cfg.diffusion.hypotheses
    cond = torch.randn(b, J, d, generator=g).to(DEVICE)
    init = noisy_hypotheses(b, 1, seed=seed, dtype=torch.float32)[:, 0].to(DEVICE)
    x_k = initial_noise(model, model.gmm.sample((b * n,), g).reshape(b, n, 3 * J).to(DEVICE))
    return cond, init, x_k, gin_on(b, model.cfg.hpim.history, 2, seed)


@pytest.mark.parametrize("guidance", [GuidanceConfig(), GuidanceConfig(enabled=False)], ids=["stpg", "plain"])
def test_backend_sample_matches_torch_backend(guidance):
    model = perturbed_model("tiny")
    cond, init, x_k, gin = _frame_inputs(model, b=2)
    steps = model.cfg.diffusion.sample_steps
    ref = TorchBackend(model).sample(cond, init, x_k, steps, guidance, gin)
    out = make_backend("triton", model, str(DEVICE)).sample(cond, init, x_k, steps, guidance, gin)
    check_close(out, ref, f"TritonBackend.sample tiny S={steps} guided={guidance.enabled}", SAMPLE_TOL)
    assert (out - init[:, None]).abs().max() > 1e-3, "sampling did not move the hypotheses"


def test_lifter_with_triton_backend_matches_torch():
    """Two videos (3 and 2 frames) through Lifter: inherited context/condition stages, history."""
    model = perturbed_model("tiny")
    intr = default_intrinsics()
    videos = [VideoInput.from_pixels(video_keypoints(t, seed=t), intr) for t in (3, 2)]
    n = model.cfg.diffusion.hypotheses
    g = torch.Generator().manual_seed(0)
    noise = [model.gmm.sample((v.frames * n,), g).reshape(v.frames, n, 3 * J) for v in videos]
    ref = Lifter(model).lift(videos, noise=noise)
    out = Lifter(model, backend=make_backend("triton", model, str(DEVICE))).lift(videos, noise=noise)
    for i, (a, b) in enumerate(zip(out, ref)):
        check_close(torch.from_numpy(a.poses), torch.from_numpy(b.poses), f"Lifter video {i}", SAMPLE_TOL)


def test_backend_full_guidance_falls_back_to_eager():
    model = perturbed_model("tiny")
    cond, init, x_k, gin = _frame_inputs(model, b=1)
    cfg = GuidanceConfig(mode="full")
    backend = TritonBackend(model, DEVICE)
    with pytest.warns(UserWarning, match="not fused"):
        out = backend.sample(cond, init, x_k, 2, cfg, gin)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # noted once, not per frame
        backend.sample(cond, init, x_k, 2, cfg, gin)
    check_close(out, TorchBackend(model).sample(cond, init, x_k, 2, cfg, gin), "full-mode fallback", (0.0, 0.0))


def test_backend_unavailable_on_wrong_device():
    wrong = "cuda" if INTERPRET else "cpu"
    with pytest.raises(BackendUnavailable, match="backend 'triton'"):
        make_backend("triton", make_model(0), wrong)


@pytest.mark.cuda
@needs_cuda
def test_backend_cuda_graph_replay_matches_eager_launches():
    model = perturbed_model("small")
    backend = TritonBackend(model, "cuda")
    steps = model.cfg.diffusion.sample_steps
    for b in (1, 3, 1):                                           # a second batch size, then a cached graph
        cond, init, x_k, gin = _frame_inputs(model, b, seed=b)
        out = backend.sample(cond, init, x_k, steps, model.cfg.guidance, gin)
        ref = backend._sample(cond, init, x_k, steps, model.cfg.guidance, gin)
        check_close(out, ref, f"CUDA graph replay B={b}", (0.0, 0.0))
    assert len(backend._graphs) == 2


# ---- launcher validation ----------------------------------------------------------------------
def _block_args(dim: int = 64, heads: int = 4, rows: int = 3):
    blk = perturbed_block(dim, heads, 0)
    adj, _ = block_constants(blk)
    return torch.randn(rows, J, dim, device=DEVICE), torch.randn(rows, dim, device=DEVICE), \
        pack_block_params(blk), adj


@pytest.mark.parametrize("change, match", [
    (lambda a: {**a, "x": a["x"][..., :32], "temb": a["temb"][:, :32]}, "params has shape"),  # D vs params
    (lambda a: {**a, "x": a["x"][0]}, "x has shape"),                              # missing row axis
    (lambda a: {**a, "temb": a["temb"][:2]}, "temb has 2 rows"),
    (lambda a: {**a, "params": a["params"].half()}, "params has dtype"),
    (lambda a: {**a, "params": torch.stack([a["params"]] * 2, 1)[:, 0]}, "must be contiguous"),
    (lambda a: {**a, "adj": a["adj"][:16, :16]}, "adj has shape"),
    (lambda a: {**a, "heads": 5}, "not divisible by heads"),
    (lambda a: {**a, "heads": 8, "block_hd": 8}, r"tl.dot needs every dimension >= 16.*BLOCK_HD"),  # GPU-only rule
    (lambda a: {**a, "block_c": 24}, r"powers of two.*BLOCK_C"),
    (lambda a: {**a, "rows_per_program": 0}, "rows_per_program must be >= 1"),
])
def test_denoiser_block_rejects_bad_inputs(change, match):
    x, temb, params, adj = _block_args()
    args = change({"x": x, "temb": temb, "params": params, "adj": adj, "heads": 4})
    with pytest.raises(ValueError, match=match):
        denoiser_block(**args)


def test_block_settings_checks_padding_and_gpu_rules():
    assert block_settings(17, 96, 4) == {"ROWS": 3, "BLOCK_M": 64, "BLOCK_D": 128, "BLOCK_HD": 32, "BLOCK_C": 32}
    assert block_settings(17, 16, 2)["BLOCK_HD"] == 16             # head dim 8 padded up to the tl.dot minimum
    with pytest.raises(ValueError, match=r"BLOCK_M 32 < J 17 x rows_per_program 3"):
        block_settings(17, 64, 4, rows_per_program=3, block_m=32)
    with pytest.raises(ValueError, match=r"powers of two.*BLOCK_M"):
        block_settings(17, 64, 4, rows_per_program=1, block_m=48)
    with pytest.raises(ValueError, match=r"BLOCK_HD 16 < head dim 24"):
        block_settings(17, 96, 4, block_hd=16)


def test_stpg_and_update_reject_bad_inputs():
    terms = SkeletonTerms(H36M17)
    skel = skeleton_indices(terms)
    gin = gin_on(2, 4)
    h = torch.zeros(2, 3, J, 3, device=DEVICE)
    with pytest.raises(ValueError, match="gin.kp2d has shape"):
        stpg_grad(h[:1], gin, skel, GuidanceConfig())
    with pytest.raises(ValueError, match="h has dtype"):
        stpg_grad(h.double(), gin, skel, GuidanceConfig())
    with pytest.raises(ValueError, match="skeleton child has dtype"):
        stpg_grad(h, gin, {**skel, "child": skel["child"].long()}, GuidanceConfig())
    with pytest.raises(ValueError, match="mode 'x0' only"):
        ddim_update(h, h, torch.zeros(J, 3, device=DEVICE), h[:, 0], 0.9, 0.95, 0.05,
                    GuidanceConfig(mode="full"), gin, skel)
    with pytest.raises(ValueError, match="alphas must lie in"):
        ddim_update(h, h, torch.zeros(J, 3, device=DEVICE), h[:, 0], 0.0, 0.95, 0.05)
    bad = SkeletonTerms(H36M17)
    bad.incidence[0, 0] = 1.0                                     # a bone with two children
    with pytest.raises(ValueError, match="incidence rows"):
        skeleton_indices(bad)

"""kernels/backend.py (the triton backend) against the torch backend: one frame, whole videos,
the eager fallback for full guidance, device checks and the CUDA graph replay."""
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
from kernel_common import DEVICE, SAMPLE_TOL, _frame_inputs, check_close, needs_cuda, perturbed_model

from engine.core.backend import BackendUnavailable, make_backend
from engine.core.config import GuidanceConfig
from engine.core.pipeline import Lifter, VideoInput
from engine.core.torch_backend import TorchBackend
from kernels._utils import INTERPRET
from kernels.backend import TritonBackend


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

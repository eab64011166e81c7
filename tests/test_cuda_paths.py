"""The CUDA code paths, checked as far as a CPU allows (issue 14, part 2).

What runs only on a GPU is split from what can be decided on the host:

- CUDA graphs (kernels/backend.py): the capture decision, the replay bookkeeping (one graph per
  input shapes and settings, inputs copied into the static buffers, a fresh result) with the
  capture itself stubbed, and that the captured per-frame loop makes no host synchronisation
  (``.item()``, ``bool(tensor)``, ``.cpu()``, ...), which would abort a capture on a GPU.
- ONNX Runtime's CUDA provider: which providers the onnx backend asks for per device string, all
  names ORT knows; the C++ runner asked for CUDA with a CPU-only ORT falls back to CPU and still
  reproduces the CPU results.
- Device strings and dtypes the triton backend accepts or refuses.

The kernels themselves are compiled for GPUs by tests/test_aot.py (kernels/aot.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from helpers import J, make_gin, make_model
from torch.overrides import TorchFunctionMode

from engine.core.backend import BackendUnavailable, make_backend
from engine.core.config import GuidanceConfig, StarPoseConfig
from engine.core.sampler import initial_noise
from kernels import ddim_update as ddim_mod
from kernels import denoiser_step as step_mod
from kernels._utils import INTERPRET
from kernels.backend import TritonBackend

pytestmark = pytest.mark.skipif(not INTERPRET, reason="CPU stand-ins of GPU paths (a GPU runs the real ones)")
GOLDEN = Path(__file__).resolve().parent / "golden" / "golden_tiny.npz"


def frame(model, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d, n = model.cfg.denoiser.hidden, model.cfg.diffusion.hypotheses
    x_k = initial_noise(model, model.gmm.sample((b * n,), g).reshape(b, n, 3 * J))
    gin = make_gin(b, seed=seed, history=model.cfg.hpim.history, dtype=torch.float32)
    return torch.randn(b, J, d, generator=g), 0.1 * torch.randn(b, J, 3, generator=g), x_k, gin


# ---- CUDA graphs ---------------------------------------------------------------------------------
def test_graph_capture_is_off_on_cpu_and_the_plain_loop_touches_no_cuda(monkeypatch):
    model = make_model(0)
    backend = TritonBackend(model, "cpu", cuda_graphs=True)
    assert backend.use_graphs is False and backend.device == torch.device("cpu")

    def no_cuda(*a, **k):
        raise AssertionError("the CPU path must not reach torch.cuda")
    for name in ("CUDAGraph", "Stream", "graph", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    cond, init, x_k, gin = frame(model, 1)
    out = backend.sample(cond, init, x_k, 2, GuidanceConfig(), gin)
    assert out.shape == x_k.shape and backend._graphs == {}


class _Graph:
    """Stands in for torch.cuda.CUDAGraph: replay recomputes ``out`` from the static inputs."""

    def __init__(self, static: dict[str, torch.Tensor], out: torch.Tensor):
        self.static, self.out, self.replays = static, out, 0

    def replay(self) -> None:
        self.replays += 1
        self.out.copy_(2.0 * self.static["x_k"] + self.static["init3d"][:, None])


def test_replay_keeps_one_graph_per_shape_and_settings(monkeypatch):
    model = make_model(0)
    backend = TritonBackend(model, "cpu", cuda_graphs=True)
    captures = []

    def capture(inputs, steps, guidance):
        static = {name: t.detach().clone() for name, t in inputs.items()}
        out = torch.empty_like(static["x_k"])
        captures.append(sorted(inputs))
        return static, out, _Graph(static, out)

    monkeypatch.setattr(backend, "_capture", capture)
    guided = GuidanceConfig()
    cond, init, x_k, gin = frame(model, 1)
    first = backend._replay(cond, init, x_k, 5, guided, gin)
    assert captures == [["cond", "conf", "hist3d", "hist_mask", "init3d", "intr", "kp2d", "x_k"]]
    torch.testing.assert_close(first, 2.0 * x_k + init[:, None], atol=0, rtol=0)
    # same shapes and settings: the graph is reused and the new inputs are copied into its buffers
    cond, init, x_k, gin = frame(model, 1, seed=7)
    second = backend._replay(cond, init, x_k, 5, guided, gin)
    torch.testing.assert_close(second, 2.0 * x_k + init[:, None], atol=0, rtol=0)
    static, out, graph = next(iter(backend._graphs.values()))
    assert len(captures) == 1 and graph.replays == 2
    second.add_(1.0)                                   # the result is a copy, not the graph's buffer
    assert not torch.equal(second, out)
    # a new batch size, step count, guidance setting, or no conditions: a graph each
    for b, steps, guidance, with_gin in [(2, 5, guided, True), (1, 3, guided, True),
                                         (1, 5, dataclasses.replace(guided, rho=0.004), True), (1, 5, guided, False)]:
        cond, init, x_k, gin = frame(model, b)
        backend._replay(cond, init, x_k, steps, guidance, gin if with_gin else None)
    assert len(captures) == len(backend._graphs) == 5


class _NoLaunch:
    """Replaces a @triton.jit kernel: the launcher's host code runs, the kernel does not."""

    def __init__(self):
        self.launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
        return launch


_SYNCS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero"}


class _OnDevice(torch.Tensor):
    """A CPU tensor standing for a GPU tensor: reading it on the host raises, as it would abort
    a CUDA-graph capture. Results of operations on it are _OnDevice too."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _SYNCS:
            raise AssertionError(f"host synchronisation in the captured loop: Tensor.{name} on a device tensor")
        return super().__torch_function__(func, types, args, kwargs or {})


class _DeviceFactories(TorchFunctionMode):
    """Tensors created with an explicit ``device=`` (kernel outputs, ...) are device tensors;
    host-side helpers (e.g. torch.linspace of the DDIM schedule) create theirs without one."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if kwargs and "device" in kwargs and isinstance(out, torch.Tensor) and not isinstance(out, _OnDevice):
            out = out.as_subclass(_OnDevice)
        return out


@pytest.mark.parametrize("guidance", [GuidanceConfig(), GuidanceConfig(enabled=False)], ids=["stpg", "plain"])
def test_captured_frame_loop_has_no_host_sync(monkeypatch, guidance):
    """TritonBackend._capture records _sample after one warm-up call (which fills the step-
    embedding cache); the recorded call must not read device tensors on the host."""
    model = make_model(0, StarPoseConfig.from_name("tiny"))
    backend = TritonBackend(model, "cpu", cuda_graphs=False)
    kernels = {"step": _NoLaunch(), "update": _NoLaunch()}
    monkeypatch.setattr(step_mod, "_denoiser_step_kernel", kernels["step"])
    monkeypatch.setattr(ddim_mod, "_ddim_update_kernel", kernels["update"])
    cond, init, x_k, gin = frame(model, 3)
    steps = model.cfg.diffusion.sample_steps
    backend._sample(cond, init, x_k, steps, guidance, gin if guidance.enabled else None)   # warm-up
    dev = [t.as_subclass(_OnDevice) for t in (cond, init, x_k, *dataclasses.astuple(gin))]
    with _DeviceFactories():
        out = backend._sample(*dev[:3], steps, guidance, type(gin)(*dev[3:]) if guidance.enabled else None)
    assert isinstance(out, _OnDevice)                  # the detector followed the data to the result
    assert kernels["step"].launches == kernels["update"].launches == 2 * steps


# ---- ONNX Runtime's CUDA provider ----------------------------------------------------------------
class _Session:
    def __init__(self, path, options, providers):
        self.providers = list(providers)

    def get_inputs(self):
        return []

    def get_providers(self):
        return self.providers


@pytest.mark.parametrize("device, gpu_visible, ort_cuda, expected", [
    ("cuda", True, True, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("cuda:0", True, True, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("cuda", True, False, ["CPUExecutionProvider"]),        # CPU wheel (the cpu extra) on a GPU machine
    ("cuda", False, True, None),        # onnxruntime-gpu, but no GPU visible to torch: refused up front
    ("cpu", True, True, ["CPUExecutionProvider"]),
])
def test_onnx_backend_asks_for_the_cuda_provider(monkeypatch, device, gpu_visible, ort_cuda, expected):
    ort = pytest.importorskip("onnxruntime")
    from export import ort_backend
    model = make_model(0)
    spec = {"gmm": {"mean": [0.0] * (3 * J), "scale": 0.05}, "alphas_bar": [0.5], "joints": J, "root": 0}
    monkeypatch.setattr(ort_backend, "load_spec", lambda d: spec)
    monkeypatch.setattr(ort_backend, "check_export_matches", lambda m, s, d: None)
    monkeypatch.setattr(ort, "InferenceSession", _Session)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: (["CUDAExecutionProvider"] if ort_cuda else []) + ["CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_visible)
    if expected is None:                # results are returned on the device, which torch cannot use
        from engine.core.backend import BackendUnavailable
        with pytest.raises(BackendUnavailable, match="no CUDA"):
            ort_backend.OrtBackend(model, device, export_dir=Path("unused"))
        return
    backend = ort_backend.OrtBackend(model, device, export_dir=Path("unused"))
    assert backend.providers == expected
    assert set(expected) <= set(ort.get_all_providers()), "a provider name ONNX Runtime does not know"


def test_cpp_runner_asked_for_cuda_falls_back_to_cpu_with_a_cpu_onnxruntime():
    from export import cpp_backend
    if not cpp_backend.available():
        pytest.skip(cpp_backend.unavailable_reason())
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu installed: the GPU check (bench.gpu_check) covers this")
    from engine.core.pipeline import Lifter
    from export.cache import export_cached
    from export.golden import load_golden
    g = load_golden(GOLDEN)
    export = export_cached(g.model)
    on_cuda = cpp_backend.CppBackend(g.model, device="cuda", export_dir=export)
    on_cpu = cpp_backend.CppBackend(g.model, device="cpu", export_dir=export)
    assert on_cuda.providers == on_cpu.providers == ["CPUExecutionProvider"]
    a = Lifter(g.model, on_cuda).lift(g.videos, seed=g.seed, noise=g.noise)
    b = Lifter(g.model, on_cpu).lift(g.videos, seed=g.seed, noise=g.noise)
    for x, y in zip(a, b):
        assert (x.poses == y.poses).all()


# ---- device strings and dtypes -------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1", "meta"])
def test_triton_backend_refuses_devices_it_cannot_run_on(device):
    with pytest.raises(BackendUnavailable, match=f"backend 'triton'.*{device}"):
        make_backend("triton", make_model(0), device)


def test_triton_backend_storage_dtypes():
    model = make_model(0)
    with pytest.raises(ValueError, match="float32 or float16, got torch.bfloat16"):
        TritonBackend(model, "cpu", dtype=torch.bfloat16)
    fp16 = TritonBackend(model, "cpu", dtype=torch.float16)
    assert fp16.params.blocks.dtype == torch.float16
    assert fp16.params.io.dtype == fp16.params.adj.dtype == fp16.mu.dtype == torch.float32   # state stays fp32
    cond, init, x_k, gin = frame(model, 1)
    out16 = fp16.sample(cond, init, x_k, 2, GuidanceConfig(), gin)
    out32 = TritonBackend(model, "cpu").sample(cond, init, x_k, 2, GuidanceConfig(), gin)
    assert out16.dtype == torch.float32
    # fp16 weights: ~1e-3 relative on the noise prediction, times the GMM scale per step
    torch.testing.assert_close(out16, out32, atol=1e-3, rtol=0)

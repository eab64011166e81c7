"""Triton execution backend: the DDIM loop of every frame on fused kernels.

:class:`TritonBackend` implements :class:`engine.core.backend.Backend` and is registered as
``triton`` (entry point in pyproject.toml). ``context`` and ``condition`` stay eager PyTorch (once per window / once
per frame); ``sample`` runs the S DDIM steps with two launches per step:

- :func:`kernels.denoiser_step.denoiser_step`: the whole denoiser for all B x N hypotheses;
- :func:`kernels.ddim_update.ddim_update`: x0 prediction, STPG gradient (mode ``x0``), the
  trust-region guidance step and the DDIM next state.

Guidance mode ``full`` (gradient through the denoiser by autograd, exactly Eq. 9) is not fused:
``sample`` then runs the eager reference :func:`engine.core.sampler.sample_frame` and warns once.

On CUDA the whole per-frame loop (all S steps, 2 S launches and the final root-centring) is
captured once per (batch size, N, S, guidance settings) in a ``torch.cuda.CUDAGraph`` and
replayed, so single-video autoregression (B = 1, a few microseconds of GPU work per launch) is
not bound by Python and launch overhead. Inputs are copied into the graph's static buffers;
the result is a fresh tensor.

Where it runs: a CUDA device, or the CPU under ``TRITON_INTERPRET=1`` (set before ``kernels``
is imported; ~1000x slower than eager, for tests only). Anything else raises
:class:`engine.core.backend.BackendUnavailable` with a one-line reason.

The weights, the GMM mean / scale and the schedule are snapshotted at construction (and by
:meth:`TritonBackend.refresh`): build the backend after loading a checkpoint or fitting the GMM.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch

from engine.core.backend import BackendUnavailable
from engine.core.diffusion import ddim_timesteps
from engine.core.guidance import GuidanceInputs
from engine.core.sampler import sample_frame
from engine.core.torch_backend import TorchBackend

from ._utils import INTERPRET
from .ddim_update import ddim_update
from .denoiser_step import denoiser_step, pack_denoiser
from .stpg_grad import skeleton_indices


def _check_runnable(device: torch.device) -> None:
    if INTERPRET:
        if device.type != "cpu":
            raise BackendUnavailable(f"backend 'triton' under TRITON_INTERPRET=1 runs on CPU tensors only, "
                                     f"got device {device}")
        return
    if device.type != "cuda":
        raise BackendUnavailable(f"backend 'triton' needs a CUDA device, got {device!s} "
                                 "(set TRITON_INTERPRET=1 before import to run the slow CPU interpreter)")
    if not torch.cuda.is_available():
        raise BackendUnavailable("backend 'triton' needs a CUDA GPU, but torch.cuda.is_available() is False")


DTYPES = {"float32": torch.float32, "float16": torch.float16}
ROWS_PER_PROGRAM = (1, 3, 7)


@dataclass(frozen=True)
class TritonOptions:
    device: str = "cuda"
    dtype: str = "float32"            # storage of the denoiser block weights: float32 | float16
    rows_per_program: int = 3         # hypotheses per denoiser program: 1 | 3 | 7
    cuda_graphs: bool = True          # capture the per-frame loop in a CUDA graph (CUDA only)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.rows_per_program not in ROWS_PER_PROGRAM:
            raise ValueError(f"rows_per_program must be one of {ROWS_PER_PROGRAM}, got {self.rows_per_program}")


class TritonBackend(TorchBackend):
    """Fused-kernel sampler; context and condition inherited (eager).

    Args:
        model: a StarPose model; moved to ``device`` (in place) and put in eval mode.
        device: ``"cuda"`` / ``"cuda:N"``, or ``"cpu"`` under TRITON_INTERPRET=1.
        dtype: storage of the denoiser block weights, float32 or float16 (a torch dtype or its
            name; fp16 operands for tl.dot, fp32 accumulation; the diffusion state and the
            guidance stay fp32).
        rows_per_program: hypotheses per denoiser program (1 / 3 / 7 fill 32 / 64 / 128 rows).
        cuda_graphs: capture the per-frame loop in a CUDA graph (CUDA only).
    """
    name: ClassVar[str] = "triton"
    Options: ClassVar[type] = TritonOptions
    batch_invariant: ClassVar[bool] = False

    def __init__(self, model, device: str | torch.device = "cuda", dtype: torch.dtype | str = torch.float32,
                 rows_per_program: int = 3, cuda_graphs: bool = True):
        dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        _check_runnable(dev)
        super().__init__(model.to(dev).eval())
        self.device = dev
        self.providers = ["triton"]
        self.dtype = dtype
        self.rows_per_program = rows_per_program
        self.use_graphs = cuda_graphs and dev.type == "cuda"
        self._noted_full = False
        self.refresh()

    def refresh(self) -> None:
        """Re-read weights, GMM and schedule from the model (drops captured graphs)."""
        m = self.model
        with torch.no_grad():
            self.params = pack_denoiser(m.denoiser, self.dtype)
            gmm = m.gmm
            self.scale = float(gmm.scale)
            self.mu = gmm.mean.to(self.device, torch.float32).reshape(m.num_joints, 3).contiguous()
        self.alphas = [float(a) for a in m.alphas_bar]
        self.skel = {k: v.to(self.device) for k, v in skeleton_indices(m.terms).items()}
        self._temb: dict[int, torch.Tensor] = {}
        self._graphs: dict[tuple, tuple[dict[str, torch.Tensor], torch.Tensor, torch.cuda.CUDAGraph]] = {}

    # -- per-frame reverse process -------------------------------------------------------------
    def sample(self, cond, init3d, x_k, steps, guidance, gin) -> torch.Tensor:
        """As :meth:`TorchBackend.sample`: (B, N, J, 3) hypotheses, metres, root-relative."""
        guided = guidance.enabled and gin is not None and guidance.rho > 0
        if guided and guidance.mode == "full":
            if not self._noted_full:
                warnings.warn("TritonBackend: guidance mode 'full' differentiates through the denoiser "
                              "and is not fused; using the eager reference sampler", stacklevel=2)
                self._noted_full = True
            return sample_frame(self.model, cond, init3d, x_k, steps, guidance, gin)
        if self.use_graphs:
            return self._replay(cond, init3d, x_k, steps, guidance, gin if guided else None)
        return self._sample(cond, init3d, x_k, steps, guidance, gin if guided else None)

    def _step_embedding(self, k: int) -> torch.Tensor:
        temb = self._temb.get(k)
        if temb is None:
            with torch.no_grad():
                kk = torch.tensor([k], device=self.device)
                temb = self.model.denoiser.step_embedding(kk)[0].float().contiguous()
            self._temb[k] = temb
        return temb

    def _sample(self, cond, init3d, x_k, steps, guidance, gin) -> torch.Tensor:
        x = x_k
        for k, k_next in ddim_timesteps(self.model.cfg.diffusion.train_steps, steps):
            eps = denoiser_step(x, init3d, cond, self._step_embedding(k), self.params, self.scale,
                                self.rows_per_program)
            x = ddim_update(x, eps, self.mu, init3d, self.alphas[k], self.alphas[k_next], self.scale,
                            guidance, gin, self.skel)
        pose = init3d[:, None] + self.scale * x
        root = self.model.skeleton.root
        return pose - pose[:, :, root:root + 1]

    # -- CUDA graphs ---------------------------------------------------------------------------
    def _replay(self, cond, init3d, x_k, steps, guidance, gin) -> torch.Tensor:
        inputs = {"cond": cond, "init3d": init3d, "x_k": x_k}
        if gin is not None:
            inputs.update(kp2d=gin.kp2d, conf=gin.conf, intr=gin.intr, hist3d=gin.hist3d, hist_mask=gin.hist_mask)
        key = (steps, guidance) + tuple((name, tuple(t.shape), t.dtype) for name, t in inputs.items())
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(inputs, steps, guidance)
        static, out, graph = entry
        for name, t in inputs.items():
            static[name].copy_(t)
        graph.replay()
        return out.clone()

    def _capture(self, inputs: dict[str, torch.Tensor], steps: int, guidance):
        static = {name: t.detach().clone() for name, t in inputs.items()}

        def run() -> torch.Tensor:
            gin = None
            if "kp2d" in static:
                gin = GuidanceInputs(static["kp2d"], static["conf"], static["intr"], static["hist3d"],
                                     static["hist_mask"])
            return self._sample(static["cond"], static["init3d"], static["x_k"], steps, guidance, gin)

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            run()                                   # warm-up: compiles the kernels, fills the temb cache
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = run()
        return static, out, graph

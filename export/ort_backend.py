"""ONNX Runtime backend (registered as ``onnx``): an :class:`engine.core.backend.Backend` on the
exported graphs.

Runs the exported graphs (export/onnx.py) through ONNX Runtime's Python API, stage by stage:
``context`` and ``condition`` are one session call each; ``sample`` is the DDIM loop of
engine/core/sampler.py (its arithmetic from engine.core.diffusion, on numpy arrays) around the
``denoiser`` and ``stpg_grad`` sessions (the N hypotheses of all B videos in one denoiser call
per step). Only guidance mode ``x0`` exists in exported form: mode ``full`` backpropagates
through the denoiser and runs on the torch backend only.

Providers: CPU, or CUDA first when ``device`` is a CUDA device, onnxruntime-gpu is installed
and torch sees a GPU. ``.providers`` lists what the sessions actually use (ORT falls back to CPU
silently when CUDA cannot start).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from engine.core.backend import BackendUnavailable
from engine.core.config import GuidanceConfig
from engine.core.diffusion import ddim_next, ddim_timesteps, predict_x0
from engine.core.guidance import GuidanceInputs
from engine.core.model import StarPose

from .cache import export_cached
from .graphs import GRAPHS
from .spec import ExportError, load_spec

__all__ = ["OrtBackend", "OrtOptions", "check_guidance_mode"]


@dataclass(frozen=True)
class OrtOptions:
    """Options of the exported-graph backends (``onnx`` and ``cpp``)."""
    device: str = "cpu"
    export_dir: Path | None = None    # an export of the model (default: the export cache)
    threads: int = 1                  # ORT intra-op threads per session

    def __post_init__(self):
        if not 1 <= self.threads <= 1024:
            raise ValueError(f"threads must be in [1, 1024], got {self.threads}")


def check_guidance_mode(guidance: GuidanceConfig, backend: str) -> None:
    """Raise for guidance settings the exported graphs cannot run."""
    if guidance.enabled and guidance.rho > 0 and guidance.mode != "x0":
        raise ValueError(f"backend {backend!r} supports guidance mode 'x0' only, got {guidance.mode!r}: mode "
                         f"'full' differentiates through the denoiser and runs on the 'torch' backend")


def check_export_matches(model: StarPose, spec: dict, export_dir: Path) -> None:
    """The export must come from this model: same config and same GMM."""
    if spec["config"] != model.cfg.to_dict():
        raise ExportError(f"{export_dir} was exported from preset {spec['preset']!r} with a different config "
                          f"than the model's ({model.cfg.name!r}); re-export it")
    gmm = model.gmm
    for name, ours in (("weights", gmm.weights), ("means", gmm.means), ("variances", gmm.variances)):
        theirs = np.asarray(spec["gmm"][name], np.float32)
        if theirs.shape != tuple(ours.shape) or not np.array_equal(theirs, ours.detach().cpu().float().numpy()):
            raise ExportError(f"{export_dir} holds a different GMM ({name}) than the model; re-export it")


def checked_export(model: StarPose, export_dir: str | Path | None) -> tuple[Path, dict]:
    """The export an exported backend runs (``export_dir``, or the cache's export of ``model``) and
    its runner.json, checked against the model (ExportError: one line)."""
    d = Path(export_dir) if export_dir is not None else export_cached(model)
    spec = load_spec(d)
    check_export_matches(model, spec, d)
    return d, spec


class OrtBackend:
    """Exported graphs on ONNX Runtime.

    Args:
        model: the model the export comes from (its config and GMM are checked against it).
        device: ``"cpu"`` or ``"cuda[:i]"``; results are returned on this device.
        export_dir: an export of ``model``; default: export into the cache
            (:func:`export.cache.export_cached`, ``$STARPOSE_CACHE_DIR``).
        threads: ORT intra-op threads per session (default 1: these graphs are small, and on a
            shared 2-core machine a spinning thread pool is several times slower than one thread).
    """
    name: ClassVar[str] = "onnx"
    Options: ClassVar[type] = OrtOptions
    whole_loop: ClassVar[bool] = False
    batch_invariant: ClassVar[bool] = False

    def __init__(self, model: StarPose, device: str | torch.device = "cpu", export_dir: str | Path | None = None,
                 threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(f"backend 'onnx' needs onnxruntime ({e}); pip install onnxruntime") from None
        self.model = model.eval()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():   # results live on self.device
            raise BackendUnavailable(f"backend 'onnx' on {self.device}: this torch build has no CUDA; use "
                                     "--device cpu")
        self.export_dir, self.spec = checked_export(model, export_dir)

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if (self.device.type == "cuda" and torch.cuda.is_available()
                and "CUDAExecutionProvider" in ort.get_available_providers()):
            providers.insert(0, "CUDAExecutionProvider")
        self._sessions = {g: ort.InferenceSession(str(self.export_dir / f"{g}.onnx"), so, providers=providers)
                          for g in GRAPHS}
        self._inputs = {g: [i.name for i in s.get_inputs()] for g, s in self._sessions.items()}
        self.providers: list[str] = self._sessions["denoiser"].get_providers()

        sp = self.spec
        self._mu = np.asarray(sp["gmm"]["mean"], np.float32).reshape(sp["joints"], 3)
        self._scale = float(sp["gmm"]["scale"])
        self._ab = np.asarray(sp["alphas_bar"], np.float32)
        self._root = int(sp["root"])

    # -- helpers --------------------------------------------------------------------------------
    def _np(self, x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sessions[graph].run(None, {k: feed[k] for k in self._inputs[graph]})

    def _out(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device)

    # -- the three stages of engine.core.backend.Backend ----------------------------------------
    def context(self, kp_windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, F, J, 2) -> f_2D (W, F, J, C), init3d (W, F, J, 3)."""
        f2d, init3d = self._run("context", {"kp": self._np(kp_windows)})
        return self._out(f2d), self._out(init3d)

    def condition(self, f2d, kp2d, hist2d, hist3d, mask) -> torch.Tensor:
        """f2d (B, J, C), kp2d (B, J, 2), hist2d (B, L, J, 2), hist3d (B, L, J, 3), mask (B, L) -> (B, J, D)."""
        feed = {"f2d": self._np(f2d), "kp2d": self._np(kp2d), "hist2d": self._np(hist2d),
                "hist3d": self._np(hist3d), "mask": self._np(mask)}
        return self._out(self._run("condition", feed)[0])

    def check_config(self, cfg) -> None:
        """Raise ValueError for settings this backend cannot run."""
        check_guidance_mode(cfg.guidance, self.name)

    def sample(self, cond: torch.Tensor, init3d: torch.Tensor, x_k: torch.Tensor, steps: int,
               guidance: GuidanceConfig, gin: GuidanceInputs | None) -> torch.Tensor:
        """engine.core.sampler.sample_frame on ORT: cond (B, J, D), init3d (B, J, 3), x_k (B, N, J, 3)
        -> (B, N, J, 3)."""
        check_guidance_mode(guidance, self.name)
        b, n, j, _ = x_k.shape
        use_guidance = guidance.enabled and gin is not None and guidance.rho > 0
        cond_r = np.repeat(self._np(cond), n, axis=0)                       # (B*N, J, D)
        init_r = self._np(init3d)[:, None]                                  # (B, 1, J, 3)
        mu, scale = self._mu, self._scale
        x = self._np(x_k)
        if use_guidance:
            stpg_feed = {"kp2d": self._np(gin.kp2d), "conf": self._np(gin.conf), "intr": self._np(gin.intr),
                         "hist3d": self._np(gin.hist3d), "hist_mask": self._np(gin.hist_mask),
                         "lambdas": np.array(guidance.weights(), np.float32)}
        for k, k_next in ddim_timesteps(self.spec["train_steps"], steps):
            a_k, a_next = float(self._ab[k]), float(self._ab[k_next])
            pose = init_r + scale * x                                       # (B, N, J, 3)
            eps = self._run("denoiser", {"pose_k": pose.reshape(b * n, j, 3), "cond": cond_r,
                                         "k": np.full((b * n,), k, np.int64)})[0].reshape(b, n, j, 3)
            x0 = predict_x0(x, eps, mu, a_k)                                # Eq. 8
            if use_guidance:
                stpg_feed["h"] = init_r + scale * x0
                g = self._run("stpg_grad", stpg_feed)[0]
            x = ddim_next(x0, eps, mu, a_next)                              # Algorithm 1 line 5
            if use_guidance:
                step = guidance.rho * g                                     # guidance_step: trust region
                norm = np.sqrt((step * step).sum(-1, keepdims=True))
                floor = max(guidance.max_step, 1e-12)                       # max_step 0: no 0/0
                x = x - step * (guidance.max_step / np.maximum(norm, floor)) / scale
        pose = init_r + scale * x
        return self._out(np.ascontiguousarray(pose - pose[:, :, self._root:self._root + 1])).to(x_k.dtype)

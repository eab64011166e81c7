"""The C++ runner backend (registered as ``cpp``): the whole autoregressive loop in C++ on ORT.

:class:`CppBackend` wraps ``engine._ortrunner`` (csrc/, built by ``pip install -e .``). Its
``lift`` replaces :meth:`engine.core.pipeline.Lifter.lift` entirely: context windows, condition
graph, GMM noise, DDIM steps with x0-mode STPG, aggregation and history all run in C++ with the
GIL released, so several Python threads can lift at once. Given ``noise`` it reproduces the torch
pipeline (tests/test_cpp.py); without it the noise comes from the portable stream of
:mod:`engine.core.rng` (csrc/include/starpose/rng.hpp), the same numbers torch draws for the seed.

The per-stage methods (``context``, ``condition``, ``sample``, used by
:class:`engine.core.pipeline.StreamingLifter`) run the same exported graphs through ONNX Runtime's
Python API (export.ort_backend.OrtBackend).

ONNX Runtime's shared library is taken from the installed onnxruntime wheel
(``onnxruntime/capi/libonnxruntime.so.*``) or from ``$STARPOSE_ORT_LIBRARY``.
"""
from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path
from typing import ClassVar

import torch

from engine.core.backend import BackendUnavailable
from engine.core.diffusion import ddim_timesteps
from engine.core.model import StarPose
from engine.core.pipeline import LiftResult, VideoInput

from .ort_backend import OrtBackend, OrtOptions, check_guidance_mode, checked_export

try:
    from engine import _ortrunner
    _IMPORT_ERROR: str | None = None
except ImportError as e:   # not built (no compiler at install time, STARPOSE_SKIP_CPP=1, ...)
    _ortrunner = None
    _IMPORT_ERROR = str(e)

__all__ = ["CppBackend", "Runner", "RunnerError", "available", "unavailable_reason", "find_onnxruntime_library",
           "load_onnxruntime"]

Runner = getattr(_ortrunner, "Runner", None)
RunnerError = getattr(_ortrunner, "RunnerError", RuntimeError)


def find_onnxruntime_library() -> str:
    """Path of libonnxruntime.so.* of the onnxruntime wheel, or ``$STARPOSE_ORT_LIBRARY``."""
    env = os.environ.get("STARPOSE_ORT_LIBRARY")
    if env:
        return env
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("backend 'cpp' needs the onnxruntime package (pip install onnxruntime) or "
                                 "STARPOSE_ORT_LIBRARY pointing at libonnxruntime.so")
    for loc in spec.submodule_search_locations:
        libs = sorted(glob.glob(os.path.join(loc, "capi", "libonnxruntime.so*")))
        if libs:
            return libs[-1]
    raise BackendUnavailable(f"backend 'cpp': no libonnxruntime.so* in {list(spec.submodule_search_locations)}/capi; "
                             f"set STARPOSE_ORT_LIBRARY")


def unavailable_reason() -> str | None:
    """One line saying why the C++ backend cannot run here, or None when it can."""
    if _ortrunner is None:
        return (f"backend 'cpp' is not built ({_IMPORT_ERROR}); reinstall with a C++17 compiler: "
                f"pip install -e . (see csrc/README.md)")
    try:
        load_onnxruntime()
    except (BackendUnavailable, RunnerError) as e:
        return " ".join(str(e).split())
    return None


def available() -> bool:
    return unavailable_reason() is None


def load_onnxruntime() -> str:
    """Load ONNX Runtime into the C++ runner once per process; returns its version."""
    if _ortrunner is None:
        raise BackendUnavailable(unavailable_reason())
    if _ortrunner.onnxruntime_loaded():
        return _ortrunner.load_onnxruntime("")
    return _ortrunner.load_onnxruntime(find_onnxruntime_library())


class CppBackend:
    """Whole-loop C++ runner.

    Args:
        model: the model; its export is made (or found) in the cache unless ``export_dir`` is given.
        device: ``"cpu"``, or ``"cuda"`` to try ORT's CUDA provider (``.providers`` tells).
        export_dir: a ``python -m export.onnx`` directory of this model.
        threads: ORT intra-op threads per session (1: run on the calling thread; best for many
            concurrent lifts; 2 can help a single video on an idle machine).
    """
    name: ClassVar[str] = "cpp"
    Options: ClassVar[type] = OrtOptions
    whole_loop: ClassVar[bool] = True
    batch_invariant: ClassVar[bool] = False

    def __init__(self, model: StarPose, device: str | torch.device = "cpu", export_dir: str | Path | None = None,
                 threads: int = 1):
        reason = unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(reason)
        self.model = model.eval()
        self.device = torch.device(device)
        self.export_dir, _ = checked_export(model, export_dir)
        try:
            self.runner = _ortrunner.Runner(str(self.export_dir), intra_op_threads=int(threads),
                                            use_cuda=self.device.type == "cuda")
        except RunnerError as e:
            raise BackendUnavailable(f"backend 'cpp' cannot load {self.export_dir}: {e}") from None
        self.threads = int(threads)
        self.providers: list[str] = list(self.runner.providers)
        self._stages = None

    def check_config(self, cfg) -> None:
        """Raise ValueError for settings this backend cannot run."""
        check_guidance_mode(cfg.guidance, self.name)

    def settings(self, cfg=None) -> dict:
        """The runner settings for a config (the model's when None)."""
        cfg = cfg or self.model.cfg
        check_guidance_mode(cfg.guidance, self.name)
        g = cfg.guidance
        return {"hypotheses": cfg.diffusion.hypotheses,
                "ddim_pairs": ddim_timesteps(self.model.cfg.diffusion.train_steps, cfg.diffusion.sample_steps),
                "aggregation": cfg.diffusion.aggregation, "noise": cfg.diffusion.noise,
                "person_view": False,   # engine.core.pipeline.Lifter has turned the videos already
                "guidance": {"enabled": g.enabled, "weights": list(g.weights()), "rho": g.rho,
                             "max_step": g.max_step}}

    def lift(self, videos: list[VideoInput], seed: int = 0, progress=None, noise=None, cfg=None) -> list[LiftResult]:
        """engine.core.pipeline.Lifter.lift in C++ (same arguments, same results given ``noise``).

        Called by :class:`engine.core.pipeline.Lifter` with videos already turned to the person view
        (``input_view 'person'``), so the runner is told not to turn them again; a C++
        application calling the runner directly gets the turn from runner.json's default.
        """
        if not videos:
            return []
        settings = self.settings(cfg)
        vids = [(v.kp2d.detach().cpu().numpy(), v.conf.detach().cpu().numpy(), v.intr.detach().cpu().numpy())
                for v in videos]
        nz = None if noise is None else [torch.as_tensor(x).detach().cpu().float().numpy() for x in noise]
        out = self.runner.lift(vids, seed=int(seed), noise=nz, settings=settings, progress=progress)
        return [LiftResult(p, s, i) for p, s, i in out]

    # -- per-stage API (StreamingLifter): the same graphs through ORT's Python API ----------------
    def _stage_backend(self):
        if self._stages is None:
            self._stages = OrtBackend(self.model, self.device, export_dir=self.export_dir, threads=self.threads)
        return self._stages

    def context(self, kp_windows):
        return self._stage_backend().context(kp_windows)

    def condition(self, f2d, kp2d, hist2d, hist3d, mask):
        return self._stage_backend().condition(f2d, kp2d, hist2d, hist3d, mask)

    def sample(self, cond, init3d, x_k, steps, guidance, gin):
        return self._stage_backend().sample(cond, init3d, x_k, steps, guidance, gin)

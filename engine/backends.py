"""Backend registry: how the CLI and the API turn ``--backend NAME`` into an executor.

A backend provides the three per-frame stages used by :class:`engine.pipeline.Lifter`
(``context``, ``condition``, ``sample``), or a whole-loop ``lift`` (the C++ runner). Optional
backends live in their own packages and are imported only when asked for, so a missing optional
dependency (Triton, ONNX Runtime, the compiled runner) gives one clear error for that backend
and never breaks the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:                       # torch is imported only when a backend is made (fast --help)
    from .model import StarPose

# name -> "module:factory"; factory(model, device) -> backend
BACKENDS: dict[str, str] = {
    "torch": "engine.pipeline:TorchBackend",
    "triton": "kernels.backend:TritonBackend",
    "onnx": "export.ort_backend:OrtBackend",
    "cpp": "engine.cpp_backend:CppBackend",
}


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def make_backend(name: str, model: "StarPose", device: str = "cpu"):
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose from {available_backends()}")
    if name == "torch":
        from .pipeline import TorchBackend
        return TorchBackend(model)
    mod_name, factory = BACKENDS[name].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} is not available: {e}") from None
    return getattr(mod, factory)(model, device)

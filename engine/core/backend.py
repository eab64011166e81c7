"""Execution backends: the protocol every backend implements and the registry that makes them.

A backend runs the model's three per-frame stages for :class:`engine.core.pipeline.Lifter`:

- ``context(kp_windows)``: the context encoder over windows of F frames;
- ``condition(f2d, kp2d, hist2d, hist3d, mask)``: HPIM's condition for one frame;
- ``sample(cond, init3d, x_k, steps, guidance, gin)``: the S DDIM steps with STPG (Algorithm 1).

A *whole-loop* backend (``whole_loop = True``, the C++ runner) also has ``lift``, which replaces
the Lifter's frame loop; its stages still serve :class:`engine.core.pipeline.StreamingLifter`.
``batch_invariant`` says whether a video's result is the same bits whatever batch it runs in
(engine.corpus batches clips only on such backends). ``check_config`` refuses settings the
backend cannot run before any frame is lifted.

Registry. ``torch`` (the eager reference, :mod:`engine.core.torch_backend`) is built in. Every
other backend is a class declared in the Python entry-point group ``starpose.backends`` of an
installed distribution: this project's pyproject.toml declares ``triton``
(kernels.backend:TritonBackend), ``onnx`` (export.ort_backend:OrtBackend) and ``cpp``
(export.cpp_backend:CppBackend). The core therefore imports none of them, a missing optional
dependency breaks only its own backend (:class:`BackendUnavailable` with the reason), and a
backend from another package (say TensorRT) plugs in by declaring its own entry point.

Options. Each backend class names a frozen dataclass ``Options`` whose fields are its
constructor's keyword arguments (every one has ``device``). :func:`make_backend` checks names,
types and values against it (:func:`backend_options`, strings from the command line's
``--backend-option KEY=VALUE`` are converted by the field's type) and calls
``cls(model, **options)``.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .errors import InputError

if TYPE_CHECKING:                        # torch is imported only when a backend is made (fast --help)
    import torch

    from .config import GuidanceConfig, StarPoseConfig
    from .guidance import GuidanceInputs
    from .model import StarPose
    from .pipeline import LiftResult, VideoInput

ENTRY_POINT_GROUP = "starpose.backends"
BUILTIN = "torch"
STAGES = ("context", "condition", "sample", "check_config")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why in one line."""


class Backend(Protocol):
    """What :class:`engine.core.pipeline.Lifter` calls. Tensors live on ``device``; poses are
    metres, root-relative, in the camera the networks lift in."""

    name: ClassVar[str]
    Options: ClassVar[type]           # frozen dataclass of the constructor's keyword options
    whole_loop: ClassVar[bool]        # True: ``lift`` replaces the Lifter's frame loop
    batch_invariant: ClassVar[bool]   # True: a video's result does not depend on its batch
    device: torch.device
    providers: list[str]              # what executes the graphs (e.g. ORT execution providers)

    def check_config(self, cfg: StarPoseConfig) -> None:
        """Raise ValueError for inference settings this backend cannot run."""

    def context(self, kp_windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, F, J, 2) -> f_2D (W, F, J, C), init3d (W, F, J, 3)."""

    def condition(self, f2d: torch.Tensor, kp2d: torch.Tensor, hist2d: torch.Tensor, hist3d: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """f2d (B, J, C), kp2d (B, J, 2), hist2d (B, L, J, 2), hist3d (B, L, J, 3), mask (B, L) -> (B, J, D)."""

    def sample(self, cond: torch.Tensor, init3d: torch.Tensor, x_k: torch.Tensor, steps: int,
               guidance: GuidanceConfig, gin: GuidanceInputs | None) -> torch.Tensor:
        """cond (B, J, D), init3d (B, J, 3), x_k (B, N, J, 3) -> hypotheses (B, N, J, 3)."""


class WholeLoopBackend(Backend, Protocol):
    """A backend whose ``lift`` runs the whole autoregressive loop (``whole_loop = True``)."""

    def lift(self, videos: list[VideoInput], seed: int = 0, progress: Callable[[int], None] | None = None,
             noise: list | None = None, cfg: StarPoseConfig | None = None) -> list[LiftResult]:
        """:meth:`engine.core.pipeline.Lifter.lift` with the same arguments and results."""


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name != BUILTIN}


def available_backends() -> list[str]:
    """Names of the registered backends (whether their dependencies are installed or not)."""
    return sorted({BUILTIN, *_entry_points()})


def backend_class(name: str) -> type:
    """The class registered as ``name``; InputError for an unknown name, BackendUnavailable when
    its module cannot be imported here."""
    if name == BUILTIN:
        from .torch_backend import TorchBackend
        return TorchBackend
    eps = _entry_points()
    if name not in eps:
        hint = "" if eps else (f" (the optional backends register through the '{ENTRY_POINT_GROUP}' entry points "
                               "of the installed package: pip install -e .)")
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(available_backends())}{hint}")
    try:
        cls = eps[name].load()
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} is not available: {e}") from None
    missing = [m for m in STAGES if not callable(getattr(cls, m, None))]
    if getattr(cls, "whole_loop", False) and not callable(getattr(cls, "lift", None)):
        missing.append("lift (whole_loop is True)")
    missing += [a for a in ("name", "Options", "whole_loop", "batch_invariant") if not hasattr(cls, a)]
    if missing or not dataclasses.is_dataclass(cls.Options):
        raise BackendUnavailable(f"backend {name!r} ({eps[name].value}) does not implement the Backend protocol: "
                                 f"missing {', '.join(missing) or 'a dataclass Options'}")
    return cls


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(backend: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type; strings (command line) are parsed."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    kind = args[0] if args else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("", "none")):
        if optional:
            return None
        raise InputError(f"backend {backend!r} option {key}: a value is required")
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
            if isinstance(value, bool):
                return value
        elif kind is int and not isinstance(value, bool):
            if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit()):
                return int(value)
        elif kind is float and not isinstance(value, bool):
            return float(value)
        elif kind is str:
            if isinstance(value, str):
                return value
        else:                                   # e.g. Path
            return kind(value)
    except (TypeError, ValueError):
        pass
    name = getattr(kind, "__name__", str(kind))
    raise InputError(f"backend {backend!r} option {key}: expected {name}, got {value!r}")


def backend_options(name: str, device: str = "cpu", options: Mapping[str, Any] | None = None):
    """The backend's ``Options`` dataclass for these values, checked (one-line InputError)."""
    return _options(name, backend_class(name), device, options)


def _options(name: str, cls: type, device: str, options: Mapping[str, Any] | None):
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    hints = typing.get_type_hints(cls.Options)
    values = dict(options or {})
    if "device" in values:
        raise InputError(f"backend {name!r}: the device is not a backend option; set it with --device (device= "
                         "in the API)")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"backend {name!r} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(fields))}")
    values["device"] = device
    try:
        return cls.Options(**{k: _convert(name, k, v, hints[k]) for k, v in values.items()})
    except ValueError as e:                     # the dataclass's own range checks
        raise InputError(f"backend {name!r}: {e}") from None


def make_backend(name: str, model: StarPose, device: str = "cpu", **options) -> Backend:
    """Build backend ``name`` for ``model`` with ``options`` (see the class's ``Options``).

    Raises InputError for an unknown backend or bad options, BackendUnavailable when the
    backend cannot run here (missing package, no GPU, ...), with a one-line reason.
    """
    cls = backend_class(name)
    opts = _options(name, cls, device, options)
    return cls(model, **{f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)})

"""Argument checks shared by the Python API and the CLI: one rule and one message per argument.

Each function takes a value and the argument's name and returns the value in its canonical type,
or raises :class:`engine.core.errors.InputError` (a ``ValueError``) with one line that names the argument,
the allowed values and what was given. Booleans are not integers here, strings are not numbers,
and numpy scalars count as the Python numbers they hold.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..core.errors import InputError
from ..core.rng import MAX_SEED

DEVICE_TYPES = ("cpu", "cuda")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a bool, not a float that happens to be whole) within [lo, hi]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {_shown(value)}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise InputError(f"{name} must be in {span}, got {value}")
    return value


def seed(value, name: str = "seed") -> int:
    """A noise seed: an integer in [0, 2^63 - 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer in [0, 2^63 - 1], got {_shown(value)}")
    if not 0 <= int(value) <= MAX_SEED:
        raise InputError(f"{name} must be in [0, 2^63 - 1], got {int(value)}")
    return int(value)


def real(value, name: str, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number (int or float, not bool, str or complex) within [lo, hi]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {_shown(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None else (f">= {lo:g}" if lo is not None
                                                                               else f"<= {hi:g}")
        raise InputError(f"{name} must be {span if span[0] != '[' else 'in ' + span}, got {value:g}")
    return value


def flag(value, name: str) -> bool:
    """A bool (numpy bools too); 'yes', 1 or None are refused rather than guessed."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {_shown(value)}")
    return bool(value)


def choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {_shown(value)}")
    return value


def callback(value, name: str):
    """None or a callable."""
    if value is not None and not callable(value):
        raise InputError(f"{name} must be a function (or None), got {_shown(value)}")
    return value


def device(value):
    """A torch device that this process can use: 'cpu', or 'cuda[:N]' with CUDA present."""
    import torch
    if isinstance(value, torch.device):
        dev = value
    elif isinstance(value, str):
        try:
            dev = torch.device(value)
        except RuntimeError:
            raise InputError(f"device {value!r} is not a valid torch device; use 'cpu' or 'cuda'") from None
    else:
        raise InputError(f"device must be a string such as 'cpu' or 'cuda', got {_shown(value)}")
    if dev.type not in DEVICE_TYPES:
        raise InputError(f"device {str(dev)!r}: only {' and '.join(DEVICE_TYPES)} devices are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(dev)!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def numbers_array(value, name: str) -> np.ndarray:
    """Array-like of real numbers (lists, numpy arrays, torch tensors, also ones that require
    grad) -> a numpy array; ragged lists, strings and objects are refused."""
    import torch
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise InputError(f"{name} must hold real numbers, got a complex tensor")
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be an array of numbers, got a string")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise InputError(f"{name} must be a rectangular array of numbers (the rows have different lengths)") from None
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (ValueError, TypeError):
            raise InputError(f"{name} must be a rectangular array of numbers") from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


SAMPLER_FLAGS = ("hypotheses", "steps", "aggregation", "guidance_mode", "rho")   # None: the checkpoint's


def image_size(value, name: str = "image size") -> tuple[int, int]:
    """(W, H) pixels, two positive integers."""
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be two integers W H, got {_shown(value)}") from None
    if w <= 0 or h <= 0:
        raise InputError(f"{name} must be positive, got {w} {h}")
    return w, h


def sampler_overrides(overrides: dict) -> None:
    """The sampler settings of :class:`engine.front.api.StarPoseLifter` (None: the checkpoint's):
    ``hypotheses``, ``steps`` (the model's own bound K is checked once it is loaded), ``rho``,
    ``guidance``, ``seed``; ``aggregation`` and ``guidance_mode`` are checked by the config."""
    from ..core.config import MAX_SIZE
    for name, hi in (("hypotheses", MAX_SIZE["hypotheses"]), ("steps", MAX_SIZE["sample_steps"])):
        if overrides.get(name) is not None:
            integer(overrides[name], name, 1, hi)
    if overrides.get("rho") is not None:
        real(overrides["rho"], "rho", 0.0)
    if overrides.get("guidance") is not None:
        flag(overrides["guidance"], "guidance")
    seed(overrides.get("seed", 0))


def lift_flags(opts) -> None:
    """Check the lifting settings shared by ``engine.run`` and ``engine.corpus`` before any model is
    loaded, read as attributes of ``opts`` (an argparse namespace or a settings dataclass), with
    the validators (and messages) the library applies to the same values: sampler settings
    against ``encoder_only``, sizes, seed, threads, rho, image size, confidence threshold, fps."""
    from .api import FPS_RANGE
    if opts.encoder_only:
        given = [f"--{n.replace('_', '-')}" for n in SAMPLER_FLAGS if getattr(opts, n) is not None]
        given += ["--no-guidance"] if opts.no_guidance else []
        if given:
            raise InputError(f"--encoder-only skips the diffusion sampler, so {', '.join(given)} cannot be "
                             "combined with it")
    sampler_overrides({"hypotheses": opts.hypotheses, "steps": opts.steps, "rho": opts.rho, "seed": opts.seed})
    integer(opts.threads, "threads", 1, 256)
    if opts.image_size is not None:
        image_size(opts.image_size)
    if opts.conf_threshold is not None:
        real(opts.conf_threshold, "conf_threshold", 0.0, 1.0)
    if opts.fps is not None:
        real(opts.fps, "fps", *FPS_RANGE)


def key_values(items, name: str = "--backend-option") -> tuple[tuple[str, str], ...]:
    """``["threads=2", "dtype=float16"]`` -> ``(("threads", "2"), ("dtype", "float16"))``; a key given
    twice is refused."""
    pairs: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"{name} takes KEY=VALUE, got {_shown(item)}")
        if key in pairs:
            raise InputError(f"{name} {key} is given twice")
        pairs[key] = value.strip()
    return tuple(pairs.items())

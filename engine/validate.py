"""Argument checks shared by the Python API and the CLI: one rule and one message per argument.

Each function takes a value and the argument's name and returns the value in its canonical type,
or raises :class:`engine.io.InputError` (a ``ValueError``) with one line that names the argument,
the allowed values and what was given. Booleans are not integers here, strings are not numbers,
and numpy scalars count as the Python numbers they hold.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .io import InputError
from .rng import MAX_SEED

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


def lift_flags(opts) -> None:
    """The lifting flags shared by ``engine.run`` and ``engine.corpus``, read as attributes of
    ``opts`` (an argparse namespace or a settings dataclass): sampler flags against
    ``--encoder-only``, sizes, seed, threads, rho, image size, confidence threshold and fps."""
    from .api import FPS_RANGE
    from .config import MAX_SIZE
    if opts.encoder_only:
        given = [f"--{n.replace('_', '-')}" for n in SAMPLER_FLAGS if getattr(opts, n) is not None]
        given += ["--no-guidance"] if opts.no_guidance else []
        if given:
            raise InputError(f"--encoder-only skips the diffusion sampler, so {', '.join(given)} cannot be "
                             "combined with it")
    for name, hi in (("hypotheses", MAX_SIZE["hypotheses"]), ("steps", MAX_SIZE["sample_steps"])):
        v = getattr(opts, name)
        if v is not None and not 1 <= v <= hi:
            raise InputError(f"--{name} must be in [1, {hi}], got {v}")
    if not 0 <= opts.seed <= MAX_SEED:
        raise InputError(f"--seed must be in [0, 2^63 - 1], got {opts.seed}")
    if not 1 <= opts.threads <= 256:
        raise InputError(f"--threads must be in [1, 256], got {opts.threads}")
    if opts.rho is not None and not (opts.rho >= 0 and math.isfinite(opts.rho)):
        raise InputError(f"--rho must be a finite number >= 0, got {opts.rho}")
    if opts.image_size is not None and min(opts.image_size) <= 0:
        raise InputError(f"--image-size must be positive, got {opts.image_size[0]} {opts.image_size[1]}")
    if opts.conf_threshold is not None and not 0.0 <= opts.conf_threshold <= 1.0:
        raise InputError(f"--conf-threshold must be in [0, 1], got {opts.conf_threshold:g}")
    if opts.fps is not None and not FPS_RANGE[0] <= opts.fps <= FPS_RANGE[1]:
        raise InputError(f"--fps must be in [{FPS_RANGE[0]:g}, {FPS_RANGE[1]:g}], got {opts.fps:g}")

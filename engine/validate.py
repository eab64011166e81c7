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
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == np.bool_) or arr.dtype == np.bool_:
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr

"""Launch settings and input validation shared by the kernels in this package.

Every launcher validates before it launches and raises ValueError with the offending values
(never ``assert``: ``python -O`` strips those). Two rules are checked here on the host even
though the Triton interpreter would not enforce them, so that CPU CI catches what would only
break on a GPU:

- ``tl.arange`` sizes must be powers of two (the 17 joints are padded and masked);
- ``tl.dot`` needs every dimension (M, N, K) >= 16 on the NVIDIA backend.

``INTERPRET`` is read once, at import: Triton decides between compiled and interpreted kernels
when ``@triton.jit`` runs (module import), so a later change of ``TRITON_INTERPRET`` has no effect.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MIN_DOT_DIM = 16   # NVIDIA tl.dot: M, N, K >= 16 (K >= 32 for 8-bit types, unused here)
# fp32 tl.dot: three TF32 tensor-core products (~fp32 accuracy). "ieee" would run on the FMA
# units and, for 64 x 128 tiles, makes ptxas take minutes; "tf32" alone loses ~3 digits.
FP32_DOT_PRECISION = "tf32x3"


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_pow2(**blocks: int) -> None:
    """Every ``name=value`` must be a power of two (``tl.arange`` sizes)."""
    bad = {k: v for k, v in blocks.items() if not is_pow2(int(v))}
    if bad:
        raise ValueError(f"block sizes must be powers of two, got {bad}")


def check_dot_dims(what: str, **dims: int) -> None:
    """Every ``tl.dot`` dimension must be >= 16 (NVIDIA rule, checked host-side)."""
    bad = {k: v for k, v in dims.items() if int(v) < MIN_DOT_DIM}
    if bad:
        raise ValueError(f"{what}: tl.dot needs every dimension >= {MIN_DOT_DIM} on a GPU, got {bad}")


def check_device(*named: tuple[str, torch.Tensor]) -> torch.device:
    """All tensors on one device, and a device the kernels can run on here."""
    devices = {name: t.device for name, t in named}
    first = named[0][1].device
    if any(d != first for d in devices.values()):
        raise ValueError(f"tensors are on different devices: {devices}")
    if INTERPRET:
        if first.type != "cpu":
            raise ValueError(f"TRITON_INTERPRET=1 runs kernels on CPU tensors, got device {first}")
    elif first.type != "cuda":
        raise ValueError(f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU), got device {first}")
    return first


def check_tensor(name: str, t: torch.Tensor, shape: Iterable[int | None] | None = None,
                 dtypes: Iterable[torch.dtype] = (torch.float32,), contiguous: bool = False) -> None:
    """dtype, shape (None = any size in that dim) and contiguity of one launcher argument."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    dtypes = tuple(dtypes)
    if t.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {t.dtype}, expected one of {dtypes}")
    if shape is not None:
        shape = tuple(shape)
        if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = tuple("*" if s is None else s for s in shape)
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {want}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got strides {t.stride()} for shape {tuple(t.shape)}")


def pose_tile(joints: int, rows_per_program: int) -> int:
    """BLOCK_M for ``rows_per_program`` whole poses packed joint-row by joint-row.

    A program keeps ``rows_per_program`` poses of ``joints`` joints in one (BLOCK_M, D) tile:
    J = 17 gives BLOCK_M 32 / 64 / 128 for 1 / 3 / 7 poses (53 / 80 / 93 % of the rows used).
    """
    if rows_per_program < 1:
        raise ValueError(f"rows_per_program must be >= 1, got {rows_per_program}")
    return max(MIN_DOT_DIM, next_pow2(joints * rows_per_program))


def num_warps_for(block_m: int, block_d: int) -> int:
    """4 warps up to 4K fp32 elements per activation tile, 8 above (untuned; see README)."""
    return 4 if block_m * block_d <= 4096 else 8

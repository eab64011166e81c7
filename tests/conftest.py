"""pytest configuration for tests/.

Without CUDA the Triton kernels can only run in the interpreter, and Triton reads
TRITON_INTERPRET when ``@triton.jit`` runs (at import of ``kernels``), so it is set here, before
any test module is collected.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one")

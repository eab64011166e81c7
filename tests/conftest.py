"""pytest configuration for tests/.

Without CUDA the Triton kernels can only run in the interpreter, and Triton reads
TRITON_INTERPRET when ``@triton.jit`` runs (at import of ``kernels``), so it is set here, before
any test module is collected.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one")


@pytest.fixture(scope="session", autouse=True)
def _single_thread():
    """One torch thread for the whole run: the tiny test models are launch-bound, and on the
    2-core CI machine (often shared) extra threads only add contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

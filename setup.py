"""Build shim for the one compiled piece: the optional C++ runner ``engine._ortrunner`` (csrc/).

All metadata lives in pyproject.toml; this file only declares the pybind11 extension, because
the project is a flat multi-package layout that setuptools builds in place for ``pip install -e .``.
The extension is optional: without a C++17 compiler the install still succeeds (setuptools
prints a warning), ``import engine`` and the other backends work, and ``--backend cpp`` says why
it is unavailable.

Build knobs (environment variables):
- ``STARPOSE_SKIP_CPP=1``: do not build the runner at all (pure-Python install).
- ``STARPOSE_CPP_DEBUG=1``: -O0 -g instead of -O3.
- ``ONNX_RUNTIME_INCLUDE_DIR``: ONNX Runtime C/C++ API headers (default: the vendored
  third_party/onnxruntime/include, ORT 1.21 headers, API version 21). ONNX Runtime itself is
  not linked: the runner dlopens the onnxruntime wheel's libonnxruntime.so.* at run time.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent



def _runner_extension():
    """The pybind11 extension, or None (with the reason on stderr) when it cannot be built."""
    if os.environ.get("STARPOSE_SKIP_CPP", "0") == "1":
        return None
    try:
        from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
    except ImportError:   # pybind11 is in [build-system] requires; only a bare `python setup.py` lacks it
        print("setup.py: pybind11 not found; skipping the C++ runner (engine._ortrunner)", file=sys.stderr)
        return None
    ort_include = os.environ.get("ONNX_RUNTIME_INCLUDE_DIR", "third_party/onnxruntime/include")
    if not (ROOT / ort_include / "onnxruntime_cxx_api.h").is_file():
        print(f"setup.py: no ONNX Runtime headers in {ort_include} (set ONNX_RUNTIME_INCLUDE_DIR); "
              "skipping the C++ runner (engine._ortrunner)", file=sys.stderr)
        return None
    ParallelCompile("NPY_NUM_BUILD_JOBS", default=2).install()
    debug = os.environ.get("STARPOSE_CPP_DEBUG", "0") == "1"
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "src").glob("*.cpp"))
    ext = Pybind11Extension(
        "engine._ortrunner",
        sources=sources + ["csrc/python/ortrunner_module.cpp"],
        include_dirs=["csrc/include", "csrc/src", ort_include],
        define_macros=[("ORT_API_MANUAL_INIT", "1")],
        libraries=["dl"],
        cxx_std=17,
        extra_compile_args=["-O0", "-g"] if debug else ["-O3"],
        optional=True,   # a failed compile leaves a working pure-Python install
    )
    return ext, build_ext


_built = _runner_extension()
setup(ext_modules=[_built[0]] if _built else [], cmdclass={"build_ext": _built[1]} if _built else {})

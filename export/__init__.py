"""Deployment artifacts of a StarPose model (GitHub issue 5).

- :mod:`export.onnx`: the four ONNX graphs (context, condition, denoiser, stpg_grad) plus
  ``runner.json``, everything the C++ runner (csrc/) needs to lift videos without Python.
- :mod:`export.ort_backend`: an ONNX Runtime backend for :class:`engine.pipeline.Lifter`.
- :mod:`export.golden`: the cross-backend golden file used by tests/test_onnx.py and
  tests/test_cpp.py.

Importing this package imports nothing heavy; the submodules need ``onnx`` (export) and
``onnxruntime`` (backend).
"""

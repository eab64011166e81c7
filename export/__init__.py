"""Deployment artifacts of a StarPose model.

- :mod:`export.onnx`: writing the four ONNX graphs (context, condition, denoiser, stpg_grad) plus
  ``runner.json``, everything the C++ runner (csrc/) needs to lift videos without Python; the
  graph modules in :mod:`export.graphs`, ``runner.json`` and metadata in :mod:`export.spec`, the
  export cache in :mod:`export.cache`, the ORT-vs-eager check in :mod:`export.verify`.
- :mod:`export.ort_backend`: an ONNX Runtime backend for :class:`engine.core.pipeline.Lifter`.
- :mod:`export.golden`: the cross-backend golden file used by tests/test_onnx.py and
  tests/test_cpp.py.

Importing this package imports nothing heavy; the submodules need ``onnx`` (export) and
``onnxruntime`` (backend).
"""

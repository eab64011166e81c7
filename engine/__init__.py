"""StarPose Engine: lift 2D keypoint sequences to 3D human poses.

- :mod:`engine.core`: the paper's model and its execution (context encoder, HPIM, denoiser, GMM,
  diffusion, STPG guidance, sampler, the autoregressive pipeline, checkpoints, the Backend
  protocol and registry, the eager torch backend). It imports nothing from :mod:`engine.front`,
  kernels/, export/ or train/.
- :mod:`engine.front`: the user front end (input readers and formats, writers, BVH, the Python
  API, the command lines, visualisation, the corpus job), built on the core.
- ``python -m engine.run``, ``python -m engine.corpus`` and ``python -m engine.visualize``: the
  command lines (thin entry modules over engine.front).
- ``engine._ortrunner``: the compiled C++ runner (csrc/), used by export.cpp_backend.
"""

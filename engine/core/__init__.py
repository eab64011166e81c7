"""The StarPose model core: networks, diffusion, guidance, sampler, pipeline, checkpoints, backends.

Depends on torch and numpy only; never on :mod:`engine.front`, kernels/, export/ or train/
(tests/test_layout.py checks it).
"""

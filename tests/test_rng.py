"""The portable noise stream (engine/core/rng.py and its C++ twin csrc/include/starpose/rng.hpp).

``--seed`` means the same numbers everywhere: SplitMix64 reference values, Python vs C++ draws
(equal up to the last bit of libm's log/sin/cos, so compared at 1e-6 relative), the mixture's
moments, independence from the batch, and the torch and cpp backends agreeing on the seed alone
(no noise passed) as closely as they do given the same noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.core import rng
from engine.core.pipeline import Lifter
from export import cpp_backend
from export.golden import load_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "golden_tiny.npz"


def _gmm(m: int = 3, d: int = 51, seed: int = 0):
    g = np.random.default_rng(seed)
    w = g.uniform(0.1, 1.0, m).astype(np.float32)
    return (w / w.sum()).astype(np.float32), g.normal(0, 1, (m, d)).astype(np.float32), \
        g.uniform(0.05, 2.0, (m, d)).astype(np.float32)


def test_splitmix64_reference_values():
    # SplitMix64 from state 0: the published first outputs (key = mix(mix(0) + 0) = 0)
    assert int(rng.stream_key(0, 0)) == 0
    w = rng.words(np.uint64(0), 3)
    assert [int(x) for x in w] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert int(rng.words(np.uint64(0), 2, start=1)[0]) == int(w[1])


def test_keys_differ_per_seed_and_index_and_bounds():
    keys = {int(rng.stream_key(s, i)) for s in range(20) for i in range(50)}
    assert len(keys) == 1000
    rng.stream_key(rng.MAX_SEED, 10**12)
    for bad in ((-1, 0), (rng.MAX_SEED + 1, 0), (0, -1)):
        with pytest.raises(ValueError, match="seed must be in"):
            rng.stream_key(*bad)


def test_draw_is_deterministic_and_has_the_mixture_moments():
    w, mu, var = _gmm(m=2, d=4)
    src = rng.PortableGMM(w, mu, var)
    np.testing.assert_array_equal(src.draw(5, 3, 7), src.draw(5, 3, 7))
    assert np.abs(src.draw(5, 3, 7) - src.draw(5, 4, 7)).max() > 0.1
    x = np.concatenate([src.draw(1, i, 50) for i in range(2000)]).astype(np.float64)   # (1e5, 4)
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None] * (var + mu ** 2)).sum(0)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
    np.testing.assert_allclose((x ** 2).mean(0), second, rtol=0.03)
    assert x.dtype == np.float64 and src.draw(0, 0, 1).dtype == np.float32


@pytest.mark.skipif(cpp_backend.unavailable_reason() is not None,
                    reason=f"C++ module unavailable: {cpp_backend.unavailable_reason()}")
@pytest.mark.parametrize("m,d,n", [(1, 6, 3), (3, 51, 10), (4, 7, 5)])   # odd N x D too
def test_cpp_draw_equals_python(m, d, n):
    from engine import _ortrunner
    w, mu, var = _gmm(m, d, seed=m)
    src = rng.PortableGMM(w, mu, var)
    for seed, index in ((0, 0), (1, 0), (123456789, 77), (rng.MAX_SEED, 5), (2**40 + 3, 10**9)):
        py = src.draw(seed, index, n)
        cc = _ortrunner.gmm_draw(w, mu, var, seed, index, n)
        assert cc.shape == (n, d) and cc.dtype == np.float32
        np.testing.assert_allclose(cc, py, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="gmm_draw needs"):
        _ortrunner.gmm_draw(w, mu[:, :2], var, 0, 0, n)


@pytest.fixture(scope="module")
def golden():
    return load_golden(GOLDEN)


def test_lifter_noise_is_the_portable_stream_and_batch_independent(golden):
    lifter = Lifter(golden.model)
    n = golden.model.cfg.diffusion.hypotheses
    drawn = []
    orig = lifter.noise_source.draw
    lifter.noise_source.draw = lambda s, i, k: drawn.append((s, i, k)) or orig(s, i, k)
    v = golden.videos[0]
    alone = lifter.lift([v], seed=9)[0]
    assert drawn == [(9, t, n) for t in range(v.frames)]         # one draw per frame, indexed by frame
    given = torch.stack([torch.from_numpy(orig(9, t, n)) for t in range(v.frames)])
    lifter.noise_source.draw = orig
    np.testing.assert_array_equal(lifter.lift([v], noise=[given])[0].poses, alone.poses)
    both = lifter.lift(list(reversed(golden.videos)), seed=9)
    np.testing.assert_allclose(both[-1].poses, alone.poses, atol=1e-6)   # batch: only BLAS blocking


@pytest.mark.skipif(cpp_backend.unavailable_reason() is not None,
                    reason=f"C++ runner unavailable: {cpp_backend.unavailable_reason()}")
def test_cpp_and_torch_agree_on_the_seed_alone(golden):
    from test_onnx import assert_frames_close

    from export.cache import export_cached
    backend = cpp_backend.CppBackend(golden.model, export_dir=export_cached(golden.model))
    for seed in (0, 11):
        ref = Lifter(golden.model).lift(golden.videos, seed=seed)
        out = Lifter(golden.model, backend).lift(golden.videos, seed=seed)
        for r, o in zip(ref, out):
            assert_frames_close(o.poses, r.poses, f"seed {seed}")


@pytest.mark.skipif(cpp_backend.unavailable_reason() is not None,
                    reason=f"C++ runner unavailable: {cpp_backend.unavailable_reason()}")
def test_one_root_trajectory_rule_for_every_backend(golden):
    """The focal length for root_trajectory is chosen once, after lifting, from the poses (engine.front.api):
    backends agree on it and on the trajectory as closely as on the poses."""
    from engine.core.camera import Intrinsics
    from engine.front.api import StarPoseLifter
    from export.cache import export_cached
    export_cached(golden.model)
    intr = Intrinsics.default_for(1000, 800)
    v = golden.videos[0]
    px = np.concatenate([(v.kp2d.numpy() * intr.width / 2 + [intr.cx, intr.cy]), v.conf.numpy()[..., None]], -1)
    out = {b: StarPoseLifter(model=golden.model, backend=b).lift(px, image_size=(1000, 800), seed=3)
           for b in ("torch", "cpp")}
    a, c = out["torch"], out["cpp"]
    assert a["meta"]["trajectory_intrinsics_px"] == pytest.approx(c["meta"]["trajectory_intrinsics_px"], rel=1e-3)
    assert a["meta"]["intrinsics_source"] == c["meta"]["intrinsics_source"]
    np.testing.assert_allclose(c["root_trajectory"], a["root_trajectory"], atol=0.5)      # mm (measured 5e-4)

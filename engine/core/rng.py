"""Portable diffusion noise: the one random stream that Python and the C++ runner share.

``--seed`` must mean the same numbers in every backend and in a C++ application, so the GMM
samples that start each frame's reverse process come from a counter-based generator simple
enough to write identically in both languages (csrc/include/starpose/rng.hpp is the C++ twin; keep the two in
step, tests/test_rng.py checks them against each other and against fixed values):

- words: SplitMix64 (Steele, Lea, Flood 2014). The stream of one draw starts from the key
  ``k = mix(mix(seed) + index)``, where ``index`` is the draw's number within its video (the frame
  index, or 0 for ``diffusion.noise = 'video'``) and ``mix`` is SplitMix64's finaliser; word ``i``
  is ``mix(k + (i + 1) * 0x9E3779B97F4A7C15)`` (all arithmetic modulo 2^64).
- uniforms: the top 53 bits of a word times 2^-53, in [0, 1).
- a draw of N samples of dimension D: words 0..N-1 choose the components by inverse CDF over the
  cumulative weights (summed in double, divided by their total); words N + 2p and N + 2p + 1 give
  the normals 2p and 2p + 1 by Box-Muller (u1 = 1 - uniform, r = sqrt(-2 ln u1), a = 2 pi u2,
  z = r cos a, r sin a), in row-major (n, d) order; sample = mean[c] + sqrt(var[c]) * float(z)
  in float32.

Counter-based: a frame's noise depends only on (seed, video-local draw index), never on the
batch a video shares, the worker that lifts it or how many frames came before in a stream.
What may still differ between platforms: log, sin and cos of the C library versus numpy may
differ in the last bit of a double, which changes a float32 sample in about one case in 10^8.
"""
from __future__ import annotations

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
MAX_SEED = 2**63 - 1           # seeds are non-negative int64 so every language can hold them


def mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 values (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, index: int) -> np.uint64:
    """The key of draw ``index`` of a video lifted with ``seed``."""
    if not (0 <= int(seed) <= MAX_SEED) or int(index) < 0:
        raise ValueError(f"seed must be in [0, {MAX_SEED}] and index >= 0, got {seed}, {index}")
    with np.errstate(over="ignore"):
        return mix(mix(np.uint64(seed)) + np.uint64(index))[()]


def words(key: np.uint64, count: int, start: int = 0) -> np.ndarray:
    """Words ``start .. start + count - 1`` of the SplitMix64 stream from ``key``, (count,) uint64."""
    i = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix(np.uint64(key) + i * GAMMA)


def uniforms(w: np.ndarray) -> np.ndarray:
    """Words -> doubles in [0, 1) from their top 53 bits."""
    return (w >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normals(key: np.uint64, count: int, start: int) -> np.ndarray:
    """``count`` standard normals (float64) by Box-Muller from words ``start ..``."""
    pairs = (count + 1) // 2
    u = uniforms(words(key, 2 * pairs, start)).reshape(pairs, 2)
    r = np.sqrt(-2.0 * np.log(1.0 - u[:, 0]))                 # (pairs,)
    a = 6.283185307179586 * u[:, 1]
    return np.stack([r * np.cos(a), r * np.sin(a)], 1).reshape(-1)[:count]


def component_cdf(weights: np.ndarray) -> np.ndarray:
    """Cumulative mixture weights in double, summed in order and divided by their total."""
    w = np.asarray(weights, dtype=np.float32).astype(np.float64)
    total = 0.0
    for x in w:
        total += x
    acc, cdf = 0.0, np.empty(len(w))
    for m, x in enumerate(w):
        acc += x / total
        cdf[m] = acc
    return cdf


def gmm_draw(cdf: np.ndarray, means: np.ndarray, stds: np.ndarray, seed: int, index: int,
             n: int) -> np.ndarray:
    """N samples of the diagonal GMM for draw ``index`` of a video: (n, D) float32.

    cdf (M,) from :func:`component_cdf`; means, stds (M, D) float32 (stds = sqrt(variances) in
    float32).
    """
    m, d = means.shape
    key = stream_key(seed, index)
    u = uniforms(words(key, n))                                   # (n,)
    comp = np.minimum(np.searchsorted(cdf, u, side="right"), m - 1)   # first m with u < cdf[m]
    z = normals(key, n * d, n).astype(np.float32).reshape(n, d)   # (n, D)
    return means[comp] + stds[comp] * z


class PortableGMM:
    """A diagonal GMM prepared for :func:`gmm_draw` (weights (M,), means and variances (M, D))."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, variances: np.ndarray):
        self.cdf = component_cdf(weights)                                      # (M,)
        self.means = np.ascontiguousarray(means, dtype=np.float32)             # (M, D)
        self.stds = np.sqrt(np.asarray(variances, dtype=np.float32))           # (M, D)

    def draw(self, seed: int, index: int, n: int) -> np.ndarray:
        """N samples (n, D) float32 for draw ``index`` of a video lifted with ``seed``."""
        return gmm_draw(self.cdf, self.means, self.stds, seed, index, n)

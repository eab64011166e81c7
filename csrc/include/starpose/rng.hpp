// Portable diffusion noise, the C++ twin of engine/core/rng.py (read its docstring; keep both in
// step; tests/test_rng.py checks them against each other). Header-only and public, so a C++
// application can draw the same noise as Python for a seed.
//
// One draw of a video: key = mix(mix(seed) + index) with index the video-local draw number
// (the frame, or 0 when one draw serves the whole video); word i = mix(key + (i + 1) * GAMMA);
// uniforms from the top 53 bits; words 0..N-1 choose the N components by inverse CDF, words
// N + 2p, N + 2p + 1 give normals 2p, 2p + 1 by Box-Muller; sample = mean + std * float(z).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace starpose {

constexpr uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ULL;

inline uint64_t splitmix_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline uint64_t noise_key(uint64_t seed, uint64_t index) { return splitmix_mix(splitmix_mix(seed) + index); }

inline double word_uniform(uint64_t key, uint64_t i) {
  return static_cast<double>(splitmix_mix(key + (i + 1) * kSplitMixGamma) >> 11) * (1.0 / 9007199254740992.0);
}

// N samples (n x D, row-major) of the diagonal GMM: cdf (M) cumulative weights (double), means and
// stds (M x D) float32.
inline void gmm_draw(const std::vector<double>& cdf, const float* means, const float* stds, int D,
                     uint64_t seed, uint64_t index, int n, float* out) {
  const uint64_t key = noise_key(seed, index);
  const int M = static_cast<int>(cdf.size());
  std::vector<int> comp(n);
  for (int i = 0; i < n; ++i) {
    const double u = word_uniform(key, i);
    int m = 0;
    while (m < M - 1 && u >= cdf[m]) ++m;
    comp[i] = m;
  }
  const long total = static_cast<long>(n) * D;
  for (long q = 0; q < total; q += 2) {
    const uint64_t w = static_cast<uint64_t>(n) + static_cast<uint64_t>(q);   // words of pair q / 2
    const double u1 = 1.0 - word_uniform(key, w), u2 = word_uniform(key, w + 1);
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    const double z[2] = {r * std::cos(a), r * std::sin(a)};
    for (int k = 0; k < 2 && q + k < total; ++k) {
      const long i = (q + k) / D, d = (q + k) % D;
      const size_t at = static_cast<size_t>(comp[i]) * D + d;
      out[q + k] = means[at] + stds[at] * static_cast<float>(z[k]);
    }
  }
}

}  // namespace starpose

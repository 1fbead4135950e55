// Deterministic random inputs for the MoE tests (splitmix64), in a header without fmt /
// dsv4::Error so that CUDA test sources (nvcc) can include it too; moe_fixture.h builds on it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cuda/moe/fragment.h"

namespace dsv4::moe_test {

inline uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// n splitmix bytes from `seed` (8 per draw, little-endian): packed weights / scales.
inline std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t state = seed;
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = splitmix(state);
    for (size_t b = 0; b < 8 && i + b < n; ++b) v[i + b] = static_cast<uint8_t>(r >> (8 * b));
  }
  return v;
}

// Kernel scale codes (fragment.h), one splitmix draw per byte, giving weights of magnitude
// ~2^-9 .. 6: MXFP4 k in [244, 254] (code * 2^(k - 253)); NVFP4 k in [112, 151]
// (code * 2^(k / 8 - 17)).
inline std::vector<uint8_t> random_scales(cuda::moe::ExpertFormat f, size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t state = seed;
  for (auto& b : v) {
    const uint64_t r = splitmix(state);
    b = static_cast<uint8_t>(f == cuda::moe::ExpertFormat::kMXFP4 ? 244 + r % 11 : 112 + r % 40);
  }
  return v;
}

}  // namespace dsv4::moe_test

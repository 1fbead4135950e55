#include "cpu/rope.h"

#include <cmath>

namespace dsv4::cpu {

RopeTable::RopeTable(const RopeConfig& config)
    : rope_dim_(config.rope_dim), inv_freq_(rope_inv_freq(config)) {}

void RopeTable::apply(float* vectors, int64_t count, int64_t width, int64_t position, bool inverse) const {
  const int64_t pairs = rope_dim_ / 2;
  const int64_t offset = width - rope_dim_;
  // transformers: freqs = inv_freq (fp32) * float(position), then cos/sin in fp32.
  float cos_table[256], sin_table[256];
  for (int64_t i = 0; i < pairs; ++i) {
    const float angle = inv_freq_[i] * static_cast<float>(position);
    cos_table[i] = std::cos(angle);
    sin_table[i] = inverse ? -std::sin(angle) : std::sin(angle);
  }
  for (int64_t v = 0; v < count; ++v) {
    float* rope = vectors + v * width + offset;
    for (int64_t i = 0; i < pairs; ++i) {
      const float even = rope[2 * i], odd = rope[2 * i + 1];
      rope[2 * i] = even * cos_table[i] - odd * sin_table[i];
      rope[2 * i + 1] = odd * cos_table[i] + even * sin_table[i];
    }
  }
}

}  // namespace dsv4::cpu

// Interleaved partial RoPE as transformers' DeepSeek-V4: pairs (2i, 2i+1) of the
// trailing rope_dim channels of each vector rotate by angle pos * inv_freq[i].
#pragma once
#include <cstdint>
#include <vector>

#include "dsv4/config.h"

namespace dsv4::cpu {

class RopeTable {
 public:
  RopeTable() = default;
  explicit RopeTable(const RopeConfig& config);

  int64_t rope_dim() const { return rope_dim_; }
  // Rotates the last rope_dim channels of each of `count` vectors of width `width`
  // (stride `width`) at position `position`. inverse: rotate by -angle (the output
  // de-rotation of V4 attention).
  void apply(float* vectors, int64_t count, int64_t width, int64_t position, bool inverse = false) const;

 private:
  int64_t rope_dim_ = 0;
  std::vector<float> inv_freq_;  // [rope_dim/2]
};

}  // namespace dsv4::cpu

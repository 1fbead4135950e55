// Block quantizers (the reference recipes; see include/dsv4/formats.h).
#include <algorithm>
#include <cmath>

#include "dsv4/formats.h"

namespace dsv4 {

namespace {
float block_amax(const float* values, int64_t count) {
  float amax = 0;
  for (int64_t i = 0; i < count; ++i) amax = std::max(amax, std::fabs(values[i]));
  return amax;
}

void pack_pair(uint8_t* packed, int64_t column, uint8_t code) {
  uint8_t& byte = packed[column / 2];
  byte = (column % 2 == 0) ? static_cast<uint8_t>((byte & 0xf0) | code) : static_cast<uint8_t>((byte & 0x0f) | (code << 4));
}
}  // namespace

void quantize_mxfp4_row(const float* row, int64_t cols, uint8_t* packed, uint8_t* scales) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float* block = row + b * 32;
    const float amax = block_amax(block, 32);
    int exponent = -127;
    if (amax > 0) exponent = std::clamp(static_cast<int>(std::floor(std::log2(amax))) - 2, -127, 127);
    scales[b] = static_cast<uint8_t>(exponent + 127);
    for (int64_t i = 0; i < 32; ++i) pack_pair(packed, b * 32 + i, float_to_e2m1(std::ldexp(block[i], -exponent)));
  }
}

float nvfp4_tensor_scale(const float* values, int64_t count) {
  const float amax = block_amax(values, count);
  return amax > 0 ? amax / (6.0f * 448.0f) : 1.0f;
}

void quantize_nvfp4_row(const float* row, int64_t cols, float tensor_scale, uint8_t* packed, uint8_t* scales) {
  for (int64_t b = 0; b < cols / 16; ++b) {
    const float* block = row + b * 16;
    const uint8_t scale_code = float_to_e4m3(block_amax(block, 16) / 6.0f / tensor_scale);
    scales[b] = scale_code;
    const float scale = e4m3_to_float(scale_code) * tensor_scale;
    for (int64_t i = 0; i < 16; ++i)
      pack_pair(packed, b * 16 + i, scale > 0 ? float_to_e2m1(block[i] / scale) : uint8_t{0});
  }
}

}  // namespace dsv4

// Block quantizers: MXFP4 (OCP), NVFP4 (ModelOpt), FP8 128x128 weights and 1x128
// activations (DeepSeek's power-of-two scale rule). Recipes and layouts: formats.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "dsv4/error.h"
#include "dsv4/formats.h"

namespace dsv4 {

namespace {

float block_amax(const float* values, int64_t count) {
  float amax = 0;
  for (int64_t i = 0; i < count; ++i) amax = std::max(amax, std::fabs(values[i]));
  return amax;
}

// Codes of `count` (even) values, each multiplied by `inverse_scale`, into packed bytes.
void pack_scaled(const float* values, int64_t count, float inverse_scale, uint8_t* packed) {
  for (int64_t i = 0; i < count; i += 2)
    packed[i / 2] = pack_e2m1_pair(float_to_e2m1(values[i] * inverse_scale), float_to_e2m1(values[i + 1] * inverse_scale));
}

}  // namespace

int mxfp4_shared_exponent(float amax) {
  if (!(amax > 0.0f)) return -127;  // zero block (and NaN: rejected upstream)
  if (std::isinf(amax)) return 127;
  // ilogb is floor(log2(|x|)) exactly, subnormals included (std::log2 may round up
  // just below a power of two).
  return std::clamp(std::ilogb(amax) - 2, -127, 127);
}

void quantize_mxfp4_row(const float* row, int64_t cols, uint8_t* packed, uint8_t* scales) {
  DSV4_CHECK(cols % kMXFP4BlockSize == 0, "MXFP4 needs a row width divisible by {} (one E8M0 scale per 32 inputs), got {}",
             kMXFP4BlockSize, cols);
  for (int64_t b = 0; b < cols / kMXFP4BlockSize; ++b) {
    const float* block = row + b * kMXFP4BlockSize;
    const int exponent = mxfp4_shared_exponent(block_amax(block, kMXFP4BlockSize));
    scales[b] = e8m0_from_exponent(exponent);
    // 2^-exponent is an exact FP32 value for exponent in [-127, 127] (2^127 is normal,
    // 2^-127 subnormal); multiplying by it equals the reference's division.
    pack_scaled(block, kMXFP4BlockSize, std::ldexp(1.0f, -exponent), packed + b * kMXFP4BlockSize / 2);
  }
}

float nvfp4_tensor_scale(const float* values, int64_t count) {
  const float amax = block_amax(values, count);
  return amax > 0 ? amax / (6.0f * 448.0f) : 1.0f;
}

uint8_t nvfp4_block_scale(float block_amax, float tensor_scale) {
  if (block_amax == 0.0f) return float_to_e4m3(1.0f);  // ModelOpt: zero scales become 1.0
  return float_to_e4m3(block_amax / (6.0f * tensor_scale));
}

void quantize_nvfp4_row(const float* row, int64_t cols, float tensor_scale, uint8_t* packed, uint8_t* scales) {
  DSV4_CHECK(cols % kNVFP4BlockSize == 0, "NVFP4 needs a row width divisible by {} (one E4M3 scale per 16 inputs), got {}",
             kNVFP4BlockSize, cols);
  for (int64_t b = 0; b < cols / kNVFP4BlockSize; ++b) {
    const float* block = row + b * kNVFP4BlockSize;
    const uint8_t scale_code = nvfp4_block_scale(block_amax(block, kNVFP4BlockSize), tensor_scale);
    scales[b] = scale_code;
    const float scale = e4m3_to_float(scale_code) * tensor_scale;
    uint8_t* out = packed + b * kNVFP4BlockSize / 2;
    if (!(scale > 0.0f)) {  // E4M3 underflow of the block scale: the block decodes to 0
      std::memset(out, 0, kNVFP4BlockSize / 2);
      continue;
    }
    // Division, not multiplication by the reciprocal: ModelOpt divides, and the two
    // round differently.
    for (int64_t i = 0; i < kNVFP4BlockSize; i += 2)
      out[i / 2] = pack_e2m1_pair(float_to_e2m1(block[i] / scale), float_to_e2m1(block[i + 1] / scale));
  }
}

int fp8_scale_exponent(float amax) {
  const float clamped = std::max(amax, 1e-4f);
  const float ratio = clamped * (1.0f / 448.0f);
  uint32_t bits;
  std::memcpy(&bits, &ratio, 4);
  const int exponent = static_cast<int>((bits >> 23) & 0xffu) - 127;
  return exponent + ((bits & 0x7fffffu) != 0 ? 1 : 0);  // ceil(log2) of a normal FP32
}

void quantize_fp8_block_stripe(const float* rows, int64_t stripe_rows, int64_t cols, uint8_t* q, uint8_t* scales) {
  DSV4_CHECK(stripe_rows > 0 && stripe_rows <= kFP8BlockSize, "FP8 block stripe of {} rows (expected 1..128)",
             stripe_rows);
  for (int64_t c0 = 0; c0 < cols; c0 += kFP8BlockSize) {
    const int64_t width = std::min(kFP8BlockSize, cols - c0);
    float amax = 0;
    for (int64_t r = 0; r < stripe_rows; ++r) amax = std::max(amax, block_amax(rows + r * cols + c0, width));
    const int exponent = fp8_scale_exponent(amax);
    scales[c0 / kFP8BlockSize] = e8m0_from_exponent(exponent);
    const float inverse_scale = std::ldexp(1.0f, -exponent);  // exponent in [-22, 120]: exact
    for (int64_t r = 0; r < stripe_rows; ++r) {
      const float* src = rows + r * cols + c0;
      uint8_t* dst = q + r * cols + c0;
      for (int64_t c = 0; c < width; ++c) dst[c] = float_to_e4m3(src[c] * inverse_scale);
    }
  }
}

void quantize_fp8_block(const float* w, int64_t rows, int64_t cols, uint8_t* q, uint8_t* scales) {
  const int64_t scale_cols = (cols + kFP8BlockSize - 1) / kFP8BlockSize;
  for (int64_t r0 = 0; r0 < rows; r0 += kFP8BlockSize) {
    const int64_t stripe = std::min(kFP8BlockSize, rows - r0);
    quantize_fp8_block_stripe(w + r0 * cols, stripe, cols, q + r0 * cols, scales + (r0 / kFP8BlockSize) * scale_cols);
  }
}

void quantize_fp8_activation_row(const float* x, int64_t cols, bool power_of_two_scales, uint8_t* q, float* scales) {
  for (int64_t c0 = 0; c0 < cols; c0 += kFP8BlockSize) {
    const int64_t width = std::min(kFP8BlockSize, cols - c0);
    const float amax = block_amax(x + c0, width);
    const float scale = power_of_two_scales ? std::ldexp(1.0f, fp8_scale_exponent(amax)) : std::max(amax, 1e-4f) / 448.0f;
    scales[c0 / kFP8BlockSize] = scale;
    for (int64_t c = 0; c < width; ++c) q[c0 + c] = float_to_e4m3(x[c0 + c] / scale);
  }
}

}  // namespace dsv4

// Device-side decode of one element W[r, c] of a stored weight matrix to FP32, for the
// correctness-first ops that read weights on the fly (embedding rows, generic MoE
// experts). Exact: the same FP32 values as dsv4::dequantize_rows on the CPU (NVFP4:
// e2m1 * fl(e4m3(block scale) * tensor_scale), the product rounded once, as the CPU).
// Layouts (DeviceMatrix, W[rows, cols]):
//   kF32 / kBF16 / kF16: data [rows, cols]
//   kFP8Block: data E4M3 [rows, cols]; scales [ceil(rows/128), scale_cols] E8M0 or F32
//   kMXFP4:    data packed E2M1 [rows, cols/2], low nibble = even column; scales E8M0 [rows, scale_cols]
//   kNVFP4:    data packed E2M1 [rows, cols/2]; scales E4M3 [rows, scale_cols]; times tensor_scale
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/common/device_types.h"
#include "dsv4/weight_format.h"

namespace dsv4::cuda::ops::detail {

__device__ __forceinline__ float decode_e2m1(uint32_t code) {
  // Codes 0..7: 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign.
  const uint32_t magnitude_code = code & 7u;
  // 0, 1: subnormal 0.5 * m; 2..7: 2^(e - 1) * (1 + m / 2) with e = code >> 1, m = code & 1.
  const float magnitude = magnitude_code < 2 ? 0.5f * static_cast<float>(magnitude_code)
                                             : static_cast<float>(1u << ((magnitude_code >> 1) - 1)) *
                                                   (magnitude_code & 1u ? 1.5f : 1.0f);
  return (code & 8u) ? -magnitude : magnitude;
}

__device__ __forceinline__ float decode_e4m3(uint32_t code) {
  const int exponent = static_cast<int>((code >> 3) & 0xfu), mantissa = static_cast<int>(code & 7u);
  if (exponent == 15 && mantissa == 7) return __int_as_float(0x7fc00000);  // 0x7F / 0xFF: NaN
  const float magnitude = exponent == 0 ? ldexpf(static_cast<float>(mantissa), -9)
                                        : ldexpf(static_cast<float>(8 + mantissa), exponent - 10);
  return (code & 0x80u) ? -magnitude : magnitude;
}

__device__ __forceinline__ float decode_e8m0(uint32_t code) {
  return code == 0xffu ? __int_as_float(0x7fc00000) : ldexpf(1.0f, static_cast<int>(code) - 127);
}

// W[r, c] in FP32. No bounds checks: callers guarantee r < rows, c < cols.
__device__ __forceinline__ float weight_element(const DeviceMatrix& w, int64_t r, int64_t c) {
  switch (static_cast<WeightFormat>(w.format)) {
    case WeightFormat::kF32:
      return reinterpret_cast<const float*>(w.data)[r * w.cols + c];
    case WeightFormat::kBF16:
      return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(w.data)[r * w.cols + c]);
    case WeightFormat::kF16:
      return __half2float(reinterpret_cast<const __half*>(w.data)[r * w.cols + c]);
    case WeightFormat::kFP8Block: {
      const int64_t index = (r / 128) * w.scale_cols + c / 128;
      const float scale = w.scale_is_f32 ? reinterpret_cast<const float*>(w.scales)[index] : decode_e8m0(w.scales[index]);
      return decode_e4m3(w.data[r * w.cols + c]) * scale;
    }
    case WeightFormat::kMXFP4: {
      const uint32_t byte = w.data[r * (w.cols / 2) + c / 2];
      return decode_e2m1((c & 1) ? byte >> 4 : byte & 0xfu) * decode_e8m0(w.scales[r * w.scale_cols + c / 32]);
    }
    case WeightFormat::kNVFP4: {
      const uint32_t byte = w.data[r * (w.cols / 2) + c / 2];
      const float scale = decode_e4m3(w.scales[r * w.scale_cols + c / 16]) * w.tensor_scale;
      return decode_e2m1((c & 1) ? byte >> 4 : byte & 0xfu) * scale;
    }
  }
  return __int_as_float(0x7fc00000);  // unknown format: NaN, loud in any output
}

}  // namespace dsv4::cuda::ops::detail

#include <cuda_bf16.h>

#include "cuda/formats/dequantize.h"
#include "dsv4/weight_format.h"

namespace dsv4::cuda {

namespace {

__device__ float e2m1(uint8_t code) {
  constexpr float kValues[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float magnitude = kValues[code & 7];
  return (code & 8) ? -magnitude : magnitude;
}

__device__ float e4m3(uint8_t code) {
  const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
  if (exponent == 15 && mantissa == 7) return __int_as_float(0x7fc00000);
  const float magnitude = exponent == 0 ? ldexpf(static_cast<float>(mantissa), -9)
                                        : ldexpf(static_cast<float>(8 + mantissa), exponent - 10);
  return (code & 0x80) ? -magnitude : magnitude;
}

__device__ float e8m0(uint8_t code) {
  return code == 0xff ? __int_as_float(0x7fc00000) : ldexpf(1.0f, static_cast<int>(code) - 127);
}

// One thread per element pair (c, c+1) of matrix row r = row_begin + out_row: a packed
// FP4 byte holds exactly one pair. `row_count` is the resolved slice length (>= 0).
__global__ void dequantize_kernel(DequantizeParams p, int64_t row_count) {
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t pairs_per_row = p.cols / 2;
  if (pair >= row_count * pairs_per_row) return;
  const int64_t out_row = pair / pairs_per_row, c = 2 * (pair % pairs_per_row);
  const int64_t r = p.row_begin + out_row;
  float v0 = 0, v1 = 0;
  switch (static_cast<WeightFormat>(p.format)) {
    case WeightFormat::kF32: {
      const float* src = reinterpret_cast<const float*>(p.data) + r * p.cols + c;
      v0 = src[0];
      v1 = src[1];
      break;
    }
    case WeightFormat::kBF16: {
      const __nv_bfloat16* src = reinterpret_cast<const __nv_bfloat16*>(p.data) + r * p.cols + c;
      v0 = __bfloat162float(src[0]);
      v1 = __bfloat162float(src[1]);
      break;
    }
    case WeightFormat::kF16: {
      const __half* src = reinterpret_cast<const __half*>(p.data) + r * p.cols + c;
      v0 = __half2float(src[0]);
      v1 = __half2float(src[1]);
      break;
    }
    case WeightFormat::kFP8Block: {
      const int64_t index = (r / 128) * p.scale_cols + c / 128;  // c, c+1 share a 128-block (c even)
      const float scale = p.scale_is_f32 ? reinterpret_cast<const float*>(p.scales)[index] : e8m0(p.scales[index]);
      v0 = e4m3(p.data[r * p.cols + c]) * scale;
      v1 = e4m3(p.data[r * p.cols + c + 1]) * scale;
      break;
    }
    case WeightFormat::kMXFP4: {
      const uint8_t byte = p.data[r * pairs_per_row + c / 2];
      const float scale = e8m0(p.scales[r * p.scale_cols + c / 32]);
      v0 = e2m1(byte & 0xf) * scale;  // low nibble = even column
      v1 = e2m1(byte >> 4) * scale;
      break;
    }
    case WeightFormat::kNVFP4: {
      const uint8_t byte = p.data[r * pairs_per_row + c / 2];
      const float scale = e4m3(p.scales[r * p.scale_cols + c / 16]) * p.tensor_scale;
      v0 = e2m1(byte & 0xf) * scale;
      v1 = e2m1(byte >> 4) * scale;
      break;
    }
  }
  __nv_bfloat16* out = reinterpret_cast<__nv_bfloat16*>(p.out) + out_row * p.cols + c;
  out[0] = __float2bfloat16_rn(v0);
  out[1] = __float2bfloat16_rn(v1);
}

}  // namespace

cudaError_t dequantize_to_bf16(const DequantizeParams& params) {
  if (params.cols % 2 != 0) return cudaErrorInvalidValue;
  const int64_t row_count = params.row_count < 0 ? params.rows - params.row_begin : params.row_count;
  if (params.row_begin < 0 || row_count < 0 || params.row_begin + row_count > params.rows) return cudaErrorInvalidValue;
  const int64_t pairs = row_count * params.cols / 2;
  if (pairs == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = (pairs + kThreads - 1) / kThreads;
  dequantize_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, params.stream>>>(params, row_count);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda

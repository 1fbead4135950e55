// CUDA quantizers (layouts and recipes: quantize.h and include/dsv4/formats.h).
// Thread layouts:
//   FP4 formats  one thread per output byte (element pair); the 16 (MXFP4) or 8 (NVFP4)
//                lanes of one scale block reduce amax with shuffles. cols % block == 0
//                makes a flat pair index's block aligned to those lanes, and the flat
//                block index equal to the flat scale index [rows, cols/block].
//   FP8 blocks   one 256-thread CTA per 128x128 block (two passes over it).
//   FP8 act      one warp per (row, 128 columns), four columns per lane.
#include <algorithm>

#include "cuda/formats/device_codecs.cuh"
#include "cuda/formats/quantize.h"

namespace dsv4::cuda {

namespace {

using namespace codecs;

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

struct F32Input {
  const float* values;
  __device__ float operator()(int64_t i) const { return values[i]; }
};
struct BF16Input {  // BF16 widens exactly: the 16 bits become the high half (NaN payloads kept)
  const uint16_t* bits;
  __device__ float operator()(int64_t i) const { return __uint_as_float(static_cast<uint32_t>(bits[i]) << 16); }
};

// Calls launch(loader) with the input's typed loader.
template <typename Launch>
cudaError_t with_input(const QuantizeInput& x, Launch&& launch) {
  if (x.dtype == DType::kF32) return launch(F32Input{static_cast<const float*>(x.data)});
  if (x.dtype == DType::kBF16) return launch(BF16Input{static_cast<const uint16_t*>(x.data)});
  return cudaErrorInvalidValue;
}

bool valid(const QuantizeInput& x, int64_t col_multiple, std::initializer_list<const void*> outputs) {
  if (x.rows < 0 || x.cols < 0 || x.cols % col_multiple != 0) return false;
  if (x.dtype != DType::kF32 && x.dtype != DType::kBF16) return false;
  if (x.rows * x.cols == 0) return true;
  if (x.data == nullptr) return false;
  for (const void* p : outputs)
    if (p == nullptr) return false;
  return true;
}

// NaN-free max of |x| over a warp's lanes (fmaxf ignores NaN; every start value is >= 0).
template <int kLanes>
__device__ float lanes_abs_max(float amax) {
  for (int offset = kLanes / 2; offset > 0; offset /= 2) amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, offset));
  return amax;
}

// ---------------------------------------------------------------------------------
// MXFP4 / NVFP4: packed [rows, cols/2], scales [rows, cols/kBlock].
// ---------------------------------------------------------------------------------
template <int kBlock, bool kNVFP4, typename Input>
__global__ void quantize_fp4_kernel(Input input, int64_t pairs, uint8_t* packed, uint8_t* scales, float tensor_scale,
                                    const float* device_tensor_scale) {
  constexpr int kLanesPerBlock = kBlock / 2;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = pair < pairs;  // inactive lanes fill whole groups: pairs % kLanesPerBlock == 0
  const float v0 = active ? input(2 * pair) : 0.0f, v1 = active ? input(2 * pair + 1) : 0.0f;
  const float amax = lanes_abs_max<kLanesPerBlock>(fmaxf(fmaxf(0.0f, fabsf(v0)), fabsf(v1)));
  if (!active) return;
  const int64_t block = pair / kLanesPerBlock;
  const bool writes_scale = pair % kLanesPerBlock == 0;
  if constexpr (kNVFP4) {
    const float ts = device_tensor_scale ? *device_tensor_scale : tensor_scale;
    // s_block = E4M3(amax / (6 * s_tensor)); ModelOpt's zero block gets 1.0 (0x38).
    const uint8_t scale_code = amax == 0.0f ? uint8_t{0x38} : float_to_e4m3(host_div(amax, host_mul(6.0f, ts)));
    if (writes_scale) scales[block] = scale_code;
    const float scale = __fmul_rn(e4m3_to_float(scale_code), ts);
    // A scale that underflowed to E4M3 zero (or is NaN) stores codes 0, as the CPU.
    packed[pair] = !(scale > 0.0f) ? uint8_t{0}
                                   : static_cast<uint8_t>(float_to_e2m1(__fdiv_rn(v0, scale)) |
                                                          (float_to_e2m1(__fdiv_rn(v1, scale)) << 4));
  } else {
    const int exponent = mxfp4_shared_exponent(amax);
    if (writes_scale) scales[block] = e8m0_from_exponent(exponent);
    const float inverse_scale = exact_pow2(-exponent);  // exact for exponent in [-127, 127]
    packed[pair] = static_cast<uint8_t>(float_to_e2m1(__fmul_rn(v0, inverse_scale)) |
                                        (float_to_e2m1(__fmul_rn(v1, inverse_scale)) << 4));
  }
}

template <int kBlock, bool kNVFP4>
cudaError_t launch_fp4(const QuantizeInput& x, uint8_t* packed, uint8_t* scales, float tensor_scale,
                       const float* device_tensor_scale, cudaStream_t stream) {
  if (!valid(x, kBlock, {packed, scales})) return cudaErrorInvalidValue;
  const int64_t pairs = x.rows * x.cols / 2;
  if (pairs == 0) return cudaSuccess;
  return with_input(x, [&](auto input) {
    const auto blocks = static_cast<unsigned>((pairs + kThreads - 1) / kThreads);
    quantize_fp4_kernel<kBlock, kNVFP4><<<blocks, kThreads, 0, stream>>>(input, pairs, packed, scales, tensor_scale,
                                                                         device_tensor_scale);
    return cudaGetLastError();
  });
}

// ---------------------------------------------------------------------------------
// FP8 128x128 blocks: q [rows, cols], scales E8M0 [ceil(rows/128), ceil(cols/128)];
// grid (scale_cols, scale_rows).
// ---------------------------------------------------------------------------------
template <typename Input>
__global__ void quantize_fp8_block_kernel(Input input, int64_t rows, int64_t cols, uint8_t* q, uint8_t* scales) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 128, c0 = static_cast<int64_t>(blockIdx.x) * 128;
  const int height = static_cast<int>(std::min<int64_t>(128, rows - r0)), width = static_cast<int>(std::min<int64_t>(128, cols - c0));
  float amax = 0.0f;
  for (int i = threadIdx.x; i < height * 128; i += blockDim.x)
    if (i % 128 < width) amax = fmaxf(amax, fabsf(input((r0 + i / 128) * cols + c0 + i % 128)));
  __shared__ float warp_amax[kThreads / 32];
  __shared__ int block_exponent;
  amax = lanes_abs_max<32>(amax);
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) amax = fmaxf(amax, warp_amax[w]);
    block_exponent = fp8_scale_exponent(amax);  // in [-22, 128]: 128 only for amax = inf
    scales[blockIdx.y * gridDim.x + blockIdx.x] = e8m0_from_exponent(block_exponent);
  }
  __syncthreads();
  const float inverse_scale = exact_pow2(-block_exponent);  // exact (2^-128 is a subnormal)
  for (int i = threadIdx.x; i < height * 128; i += blockDim.x) {
    if (i % 128 >= width) continue;
    const int64_t index = (r0 + i / 128) * cols + c0 + i % 128;
    q[index] = float_to_e4m3(host_mul(input(index), inverse_scale));
  }
}

// ---------------------------------------------------------------------------------
// FP8 activations 1x128: q [rows, cols], scales F32 [rows, ceil(cols/128)].
// ---------------------------------------------------------------------------------
template <typename Input>
__global__ void quantize_fp8_activation_kernel(Input input, int64_t rows, int64_t cols, bool power_of_two,
                                               uint8_t* q, float* scales) {
  const int64_t scale_cols = (cols + 127) / 128;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (warp >= rows * scale_cols) return;  // whole warps leave together
  const int lane = threadIdx.x % 32;
  const int64_t row = warp / scale_cols, c0 = (warp % scale_cols) * 128;
  const int width = static_cast<int>(std::min<int64_t>(128, cols - c0));
  float values[4];
  float amax = 0.0f;
  for (int k = 0; k < 4; ++k) {
    const int c = lane + 32 * k;
    values[k] = c < width ? input(row * cols + c0 + c) : 0.0f;
    amax = fmaxf(amax, fabsf(values[k]));
  }
  amax = lanes_abs_max<32>(amax);
  const float scale = power_of_two ? exact_pow2(fp8_scale_exponent(amax)) : __fdiv_rn(fmaxf(amax, 1e-4f), 448.0f);
  if (lane == 0) scales[warp] = scale;  // warp = row * scale_cols + block
  for (int k = 0; k < 4; ++k) {
    const int c = lane + 32 * k;
    if (c < width) q[row * cols + c0 + c] = float_to_e4m3(host_div(values[k], scale));
  }
}

// ---------------------------------------------------------------------------------
// max |x|: grid-stride partial maxima, then one atomicMax per CTA on the float's bits
// (non-negative floats order like their bit patterns; NaN never enters).
// ---------------------------------------------------------------------------------
template <typename Input>
__global__ void abs_max_kernel(Input input, int64_t count, unsigned* amax_bits) {
  float amax = 0.0f;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    amax = fmaxf(amax, fabsf(input(i)));
  __shared__ float warp_amax[kThreads / 32];
  amax = lanes_abs_max<32>(amax);
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) amax = fmaxf(amax, warp_amax[w]);
    atomicMax(amax_bits, __float_as_uint(amax));
  }
}

// amax / (6 * 448), 1 for amax 0 (dsv4::nvfp4_tensor_scale).
__global__ void amax_to_nvfp4_tensor_scale_kernel(float* value) {
  const float amax = *value;
  *value = amax > 0.0f ? __fdiv_rn(amax, 6.0f * 448.0f) : 1.0f;
}

}  // namespace

cudaError_t abs_max(DType dtype, const void* x, int64_t count, float* device_amax, cudaStream_t stream) {
  if (count < 0 || device_amax == nullptr || (count > 0 && x == nullptr)) return cudaErrorInvalidValue;
  const QuantizeInput input{dtype, x, 1, count};
  if (!valid(input, 1, {device_amax})) return cudaErrorInvalidValue;
  if (const cudaError_t error = cudaMemsetAsync(device_amax, 0, sizeof(float), stream); error != cudaSuccess)
    return error;
  if (count == 0) return cudaSuccess;
  return with_input(input, [&](auto loader) {
    const auto blocks = static_cast<unsigned>(std::min<int64_t>((count + 4 * kThreads - 1) / (4 * kThreads), 4096));
    abs_max_kernel<<<blocks, kThreads, 0, stream>>>(loader, count, reinterpret_cast<unsigned*>(device_amax));
    return cudaGetLastError();
  });
}

cudaError_t nvfp4_tensor_scale(const QuantizeInput& x, float* device_tensor_scale, cudaStream_t stream) {
  if (x.rows < 0 || x.cols < 0) return cudaErrorInvalidValue;
  if (const cudaError_t error = abs_max(x.dtype, x.data, x.rows * x.cols, device_tensor_scale, stream); error != cudaSuccess)
    return error;
  amax_to_nvfp4_tensor_scale_kernel<<<1, 1, 0, stream>>>(device_tensor_scale);
  return cudaGetLastError();
}

cudaError_t quantize_nvfp4(const QuantizeInput& x, float tensor_scale, const float* device_tensor_scale,
                           uint8_t* packed, uint8_t* scales, cudaStream_t stream) {
  return launch_fp4<16, true>(x, packed, scales, tensor_scale, device_tensor_scale, stream);
}

cudaError_t quantize_mxfp4(const QuantizeInput& x, uint8_t* packed, uint8_t* scales, cudaStream_t stream) {
  return launch_fp4<32, false>(x, packed, scales, 0.0f, nullptr, stream);
}

cudaError_t quantize_fp8_block(const QuantizeInput& x, uint8_t* q, uint8_t* scales, cudaStream_t stream) {
  if (!valid(x, 1, {q, scales})) return cudaErrorInvalidValue;
  if (x.rows * x.cols == 0) return cudaSuccess;
  const int64_t scale_rows = (x.rows + 127) / 128, scale_cols = (x.cols + 127) / 128;
  if (scale_rows > 65535 || scale_cols > 0x7fffffff) return cudaErrorInvalidValue;  // grid limits
  return with_input(x, [&](auto input) {
    const dim3 grid(static_cast<unsigned>(scale_cols), static_cast<unsigned>(scale_rows));
    quantize_fp8_block_kernel<<<grid, kThreads, 0, stream>>>(input, x.rows, x.cols, q, scales);
    return cudaGetLastError();
  });
}

cudaError_t quantize_fp8_activation(const QuantizeInput& x, bool power_of_two_scales, uint8_t* q, float* scales,
                                    cudaStream_t stream) {
  if (!valid(x, 1, {q, scales})) return cudaErrorInvalidValue;
  if (x.rows * x.cols == 0) return cudaSuccess;
  const int64_t warps = x.rows * ((x.cols + 127) / 128);
  constexpr int64_t kWarpsPerCta = kThreads / 32;
  return with_input(x, [&](auto input) {
    const auto blocks = static_cast<unsigned>((warps + kWarpsPerCta - 1) / kWarpsPerCta);
    quantize_fp8_activation_kernel<<<blocks, kThreads, 0, stream>>>(input, x.rows, x.cols, power_of_two_scales, q,
                                                                   scales);
    return cudaGetLastError();
  });
}

}  // namespace dsv4::cuda

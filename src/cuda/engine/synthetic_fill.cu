#include <algorithm>

#include "cuda/engine/synthetic_fill.h"

namespace dsv4::cuda {

namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ float uniform_pm1(uint64_t seed, size_t i) {
  const uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ull + i + 1);
  return static_cast<float>(static_cast<int64_t>(r >> 40) - (1ll << 23)) * (1.0f / static_cast<float>(1 << 23));
}

__global__ void fill_f32_kernel(float* out, size_t count, float amplitude, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = amplitude * uniform_pm1(seed, i);
}

__global__ void fill_bf16_kernel(uint16_t* out, size_t count, float amplitude, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float v = amplitude * uniform_pm1(seed, i);
    out[i] = static_cast<uint16_t>(__float_as_uint(v) >> 16);  // truncation is fine for random data
  }
}

__global__ void fill_bytes_kernel(uint8_t* out, size_t count, uint8_t and_mask, uint8_t or_mask, uint64_t seed) {
  // 8 bytes per hash.
  const size_t words = (count + 7) / 8;
  for (size_t w = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; w < words;
       w += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t r = mix64(seed * 0xd1b54a32d192ed03ull + w + 1);
    for (int b = 0; b < 8; ++b) {
      const size_t i = w * 8 + b;
      if (i < count) out[i] = static_cast<uint8_t>((r & and_mask) | or_mask);
      r >>= 8;
    }
  }
}

constexpr int kThreads = 256;
int blocks_for(size_t count) { return static_cast<int>(std::min<size_t>((count + kThreads - 1) / kThreads, 4096)); }

}  // namespace

cudaError_t fill_uniform_f32(float* out, size_t count, float amplitude, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_f32_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, count, amplitude, seed);
  return cudaGetLastError();
}

cudaError_t fill_uniform_bf16(uint16_t* out, size_t count, float amplitude, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_bf16_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, count, amplitude, seed);
  return cudaGetLastError();
}

cudaError_t fill_random_bytes(uint8_t* out, size_t count, uint8_t and_mask, uint8_t or_mask, uint64_t seed,
                              cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_bytes_kernel<<<blocks_for((count + 7) / 8), kThreads, 0, stream>>>(out, count, and_mask, or_mask, seed);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda

#include <algorithm>

#include "cuda/engine/shared_expert.h"

namespace dsv4::cuda {

namespace {

__global__ void clamped_swiglu_kernel(float* gate, const float* up, int64_t count, float limit) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = fminf(gate[i], limit);                 // gate: upper clamp only
    const float u = fminf(fmaxf(up[i], -limit), limit);    // up: both sides
    gate[i] = g / (1.0f + expf(-g)) * u;
  }
}

}  // namespace

cudaError_t clamped_swiglu_inplace(float* gate, const float* up, int64_t count, float limit, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const int blocks = static_cast<int>(std::min<int64_t>((count + 255) / 256, 4096));
  clamped_swiglu_kernel<<<blocks, 256, 0, stream>>>(gate, up, count, limit);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda

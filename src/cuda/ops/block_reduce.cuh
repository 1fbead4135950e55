// Deterministic FP32 sums across a warp and a block (fixed shuffle tree, fixed order
// of the warp partials), so a launcher gives bit-identical results run to run.
#pragma once
#include <cuda_runtime.h>

namespace dsv4::cuda::ops::detail {

__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// Sum of `value` over the block; every thread gets the result. blockDim.x must be a
// multiple of 32 and at most 1024. `scratch` is __shared__ float[32]. Contains
// __syncthreads: call from every thread of the block.
__device__ __forceinline__ float block_sum(float value, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  value = warp_sum(value);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : 0.0f;
  total = warp_sum(total);
  return total;
}

}  // namespace dsv4::cuda::ops::detail

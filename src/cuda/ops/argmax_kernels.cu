// argmax_rows (argmax.h): one 1024-thread block per row. Thread i scans columns i,
// i + 1024, ... keeping the first largest non-NaN value it sees (strictly greater
// replaces, so a thread keeps its lowest index among equal values); the block then
// reduces (value, index) pairs with the same order: larger value wins, equal values
// take the lower index. The result is independent of the reduction tree.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda/ops/argmax.h"

namespace dsv4::cuda::ops::detail {

namespace {

constexpr int kThreads = 1024;

struct Best {
  float value;
  int index;  // INT_MAX: no non-NaN value seen
};

// Whether b comes before a in the greedy order (NaN never stored: value starts at -inf
// with index INT_MAX, so -inf columns still win over "none").
__device__ __forceinline__ bool better(const Best& b, const Best& a) {
  return b.value > a.value || (b.value == a.value && b.index < a.index);
}

__device__ __forceinline__ Best warp_best(Best best) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const Best other = {__shfl_xor_sync(0xffffffffu, best.value, offset),
                        __shfl_xor_sync(0xffffffffu, best.index, offset)};
    if (better(other, best)) best = other;
  }
  return best;
}

__global__ void __launch_bounds__(kThreads) argmax_rows_kernel(const float* x, int cols, int32_t* ids) {
  __shared__ float s_value[kThreads / 32];
  __shared__ int s_index[kThreads / 32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  Best best = {-INFINITY, INT_MAX};
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    const float v = row[c];
    // -inf equal to the start value: the first such column still takes the index.
    if (v > best.value || (v == best.value && best.index == INT_MAX)) best = {v, c};
  }
  best = warp_best(best);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    s_value[warp] = best.value;
    s_index[warp] = best.index;
  }
  __syncthreads();
  if (warp == 0) {
    best = {s_value[lane], s_index[lane]};
    best = warp_best(best);
    if (lane == 0) ids[blockIdx.x] = best.index == INT_MAX ? 0 : best.index;
  }
}

}  // namespace

cudaError_t launch_argmax_rows(const float* x, int rows, int cols, int32_t* ids, cudaStream_t stream) {
  argmax_rows_kernel<<<rows, kThreads, 0, stream>>>(x, cols, ids);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

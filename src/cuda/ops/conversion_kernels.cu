// Elementwise conversion and add kernels (launchers in conversions.cpp / linear.cpp).
#include <cuda_bf16.h>

#include "cuda/ops/kernels.h"

namespace dsv4::cuda::ops::detail {

namespace {

constexpr int kThreads = 256;

// in, out: [count]. Grid-stride loop (count may exceed the grid).
__global__ void f32_to_bf16_kernel(const float* in, __nv_bfloat16* out, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

// x: [rows, x_stride] (first `cols` used); out: [rows, cols] dense.
// out = bf16(x); residual (when not null) = bf16(x - out): x ~ out + residual to ~2^-17;
// residual2 (when not null, with residual) = bf16(x - out - residual): to ~2^-26.
__global__ void f32_rows_to_bf16_kernel(const float* x, int64_t x_stride, int64_t rows, int64_t cols,
                                        __nv_bfloat16* out, __nv_bfloat16* residual, __nv_bfloat16* residual2) {
  const int64_t count = rows * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float v = x[r * x_stride + c];
    const __nv_bfloat16 hi = __float2bfloat16_rn(v);
    out[i] = hi;
    if (residual) {
      const float rest = v - __bfloat162float(hi);  // exact in FP32
      const __nv_bfloat16 mid = __float2bfloat16_rn(rest);
      residual[i] = mid;
      if (residual2) residual2[i] = __float2bfloat16_rn(rest - __bfloat162float(mid));
    }
  }
}

// stacked: [parts tokens, cols]; y: [tokens, y_stride]. 2 parts: hi + lo in one rounding
// (the same value as a second GEMM with beta 1); 3 parts: hi + (mid + lo), small first.
__global__ void add_stacked_parts_kernel(const float* stacked, int64_t tokens, int64_t cols, int parts, float* y,
                                         int64_t y_stride) {
  const int64_t count = tokens * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / cols, c = i % cols;
    const float rest = parts == 3 ? stacked[count + i] + stacked[2 * count + i] : stacked[count + i];
    y[t * y_stride + c] = stacked[i] + rest;
  }
}

// y, add: [count].
__global__ void add_inplace_kernel(float* y, const float* add, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += add[i];
}

}  // namespace

cudaError_t launch_f32_to_bf16(const float* in, uint16_t* out, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  f32_to_bf16_kernel<<<grid_for(count, kThreads), kThreads, 0, stream>>>(in, reinterpret_cast<__nv_bfloat16*>(out),
                                                                        count);
  return cudaGetLastError();
}

cudaError_t launch_f32_rows_to_bf16(const float* x, int64_t x_stride, int64_t rows, int64_t cols, uint16_t* out,
                                    cudaStream_t stream, uint16_t* residual, uint16_t* residual2) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (residual2 != nullptr && residual == nullptr) return cudaErrorInvalidValue;
  f32_rows_to_bf16_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(
      x, x_stride, rows, cols, reinterpret_cast<__nv_bfloat16*>(out), reinterpret_cast<__nv_bfloat16*>(residual),
      reinterpret_cast<__nv_bfloat16*>(residual2));
  return cudaGetLastError();
}

cudaError_t launch_add_stacked_parts(const float* stacked, int64_t tokens, int64_t cols, int parts, float* y,
                                     int64_t y_stride, cudaStream_t stream) {
  if (tokens <= 0 || cols <= 0) return cudaSuccess;
  if (parts != 2 && parts != 3) return cudaErrorInvalidValue;
  add_stacked_parts_kernel<<<grid_for(tokens * cols, kThreads), kThreads, 0, stream>>>(stacked, tokens, cols, parts,
                                                                                      y, y_stride);
  return cudaGetLastError();
}

cudaError_t launch_add_inplace(float* y, const float* add, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  add_inplace_kernel<<<grid_for(count, kThreads), kThreads, 0, stream>>>(y, add, count);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

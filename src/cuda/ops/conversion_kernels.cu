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
// out = bf16(x); residual (when not null) = bf16(x - out): x ~ out + residual to ~2^-17.
__global__ void f32_rows_to_bf16_kernel(const float* x, int64_t x_stride, int64_t rows, int64_t cols,
                                        __nv_bfloat16* out, __nv_bfloat16* residual) {
  const int64_t count = rows * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float v = x[r * x_stride + c];
    const __nv_bfloat16 hi = __float2bfloat16_rn(v);
    out[i] = hi;
    if (residual) residual[i] = __float2bfloat16_rn(v - __bfloat162float(hi));
  }
}

// stacked: [2 tokens, cols]; y: [tokens, y_stride]. hi + lo in one rounding (the same
// value as a second GEMM with beta 1).
__global__ void add_stacked_halves_kernel(const float* stacked, int64_t tokens, int64_t cols, float* y,
                                          int64_t y_stride) {
  const int64_t count = tokens * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / cols, c = i % cols;
    y[t * y_stride + c] = stacked[i] + stacked[count + i];
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
                                    cudaStream_t stream, uint16_t* residual) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  f32_rows_to_bf16_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(
      x, x_stride, rows, cols, reinterpret_cast<__nv_bfloat16*>(out), reinterpret_cast<__nv_bfloat16*>(residual));
  return cudaGetLastError();
}

cudaError_t launch_add_stacked_halves(const float* stacked, int64_t tokens, int64_t cols, float* y, int64_t y_stride,
                                      cudaStream_t stream) {
  if (tokens <= 0 || cols <= 0) return cudaSuccess;
  add_stacked_halves_kernel<<<grid_for(tokens * cols, kThreads), kThreads, 0, stream>>>(stacked, tokens, cols, y,
                                                                                       y_stride);
  return cudaGetLastError();
}

cudaError_t launch_add_inplace(float* y, const float* add, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  add_inplace_kernel<<<grid_for(count, kThreads), kThreads, 0, stream>>>(y, add, count);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

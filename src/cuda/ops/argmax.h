// Greedy next tokens on the device: the index of each row's maximum, so a decode step
// copies back `rows` int32 ids instead of rows x vocab FP32 logits (33 MB at batch 64).
// The rule is dsv4::greedy_token's (include/dsv4/engine.h): the first index of the
// largest non-NaN value (-0 == +0; a row of only NaN gives 0), so the device and the
// host pick the same id for the same logits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::ops {

// ids[r] = greedy_token(x[r, 0 .. cols)) for r < rows; x: [rows, cols] FP32 (row stride
// cols), ids: [rows] int32. Asynchronous, capturable; throws dsv4::Error on bad
// arguments or a launch error.
void argmax_rows(const float* x, int rows, int cols, int32_t* ids, cudaStream_t stream);

namespace detail {
// The kernel launch behind argmax_rows (argmax_kernels.cu; returns the launch error).
cudaError_t launch_argmax_rows(const float* x, int rows, int cols, int32_t* ids, cudaStream_t stream);
}  // namespace detail

}  // namespace dsv4::cuda::ops

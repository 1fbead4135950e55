// argmax_rows (argmax.h): argument checks, then the kernel of argmax_kernels.cu.
#include "cuda/ops/argmax.h"

#include "cuda/common/cuda_check.h"

namespace dsv4::cuda::ops {

void argmax_rows(const float* x, int rows, int cols, int32_t* ids, cudaStream_t stream) {
  DSV4_CHECK(rows >= 0 && cols >= 1, "argmax_rows: need rows >= 0 and cols >= 1, got {} x {}", rows, cols);
  if (rows == 0) return;
  DSV4_CHECK(x != nullptr && ids != nullptr, "argmax_rows: null x or ids");
  DSV4_CUDA_CHECK(detail::launch_argmax_rows(x, rows, cols, ids, stream));
}

}  // namespace dsv4::cuda::ops

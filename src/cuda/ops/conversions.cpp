// f32_to_bf16 and add_inplace of ops.h: argument checks, then the kernels of
// conversion_kernels.cu.
#include "cuda/common/cuda_check.h"
#include "cuda/ops/kernels.h"
#include "cuda/ops/ops.h"

namespace dsv4::cuda::ops {

void f32_to_bf16(const float* in, uint16_t* out, int64_t count, cudaStream_t stream) {
  DSV4_CHECK(count >= 0, "f32_to_bf16: negative count {}", count);
  if (count == 0) return;
  DSV4_CHECK(in != nullptr && out != nullptr, "f32_to_bf16: null in or out");
  DSV4_CUDA_CHECK(detail::launch_f32_to_bf16(in, out, count, stream));
}

void add_inplace(float* y, const float* add, int64_t count, cudaStream_t stream) {
  DSV4_CHECK(count >= 0, "add_inplace: negative count {}", count);
  if (count == 0) return;
  DSV4_CHECK(y != nullptr && add != nullptr, "add_inplace: null y or add");
  DSV4_CUDA_CHECK(detail::launch_add_inplace(y, add, count, stream));
}

}  // namespace dsv4::cuda::ops

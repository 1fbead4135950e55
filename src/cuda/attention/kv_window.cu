// Sliding-window KV ring write: each batch token's K=V row (FP32, already normed and
// RoPE'd) goes to row position % ring_rows of its slot, rounded to BF16 (RNE).
//   kv        [tokens, head_dim]                FP32
//   window_kv [slots, ring_rows, head_dim]      BF16
// The engine sizes ring_rows so that no two tokens of one batch share a row (see
// attention.h); tokens with a negative slot or position are skipped.
#include <cuda_bf16.h>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"

namespace dsv4::cuda::attention {

namespace {

constexpr int kThreads = 128;

// grid (tokens), block kThreads: threads stride over the row's channels.
__global__ void __launch_bounds__(kThreads)
    kv_window_write_kernel(const float* __restrict__ kv, int head_dim, uint16_t* __restrict__ window_kv,
                           int ring_rows, const TokenBatch batch) {
  const int token = blockIdx.x;
  const int slot = batch.slots[token], position = batch.positions[token];
  if (slot < 0 || position < 0) return;
  const float* source = kv + static_cast<int64_t>(token) * head_dim;
  __nv_bfloat16* target = reinterpret_cast<__nv_bfloat16*>(window_kv) +
                          (static_cast<int64_t>(slot) * ring_rows + position % ring_rows) * head_dim;
  for (int c = threadIdx.x; c < head_dim; c += kThreads) target[c] = __float2bfloat16_rn(source[c]);
}

}  // namespace

namespace detail {

cudaError_t launch_kv_window_write(const float* kv, int head_dim, uint16_t* window_kv, int ring_rows,
                                   const TokenBatch& batch, cudaStream_t stream) {
  kv_window_write_kernel<<<batch.tokens, kThreads, 0, stream>>>(kv, head_dim, window_kv, ring_rows, batch);
  return cudaGetLastError();
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

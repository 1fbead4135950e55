// Compressor update (cpu: compressor_append / pool_window), two kernels in stream order:
//   1. pool: every batch token that closes a window (position p, (p + 1) % rate == 0)
//      pools entry w = (p + 1) / rate - 1 from the raw projections of its slots,
//      RMSNorms it and RoPEs it at position w * rate;
//   2. save: every batch token's raw projections go into the state ring.
// Pooling must read the ring before the save kernel overwrites it (a chunk longer
// than state_rows wraps the ring), hence two kernels rather than one.
//
// Operands (width = (overlapping ? 2 : 1) * dim):
//   kv_proj, gate_proj    [tokens, width]               FP32 (this batch)
//   ape                   [rate, width]                 FP32
//   norm_weight           [dim]                         FP32
//   inv_freq              [rope_dim / 2]                FP32
//   state_kv, state_gate  [slots, state_rows, width]    FP32, position q in row q % state_rows
//   entries               [slots, max_entries, dim]     BF16 or FP32, entry w in row w
// A position q needed by the pool is read from the batch when q >= the chunk start
// (batch row first_rows[t] + (q - chunk start)), else from the ring; entry w reads
// positions >= (w - 1) * rate > chunk start - 2 * rate, which the ring still holds.
#include <cuda_bf16.h>

#include <cmath>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"

namespace dsv4::cuda::attention {

namespace {

constexpr int kPoolThreads = 128;
constexpr int kSaveThreads = 128;

__device__ __forceinline__ float block_sum(float value, float* s_partials /*[32]*/) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  if (lane == 0) s_partials[warp] = value;
  __syncthreads();
  float total = 0.0f;
  const int warps = (blockDim.x + 31) / 32;
  for (int i = 0; i < warps; ++i) total += s_partials[i];
  return total;
}

// Online softmax over slots for one channel: weight_j = softmax_j(gate_j), result
// sum_j weight_j * kv_j. Invariant: acc = sum e^(g_j - m) kv_j, l = sum e^(g_j - m).
struct SlotSoftmax {
  float m = -INFINITY, l = 0.0f, acc = 0.0f;
  __device__ __forceinline__ void add(float gate, float kv) {
    if (gate > m) {
      const float rescale = expf(m - gate);  // 0 for the first slot (m = -inf)
      l *= rescale;
      acc *= rescale;
      m = gate;
    }
    const float e = expf(gate - m);
    l += e;
    acc += e * kv;
  }
};

// Row of the raw projections of position q of the token's sequence: from this batch
// when q is inside its chunk, else from the slot's ring.
__device__ __forceinline__ int64_t projection_row(int q, int chunk_start, int first_row, int slot, int state_rows,
                                                  bool* from_batch) {
  *from_batch = q >= chunk_start;
  return *from_batch ? static_cast<int64_t>(first_row) + (q - chunk_start)
                     : static_cast<int64_t>(slot) * state_rows + q % state_rows;
}

// grid (tokens), block kPoolThreads; dynamic smem s_entry [dim] FP32.
__global__ void __launch_bounds__(kPoolThreads) compressor_pool_kernel(const CompressorParams p) {
  extern __shared__ float s_entry[];  // [dim] pooled, then normed entry
  __shared__ float s_partials[32];
  const int token = blockIdx.x;
  const int position = p.batch.positions[token], slot = p.batch.slots[token];
  if (position < 0 || slot < 0 || (position + 1) % p.rate != 0) return;
  const int w = (position + 1) / p.rate - 1;
  if (w >= p.max_entries) {
    if (threadIdx.x == 0 && p.error_flag != nullptr) atomicOr(p.error_flag, kErrorCompressedEntryOverflow);
    return;
  }
  const int first_row = p.batch.first_rows[token];
  const int chunk_start = p.batch.positions[first_row];
  const int width = p.overlapping ? 2 * p.dim : p.dim;
  const int current_offset = p.overlapping ? p.dim : 0;  // Cb half (CSA) or the whole projection (HCA)

  float sum_squares = 0.0f;
  for (int c = threadIdx.x; c < p.dim; c += blockDim.x) {
    SlotSoftmax pool;
    if (p.overlapping && w > 0) {  // previous window's Ca half, with its position bias
      for (int j = 0; j < p.rate; ++j) {
        bool from_batch;
        const int64_t row = projection_row((w - 1) * p.rate + j, chunk_start, first_row, slot, p.state_rows, &from_batch);
        const float* kv = from_batch ? p.kv_proj : p.state_kv;
        const float* gate = from_batch ? p.gate_proj : p.state_gate;
        pool.add(gate[row * width + c] + p.ape[j * width + c], kv[row * width + c]);
      }
    }
    for (int j = 0; j < p.rate; ++j) {  // this window: Cb half (CSA) or everything (HCA)
      bool from_batch;
      const int64_t row = projection_row(w * p.rate + j, chunk_start, first_row, slot, p.state_rows, &from_batch);
      const float* kv = from_batch ? p.kv_proj : p.state_kv;
      const float* gate = from_batch ? p.gate_proj : p.state_gate;
      const int column = current_offset + c;
      pool.add(gate[row * width + column] + p.ape[j * width + column], kv[row * width + column]);
    }
    const float value = pool.acc / pool.l;
    s_entry[c] = value;
    sum_squares += value * value;
  }
  // RMSNorm with the compressor's weight (cpu: rms_norm).
  const float mean_square = block_sum(sum_squares, s_partials) / static_cast<float>(p.dim);
  const float inv_rms = 1.0f / sqrtf(mean_square + p.rms_eps);
  for (int c = threadIdx.x; c < p.dim; c += blockDim.x) s_entry[c] = p.norm_weight[c] * (s_entry[c] * inv_rms);
  __syncthreads();

  // RoPE at the window's first position, interleaved pairs on the last rope_dim channels.
  const int rope_offset = p.dim - p.rope_dim;
  const float rope_position = static_cast<float>(w * p.rate);
  const int64_t entry_base = (static_cast<int64_t>(slot) * p.max_entries + w) * p.dim;
  for (int c = threadIdx.x; c < p.dim; c += blockDim.x) {
    float value = s_entry[c];
    if (c >= rope_offset) {
      const int pair = (c - rope_offset) >> 1;
      const float angle = p.inv_freq[pair] * rope_position;
      const float cos_a = cosf(angle), sin_a = sinf(angle);
      const float even = s_entry[rope_offset + 2 * pair], odd = s_entry[rope_offset + 2 * pair + 1];
      value = ((c - rope_offset) & 1) == 0 ? even * cos_a - odd * sin_a : odd * cos_a + even * sin_a;
    }
    if (p.entries_bf16)
      reinterpret_cast<__nv_bfloat16*>(p.entries)[entry_base + c] = __float2bfloat16_rn(value);
    else
      reinterpret_cast<float*>(p.entries)[entry_base + c] = value;
  }
}

// grid (tokens), block kSaveThreads. A token whose ring row a later token of the same
// chunk also maps to (the row state_rows further on) is skipped: the last writer wins
// without a race.
__global__ void __launch_bounds__(kSaveThreads) compressor_save_kernel(const CompressorParams p) {
  const int token = blockIdx.x;
  const int position = p.batch.positions[token], slot = p.batch.slots[token];
  if (position < 0 || slot < 0) return;
  const int later = token + p.state_rows;
  if (later < p.batch.tokens && p.batch.first_rows[later] == p.batch.first_rows[token]) return;
  const int width = p.overlapping ? 2 * p.dim : p.dim;
  const int64_t source = static_cast<int64_t>(token) * width;
  const int64_t target = (static_cast<int64_t>(slot) * p.state_rows + position % p.state_rows) * width;
  for (int c = threadIdx.x; c < width; c += kSaveThreads) {
    p.state_kv[target + c] = p.kv_proj[source + c];
    p.state_gate[target + c] = p.gate_proj[source + c];
  }
}

}  // namespace

namespace detail {

cudaError_t launch_compressor_update(const CompressorParams& p, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(p.dim) * sizeof(float);
  compressor_pool_kernel<<<p.batch.tokens, kPoolThreads, smem, stream>>>(p);
  const cudaError_t pool_error = cudaGetLastError();
  if (pool_error != cudaSuccess) return pool_error;
  compressor_save_kernel<<<p.batch.tokens, kSaveThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

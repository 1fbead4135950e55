// Compressor update (cpu: compressor_append / pool_window), two kernels in stream order:
//   1. pool: every batch token that closes a window (position p, (p + 1) % rate == 0)
//      pools entry w = (p + 1) / rate - 1 from the raw projections of its slots,
//      RMSNorms it and RoPEs it at position w * rate;
//   2. save: every batch token's raw projections go into the state ring.
// Pooling must read the ring before the save kernel overwrites it (a chunk longer
// than state_rows wraps the ring), hence two kernels rather than one.
// Two implementations (CompressorParams::kernel):
//   kSimple (kAuto): 128 threads per token, a thread's channels one after another and
//     each slot's three loads (gate, ape, kv) one round trip after the previous slot's
//     (the online softmax's branch sits between them: SASS has 3 LDG per slot);
//   kWide: one thread per channel (up to 512 threads), the slots' loads issued
//     8 (CSA, rate 4: the whole window pair) or 16 (HCA) at a time before the same online-softmax updates, the RMSNorm sum
//     in kSimple's order (so the entries are bitwise kSimple's), a float4 save; with
//     single_token_chunks (decode) the pool kernel also saves and the save kernel is not
//     launched (one launch: a one-token chunk's save never overwrites a row its pool reads).
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
#include <cstdint>

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

// The pooled entry in s_entry [dim] (FP32, every channel written, visible to the block)
// finished and stored, by the whole block: x norm_weight x inv_rms (RMSNorm), RoPE at the
// window's first position w * rate (interleaved pairs on the last rope_dim channels), then
// entry w of `slot` as BF16 (RNE) or FP32. Shared by the kSimple and kWide pool kernels
// (the same instructions, so their entries are bitwise equal).
__device__ __forceinline__ void write_entry(const CompressorParams& p, float* s_entry, float inv_rms, int slot, int w) {
  for (int c = threadIdx.x; c < p.dim; c += blockDim.x) s_entry[c] = p.norm_weight[c] * (s_entry[c] * inv_rms);
  __syncthreads();

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
  write_entry(p, s_entry, inv_rms, slot, w);
}

// ---- kWide ------------------------------------------------------------------------------
constexpr int kWidePoolMaxThreads = 512;
constexpr int kWideSaveThreads = 128;
constexpr int kWideSaveVectorsPerThread = 4;  // float4 per array and thread in flight
constexpr int kWideMaxTokensPerCta = 8;        // batch rows a pool CTA scans (min(rate, 8))

// Threads of a kWide pool CTA: one per channel, a multiple of kPoolThreads (the norm
// reduction uses the first kPoolThreads), at most kWidePoolMaxThreads (more channels loop).
__host__ __device__ __forceinline__ int wide_pool_threads(int dim) {
  const int rounded = (dim + kPoolThreads - 1) / kPoolThreads * kPoolThreads;
  return rounded < kWidePoolMaxThreads ? rounded : kWidePoolMaxThreads;
}

// Copies `width` floats of kv and gate from the batch row to the ring row: float4 when
// `vector4` (width % 4 == 0, 16-byte aligned bases, checked by the launcher), each
// thread issuing all its loads before its stores; run by `threads` threads from `thread`.
__device__ __forceinline__ void save_row(const CompressorParams& p, int64_t source, int64_t target, int width,
                                         bool vector4, int thread, int threads) {
  if (vector4) {
    const int vectors = width / 4;
    const float4* kv = reinterpret_cast<const float4*>(p.kv_proj + source);
    const float4* gate = reinterpret_cast<const float4*>(p.gate_proj + source);
    float4* ring_kv = reinterpret_cast<float4*>(p.state_kv + target);
    float4* ring_gate = reinterpret_cast<float4*>(p.state_gate + target);
    for (int v0 = thread; v0 < vectors; v0 += threads * kWideSaveVectorsPerThread) {
      float4 kv_values[kWideSaveVectorsPerThread], gate_values[kWideSaveVectorsPerThread];
#pragma unroll
      for (int k = 0; k < kWideSaveVectorsPerThread; ++k) {
        const int v = v0 + k * threads;
        if (v < vectors) kv_values[k] = kv[v], gate_values[k] = gate[v];
      }
#pragma unroll
      for (int k = 0; k < kWideSaveVectorsPerThread; ++k) {
        const int v = v0 + k * threads;
        if (v < vectors) ring_kv[v] = kv_values[k], ring_gate[v] = gate_values[k];
      }
    }
  } else {
    for (int c = thread; c < width; c += threads) {
      p.state_kv[target + c] = p.kv_proj[source + c];
      p.state_gate[target + c] = p.gate_proj[source + c];
    }
  }
}

// Pools the entry that batch row `token` closes (window w < max_entries, checked by the
// caller) on all threads of the CTA; s_entry [dim] and s_partials [32] are free on entry
// and again on return. Per channel the same slot order and SlotSoftmax updates as
// compressor_pool_kernel; slot s of the window pair covers position first_position + s:
//   CSA  s in [w > 0 ? 0 : rate, 2 rate): s < rate window w-1's Ca (column c),
//        else window w's Cb (column dim + c); ape row s % rate
//   HCA  s in [0, rate): window w, column c, ape row s
template <int kSlotBatch>
__device__ __forceinline__ void pool_wide_token(const CompressorParams& p, int token, float* s_entry,
                                                float* s_partials) {
  const int position = p.batch.positions[token], slot = p.batch.slots[token];
  const int w = (position + 1) / p.rate - 1;
  const int width = p.overlapping ? 2 * p.dim : p.dim;
  const int first_row = p.batch.first_rows[token];
  const int chunk_start = p.batch.positions[first_row];
  const int current_offset = p.overlapping ? p.dim : 0;
  const int slot_begin = p.overlapping && w == 0 ? p.rate : 0;
  const int slot_end = p.overlapping ? 2 * p.rate : p.rate;
  const int first_position = p.overlapping ? (w - 1) * p.rate : w * p.rate;
  for (int c = threadIdx.x; c < p.dim; c += blockDim.x) {
    SlotSoftmax pool;
    for (int s0 = slot_begin; s0 < slot_end; s0 += kSlotBatch) {
      // Raw loads only here (the gate + ape add in this loop made SASS wait for each
      // slot's loads before issuing the next slot's); the adds and updates follow.
      float gate_values[kSlotBatch], ape_values[kSlotBatch], kv_values[kSlotBatch];
#pragma unroll
      for (int k = 0; k < kSlotBatch; ++k) {
        const int s = s0 + k;
        if (s < slot_end) {
          const bool previous = p.overlapping && s < p.rate;
          const int j = s < p.rate ? s : s - p.rate;
          const int column = previous ? c : current_offset + c;
          bool from_batch;
          const int64_t row =
              projection_row(first_position + s, chunk_start, first_row, slot, p.state_rows, &from_batch);
          const float* kv = from_batch ? p.kv_proj : p.state_kv;
          const float* gate = from_batch ? p.gate_proj : p.state_gate;
          gate_values[k] = gate[row * width + column];
          ape_values[k] = p.ape[j * width + column];
          kv_values[k] = kv[row * width + column];
        }
      }
#pragma unroll
      for (int k = 0; k < kSlotBatch; ++k)
        if (s0 + k < slot_end) pool.add(gate_values[k] + ape_values[k], kv_values[k]);
    }
    s_entry[c] = pool.acc / pool.l;
  }
  __syncthreads();
  // RMSNorm: the sum of squares in compressor_pool_kernel's order (thread t < 128 adds
  // channels t, t + 128, ... in turn; xor-shuffle warp sums; the 4 warps' partials in
  // order), so inv_rms has the same bits.
  if (threadIdx.x < kPoolThreads) {
    float sum_squares = 0.0f;
    for (int c = threadIdx.x; c < p.dim; c += kPoolThreads) {
      const float value = s_entry[c];
      sum_squares += value * value;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) sum_squares += __shfl_xor_sync(0xffffffffu, sum_squares, offset);
    if ((threadIdx.x & 31) == 0) s_partials[threadIdx.x >> 5] = sum_squares;
  }
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < kPoolThreads / 32; ++i) total += s_partials[i];
  const float mean_square = total / static_cast<float>(p.dim);
  const float inv_rms = 1.0f / sqrtf(mean_square + p.rms_eps);
  write_entry(p, s_entry, inv_rms, slot, w);
  __syncthreads();  // s_entry and s_partials free again
}

// grid (ceil(tokens / tokens_per_cta)), block wide_pool_threads(dim); dynamic smem
// s_entry [dim] FP32. A CTA owns batch rows [blockIdx.x * tokens_per_cta, + tokens_per_cta):
// it reads their positions at once (one round trip where a CTA per token would pay one
// each: prefill has rate - 1 non-closing tokens per closing one), lists the closing ones
// and pools them one after another (a prefill range of rate rows holds one).
// kFusedSave (single_token_chunks, tokens_per_cta 1): then the token's own save; a token
// whose chunk is not that one token sets kErrorCompressorNotSingleToken and is skipped.
// 2 CTAs per SM (<= 64 registers) with 8 slot loads in flight; 1 with 16 (64 spill).
template <int kSlotBatch, bool kFusedSave>
__global__ void __launch_bounds__(kWidePoolMaxThreads, kSlotBatch <= 8 ? 2 : 1)
    compressor_pool_wide_kernel(const CompressorParams p, int tokens_per_cta, bool vector4) {
  extern __shared__ float s_entry[];  // [dim] pooled, then normed entry
  __shared__ float s_partials[32];
  __shared__ int s_closing[kWideMaxTokensPerCta];  // rows of the range that pool, any order
  __shared__ int s_count;
  const int first = blockIdx.x * tokens_per_cta;
  const int count = min(tokens_per_cta, p.batch.tokens - first);
  if (threadIdx.x == 0) {
    s_count = 0;
    s_closing[kWideMaxTokensPerCta - 1] = 0;  // kFusedSave: no "save it" mark unless set below
  }
  __syncthreads();
  if (threadIdx.x < count) {
    const int token = first + threadIdx.x;
    const int position = p.batch.positions[token], slot = p.batch.slots[token];
    bool valid = position >= 0 && slot >= 0;
    if (kFusedSave && valid) {
      const bool alone = p.batch.first_rows[token] == token &&
                         (token + 1 >= p.batch.tokens || p.batch.first_rows[token + 1] != token);
      if (!alone) {
        if (p.error_flag != nullptr) atomicOr(p.error_flag, kErrorCompressorNotSingleToken);
        valid = false;
      }
    }
    if (valid && (position + 1) % p.rate == 0) {
      if ((position + 1) / p.rate - 1 >= p.max_entries) {
        if (p.error_flag != nullptr) atomicOr(p.error_flag, kErrorCompressedEntryOverflow);
      } else {
        s_closing[atomicAdd(&s_count, 1)] = token;
      }
    }
    if (kFusedSave && valid) s_closing[kWideMaxTokensPerCta - 1] = -1 - token;  // marks "save it" (count is 1)
  }
  __syncthreads();
  const int closing = s_count;
  for (int i = 0; i < closing; ++i) pool_wide_token<kSlotBatch>(p, s_closing[i], s_entry, s_partials);
  if (kFusedSave && count == 1 && s_closing[kWideMaxTokensPerCta - 1] < 0) {
    // After this CTA's reads of the ring (pool_wide_token ends with a barrier); no other
    // token of the sequence is in the batch, and row p % state_rows is not one it read.
    const int token = -1 - s_closing[kWideMaxTokensPerCta - 1];
    const int width = p.overlapping ? 2 * p.dim : p.dim;
    const int position = p.batch.positions[token], slot = p.batch.slots[token];
    const int64_t source = static_cast<int64_t>(token) * width;
    const int64_t target = (static_cast<int64_t>(slot) * p.state_rows + position % p.state_rows) * width;
    save_row(p, source, target, width, vector4, threadIdx.x, blockDim.x);
  }
}

// grid (tokens), block kWideSaveThreads: compressor_save_kernel's rows, copied by save_row.
__global__ void __launch_bounds__(kWideSaveThreads) compressor_save_wide_kernel(const CompressorParams p,
                                                                               bool vector4) {
  const int token = blockIdx.x;
  const int position = p.batch.positions[token], slot = p.batch.slots[token];
  if (position < 0 || slot < 0) return;
  const int later = token + p.state_rows;
  if (later < p.batch.tokens && p.batch.first_rows[later] == p.batch.first_rows[token]) return;
  const int width = p.overlapping ? 2 * p.dim : p.dim;
  const int64_t source = static_cast<int64_t>(token) * width;
  const int64_t target = (static_cast<int64_t>(slot) * p.state_rows + position % p.state_rows) * width;
  save_row(p, source, target, width, vector4, threadIdx.x, kWideSaveThreads);
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

namespace {
// kAuto takes kWide for single-token batches (decode: pool + save in one launch) and for
// the long HCA windows (rate >= 64), kSimple otherwise. H200, 2026-12-02 08:50 UTC
// (bench_compressor; outputs bitwise kSimple's in every row): decode batch 1 / 16 / 64 CSA
// 0.0327 / 0.0346 / 0.0349 -> 0.0127 / 0.0127 / 0.0128 ms, HCA 0.313 / 0.304 / 0.307 ->
// 0.090 / 0.090 / 0.091, indexer 0.0140 / 0.0144 / 0.0147 -> 0.0118 / 0.0116 / 0.0118; HCA
// prefill 2048 / 8192 tokens 0.263 / 0.276 -> 0.084 / 0.101 ms; CSA prefill 8192 kSimple
// 0.0654 vs kWide 0.0827 and the indexer's equal, so those stay on kSimple.
bool use_wide(const CompressorParams& p) {
  using Kernel = CompressorParams::Kernel;
  if (p.kernel != Kernel::kAuto) return p.kernel == Kernel::kWide;
  return p.single_token_chunks || p.rate >= 64;
}
// float4 rows: width % 4 == 0 and every base the save touches 16-byte aligned.
bool save_vector4(const CompressorParams& p) {
  const int width = p.overlapping ? 2 * p.dim : p.dim;
  auto aligned = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  return width % 4 == 0 && aligned(p.kv_proj) && aligned(p.gate_proj) && aligned(p.state_kv) && aligned(p.state_gate);
}
}  // namespace

cudaError_t launch_compressor_pool(const CompressorParams& p, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(p.dim) * sizeof(float);
  if (!use_wide(p)) {
    compressor_pool_kernel<<<p.batch.tokens, kPoolThreads, smem, stream>>>(p);
    return cudaGetLastError();
  }
  const int threads = wide_pool_threads(p.dim);
  // Slot loads in flight: the whole CSA window pair (2 x 4) or 16 of HCA's 128.
  const bool small_windows = (p.overlapping ? 2 : 1) * p.rate <= 8;
  if (p.single_token_chunks) {
    const bool vector4 = save_vector4(p);
    if (small_windows)
      compressor_pool_wide_kernel<8, true><<<p.batch.tokens, threads, smem, stream>>>(p, 1, vector4);
    else
      compressor_pool_wide_kernel<16, true><<<p.batch.tokens, threads, smem, stream>>>(p, 1, vector4);
    return cudaGetLastError();
  }
  const int per_cta = p.rate < kWideMaxTokensPerCta ? p.rate : kWideMaxTokensPerCta;
  const int ctas = (p.batch.tokens + per_cta - 1) / per_cta;
  if (small_windows)
    compressor_pool_wide_kernel<8, false><<<ctas, threads, smem, stream>>>(p, per_cta, false);
  else
    compressor_pool_wide_kernel<16, false><<<ctas, threads, smem, stream>>>(p, per_cta, false);
  return cudaGetLastError();
}

cudaError_t launch_compressor_save(const CompressorParams& p, cudaStream_t stream) {
  if (!use_wide(p))
    compressor_save_kernel<<<p.batch.tokens, kSaveThreads, 0, stream>>>(p);
  else if (!p.single_token_chunks)  // else the pool kernel saved
    compressor_save_wide_kernel<<<p.batch.tokens, kWideSaveThreads, 0, stream>>>(p, save_vector4(p));
  return cudaGetLastError();
}

cudaError_t launch_compressor_update(const CompressorParams& p, cudaStream_t stream) {
  const cudaError_t pool_error = launch_compressor_pool(p, stream);
  if (pool_error != cudaSuccess) return pool_error;
  return launch_compressor_save(p, stream);
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

// Lightning indexer (cpu: run_indexer / indexer_select), two kernels in stream order:
//   1. scores (heads 64 x dim 128 without params.fp32_scores: indexer_mma.cu, BF16 tensor
//      cores, or indexer_wgmma.cu with params.score_kernel kWgmma; otherwise this FP32
//      kernel, the oracle): score[t, w] = sum_h relu(q[t,h] . key[w]) / sqrt(dim) * head_weights[t,h] / sqrt(heads)
//      for w < visible(t) = min((p + 1) / rate, max_entries); one warp per entry,
//      the token's queries staged in shared memory.
//   2. top-k: one CTA per token; a radix select on order-preserving float bits finds
//      the k-th largest score T (4 passes of 8 bits), then one ordered pass keeps every
//      score > T and the lowest-index scores == T until k are kept (ties toward the
//      lower index, as the CPU's partial_sort), writing them in ascending entry order.
// Operands:
//   q            [tokens, heads, dim]          FP32 (after RoPE)
//   head_weights [tokens, heads]               FP32
//   entries      [slots, max_entries, dim]     FP32 indexer keys
//   scores       [tokens, max_entries]         FP32 workspace; only w < visible(t) written
//                (tokens of this launch: launchers.cpp splits a batch into token chunks
//                when IndexerParams::scores_floats holds fewer rows)
//   selected     [tokens, top_k]               int32, ascending, -1 padded
#include <cub/block/block_scan.cuh>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"

namespace dsv4::cuda::attention {

namespace {

constexpr int kScoreWarps = 8;
constexpr int kScoreThreads = kScoreWarps * 32;
constexpr int kEntriesPerWarp = detail::kIndexerEntriesPerCta / kScoreWarps;  // entries one warp scores per CTA
constexpr int kMaxKeyPerLane = detail::kIndexerMaxDim / 32;
constexpr int kTopkThreads = 512;
static_assert(kEntriesPerWarp * kScoreWarps == detail::kIndexerEntriesPerCta, "score tile must split over warps");

__device__ __forceinline__ int visible_entries(int position, int rate, int max_entries) {
  return min((position + 1) / rate, max_entries);
}

// grid (tokens, entry tiles), block kScoreThreads. Dynamic smem:
//   s_q       [heads, dim]  the token's queries
//   s_weights [heads]       head_weights[t, h] / sqrt(heads)
__global__ void __launch_bounds__(kScoreThreads) indexer_scores_kernel(const IndexerParams p) {
  extern __shared__ float s_q[];
  const int token = blockIdx.x;
  const int position = p.batch.positions[token], slot = p.batch.slots[token];
  if (position < 0 || slot < 0) return;
  const int visible = visible_entries(position, p.rate, p.max_entries);
  const int entries_per_cta = kScoreWarps * kEntriesPerWarp;
  if (blockIdx.y * entries_per_cta >= visible) return;

  float* s_weights = s_q + p.heads * p.dim;
  const float weight_scale = 1.0f / sqrtf(static_cast<float>(p.heads));
  const float score_scale = 1.0f / sqrtf(static_cast<float>(p.dim));
  const float* q = p.q + static_cast<int64_t>(token) * p.heads * p.dim;
  for (int i = threadIdx.x; i < p.heads * p.dim; i += kScoreThreads) s_q[i] = q[i];
  for (int h = threadIdx.x; h < p.heads; h += kScoreThreads)
    s_weights[h] = p.head_weights[static_cast<int64_t>(token) * p.heads + h] * weight_scale;
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int e = 0; e < kEntriesPerWarp; ++e) {
    const int w = blockIdx.y * entries_per_cta + e * kScoreWarps + warp;
    if (w >= visible) break;
    const float* key = p.entries + (static_cast<int64_t>(slot) * p.max_entries + w) * p.dim;
    float key_part[kMaxKeyPerLane];  // key[lane + 32 i]
#pragma unroll
    for (int i = 0; i < kMaxKeyPerLane; ++i) {
      const int d = lane + 32 * i;
      key_part[i] = d < p.dim ? key[d] : 0.0f;
    }
    float total = 0.0f;
    for (int h = 0; h < p.heads; ++h) {
      const float* qh = s_q + h * p.dim;
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxKeyPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < p.dim) dot += qh[d] * key_part[i];
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      total += fmaxf(dot, 0.0f) * score_scale * s_weights[h];
    }
    if (lane == 0) p.scores[static_cast<int64_t>(token) * p.max_entries + w] = total;
  }
}

// Order-preserving map float -> uint32 (larger float, larger key); -0 counts as +0,
// as the CPU's == does.
__device__ __forceinline__ uint32_t order_key(float value) {
  const uint32_t bits = __float_as_uint(value == 0.0f ? 0.0f : value);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// grid (tokens), block kTopkThreads.
__global__ void __launch_bounds__(kTopkThreads) indexer_topk_kernel(const IndexerParams p) {
  using BlockScan = cub::BlockScan<int, kTopkThreads>;
  __shared__ typename BlockScan::TempStorage s_scan;
  __shared__ int s_histogram[256];
  __shared__ uint32_t s_prefix;   // high bits of the k-th largest key found so far
  __shared__ int s_remaining;     // how many of the keys matching s_prefix are still to take

  const int token = blockIdx.x;
  const int position = p.batch.positions[token], slot = p.batch.slots[token];
  int32_t* selected = p.selected + static_cast<int64_t>(token) * p.top_k;
  const int visible = position < 0 || slot < 0 ? 0 : visible_entries(position, p.rate, p.max_entries);
  if (visible <= p.top_k) {  // everything visible is picked
    for (int i = threadIdx.x; i < p.top_k; i += kTopkThreads) selected[i] = i < visible ? i : -1;
    return;
  }
  const float* scores = p.scores + static_cast<int64_t>(token) * p.max_entries;

  // Radix select: after the pass at `shift`, s_prefix holds the top (32 - shift) bits
  // of the k-th largest key and s_remaining the rank it has among keys with that prefix.
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_remaining = p.top_k;
  }
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kTopkThreads) s_histogram[b] = 0;
    __syncthreads();
    const uint32_t prefix = s_prefix;
    for (int i = threadIdx.x; i < visible; i += kTopkThreads) {
      const uint32_t key = order_key(scores[i]);
      if ((key & mask) == prefix) atomicAdd(&s_histogram[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0;  // keys with this prefix in higher bins
      for (int b = 255; b >= 0; --b) {
        if (above + s_histogram[b] >= s_remaining) {
          s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
          s_remaining -= above;
          break;
        }
        above += s_histogram[b];
      }
    }
    mask |= 0xFFu << shift;
    __syncthreads();
  }
  const uint32_t threshold = s_prefix;
  const int equal_needed = s_remaining;  // keys == threshold to take, lowest index first

  // Ordered compaction over entry tiles: rank among equal keys, then output slot.
  int equal_seen = 0, taken = 0;
  for (int base = 0; base < visible && taken < p.top_k; base += kTopkThreads) {
    const int i = base + threadIdx.x;
    const uint32_t key = i < visible ? order_key(scores[i]) : 0u;
    const bool in_range = i < visible;
    const int greater = in_range && key > threshold;
    const int equal = in_range && key == threshold;
    int equal_rank, equal_tile;
    BlockScan(s_scan).ExclusiveSum(equal, equal_rank, equal_tile);
    __syncthreads();
    const int take = greater || (equal && equal_seen + equal_rank < equal_needed);
    int out_rank, taken_tile;
    BlockScan(s_scan).ExclusiveSum(take, out_rank, taken_tile);
    __syncthreads();
    if (take && taken + out_rank < p.top_k) selected[taken + out_rank] = i;
    equal_seen += equal_tile;
    taken += taken_tile;
  }
  for (int i = taken + threadIdx.x; i < p.top_k; i += kTopkThreads) selected[i] = -1;  // only on NaN scores
}

// Faster top-k (same result as indexer_topk_kernel): the row's order keys are staged in
// shared memory when visible <= 16384 (one global read instead of five), the bin holding the
// k-th key is found by a block-wide scan over the 256 bins instead of one thread, and the
// compaction uses contiguous runs per thread (two block scans instead of two per 512 entries).
// grid (tokens), block kTopkThreads, dynamic smem capacity * 4 bytes; a row is staged when
// visible <= capacity.
__global__ void __launch_bounds__(kTopkThreads) indexer_topk_staged_kernel(const IndexerParams p, int capacity) {
  using BlockScan = cub::BlockScan<int, kTopkThreads>;
  extern __shared__ uint32_t s_keys[];
  __shared__ typename BlockScan::TempStorage s_scan;
  __shared__ int s_histogram[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;

  const int token = blockIdx.x;
  const int position = p.batch.positions[token], slot = p.batch.slots[token];
  int32_t* selected = p.selected + static_cast<int64_t>(token) * p.top_k;
  const int visible = position < 0 || slot < 0 ? 0 : visible_entries(position, p.rate, p.max_entries);
  if (visible <= p.top_k) {
    for (int i = threadIdx.x; i < p.top_k; i += kTopkThreads) selected[i] = i < visible ? i : -1;
    return;
  }
  const float* scores = p.scores + static_cast<int64_t>(token) * p.max_entries;
  const bool staged = visible <= capacity;
  if (staged) {
    for (int i = threadIdx.x; i < visible; i += kTopkThreads) s_keys[i] = order_key(scores[i]);
  }
  auto key_at = [&](int i) { return staged ? s_keys[i] : order_key(scores[i]); };

  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_remaining = p.top_k;
  }
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kTopkThreads) s_histogram[b] = 0;
    __syncthreads();  // also: staged keys, s_prefix / s_remaining of the previous pass
    const uint32_t prefix = s_prefix;
    const int remaining = s_remaining;
    for (int i = threadIdx.x; i < visible; i += kTopkThreads) {
      const uint32_t key = key_at(i);
      if ((key & mask) == prefix) atomicAdd(&s_histogram[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    // Thread i < 256 looks at bin 255 - i: an inclusive scan gives the count of keys in
    // that bin and the higher ones; the bin where it first reaches `remaining` holds the k-th.
    const int count = threadIdx.x < 256 ? s_histogram[255 - threadIdx.x] : 0;
    int above_inclusive;
    BlockScan(s_scan).InclusiveSum(count, above_inclusive);
    const int above = above_inclusive - count;
    __syncthreads();  // every thread has read prefix / remaining before they change
    if (threadIdx.x < 256 && count > 0 && above < remaining && remaining <= above_inclusive) {
      s_prefix = prefix | (static_cast<uint32_t>(255 - threadIdx.x) << shift);
      s_remaining = remaining - above;
    }
    mask |= 0xFFu << shift;
  }
  __syncthreads();
  const uint32_t threshold = s_prefix;
  const int equal_needed = s_remaining;

  // Ordered compaction: thread i owns the contiguous run [i * run, (i + 1) * run) of
  // entries, so two block scans (ranks among equal keys, then output offsets) place every
  // pick in ascending entry order.
  const int run = (visible + kTopkThreads - 1) / kTopkThreads;
  const int begin = min(visible, static_cast<int>(threadIdx.x) * run), end = min(visible, begin + run);
  int greater = 0, equal = 0;
  for (int i = begin; i < end; ++i) {
    const uint32_t key = key_at(i);
    greater += key > threshold;
    equal += key == threshold;
  }
  int equal_before;
  BlockScan(s_scan).ExclusiveSum(equal, equal_before);
  __syncthreads();
  const int take = greater + max(0, min(equal, equal_needed - equal_before));
  int out, taken;
  BlockScan(s_scan).ExclusiveSum(take, out, taken);
  int equal_seen = equal_before;
  for (int i = begin; i < end && out < p.top_k; ++i) {
    const uint32_t key = key_at(i);
    if (key > threshold || (key == threshold && equal_seen++ < equal_needed)) selected[out++] = i;
  }
  for (int i = taken + threadIdx.x; i < p.top_k; i += kTopkThreads) selected[i] = -1;
}

constexpr int kTopkMaxStaged = 16384;  // 64 KiB of keys: 3 CTAs per SM

}  // namespace

namespace detail {

cudaError_t launch_indexer_topk(const IndexerParams& p, cudaStream_t stream) {
  const size_t smem = (static_cast<size_t>(p.heads) * p.dim + p.heads) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t error = cudaFuncSetAttribute(indexer_scores_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(smem));
    if (error != cudaSuccess) return error;
  }
  const bool mma_shape = p.heads == kIndexerMmaHeads && p.dim == kIndexerMmaDim;
  const bool aligned = reinterpret_cast<uintptr_t>(p.q) % 8 == 0 && reinterpret_cast<uintptr_t>(p.entries) % 16 == 0;
  if (mma_shape && aligned && !p.fp32_scores && p.batch.tokens <= 4 * 65535) {
    // kAuto takes the wgmma kernel: faster than mma.sync in every case of the H200 run of
    // 2026-12-01 (382 vs 266 TFLOP/s at a 2048-token chunk over 32 k context).
    const cudaError_t score_error = p.score_kernel != IndexerParams::ScoreKernel::kMma
                                        ? launch_indexer_scores_wgmma(p, stream)
                                        : launch_indexer_scores_mma(p, stream);
    if (score_error != cudaSuccess) return score_error;
  } else {
    const int tiles = (p.max_entries + kIndexerEntriesPerCta - 1) / kIndexerEntriesPerCta;
    indexer_scores_kernel<<<dim3(p.batch.tokens, tiles), kScoreThreads, smem, stream>>>(p);
    const cudaError_t score_error = cudaGetLastError();
    if (score_error != cudaSuccess) return score_error;
  }
  if (p.fp32_scores) {  // the oracle path keeps the original top-k too
    indexer_topk_kernel<<<p.batch.tokens, kTopkThreads, 0, stream>>>(p);
    return cudaGetLastError();
  }
  const int capacity = p.max_entries < kTopkMaxStaged ? p.max_entries : kTopkMaxStaged;
  const size_t staged_bytes = static_cast<size_t>(capacity) * sizeof(uint32_t);
  if (staged_bytes > 48 * 1024) {
    const cudaError_t error = cudaFuncSetAttribute(indexer_topk_staged_kernel,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(staged_bytes));
    if (error != cudaSuccess) return error;
  }
  indexer_topk_staged_kernel<<<p.batch.tokens, kTopkThreads, staged_bytes, stream>>>(p, capacity);
  return cudaGetLastError();
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

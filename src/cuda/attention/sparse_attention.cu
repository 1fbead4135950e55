// Sparse MQA attention with sinks (cpu: attention_forward's inner loop, before the
// output de-rotation). One CTA per (token, group of kHeadsPerCta heads), one warp per
// head. The token's key list (window rows, then compressed entries) is streamed in
// tiles of kKeyTile BF16 rows through shared memory, shared by the CTA's heads; each
// warp keeps an online softmax in FP32.
// Operands:
//   q          [tokens, heads, head_dim]           FP32
//   window_kv  [slots, ring_rows, head_dim]        BF16, position p in row p % ring_rows
//   entries    [slots, max_entries, head_dim]      BF16, entry w in row w
//   selected   [tokens, top_k]                     int32 (kSelected), -1 / out of range skipped
//   sinks      [heads]                             FP32 logit, denominator only
//   out        [tokens, heads, head_dim]           FP32
// Key k of token t (slot s, position p), n_window = p - first + 1, first = max(0, p - window + 1):
//   k < n_window: window row (first + k) % ring_rows
//   else j = k - n_window: entry j (kAllVisible, j < visible) or selected[t, j] (kSelected)
//   with visible = min((p + 1) / rate, max_entries).
// kv_fp8: window_kv / entries hold 584-byte FP8 rows (kv_fp8.h), decoded to BF16 (exact)
// as the tile is loaded; the rest is the BF16 path.
#include <cuda_bf16.h>

#include <cmath>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/key_list.cuh"
#include "cuda/attention/kv_fp8.h"

namespace dsv4::cuda::attention {

namespace {

constexpr int kHeadsPerCta = 8;              // one warp each
constexpr int kThreads = kHeadsPerCta * 32;
constexpr int kKeyTile = 32;                 // keys per shared-memory tile = lanes: lane r owns key r's logit
constexpr int kChunk = detail::kSparseHeadDimMultiple;  // BF16 per 16-byte load

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Element offset of key k's row in window_kv or entries (is_entry says which), or -1
// when the key is skipped (a -1 or out-of-range selection).
__device__ __forceinline__ int64_t key_row_offset(const SparseAttentionParams& p, const KeyList& keys, int token,
                                                  int k, bool* is_entry) {
  *is_entry = k >= keys.n_window;
  if (!*is_entry) {
    const int row = (keys.first_window + k) % p.ring_rows;
    return (static_cast<int64_t>(keys.slot) * p.ring_rows + row) * p.head_dim;
  }
  const int j = k - keys.n_window;
  const int w = p.compressed == CompressedKeys::kSelected ? p.selected[static_cast<int64_t>(token) * p.top_k + j] : j;
  if (w < 0 || w >= keys.visible) return -1;
  return (static_cast<int64_t>(keys.slot) * p.max_entries + w) * p.head_dim;
}

// kFp8 (SparseAttentionParams::kv_fp8, head_dim 512): key row `offset / 512` is a
// 584-byte FP8 row (kv_fp8.h); its 16-byte chunk `chunk` of BF16 channels
// [8 chunk, 8 chunk + 8) decoded (exact) into `target`.
__device__ __forceinline__ void load_fp8_chunk(const uint16_t* rows, int64_t offset, int chunk, uint4* target) {
  const uint8_t* row = reinterpret_cast<const uint8_t*>(rows) + (offset / kKvFp8HeadDim) * kKvFp8RowBytes;
  if (chunk < kKvFp8NopeDim / kChunk) {
    const int k = static_cast<int>(row[kKvFp8ScaleOffset + chunk * kChunk / kKvFp8BlockChannels]) - 127;
    *target = kv_fp8_decode8_bf16(reinterpret_cast<const uint2*>(row)[chunk], k);
    return;
  }
  const uint2* tail = reinterpret_cast<const uint2*>(row + kKvFp8RopeOffset) + 2 * (chunk - kKvFp8NopeDim / kChunk);
  const uint2 lo = tail[0], hi = tail[1];
  *target = make_uint4(lo.x, lo.y, hi.x, hi.y);
}

// grid (tokens, ceil(heads / kHeadsPerCta)), block kThreads. kPerLane: head_dim <= 32 * kPerLane;
// lane owns channels lane + 32 i. Dynamic smem s_keys [kKeyTile, head_dim] BF16.
template <int kPerLane, bool kFp8 = false>
__global__ void __launch_bounds__(kThreads) sparse_attention_kernel(const SparseAttentionParams p) {
  extern __shared__ __align__(16) __nv_bfloat16 s_keys[];
  __shared__ bool s_valid[kKeyTile];
  const int token = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int head = blockIdx.y * kHeadsPerCta + warp;
  const bool active_head = head < p.heads;

  const KeyList keys = key_list(p, token);

  float q[kPerLane], acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    q[i] = active_head && d < p.head_dim ? p.q[(static_cast<int64_t>(token) * p.heads + head) * p.head_dim + d] : 0.0f;
    acc[i] = 0.0f;
  }
  // Online softmax invariant after each tile: acc = sum_k e^(logit_k - m) key_k,
  // l = sum_k e^(logit_k - m), m = max logit so far (-inf before any key).
  float m = -INFINITY, l = 0.0f;
  const int chunks_per_row = p.head_dim / kChunk;

  for (int tile = 0; tile < keys.n_total; tile += kKeyTile) {
    const int tile_keys = min(kKeyTile, keys.n_total - tile);
    // Cooperative load of the tile's rows (skipped keys are not read).
    for (int c = threadIdx.x; c < tile_keys * chunks_per_row; c += kThreads) {
      const int r = c / chunks_per_row, chunk = c - r * chunks_per_row;
      bool is_entry;
      const int64_t offset = key_row_offset(p, keys, token, tile + r, &is_entry);
      if (chunk == 0) s_valid[r] = offset >= 0;
      if (offset < 0) continue;
      if constexpr (kFp8) {
        load_fp8_chunk(is_entry ? p.entries : p.window_kv, offset, chunk,
                       reinterpret_cast<uint4*>(s_keys) + r * chunks_per_row + chunk);
        continue;
      }
      const uint16_t* row = (is_entry ? p.entries : p.window_kv) + offset;
      reinterpret_cast<uint4*>(s_keys)[r * chunks_per_row + chunk] = reinterpret_cast<const uint4*>(row)[chunk];
    }
    __syncthreads();

    if (active_head) {
      float my_logit = -INFINITY;  // lane r: logit of the tile's key r
      for (int r = 0; r < tile_keys; ++r) {
        if (!s_valid[r]) continue;
        const __nv_bfloat16* key = s_keys + r * p.head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < p.head_dim) dot += q[i] * __bfloat162float(key[d]);
        }
        dot = warp_sum(dot);
        if (lane == r) my_logit = dot * p.scale;
      }
      const float tile_max = warp_max(my_logit);
      if (tile_max != -INFINITY) {
        const float m_new = fmaxf(m, tile_max);
        const float rescale = expf(m - m_new);
        const float my_weight = expf(my_logit - m_new);  // 0 for skipped keys
        l = l * rescale + warp_sum(my_weight);
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) acc[i] *= rescale;
        for (int r = 0; r < tile_keys; ++r) {
          const float weight = __shfl_sync(0xffffffffu, my_weight, r);
          if (weight == 0.0f) continue;  // skipped key (its smem row is stale)
          const __nv_bfloat16* key = s_keys + r * p.head_dim;
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) {
            const int d = lane + 32 * i;
            if (d < p.head_dim) acc[i] += weight * __bfloat162float(key[d]);
          }
        }
        m = m_new;
      }
    }
    __syncthreads();  // the next tile overwrites s_keys / s_valid
  }

  if (!active_head) return;
  // The sink joins the denominator only.
  const float sink = p.sinks != nullptr ? p.sinks[head] : -INFINITY;
  const float m_final = fmaxf(m, sink);
  const float rescale = m == -INFINITY ? 0.0f : expf(m - m_final);
  const float denominator = l * rescale + (sink == -INFINITY ? 0.0f : expf(sink - m_final));
  const float inv = denominator > 0.0f ? rescale / denominator : 0.0f;
  // FP32 or BF16 stores (SparseAttentionParams::out_bf16).
  const int64_t row = (static_cast<int64_t>(token) * p.heads + head) * p.head_dim;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    const float v = acc[i] * inv;
    if (d >= p.head_dim) continue;
    if (p.out_bf16 != nullptr)
      p.out_bf16[row + d] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    else
      p.out[row + d] = v;
  }
}

template <int kPerLane, bool kFp8 = false>
cudaError_t launch(const SparseAttentionParams& p, cudaStream_t stream) {
  const dim3 grid(p.batch.tokens, (p.heads + kHeadsPerCta - 1) / kHeadsPerCta);
  const size_t smem = static_cast<size_t>(kKeyTile) * p.head_dim * sizeof(uint16_t);  // <= 32 KiB
  sparse_attention_kernel<kPerLane, kFp8><<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

namespace detail {

cudaError_t launch_sparse_attention(const SparseAttentionParams& p, cudaStream_t stream) {
  if (p.kv_fp8) return launch<16, true>(p, stream);  // head_dim 512 (launchers.cpp checks)
  if (p.head_dim <= 64) return launch<2>(p, stream);
  if (p.head_dim <= 128) return launch<4>(p, stream);
  if (p.head_dim <= 256) return launch<8>(p, stream);
  return launch<16>(p, stream);
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

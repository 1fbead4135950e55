// Lightning indexer scores on tensor cores (issue 6 item 2), the V4 shape heads 64 x dim 128.
// score[t, w] = sum_h relu(q[t,h] . key[w]) * (head_weights[t,h] / sqrt(heads) / sqrt(dim))
// for w < visible(t) = min((p + 1) / rate, max_entries), written to the FP32 scores workspace;
// the radix top-k of indexer.cu then selects from it.
//
// Precision: BF16 operands (q and keys rounded to nearest BF16), FP32 accumulation
// (mma.sync.m16n8k16), FP32 epilogue. The scores equal an FP32 evaluation on BF16-rounded
// operands up to summation order; against FP32 operands the selection differs only
// where two scores are within the BF16 rounding error (tests/cuda/attention/indexer_test.cpp).
//
// Layout: rows = (token, head) pairs; a CTA of 8 warps owns 4 tokens (256 rows), each warp
// 32 rows (two m16 tiles) of one token, its q fragments held in registers for the whole
// CTA. The CTA walks a range of 64-key tiles (grid.x splits the keys): each tile is read
// from the FP32 entries, rounded to BF16 into shared memory (one copy per distinct slot
// among the 4 tokens, so prefill tokens of one sequence share it), multiplied, then the
// epilogue applies ReLU and the per-row weight and sums the 32 rows of the warp
// (shuffles); the two warps of a token are added in a fixed order, so equal key rows give
// bitwise-equal scores (the tie rule of the top-k needs that).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/common/bf16x2.cuh"

namespace dsv4::cuda::attention {

namespace {

constexpr int kHeads = detail::kIndexerMmaHeads;     // 64
constexpr int kDim = detail::kIndexerMmaDim;         // 128
constexpr int kTokensPerCta = 4;
constexpr int kWarps = kTokensPerCta * kHeads / 32;  // 8: 32 rows per warp
constexpr int kThreads = kWarps * 32;
constexpr int kTileKeys = 64;
constexpr int kRowStride = kDim + 8;                 // BF16 per smem key row: 272 B, conflict-free 32-bit B loads
constexpr int kKSteps = kDim / 16;
constexpr int kTileBytes = kTileKeys * kRowStride * 2;
static_assert(kHeads % 32 == 0 && kWarps == 8, "a warp owns 32 rows of one token");
static_assert(kTileKeys == detail::kIndexerMmaTileKeys, "tile size shared with the launcher");

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// grid (key splits, ceil(tokens / 4)), block kThreads (the splits of a token group run
// together, so its q is read from HBM about once). tiles_per_cta: 64-key tiles per CTA.
// Dynamic smem: kTokensPerCta BF16 key tiles [kTileKeys][kRowStride], then
// s_partial [kWarps][kTileKeys] FP32.
__global__ void __launch_bounds__(kThreads, 2) indexer_scores_mma_kernel(const IndexerParams p, int tiles_per_cta) {
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* s_keys = reinterpret_cast<__nv_bfloat16*>(smem);
  float* s_partial = reinterpret_cast<float*>(smem + kTokensPerCta * kTileBytes);
  __shared__ int s_visible[kTokensPerCta], s_slot[kTokensPerCta], s_buffer[kTokensPerCta], s_load_limit[kTokensPerCta];

  const int first_token = blockIdx.y * kTokensPerCta;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;

  if (threadIdx.x < kTokensPerCta) {
    const int t = first_token + threadIdx.x;
    int visible = 0, slot = -1;
    if (t < p.batch.tokens) {
      const int position = p.batch.positions[t];
      slot = p.batch.slots[t];
      if (position >= 0 && slot >= 0) visible = min((position + 1) / p.rate, p.max_entries);
    }
    s_visible[threadIdx.x] = visible;
    s_slot[threadIdx.x] = visible > 0 ? slot : -1;
  }
  __syncthreads();
  if (threadIdx.x < kTokensPerCta) {
    // Token j reads the key tile of the first token with its slot; that buffer is loaded
    // up to the largest visible count among the tokens sharing it.
    const int j = threadIdx.x;
    int buffer = j, limit = 0;
    for (int i = 0; i < kTokensPerCta; ++i) {
      if (s_slot[j] >= 0 && s_slot[i] == s_slot[j]) {
        if (i < buffer) buffer = i;
        limit = max(limit, s_visible[i]);
      }
    }
    s_buffer[j] = buffer;
    s_load_limit[j] = buffer == j ? limit : 0;  // 0: this buffer is not loaded
  }
  __syncthreads();

  int cta_visible = 0;
#pragma unroll
  for (int i = 0; i < kTokensPerCta; ++i) cta_visible = max(cta_visible, s_visible[i]);
  const int tile_begin = blockIdx.x * tiles_per_cta;
  if (tile_begin * kTileKeys >= cta_visible) return;  // block-uniform
  const int tile_end = min(tile_begin + tiles_per_cta, (cta_visible + kTileKeys - 1) / kTileKeys);

  // This warp's rows: token j, heads h0 .. h0 + 31. A fragments (m16n8k16, row-major):
  // a[mi][ks] = {(g, 2c..2c+1), (g+8, 2c..), (g, 2c+8..), (g+8, 2c+8..)} of the 16 x 16 block.
  const int j = warp / (kHeads / 32);
  const int h0 = (warp % (kHeads / 32)) * 32;
  const int token = first_token + j;
  const int my_visible = s_visible[j];
  uint32_t a[2][kKSteps][4];
  float row_weight[2][2];  // rows h0 + 16 mi + g (+8)
  const float weight_scale = 1.0f / (sqrtf(static_cast<float>(kHeads)) * sqrtf(static_cast<float>(kDim)));
  if (my_visible > 0) {
    const float* q = p.q + (static_cast<int64_t>(token) * kHeads + h0) * kDim;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const float* r0 = q + (16 * mi + g) * kDim + 16 * ks + 2 * c;
        const float* r8 = r0 + 8 * kDim;
        const float2 x0 = *reinterpret_cast<const float2*>(r0);
        const float2 x1 = *reinterpret_cast<const float2*>(r8);
        const float2 x2 = *reinterpret_cast<const float2*>(r0 + 8);
        const float2 x3 = *reinterpret_cast<const float2*>(r8 + 8);
        a[mi][ks][0] = pack_bf16(x0.x, x0.y);
        a[mi][ks][1] = pack_bf16(x1.x, x1.y);
        a[mi][ks][2] = pack_bf16(x2.x, x2.y);
        a[mi][ks][3] = pack_bf16(x3.x, x3.y);
      }
      const float* w = p.head_weights + static_cast<int64_t>(token) * kHeads + h0 + 16 * mi;
      row_weight[mi][0] = w[g] * weight_scale;
      row_weight[mi][1] = w[g + 8] * weight_scale;
    }
  } else {
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) a[mi][ks][0] = a[mi][ks][1] = a[mi][ks][2] = a[mi][ks][3] = 0u;
      row_weight[mi][0] = row_weight[mi][1] = 0.0f;
    }
  }
  const __nv_bfloat16* my_keys = s_keys + s_buffer[j] * (kTileKeys * kRowStride);

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int base = tile * kTileKeys;
    __syncthreads();  // the previous tile's key and partial reads are done
    // Load: FP32 [64 keys][128] -> BF16 smem, 4 channels per thread per step, rows past the
    // buffer's limit zero (they may be beyond max_entries or uninitialised).
    for (int b = 0; b < kTokensPerCta; ++b) {
      const int limit = s_load_limit[b];
      if (limit <= base) continue;  // not loaded (block-uniform)
      const float* src = p.entries + (static_cast<int64_t>(s_slot[b]) * p.max_entries + base) * kDim;
      __nv_bfloat16* dst = s_keys + b * (kTileKeys * kRowStride);
      constexpr int kQuads = kTileKeys * kDim / 4;
      constexpr int kBatch = 4;  // float4 loads in flight per thread (registers: the q fragments stay live)
#pragma unroll
      for (int first = 0; first < kQuads / kThreads; first += kBatch) {
        float4 v[kBatch];
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
          const int quad = threadIdx.x + (first + i) * kThreads;
          const int row = quad / (kDim / 4);
          v[i] = base + row < limit ? reinterpret_cast<const float4*>(src)[quad] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
          const int quad = threadIdx.x + (first + i) * kThreads;
          const int row = quad / (kDim / 4), col = (quad % (kDim / 4)) * 4;
          uint2 packed;
          packed.x = pack_bf16(v[i].x, v[i].y);
          packed.y = pack_bf16(v[i].z, v[i].w);
          *reinterpret_cast<uint2*>(dst + row * kRowStride + col) = packed;
        }
      }
    }
    __syncthreads();

    if (base < my_visible) {  // warp-uniform
#pragma unroll 1
      for (int half = 0; half < 2; ++half) {
        float acc[2][4][4];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) {
            // B fragment (k16 x n8, col): b0 = key[n = g][k = 2c, 2c+1], b1 = key[g][2c+8, 2c+9].
            const __nv_bfloat16* key = my_keys + (32 * half + 8 * ni + g) * kRowStride + 16 * ks + 2 * c;
            const uint32_t b0 = *reinterpret_cast<const uint32_t*>(key);
            const uint32_t b1 = *reinterpret_cast<const uint32_t*>(key + 8);
            mma_bf16(acc[0][ni], a[0][ks], b0, b1);
            mma_bf16(acc[1][ni], a[1][ks], b0, b1);
          }
        }
        // C fragment: c0, c1 = row g, keys 2c, 2c+1; c2, c3 = row g+8. Sum the warp's 32 rows.
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
          for (int mi = 0; mi < 2; ++mi) {
            s0 += fmaxf(acc[mi][ni][0], 0.0f) * row_weight[mi][0];
            s1 += fmaxf(acc[mi][ni][1], 0.0f) * row_weight[mi][0];
            s0 += fmaxf(acc[mi][ni][2], 0.0f) * row_weight[mi][1];
            s1 += fmaxf(acc[mi][ni][3], 0.0f) * row_weight[mi][1];
          }
#pragma unroll
          for (int offset = 4; offset < 32; offset <<= 1) {
            s0 += __shfl_xor_sync(0xffffffffu, s0, offset);
            s1 += __shfl_xor_sync(0xffffffffu, s1, offset);
          }
          if (g == 0) {
            float* out = s_partial + warp * kTileKeys + 32 * half + 8 * ni + 2 * c;
            out[0] = s0;
            out[1] = s1;
          }
        }
      }
    }
    __syncthreads();
    // Combine the token's warps in a fixed order and store the visible keys.
    for (int i = threadIdx.x; i < kTokensPerCta * kTileKeys; i += kThreads) {
      const int jj = i / kTileKeys, k = i % kTileKeys;
      if (base + k >= s_visible[jj]) continue;
      const float* part = s_partial + jj * (kHeads / 32) * kTileKeys + k;
      float total = part[0];
#pragma unroll
      for (int w = 1; w < kHeads / 32; ++w) total += part[w * kTileKeys];
      p.scores[static_cast<int64_t>(first_token + jj) * p.max_entries + base + k] = total;
    }
  }
}

}  // namespace

namespace detail {

size_t indexer_mma_smem_bytes() {
  return static_cast<size_t>(kTokensPerCta) * kTileBytes + static_cast<size_t>(kWarps) * kTileKeys * sizeof(float);
}

cudaError_t launch_indexer_scores_mma(const IndexerParams& p, cudaStream_t stream) {
  const size_t smem = indexer_mma_smem_bytes();
  const cudaError_t attr_error = cudaFuncSetAttribute(
      indexer_scores_mma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (attr_error != cudaSuccess) return attr_error;
  const int groups = (p.batch.tokens + kTokensPerCta - 1) / kTokensPerCta;
  const int tiles = (p.max_entries + kTileKeys - 1) / kTileKeys;
  // Enough CTAs to fill the GPU (about 4 per SM on 132 SMs), at most 16 tiles (1024 keys)
  // per CTA so the q fragments are amortised over many keys.
  const int64_t jobs = static_cast<int64_t>(groups) * tiles;
  int tiles_per_cta = static_cast<int>((jobs + 527) / 528);
  tiles_per_cta = tiles_per_cta < 1 ? 1 : (tiles_per_cta > 16 ? 16 : tiles_per_cta);
  if (tiles_per_cta > tiles) tiles_per_cta = tiles;
  const int splits = (tiles + tiles_per_cta - 1) / tiles_per_cta;
  if (groups > 65535) return cudaErrorInvalidConfiguration;  // the dispatcher keeps tokens <= 4 * 65535
  indexer_scores_mma_kernel<<<dim3(splits, groups), kThreads, smem, stream>>>(p, tiles_per_cta);
  return cudaGetLastError();
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

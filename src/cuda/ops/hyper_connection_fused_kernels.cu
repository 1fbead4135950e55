// Fast mHC collapse / HyperHead with the following RMSNorm fused (cpu twins:
// cpu::hyper_collapse / hyper_head, then cpu::rms_norm). Same formulas as
// hyper_connection_kernels.cu (kept as the straightforward oracle), split in two kernels
// so that the mixing GEMM streams fn once per token tile and every SM takes part:
//
//   1. hyper_mix_partial_kernel, grid (chunks, token_tiles), 256 threads:
//        partial[c, t, m] = sum_{k in chunk c} streams[t, k] * fn[m, k]   (m < mix)
//        partial[c, t, mix] = sum_{k in chunk c} streams[t, k]^2
//      chunk c = flat columns [c KC, (c+1) KC). Decode (tokens <= 64): KC = 128, warp w
//      owns mix rows m0 + w + 8 r (r < 3), lane l columns 4 l + e, warp sums. Prefill
//      (hyper_mix_prefill_kernel): KC = 256, 64 tokens a block, lane = token.
//   2. hyper_finalize_kernel, one block per token: sums the chunks in a fixed order
//      (deterministic), mixes = inv_rms * dot (the CPU rounds x * inv_rms before the dot;
//      the difference is ~1 ulp per term, inside the tests' bounds), pre / post / comb
//      (Sinkhorn on one warp: lane j n + k owns comb[j, k]; every sum runs in the CPU's
//      order), collapsed[d] = sum_i pre[i] streams[t, i, d], then optional
//      x = w * (x * rsqrt(mean(x^2) + eps)) and an optional BF16 copy (round to nearest).
//
// Layouts: streams [tokens, n, hidden] = [tokens, flat]; fn [mix, flat];
// partial [chunks, tokens, mix + 1]; collapsed [tokens, hidden]; post [tokens, n];
// comb [tokens, n, n]. Argument checks: hyper_connection.cpp.
#include <cuda_bf16.h>

#include "cuda/ops/block_reduce.cuh"
#include "cuda/ops/kernels.h"

namespace dsv4::cuda::ops::detail {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = 3;                      // mix rows per warp per pass
constexpr int kRowsPerPass = kWarps * kRowsPerWarp;  // 24 = V4's (2 + 4) * 4
constexpr int kMaxStreams = kMaxHyperStreams;
constexpr int kMaxMix = (2 + kMaxStreams) * kMaxStreams;
static_assert(kThreads % 32 == 0 && kWarps == 8, "the token-to-warp map of the square sums assumes 8 warps");

// Decode (tokens <= kHyperDecodeTokens): KC = 128, 8 tokens a block, lane-over-columns
// with warp sums; prefill: hyper_mix_prefill_kernel (KC = 256, 64 tokens a block).
constexpr int kDecodeVec = 1, kDecodeTile = 8;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// 4 consecutive floats from p[k..k+4) with zeros past `limit`; vector load when allowed.
__device__ __forceinline__ float4 load4(const float* p, int64_t k, int64_t limit, bool vec) {
  if (vec && k + 3 < limit) return __ldg(reinterpret_cast<const float4*>(p + k));
  float4 r = make_float4(0.f, 0.f, 0.f, 0.f);
  if (k < limit) r.x = __ldg(p + k);
  if (k + 1 < limit) r.y = __ldg(p + k + 1);
  if (k + 2 < limit) r.z = __ldg(p + k + 2);
  if (k + 3 < limit) r.w = __ldg(p + k + 3);
  return r;
}

__device__ __forceinline__ float dot4(float acc, float4 a, float4 b) {
  acc += a.x * b.x;
  acc += a.y * b.y;
  acc += a.z * b.z;
  acc += a.w * b.w;
  return acc;
}

template <int kVec, int kTile>
__global__ void __launch_bounds__(kThreads) hyper_mix_partial_kernel(const float* __restrict__ fn,
                                                                      const float* __restrict__ streams, int tokens,
                                                                      int64_t flat, int mix, bool vec,
                                                                      float* __restrict__ partial) {
  constexpr int kChunk = 128 * kVec;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int chunk = blockIdx.x;
  const int t0 = blockIdx.y * kTile;
  const int64_t k0 = static_cast<int64_t>(chunk) * kChunk;
  const int stride = mix + 1;
  for (int m0 = 0; m0 < mix; m0 += kRowsPerPass) {
    float4 rf[kRowsPerWarp][kVec];  // fn[m, chunk columns of this lane]
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int m = m0 + warp + kWarps * r;
#pragma unroll
      for (int v = 0; v < kVec; ++v)
        rf[r][v] = m < mix ? load4(fn + static_cast<int64_t>(m) * flat, k0 + 4 * (v * 32 + lane), flat, vec)
                           : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float acc[kRowsPerWarp][kTile];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int i = 0; i < kTile; ++i) acc[r][i] = 0.0f;
#pragma unroll
    for (int i = 0; i < kTile; ++i) {
      const int t = t0 + i;
      if (t >= tokens) break;  // uniform over the block
      const float* row = streams + static_cast<int64_t>(t) * flat;
      float4 rx[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) rx[v] = load4(row, k0 + 4 * (v * 32 + lane), flat, vec);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
        for (int v = 0; v < kVec; ++v) acc[r][i] = dot4(acc[r][i], rx[v], rf[r][v]);
      if (m0 == 0 && (i % kWarps) == warp) {  // square sum of token t over the chunk
        float sq = 0.0f;
#pragma unroll
        for (int v = 0; v < kVec; ++v) sq = dot4(sq, rx[v], rx[v]);
        sq = warp_sum(sq);
        if (lane == 0) partial[(static_cast<int64_t>(chunk) * tokens + t) * stride + mix] = sq;
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int m = m0 + warp + kWarps * r;
#pragma unroll
      for (int i = 0; i < kTile; ++i) {
        const int t = t0 + i;
        if (t >= tokens) break;  // uniform over the block
        const float sum = warp_sum(acc[r][i]);
        if (lane == 0 && m < mix && t < tokens)
          partial[(static_cast<int64_t>(chunk) * tokens + t) * stride + m] = sum;
      }
    }
  }
}

// Prefill tiling: block = 64 tokens x 256 columns, lane l owns tokens t0 + l and
// t0 + 32 + l (no cross-lane sums), warp w columns [32 w, 32 w + 32) of the chunk; fn's
// chunk rows are staged in shared memory (warp-uniform broadcast reads), the 8 warps'
// partials summed through shared memory in warp order. Same partial layout as above.
constexpr int kPrefillChunk = 256, kPrefillTokens = 64;
constexpr int kWarpColumns = kPrefillChunk / kWarps;  // 32
static_assert(kWarpColumns % 4 == 0, "float4 steps");
__global__ void __launch_bounds__(kThreads) hyper_mix_prefill_kernel(const float* __restrict__ fn,
                                                                     const float* __restrict__ streams, int tokens,
                                                                     int64_t flat, int mix, bool vec,
                                                                     float* __restrict__ partial) {
  constexpr int kSlots = kRowsPerPass + 1;  // 24 mix rows + the square sum
  // s_fn [24, 256] during the products, then s_acc [8 warps, 25 slots, 32 tokens] for
  // each half of the token tile in turn (one buffer: 25.6 KB, two blocks per SM).
  constexpr int kFnFloats = kRowsPerPass * kPrefillChunk, kAccFloats = kWarps * kSlots * 32;
  __shared__ __align__(16) float s_buf[kFnFloats > kAccFloats ? kFnFloats : kAccFloats];
  float(*s_fn)[kPrefillChunk] = reinterpret_cast<float(*)[kPrefillChunk]>(s_buf);
  float(*s_acc)[kSlots][32] = reinterpret_cast<float(*)[kSlots][32]>(s_buf);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int chunk = blockIdx.x;
  const int t0 = blockIdx.y * kPrefillTokens;
  const int64_t k0 = static_cast<int64_t>(chunk) * kPrefillChunk;
  const int stride = mix + 1;
  const int ta = t0 + lane, tb = t0 + 32 + lane;
  const float* row_a = streams + static_cast<int64_t>(ta < tokens ? ta : 0) * flat;
  const float* row_b = streams + static_cast<int64_t>(tb < tokens ? tb : 0) * flat;
  for (int m0 = 0; m0 < mix; m0 += kRowsPerPass) {
    __syncthreads();  // s_fn / s_acc of the previous pass are consumed
    for (int idx = threadIdx.x; idx < kRowsPerPass * (kPrefillChunk / 4); idx += kThreads) {
      const int r = idx / (kPrefillChunk / 4), c4 = idx % (kPrefillChunk / 4);
      const int m = m0 + r;
      const float4 v = m < mix ? load4(fn + static_cast<int64_t>(m) * flat, k0 + 4 * c4, flat, vec)
                               : make_float4(0.f, 0.f, 0.f, 0.f);
      *reinterpret_cast<float4*>(&s_fn[r][4 * c4]) = v;
    }
    __syncthreads();
    float acc_a[kSlots], acc_b[kSlots];
#pragma unroll
    for (int r = 0; r < kSlots; ++r) acc_a[r] = acc_b[r] = 0.0f;
#pragma unroll 2
    for (int s = 0; s < kWarpColumns / 4; ++s) {
      const int c = warp * kWarpColumns + 4 * s;
      const float4 xa = ta < tokens ? load4(row_a, k0 + c, flat, vec) : make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 xb = tb < tokens ? load4(row_b, k0 + c, flat, vec) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int r = 0; r < kRowsPerPass; ++r) {
        const float4 f = *reinterpret_cast<const float4*>(&s_fn[r][c]);
        acc_a[r] = dot4(acc_a[r], xa, f);
        acc_b[r] = dot4(acc_b[r], xb, f);
      }
      acc_a[kRowsPerPass] = dot4(acc_a[kRowsPerPass], xa, xa);
      acc_b[kRowsPerPass] = dot4(acc_b[kRowsPerPass], xb, xb);
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      __syncthreads();  // s_fn (half 0) or the first half's s_acc is consumed
#pragma unroll
      for (int r = 0; r < kSlots; ++r) s_acc[warp][r][lane] = half == 0 ? acc_a[r] : acc_b[r];
      __syncthreads();
      for (int idx = threadIdx.x; idx < kSlots * 32; idx += kThreads) {
        const int r = idx / 32, i = idx % 32;
        const int t = t0 + 32 * half + i;
        const int m = r < kRowsPerPass ? m0 + r : mix;  // slot 24: the square sum, pass 0 only
        if (t >= tokens || (r < kRowsPerPass && m >= mix) || (r == kRowsPerPass && m0 != 0)) continue;
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) sum += s_acc[w][r][i];
        partial[(static_cast<int64_t>(chunk) * tokens + t) * stride + m] = sum;
      }
    }
  }
}

// Serial Sinkhorn of comb [n, n] in shared memory (n * n > 32), exactly the CPU's order.
__device__ void sinkhorn_serial(float* comb, int n, int iters, float eps) {
  for (int j = 0; j < n; ++j) {
    float* row = comb + j * n;
    float max_value = -INFINITY;
    for (int k = 0; k < n; ++k) max_value = fmaxf(max_value, row[k]);
    float sum = 0.0f;
    for (int k = 0; k < n; ++k) {
      row[k] = expf(row[k] - max_value);
      sum += row[k];
    }
    for (int k = 0; k < n; ++k) row[k] /= sum;
    for (int k = 0; k < n; ++k) row[k] += eps;
  }
  for (int it = 0; it < iters; ++it) {
    if (it > 0) {
      for (int j = 0; j < n; ++j) {
        float sum = 0.0f;
        for (int k = 0; k < n; ++k) sum += comb[j * n + k];
        for (int k = 0; k < n; ++k) comb[j * n + k] /= (sum + eps);
      }
    }
    for (int k = 0; k < n; ++k) {
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) sum += comb[j * n + k];
      for (int j = 0; j < n; ++j) comb[j * n + k] /= (sum + eps);
    }
  }
}

// Sinkhorn on one warp (n * n <= 32): lane l = j n + k holds comb[j, k]; returns it.
// Every lane of the warp must call it; lanes >= n * n return garbage.
__device__ float sinkhorn_warp(float value, int n, int iters, float eps) {
  const int lane = threadIdx.x & 31;
  const bool owner = lane < n * n;
  const int j = owner ? lane / n : 0, k = owner ? lane % n : 0;
  float max_value = -INFINITY;
  for (int q = 0; q < n; ++q) max_value = fmaxf(max_value, __shfl_sync(0xffffffffu, value, j * n + q));
  value = expf(value - max_value);
  float sum = 0.0f;
  for (int q = 0; q < n; ++q) sum += __shfl_sync(0xffffffffu, value, j * n + q);
  value /= sum;
  value += eps;
  for (int it = 0; it < iters; ++it) {
    if (it > 0) {
      sum = 0.0f;
      for (int q = 0; q < n; ++q) sum += __shfl_sync(0xffffffffu, value, j * n + q);
      value /= (sum + eps);
    }
    sum = 0.0f;
    for (int q = 0; q < n; ++q) sum += __shfl_sync(0xffffffffu, value, q * n + k);
    value /= (sum + eps);
  }
  return value;
}

template <bool kHead>
__global__ void __launch_bounds__(kThreads) hyper_finalize_kernel(HyperWeights weights, HyperShape shape,
                                                                   const float* __restrict__ streams,
                                                                   const float* __restrict__ partial, int chunks,
                                                                   int tokens, const float* __restrict__ norm_weight,
                                                                   float norm_eps, bool vec, float* collapsed,
                                                                   __nv_bfloat16* collapsed_bf16, float* post,
                                                                   float* comb) {
  __shared__ float scratch[32];
  __shared__ float warp_sums[kWarps][kMaxMix + 1];
  __shared__ float mixes[kMaxMix + 1];
  __shared__ float pre[kMaxStreams];
  const int n = shape.n;
  const int64_t hidden = shape.hidden, flat = n * hidden;
  const int mix = kHead ? n : (2 + n) * n, stride = mix + 1;
  const int t = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // Chunk sums: warp w adds chunks w, w + 8, ... in order, then the 8 partials in order.
  for (int m = lane; m < stride; m += 32) {
    float sum = 0.0f;
#pragma unroll 4  // loads issued ahead; the adds stay in chunk order
    for (int c = warp; c < chunks; c += kWarps) sum += partial[(static_cast<int64_t>(c) * tokens + t) * stride + m];
    warp_sums[warp][m] = sum;
  }
  __syncthreads();
  if (threadIdx.x < stride) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) sum += warp_sums[w][threadIdx.x];
    mixes[threadIdx.x] = sum;
  }
  __syncthreads();
  const float inv = 1.0f / sqrtf(mixes[mix] / static_cast<float>(flat) + shape.rms_eps);

  const float* base = weights.base;
  const float* scale = weights.scale;
  if (warp == 0 && lane < n) {
    pre[lane] = sigmoid((mixes[lane] * inv) * scale[0] + base[lane]) + shape.hc_eps;
    if (!kHead)
      post[static_cast<int64_t>(t) * n + lane] = 2.0f * sigmoid((mixes[n + lane] * inv) * scale[1] + base[n + lane]);
  }
  __syncthreads();  // pre visible to every warp
  // A sublayer site: warp 0 runs Sinkhorn (a serial chain of ~2 sinkhorn_iters shuffle
  // rounds) WHILE warps 1..7 collapse; the head has no Sinkhorn, all 8 warps collapse.
  if (warp == 0) {
    if (!kHead) {
      float* token_comb = comb + static_cast<int64_t>(t) * n * n;
      if (n * n <= 32) {
        const int l = lane < n * n ? lane : 0;
        const float logit = (mixes[2 * n + l] * inv) * scale[2] + base[2 * n + l];
        const float value = sinkhorn_warp(logit, n, shape.sinkhorn_iters, shape.hc_eps);
        if (lane < n * n) token_comb[lane] = value;
      } else {
        __syncwarp();
        if (lane == 0) {
          float* logits = mixes + 2 * n;  // in place; mixes[mix] (square sum) already read
          for (int jk = 0; jk < n * n; ++jk) logits[jk] = (logits[jk] * inv) * scale[2] + base[2 * n + jk];
          sinkhorn_serial(logits, n, shape.sinkhorn_iters, shape.hc_eps);
          for (int jk = 0; jk < n * n; ++jk) token_comb[jk] = logits[jk];
        }
      }
    }
  }

  // collapsed[t, d] = sum_i pre[i] streams[t, i, d], then the fused RMSNorm. Each thread
  // re-reads only the elements it wrote. Workers: threads [first, kThreads).
  const int first = kHead ? 0 : 32;
  const int worker = static_cast<int>(threadIdx.x) - first, workers = kThreads - first;
  const float* token_streams = streams + static_cast<int64_t>(t) * flat;
  float* out = collapsed + static_cast<int64_t>(t) * hidden;
  float sum_squares = 0.0f;
  const bool vec_hidden = vec && hidden % 4 == 0;
  if (vec_hidden) {
    for (int64_t d = 4 * worker; worker >= 0 && d < hidden; d += 4 * workers) {
      float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int i = 0; i < n; ++i) {
        const float4 x = __ldg(reinterpret_cast<const float4*>(token_streams + i * hidden + d));
        s.x += pre[i] * x.x;
        s.y += pre[i] * x.y;
        s.z += pre[i] * x.z;
        s.w += pre[i] * x.w;
      }
      sum_squares = dot4(sum_squares, s, s);
      *reinterpret_cast<float4*>(out + d) = s;
    }
  } else {
    for (int64_t d = worker; worker >= 0 && d < hidden; d += workers) {
      float s = 0.0f;
      for (int i = 0; i < n; ++i) s += pre[i] * token_streams[i * hidden + d];
      sum_squares += s * s;
      out[d] = s;
    }
  }
  if (norm_weight == nullptr && collapsed_bf16 == nullptr) return;  // uniform over the block
  float norm_inv = 1.0f;
  if (norm_weight != nullptr) {
    sum_squares = block_sum(sum_squares, scratch);
    norm_inv = 1.0f / sqrtf(sum_squares / static_cast<float>(hidden) + norm_eps);
  }
  __nv_bfloat16* out_bf16 = collapsed_bf16 ? collapsed_bf16 + static_cast<int64_t>(t) * hidden : nullptr;
  if (vec_hidden) {
    for (int64_t d = 4 * worker; worker >= 0 && d < hidden; d += 4 * workers) {
      float4 s = *reinterpret_cast<const float4*>(out + d);
      if (norm_weight != nullptr) {
        const float4 w = __ldg(reinterpret_cast<const float4*>(norm_weight + d));
        s.x = w.x * (s.x * norm_inv);
        s.y = w.y * (s.y * norm_inv);
        s.z = w.z * (s.z * norm_inv);
        s.w = w.w * (s.w * norm_inv);
        *reinterpret_cast<float4*>(out + d) = s;
      }
      if (out_bf16 != nullptr) {
        out_bf16[d] = __float2bfloat16_rn(s.x);
        out_bf16[d + 1] = __float2bfloat16_rn(s.y);
        out_bf16[d + 2] = __float2bfloat16_rn(s.z);
        out_bf16[d + 3] = __float2bfloat16_rn(s.w);
      }
    }
  } else {
    for (int64_t d = worker; worker >= 0 && d < hidden; d += workers) {
      float v = out[d];
      if (norm_weight != nullptr) {
        v = norm_weight[d] * (v * norm_inv);
        out[d] = v;
      }
      if (out_bf16 != nullptr) out_bf16[d] = __float2bfloat16_rn(v);
    }
  }
}

// Expand, one block row per token: blockIdx.y = t, x covers hidden in float4 (or scalar).
// streams [tokens, n, hidden] in place; post [tokens, n]; comb [tokens, n, n];
// output [tokens, hidden]. Thread owns columns d of every stream of token t. kN is the
// stream count at compile time (register arrays; other counts use hyper_expand_kernel).
template <int kN>
__global__ void __launch_bounds__(kThreads) hyper_expand_fast_kernel(const float* __restrict__ post,
                                                                      const float* __restrict__ comb, int64_t hidden,
                                                                      const float* __restrict__ output, bool vec,
                                                                      float* streams) {
  __shared__ float s_comb[kN * kN];
  __shared__ float s_post[kN];
  const int64_t t = blockIdx.y;
  if (threadIdx.x < kN * kN) s_comb[threadIdx.x] = comb[t * kN * kN + threadIdx.x];
  if (threadIdx.x < kN) s_post[threadIdx.x] = post[t * kN + threadIdx.x];
  __syncthreads();
  float* token_streams = streams + t * kN * hidden;
  const float* out_row = output + t * hidden;
  if (vec) {
    const int64_t d = 4 * (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x);
    if (d >= hidden) return;
    float4 old[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) old[j] = *reinterpret_cast<const float4*>(token_streams + j * hidden + d);
    const float4 o = __ldg(reinterpret_cast<const float4*>(out_row + d));
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        const float c = s_comb[j * kN + k];
        s.x += c * old[j].x;
        s.y += c * old[j].y;
        s.z += c * old[j].z;
        s.w += c * old[j].w;
      }
      const float p = s_post[k];
      float4 r;
      r.x = p * o.x + s.x;
      r.y = p * o.y + s.y;
      r.z = p * o.z + s.z;
      r.w = p * o.w + s.w;
      *reinterpret_cast<float4*>(token_streams + k * hidden + d) = r;
    }
  } else {
    const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (d >= hidden) return;
    float old[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) old[j] = token_streams[j * hidden + d];
    const float o = out_row[d];
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      float s = 0.0f;
#pragma unroll
      for (int j = 0; j < kN; ++j) s += s_comb[j * kN + k] * old[j];
      token_streams[k * hidden + d] = s_post[k] * o + s;
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

struct MixPlan {
  bool decode;
  int chunks, tiles;
};
MixPlan plan_mix(int64_t flat, int tokens) {
  MixPlan p;
  p.decode = tokens <= kHyperDecodeTokens;
  const int chunk = p.decode ? 128 * kDecodeVec : kPrefillChunk;
  const int tile = p.decode ? kDecodeTile : kPrefillTokens;
  p.chunks = static_cast<int>((flat + chunk - 1) / chunk);
  p.tiles = (tokens + tile - 1) / tile;
  return p;
}

}  // namespace

int64_t hyper_partial_floats(const HyperShape& shape, int tokens, bool head) {
  if (tokens <= 0) return 0;
  const int64_t flat = static_cast<int64_t>(shape.n) * shape.hidden;
  const int mix = head ? shape.n : (2 + shape.n) * shape.n;
  return static_cast<int64_t>(plan_mix(flat, tokens).chunks) * tokens * (mix + 1);
}

cudaError_t launch_hyper_collapse_fused(const HyperWeights& weights, const HyperShape& shape, const float* streams,
                                        int tokens, const float* norm_weight, float norm_eps, float* partial,
                                        float* collapsed, uint16_t* collapsed_bf16, float* post, float* comb,
                                        bool head, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  const int64_t flat = static_cast<int64_t>(shape.n) * shape.hidden;
  const int mix = head ? shape.n : (2 + shape.n) * shape.n;
  const bool vec = flat % 4 == 0 && aligned16(streams) && aligned16(weights.fn);
  const MixPlan plan = plan_mix(flat, tokens);
  const dim3 grid(static_cast<unsigned>(plan.chunks), static_cast<unsigned>(plan.tiles));
  if (plan.decode)
    hyper_mix_partial_kernel<kDecodeVec, kDecodeTile>
        <<<grid, kThreads, 0, stream>>>(weights.fn, streams, tokens, flat, mix, vec, partial);
  else
    hyper_mix_prefill_kernel<<<grid, kThreads, 0, stream>>>(weights.fn, streams, tokens, flat, mix, vec, partial);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const bool vec_out = vec && aligned16(collapsed) && (norm_weight == nullptr || aligned16(norm_weight));
  if (head)
    hyper_finalize_kernel<true><<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(
        weights, shape, streams, partial, plan.chunks, tokens, norm_weight, norm_eps, vec_out, collapsed,
        reinterpret_cast<__nv_bfloat16*>(collapsed_bf16), nullptr, nullptr);
  else
    hyper_finalize_kernel<false><<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(
        weights, shape, streams, partial, plan.chunks, tokens, norm_weight, norm_eps, vec_out, collapsed,
        reinterpret_cast<__nv_bfloat16*>(collapsed_bf16), post, comb);
  return cudaGetLastError();
}

cudaError_t launch_hyper_expand_fast(const float* post, const float* comb, const HyperShape& shape,
                                     const float* output, int tokens, float* streams, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  const int64_t hidden = shape.hidden;
  const bool vec = hidden % 4 == 0 && aligned16(output) && aligned16(streams);
  const int64_t per_block = vec ? 4 * kThreads : kThreads;
  const dim3 grid(static_cast<unsigned>((hidden + per_block - 1) / per_block), static_cast<unsigned>(tokens));
  hyper_expand_fast_kernel<kHyperFastExpandStreams>
      <<<grid, kThreads, 0, stream>>>(post, comb, hidden, output, vec, streams);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

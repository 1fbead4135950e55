// Router: FP32 gate scores (one warp per expert, or 4 warps per expert up to 64 tokens;
// 8 tokens per CTA row; x in BF16 or, when RouterParams::x_f32 is set, FP32), then top-k
// per token (one warp per token, route_topk.cuh) or hash routing through tid2eid.
#include <cuda_bf16.h>

#include <cfloat>

#include "cuda/moe/moe.h"
#include "cuda/moe/route_topk.cuh"

namespace dsv4::cuda::moe {

namespace {

constexpr int kScoreTokens = 8;   // tokens per CTA (x rows stay in L1 across the 8 warps)
constexpr int kScoreWarps = 8;    // warps per CTA: kScoreWarps / kParts experts x kParts K parts
using detail::kMaxExpertsPerLane;
// Decode (tokens <= kSplitScoreTokens): each expert row split over 4 warps (128-column
// chunks dealt round-robin), so 4x more CTAs stream the 4 MB gate matrix (128 CTAs at
// 256 experts instead of 32) and each warp has all its loads in flight at once.
constexpr int kSplitScoreParts = 4;
constexpr int kSplitScoreTokens = 64;

// scores[t][e] = sqrt(softplus(x[t] . gate[e])) in FP32; x read as BF16 or FP32.
// kParts warps share one expert row (K chunks of 128 dealt round-robin); their partial
// dots meet in shared memory and are added in part order 0, 1, ... (deterministic).
// kParts = 1: one warp per expert, no shared memory.
template <bool kF32, int kParts>
__global__ void __launch_bounds__(256) router_scores_kernel(const RouterParams p) {
  constexpr int kExpertsPerCta = kScoreWarps / kParts;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int expert = blockIdx.x * kExpertsPerCta + warp / kParts;
  const int part = warp % kParts;
  const int t0 = blockIdx.y * kScoreTokens;
  // The fused top-k + dispatch (launch_route_dispatch, PDL) may be scheduled now: its one
  // CTA waits in griddepcontrol.wait for this grid's scores (a no-op trigger otherwise).
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  if (kParts == 1 && expert >= p.experts) return;
  const bool active = expert < p.experts;
  float acc[kScoreTokens] = {};
  const float* w_row = p.gate_weight + static_cast<int64_t>(active ? expert : 0) * p.hidden;
  // Unrolled so that several 512-byte row segments are in flight per warp (at one
  // token the kernel is a latency-bound stream of the 4 MB gate matrix).
#pragma unroll 8
  for (int k = part * 128 + lane * 4; active && k < p.hidden; k += 128 * kParts) {
    const float4 w = *reinterpret_cast<const float4*>(w_row + k);
#pragma unroll
    for (int i = 0; i < kScoreTokens; ++i) {
      if (t0 + i < p.tokens) {
        float4 xv;
        if constexpr (kF32) {
          xv = *reinterpret_cast<const float4*>(p.x_f32 + static_cast<int64_t>(t0 + i) * p.hidden + k);
        } else {
          const uint2 xb = *reinterpret_cast<const uint2*>(p.x + static_cast<int64_t>(t0 + i) * p.hidden + k);
          const float2 x01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xb.x));
          const float2 x23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xb.y));
          xv = make_float4(x01.x, x01.y, x23.x, x23.y);
        }
        acc[i] += w.x * xv.x + w.y * xv.y + w.z * xv.z + w.w * xv.w;
      }
    }
  }
  if constexpr (kParts == 1) {
#pragma unroll
    for (int i = 0; i < kScoreTokens; ++i) {
      float v = acc[i];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
      if (lane == 0 && t0 + i < p.tokens) {
        const float softplus = v > 20.0f ? v : log1pf(expf(v));  // torch softplus, threshold 20
        p.scores[static_cast<int64_t>(t0 + i) * p.experts + expert] = sqrtf(softplus);
      }
    }
  } else {
    __shared__ float partial[kScoreWarps][kScoreTokens];
#pragma unroll
    for (int i = 0; i < kScoreTokens; ++i) {
      float v = acc[i];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
      if (lane == 0) partial[warp][i] = v;
    }
    __syncthreads();
    const int tid = threadIdx.x;
    if (tid < kExpertsPerCta * kScoreTokens) {
      const int le = tid / kScoreTokens, i = tid % kScoreTokens;
      const int e = blockIdx.x * kExpertsPerCta + le;
      if (e < p.experts && t0 + i < p.tokens) {
        float v = partial[le * kParts][i];
#pragma unroll
        for (int q = 1; q < kParts; ++q) v += partial[le * kParts + q][i];
        const float softplus = v > 20.0f ? v : log1pf(expf(v));  // torch softplus, threshold 20
        p.scores[static_cast<int64_t>(t0 + i) * p.experts + e] = sqrtf(softplus);
      }
    }
  }
}

// One warp per token.
__global__ void __launch_bounds__(256) router_topk_kernel(const RouterParams p) {
  const int token = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (token >= p.tokens) return;
  detail::route_topk_token(p, token, threadIdx.x & 31);
}

}  // namespace

namespace detail {

cudaError_t check_router(const RouterParams& p) {
  if (p.hidden % 128 != 0 || p.experts > 32 * kMaxExpertsPerLane || p.top_k > 8 || p.top_k > p.experts)
    return cudaErrorInvalidValue;
  if (p.tid2eid == nullptr && p.gate_bias == nullptr) return cudaErrorInvalidValue;
  if (p.x == nullptr && p.x_f32 == nullptr) return cudaErrorInvalidValue;
  return cudaSuccess;
}

// The scores kernel alone (moe_forward's fused decode path runs top-k inside dispatch).
cudaError_t launch_router_scores(const RouterParams& p) {
  const bool split = p.split_rows && p.tokens <= kSplitScoreTokens;
  const int experts_per_cta = split ? kScoreWarps / kSplitScoreParts : kScoreWarps;
  const dim3 score_grid((p.experts + experts_per_cta - 1) / experts_per_cta, (p.tokens + kScoreTokens - 1) / kScoreTokens);
  if (p.x_f32 != nullptr) {
    if (split)
      router_scores_kernel<true, kSplitScoreParts><<<score_grid, 256, 0, p.stream>>>(p);
    else
      router_scores_kernel<true, 1><<<score_grid, 256, 0, p.stream>>>(p);
  } else {
    if (split)
      router_scores_kernel<false, kSplitScoreParts><<<score_grid, 256, 0, p.stream>>>(p);
    else
      router_scores_kernel<false, 1><<<score_grid, 256, 0, p.stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace detail

cudaError_t launch_router(const RouterParams& p) {
  if (p.tokens == 0) return cudaSuccess;
  cudaError_t err = detail::check_router(p);
  if (err != cudaSuccess) return err;
  if ((err = detail::launch_router_scores(p)) != cudaSuccess) return err;
  router_topk_kernel<<<(p.tokens + 7) / 8, 256, 0, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe

// Router: FP32 gate scores (one warp per expert, 8 tokens per CTA row; x in BF16 or,
// when RouterParams::x_f32 is set, FP32), then top-k
// per token (one warp per token) or hash routing through tid2eid.
#include <cuda_bf16.h>

#include <cfloat>

#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe {

namespace {

constexpr int kScoreTokens = 8;   // tokens per CTA (x rows stay in L1 across the 8 warps)
constexpr int kScoreExperts = 8;  // experts per CTA, one per warp
constexpr int kMaxExpertsPerLane = 8;

// scores[t][e] = sqrt(softplus(x[t] . gate[e])) in FP32; x read as BF16 or FP32.
template <bool kF32>
__global__ void __launch_bounds__(256) router_scores_kernel(const RouterParams p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int expert = blockIdx.x * kScoreExperts + warp;
  const int t0 = blockIdx.y * kScoreTokens;
  if (expert >= p.experts) return;
  float acc[kScoreTokens] = {};
  const float* w_row = p.gate_weight + static_cast<int64_t>(expert) * p.hidden;
  // Unrolled so that several 512-byte row segments are in flight per warp (at one
  // token the kernel is a latency-bound stream of the 4 MB gate matrix).
#pragma unroll 8
  for (int k = lane * 4; k < p.hidden; k += 128) {
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
}

// One warp per token: selection on score + bias (or tid2eid), weights from the scores.
__global__ void __launch_bounds__(256) router_topk_kernel(const RouterParams p) {
  const int lane = threadIdx.x & 31;
  const int token = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (token >= p.tokens) return;
  const float* scores = p.scores + static_cast<int64_t>(token) * p.experts;
  int32_t* ids = p.topk_ids + static_cast<int64_t>(token) * p.top_k;
  float* weights = p.topk_weights + static_cast<int64_t>(token) * p.top_k;

  int picked = -1;  // lane k < top_k holds pick k
  if (p.tid2eid != nullptr) {
    const int32_t id = p.token_ids[token];
    const bool id_ok = id >= 0 && id < p.vocab_size;
    if (!id_ok && lane == 0) atomicOr(p.error_flag, kErrorTokenIdOutOfRange);
    if (id_ok && lane < p.top_k) {
      picked = p.tid2eid[static_cast<int64_t>(id) * p.top_k + lane];
      if (picked < 0 || picked >= p.experts) {
        atomicOr(p.error_flag, kErrorExpertOutOfRange);
        picked = -1;
      }
    }
  } else {
    float biased[kMaxExpertsPerLane];
#pragma unroll
    for (int i = 0; i < kMaxExpertsPerLane; ++i) {
      const int e = lane + 32 * i;
      biased[i] = e < p.experts ? scores[e] + p.gate_bias[e] : -FLT_MAX;
    }
    for (int k = 0; k < p.top_k; ++k) {
      float best = -FLT_MAX;
      int best_e = 0x7fffffff;
#pragma unroll
      for (int i = 0; i < kMaxExpertsPerLane; ++i) {
        const int e = lane + 32 * i;
        if (e < p.experts && (biased[i] > best || (biased[i] == best && e < best_e))) {
          best = biased[i];
          best_e = e;
        }
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, best, offset);
        const int other_e = __shfl_xor_sync(0xffffffffu, best_e, offset);
        if (other > best || (other == best && other_e < best_e)) {
          best = other;
          best_e = other_e;
        }
      }
      if (best_e >= p.experts) best_e = -1;  // fewer valid experts than top_k
      if (lane == k) picked = best_e;
#pragma unroll
      for (int i = 0; i < kMaxExpertsPerLane; ++i)
        if (lane + 32 * i == best_e) biased[i] = -INFINITY;  // below every candidate
    }
  }
  const float score = picked >= 0 ? scores[picked] : 0.0f;
  // Sum in k order on lane 0, as the reference does.
  float sum = 0.0f;
  for (int k = 0; k < p.top_k; ++k) sum += __shfl_sync(0xffffffffu, score, k);
  if (lane < p.top_k) {
    ids[lane] = picked;
    weights[lane] = picked >= 0 ? score / (sum + 1e-20f) * p.routed_scaling_factor : 0.0f;
  }
}

}  // namespace

cudaError_t launch_router(const RouterParams& p) {
  if (p.tokens == 0) return cudaSuccess;
  if (p.hidden % 128 != 0 || p.experts > 32 * kMaxExpertsPerLane || p.top_k > 8 || p.top_k > p.experts)
    return cudaErrorInvalidValue;
  if (p.tid2eid == nullptr && p.gate_bias == nullptr) return cudaErrorInvalidValue;
  if (p.x == nullptr && p.x_f32 == nullptr) return cudaErrorInvalidValue;
  const dim3 score_grid((p.experts + kScoreExperts - 1) / kScoreExperts, (p.tokens + kScoreTokens - 1) / kScoreTokens);
  if (p.x_f32 != nullptr)
    router_scores_kernel<true><<<score_grid, 256, 0, p.stream>>>(p);
  else
    router_scores_kernel<false><<<score_grid, 256, 0, p.stream>>>(p);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  router_topk_kernel<<<(p.tokens + 7) / 8, 256, 0, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe

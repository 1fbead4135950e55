// Top-k routing of one token by one warp (shared by router.cu's top-k kernel and
// dispatch.cu's fused top-k + dispatch kernel): selection on score + bias (or tid2eid),
// weights from the scores, summed in k order as the reference does.
#pragma once
#include <cfloat>

#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {

inline constexpr int kMaxExpertsPerLane = 8;  // experts <= 32 * kMaxExpertsPerLane

__device__ __forceinline__ void route_topk_token(const RouterParams& p, int token, int lane) {
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


}  // namespace dsv4::cuda::moe::detail

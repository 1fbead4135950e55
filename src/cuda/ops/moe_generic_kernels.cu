// Generic MoE kernels (cpu twins: cpu::route / expert_forward / moe_forward in
// src/cpu/moe.cpp): FP32 routing and experts with weights decoded on the fly, any
// stored format, any shape. Correctness first: one block row per (token, slot) pair.
//
// Tensors (slots = top_k + 1; slot k < top_k = routed pick k, slot top_k = shared):
//   x        [tokens, hidden]                 FP32 input (after ffn_norm)
//   scores   [tokens, experts]                raw logits in, sqrt(softplus()) out
//   topk_ids [tokens, top_k], topk_weights [tokens, top_k]
//   act      [tokens, slots, intermediate]    silu(min(g, L)) * clamp(u, -L, L)
//   contrib  [tokens, slots, hidden]          weight * (act @ W2^T)
//   out      [tokens, hidden]                 sum_k contrib[k] (k order) + contrib[shared]
// Argument checks and the workspace carve: moe_generic.cpp.
#include "cuda/ops/block_reduce.cuh"
#include "cuda/ops/kernels.h"
#include "cuda/ops/weight_decode.cuh"

namespace dsv4::cuda::ops::detail {

namespace {

constexpr int kRouteThreads = 128;
constexpr int kWarpsPerBlock = 8;  // expert kernels: one warp per output row
constexpr int kExpertThreads = 32 * kWarpsPerBlock;
constexpr int kElementThreads = 256;

// torch softplus (beta 1, threshold 20), as cpu::softplus.
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// Strict order of the selection: a before b when its biased score is larger, ties to
// the lower id (cpu: partial_sort with the same comparator).
__device__ __forceinline__ bool ranks_before(float a_value, int a_id, float b_value, int b_id) {
  return a_value > b_value || (a_value == b_value && a_id < b_id);
}

// One thread per token.
__global__ void route_kernel(MoeGenericParams p) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= p.tokens) return;
  float* scores = p.scratch.scores + static_cast<int64_t>(t) * p.experts;
  int32_t* ids = p.scratch.topk_ids + static_cast<int64_t>(t) * p.top_k;
  float* weights = p.scratch.topk_weights + static_cast<int64_t>(t) * p.top_k;
  for (int e = 0; e < p.experts; ++e) scores[e] = sqrtf(softplus(scores[e]));

  bool failed = false;
  if (p.tid2eid != nullptr) {
    const int32_t id = p.token_ids[t];
    const bool id_ok = id >= 0 && id < p.vocab_size;
    for (int k = 0; k < p.top_k; ++k) {
      int32_t e = id_ok ? p.tid2eid[static_cast<int64_t>(id) * p.top_k + k] : -1;
      if (e < 0 || e >= p.experts) e = -1;
      failed |= e < 0;
      ids[k] = e;
    }
  } else {
    // Pick k = the best expert ranking after pick k-1 (no storage of the picked set).
    for (int k = 0; k < p.top_k; ++k) ids[k] = -1;
    float last_value = 0.0f;
    int last_id = -1;
    for (int k = 0; k < p.top_k; ++k) {
      int best = -1;
      float best_value = 0.0f;
      for (int e = 0; e < p.experts; ++e) {
        const float biased = scores[e] + p.gate_bias[e];
        if (last_id >= 0 && !ranks_before(last_value, last_id, biased, e)) continue;
        if (best < 0 || ranks_before(biased, e, best_value, best)) {
          best = e;
          best_value = biased;
        }
      }
      ids[k] = best;  // -1 only when no expert is left (NaN scores)
      failed |= best < 0;
      if (best < 0) break;
      last_id = best;
      last_value = best_value;
    }
  }
  if (failed && p.error_flag != nullptr) atomicOr(p.error_flag, kErrorIdOutOfRange);

  float sum = 0.0f;
  for (int k = 0; k < p.top_k; ++k) sum += ids[k] >= 0 ? scores[ids[k]] : 0.0f;
  for (int k = 0; k < p.top_k; ++k)
    weights[k] = ids[k] >= 0 ? scores[ids[k]] / (sum + 1e-20f) * p.routed_scaling_factor : 0.0f;
}

// The matrices and routing weight of pair (t, slot); false when the slot has no expert
// (no shared expert, failed routing) or an expert's shape disagrees with the layer's.
struct PairExpert {
  DeviceMatrix w1, w2, w3;
  float weight;
};
__device__ bool pair_expert(const MoeGenericParams& p, int64_t t, int slot, PairExpert* out) {
  if (slot == p.top_k) {
    if (!p.has_shared) return false;
    out->w1 = p.shared_w1;
    out->w2 = p.shared_w2;
    out->w3 = p.shared_w3;
    out->weight = 1.0f;
  } else {
    const int32_t e = p.scratch.topk_ids[t * p.top_k + slot];
    if (e < 0 || e >= p.experts) return false;
    out->w1 = p.w1[e];
    out->w2 = p.w2[e];
    out->w3 = p.w3[e];
    out->weight = p.scratch.topk_weights[t * p.top_k + slot];
  }
  return out->w1.rows == p.intermediate && out->w1.cols == p.hidden && out->w3.rows == p.intermediate &&
         out->w3.cols == p.hidden && out->w2.rows == p.hidden && out->w2.cols == p.intermediate;
}

// grid (tokens * slots, ceil(intermediate / 8)); warp w of block (pair, b) computes
// intermediate row j = 8 b + w: g = x[t] . W1[j], u = x[t] . W3[j], act = silu(min(g, L)) * clamp(u).
__global__ void __launch_bounds__(kExpertThreads) expert_up_kernel(MoeGenericParams p) {
  const int slots = p.top_k + 1;
  const int64_t pair = blockIdx.x, t = pair / slots;
  const int slot = static_cast<int>(pair % slots);
  PairExpert expert;
  if (!pair_expert(p, t, slot, &expert)) {
    const bool shape_error = slot < p.top_k ? p.scratch.topk_ids[t * p.top_k + slot] >= 0 : p.has_shared;
    if (shape_error && blockIdx.y == 0 && threadIdx.x == 0 && p.error_flag != nullptr)
      atomicOr(p.error_flag, kErrorIdOutOfRange);
    return;  // expert_down_kernel writes this pair's zeros
  }
  const int lane = threadIdx.x & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.y) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (j >= p.intermediate) return;
  const float* xt = p.x + t * p.hidden;
  float gate = 0.0f, up = 0.0f;
  for (int64_t c = lane; c < p.hidden; c += 32) {
    const float xc = xt[c];
    gate += xc * weight_element(expert.w1, j, c);
    up += xc * weight_element(expert.w3, j, c);
  }
  gate = warp_sum(gate);
  up = warp_sum(up);
  if (lane == 0) {
    const float limit = p.swiglu_limit;
    const float g = fminf(gate, limit);               // gate: upper clamp only
    const float u = fminf(fmaxf(up, -limit), limit);  // up: both sides
    p.scratch.act[pair * p.intermediate + j] = g / (1.0f + expf(-g)) * u;
  }
}

// grid (tokens * slots, ceil(hidden / 8)); warp w of block (pair, b) computes output
// d = 8 b + w: contrib = weight * (act[pair] . W2[d]); zeros for a pair without expert.
__global__ void __launch_bounds__(kExpertThreads) expert_down_kernel(MoeGenericParams p) {
  const int slots = p.top_k + 1;
  const int64_t pair = blockIdx.x, t = pair / slots;
  const int slot = static_cast<int>(pair % slots);
  const int lane = threadIdx.x & 31;
  const int64_t d = static_cast<int64_t>(blockIdx.y) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (d >= p.hidden) return;
  float* contrib = p.scratch.contrib + pair * p.hidden;
  PairExpert expert;
  if (!pair_expert(p, t, slot, &expert)) {
    if (lane == 0) contrib[d] = 0.0f;
    return;
  }
  const float* act = p.scratch.act + pair * p.intermediate;
  float sum = 0.0f;
  for (int64_t j = lane; j < p.intermediate; j += 32) sum += act[j] * weight_element(expert.w2, d, j);
  sum = warp_sum(sum);
  if (lane == 0) contrib[d] = sum * expert.weight;
}

// One thread per (t, d): out = (c_0 + c_1 + ... + c_{k-1}) + shared, the CPU's order.
__global__ void combine_kernel(MoeGenericParams p) {
  const int slots = p.top_k + 1;
  const int64_t total = static_cast<int64_t>(p.tokens) * p.hidden;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < total;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = item / p.hidden, d = item % p.hidden;
    const float* contrib = p.scratch.contrib + t * slots * p.hidden + d;
    float routed = 0.0f;
    for (int k = 0; k < p.top_k; ++k) routed += contrib[k * p.hidden];
    p.out[item] = p.has_shared ? contrib[p.top_k * p.hidden] + routed : routed;
  }
}

}  // namespace

cudaError_t launch_moe_generic_route(const MoeGenericParams& params) {
  if (params.tokens <= 0) return cudaSuccess;
  route_kernel<<<grid_for(params.tokens, kRouteThreads), kRouteThreads, 0, params.stream>>>(params);
  return cudaGetLastError();
}

cudaError_t launch_moe_generic_experts(const MoeGenericParams& params) {
  if (params.tokens <= 0) return cudaSuccess;
  const unsigned pairs = static_cast<unsigned>(params.tokens) * static_cast<unsigned>(params.top_k + 1);
  const dim3 up_grid(pairs, static_cast<unsigned>((params.intermediate + kWarpsPerBlock - 1) / kWarpsPerBlock));
  expert_up_kernel<<<up_grid, kExpertThreads, 0, params.stream>>>(params);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 down_grid(pairs, static_cast<unsigned>((params.hidden + kWarpsPerBlock - 1) / kWarpsPerBlock));
  expert_down_kernel<<<down_grid, kExpertThreads, 0, params.stream>>>(params);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  const int64_t items = static_cast<int64_t>(params.tokens) * params.hidden;
  combine_kernel<<<grid_for(items, kElementThreads), kElementThreads, 0, params.stream>>>(params);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

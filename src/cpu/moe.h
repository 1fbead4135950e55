// MoE layer on the CPU: router (sqrtsoftplus scores; bias for selection only, or
// hash routing through tid2eid), routed experts with clamped SwiGLU, routing weight
// applied after the down projection, plus the shared expert.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "dsv4/weights.h"

namespace dsv4::cpu {

struct Routing {
  std::vector<int32_t> experts;  // [tokens, top_k]
  std::vector<float> weights;    // [tokens, top_k], normalised, times routed_scaling_factor
};

// x: [tokens, hidden] (after ffn_norm); token_ids: [tokens] (hash routing).
Routing route(const MoEWeights& weights, MlpType type, const ModelConfig& config, const float* x, int64_t tokens,
              std::span<const int32_t> token_ids);

// Returns [tokens, hidden].
std::vector<float> moe_forward(const MoEWeights& weights, MlpType type, const ModelConfig& config, const float* x,
                               int64_t tokens, std::span<const int32_t> token_ids);

// One expert on a group of rows: (silu(min(x W1^T, limit)) * clamp(x W3^T, +-limit)) W2^T.
std::vector<float> expert_forward(const ExpertWeights& expert, double swiglu_limit, const float* x, int64_t tokens);

}  // namespace dsv4::cpu

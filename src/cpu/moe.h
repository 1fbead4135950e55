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

// Returns [tokens, hidden]. round_4bit_operands: for NVFP4 / MXFP4 experts, the expert
// input, the SwiGLU output and the weighted expert output are rounded to BF16, as the
// fast CUDA MoE kernels store them (CpuRounding::expert_operands); routing stays FP32.
std::vector<float> moe_forward(const MoEWeights& weights, MlpType type, const ModelConfig& config, const float* x,
                               int64_t tokens, std::span<const int32_t> token_ids, bool round_4bit_operands = false);

// One expert on a group of rows: (silu(min(x W1^T, limit)) * clamp(x W3^T, +-limit)) W2^T,
// times `scale` per row when given. round_operands: x, the SwiGLU output and the result
// rounded to BF16 (x is copied, not changed).
std::vector<float> expert_forward(const ExpertWeights& expert, double swiglu_limit, const float* x, int64_t tokens,
                                  bool round_operands = false, const float* scale = nullptr);

}  // namespace dsv4::cpu

#include "cpu/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cpu/cpu_ops.h"
#include "dsv4/error.h"

namespace dsv4::cpu {

Routing route(const MoEWeights& weights, MlpType type, const ModelConfig& config, const float* x, int64_t tokens,
              std::span<const int32_t> token_ids) {
  const int64_t experts = config.n_routed_experts, top_k = config.num_experts_per_tok;
  DSV4_CHECK(config.scoring_func == "sqrtsoftplus", "unsupported scoring_func '{}' (expected sqrtsoftplus)",
             config.scoring_func);
  std::vector<float> scores =
      linear(weights.gate, std::span<const float>(x, tokens * config.hidden_size), tokens);  // [tokens, experts]
  for (float& s : scores) s = std::sqrt(softplus(s));
  Routing routing;
  routing.experts.resize(static_cast<size_t>(tokens * top_k));
  routing.weights.resize(static_cast<size_t>(tokens * top_k));
  std::vector<int32_t> order(static_cast<size_t>(experts));
  std::vector<float> biased(static_cast<size_t>(experts));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* token_scores = scores.data() + t * experts;
    int32_t* picked = routing.experts.data() + t * top_k;
    if (type == MlpType::kHashMoE) {
      const int32_t id = token_ids[t];
      DSV4_CHECK(id >= 0 && id < config.vocab_size, "hash routing: token id {} outside vocab [0, {})", id,
                 config.vocab_size);
      std::copy_n(weights.tid2eid.data() + static_cast<int64_t>(id) * top_k, top_k, picked);
    } else {
      for (int64_t e = 0; e < experts; ++e) biased[e] = token_scores[e] + weights.gate_bias.values[e];
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t a, int32_t b) {
        return biased[a] > biased[b] || (biased[a] == biased[b] && a < b);
      });
      std::copy_n(order.begin(), top_k, picked);
    }
    float sum = 0;
    for (int64_t k = 0; k < top_k; ++k) sum += token_scores[picked[k]];
    for (int64_t k = 0; k < top_k; ++k)
      routing.weights[t * top_k + k] =
          token_scores[picked[k]] / (sum + 1e-20f) * static_cast<float>(config.routed_scaling_factor);
  }
  return routing;
}

namespace {
bool is_4bit(const ExpertWeights& expert) {
  return expert.w1.format == WeightFormat::kNVFP4 || expert.w1.format == WeightFormat::kMXFP4;
}
}  // namespace

std::vector<float> expert_forward(const ExpertWeights& expert, double swiglu_limit, const float* x, int64_t tokens,
                                  bool round_operands, const float* scale) {
  const int64_t hidden = expert.w1.cols, intermediate = expert.w1.rows;
  std::vector<float> rounded;
  if (round_operands) {
    rounded.assign(x, x + tokens * hidden);
    round_to_bf16(rounded.data(), tokens * hidden);
    x = rounded.data();
  }
  const std::span<const float> input(x, tokens * hidden);
  std::vector<float> gate = linear(expert.w1, input, tokens);
  const std::vector<float> up = linear(expert.w3, input, tokens);
  const float limit = static_cast<float>(swiglu_limit);
  for (int64_t i = 0; i < tokens * intermediate; ++i) {
    const float g = std::min(gate[i], limit);            // gate: upper clamp only
    const float u = std::clamp(up[i], -limit, limit);    // up: both sides
    gate[i] = silu(g) * u;
  }
  if (round_operands) round_to_bf16(gate.data(), tokens * intermediate);
  std::vector<float> out = linear(expert.w2, gate, tokens);
  if (scale != nullptr)
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t d = 0; d < hidden; ++d) out[t * hidden + d] *= scale[t];
  if (round_operands) round_to_bf16(out.data(), tokens * hidden);
  return out;
}

std::vector<float> moe_forward(const MoEWeights& weights, MlpType type, const ModelConfig& config, const float* x,
                               int64_t tokens, std::span<const int32_t> token_ids, bool round_4bit_operands) {
  const int64_t hidden = config.hidden_size, top_k = config.num_experts_per_tok;
  const Routing routing = route(weights, type, config, x, tokens, token_ids);

  // Group (token, slot) pairs by expert so each expert's weights are dequantized once.
  std::vector<std::vector<int64_t>> slots_of_expert(static_cast<size_t>(config.n_routed_experts));
  for (int64_t i = 0; i < tokens * top_k; ++i) {
    const int32_t e = routing.experts[i];
    DSV4_CHECK(e >= 0 && e < config.n_routed_experts, "routing picked expert {} outside [0, {})", e,
               config.n_routed_experts);
    slots_of_expert[e].push_back(i);
  }
  std::vector<float> slot_outputs(static_cast<size_t>(tokens * top_k * hidden), 0.0f);  // [tokens, top_k, hidden]
  std::vector<float> gathered, slot_weights;
  for (int64_t e = 0; e < config.n_routed_experts; ++e) {
    const auto& slots = slots_of_expert[e];
    if (slots.empty()) continue;
    const int64_t count = static_cast<int64_t>(slots.size());
    gathered.resize(static_cast<size_t>(count * hidden));
    for (int64_t i = 0; i < count; ++i) std::copy_n(x + (slots[i] / top_k) * hidden, hidden, gathered.data() + i * hidden);
    slot_weights.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) slot_weights[i] = routing.weights[slots[i]];
    const ExpertWeights& expert = weights.experts[e];
    const std::vector<float> out = expert_forward(expert, config.swiglu_limit, gathered.data(), count,
                                                  round_4bit_operands && is_4bit(expert), slot_weights.data());
    for (int64_t i = 0; i < count; ++i)
      std::copy_n(out.data() + i * hidden, hidden, slot_outputs.data() + slots[i] * hidden);
  }
  std::vector<float> result =
      expert_forward(weights.shared, config.swiglu_limit, x, tokens, round_4bit_operands && is_4bit(weights.shared));
  // routed = sum over slots in slot order, then + shared (transformers: routed + shared).
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t d = 0; d < hidden; ++d) {
      float routed = 0;
      for (int64_t k = 0; k < top_k; ++k) routed += slot_outputs[(t * top_k + k) * hidden + d];
      result[t * hidden + d] += routed;
    }
  }
  return result;
}

}  // namespace dsv4::cpu

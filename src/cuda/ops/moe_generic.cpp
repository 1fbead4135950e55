// moe_generic_forward of ops.h: argument checks, the workspace carve, the router GEMM
// (linear_f32) and the kernels of moe_generic_kernels.cu. Layouts: the header of
// moe_generic_kernels.cu and docs/kernels/ops.md.
#include "cuda/common/cuda_check.h"
#include "cuda/ops/kernels.h"
#include "cuda/ops/ops.h"
#include "dsv4/weight_format.h"

namespace dsv4::cuda::ops {

namespace {

constexpr size_t kAlignment = 256;

size_t aligned(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// Region sizes in bytes, in carve order: scores, topk_ids, topk_weights, act, contrib.
struct ScratchSizes {
  size_t scores, ids, weights, act, contrib;
  size_t total() const { return aligned(scores) + aligned(ids) + aligned(weights) + aligned(act) + aligned(contrib); }
};
ScratchSizes scratch_sizes(const GenericMoeWeights& w, int tokens) {
  const size_t t = static_cast<size_t>(tokens), slots = static_cast<size_t>(w.top_k) + 1;
  return {t * w.experts * sizeof(float), t * w.top_k * sizeof(int32_t), t * w.top_k * sizeof(float),
          t * slots * w.intermediate * sizeof(float), t * slots * w.hidden * sizeof(float)};
}

void check_matrix(const DeviceMatrix& m, int64_t rows, int64_t cols, const char* what) {
  DSV4_CHECK(m.rows == rows && m.cols == cols && m.data != nullptr,
             "moe_generic_forward: {} is [{}, {}] (data {}), expected [{}, {}]", what, m.rows, m.cols,
             static_cast<const void*>(m.data), rows, cols);
  DSV4_CHECK(m.format >= static_cast<int>(WeightFormat::kF32) && m.format <= static_cast<int>(WeightFormat::kNVFP4), "moe_generic_forward: {} has unknown format {}", what, m.format);
}

}  // namespace

size_t moe_generic_workspace_bytes(const GenericMoeWeights& weights, int tokens) {
  DSV4_CHECK(tokens >= 0, "moe_generic_workspace_bytes: tokens {}", tokens);
  return scratch_sizes(weights, tokens).total();
}

void moe_generic_forward(const LinearContext& ctx, const GenericMoeWeights& weights, const float* x,
                         const int32_t* token_ids, int tokens, void* workspace, float* out, int32_t* error_flag) {
  const GenericMoeWeights& w = weights;
  DSV4_CHECK(w.hidden > 0 && w.intermediate > 0 && w.experts > 0,
             "moe_generic_forward: hidden {} intermediate {} experts {} must be positive", w.hidden, w.intermediate,
             w.experts);
  DSV4_CHECK(w.top_k >= 1 && w.top_k <= w.experts, "moe_generic_forward: top_k {} outside [1, experts {}]", w.top_k,
             w.experts);
  DSV4_CHECK(tokens >= 0, "moe_generic_forward: tokens {}", tokens);
  if (tokens == 0) return;
  DSV4_CHECK(w.w1 && w.w2 && w.w3, "moe_generic_forward: null expert matrix arrays (w1 {}, w2 {}, w3 {})",
             static_cast<const void*>(w.w1), static_cast<const void*>(w.w2), static_cast<const void*>(w.w3));
  DSV4_CHECK(w.gate_weight != nullptr, "moe_generic_forward: null gate_weight");
  if (w.tid2eid != nullptr) {
    DSV4_CHECK(token_ids != nullptr, "moe_generic_forward: hash routing needs token_ids");
    DSV4_CHECK(w.vocab_size > 0, "moe_generic_forward: hash routing needs vocab_size, got {}", w.vocab_size);
  } else {
    DSV4_CHECK(w.gate_bias != nullptr, "moe_generic_forward: score routing needs gate_bias");
  }
  if (w.has_shared) {
    check_matrix(w.shared_w1, w.intermediate, w.hidden, "shared_w1 (gate)");
    check_matrix(w.shared_w3, w.intermediate, w.hidden, "shared_w3 (up)");
    check_matrix(w.shared_w2, w.hidden, w.intermediate, "shared_w2 (down)");
  }
  DSV4_CHECK(x != nullptr && out != nullptr && workspace != nullptr,
             "moe_generic_forward: null x, out or workspace (needs {} bytes)", moe_generic_workspace_bytes(w, tokens));
  DSV4_CHECK(error_flag != nullptr, "moe_generic_forward: null error_flag");
  DSV4_CHECK(reinterpret_cast<uintptr_t>(workspace) % kAlignment == 0,
             "moe_generic_forward: workspace must be {}-byte aligned", kAlignment);
  const int64_t pairs = static_cast<int64_t>(tokens) * (w.top_k + 1);
  DSV4_CHECK(pairs <= 0x7fffffff, "moe_generic_forward: {} (token, slot) pairs exceed the grid", pairs);

  const ScratchSizes sizes = scratch_sizes(w, tokens);
  auto* base = static_cast<uint8_t*>(workspace);
  detail::MoeGenericParams p;
  p.scratch.scores = reinterpret_cast<float*>(base);
  base += aligned(sizes.scores);
  p.scratch.topk_ids = reinterpret_cast<int32_t*>(base);
  base += aligned(sizes.ids);
  p.scratch.topk_weights = reinterpret_cast<float*>(base);
  base += aligned(sizes.weights);
  p.scratch.act = reinterpret_cast<float*>(base);
  base += aligned(sizes.act);
  p.scratch.contrib = reinterpret_cast<float*>(base);

  p.tokens = tokens;
  p.hidden = w.hidden;
  p.intermediate = w.intermediate;
  p.experts = w.experts;
  p.top_k = w.top_k;
  p.has_shared = w.has_shared;
  p.w1 = w.w1;
  p.w2 = w.w2;
  p.w3 = w.w3;
  p.shared_w1 = w.shared_w1;
  p.shared_w2 = w.shared_w2;
  p.shared_w3 = w.shared_w3;
  p.gate_bias = w.gate_bias;
  p.tid2eid = w.tid2eid;
  p.token_ids = token_ids;
  p.vocab_size = w.vocab_size;
  p.routed_scaling_factor = w.routed_scaling_factor;
  p.swiglu_limit = w.swiglu_limit;
  p.x = x;
  p.out = out;
  p.error_flag = error_flag;
  p.stream = ctx.stream;

  // Router logits [tokens, experts] = x Wg^T in FP32 (cpu: linear on the FP32 gate).
  linear_f32(ctx, w.gate_weight, w.experts, w.hidden, x, tokens, p.scratch.scores);
  DSV4_CUDA_CHECK(detail::launch_moe_generic_route(p));
  DSV4_CUDA_CHECK(detail::launch_moe_generic_experts(p));
}

}  // namespace dsv4::cuda::ops

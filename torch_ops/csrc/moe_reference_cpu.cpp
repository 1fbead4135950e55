// dsv4::moe_forward_reference: the MoE layer with given routing on the CPU, from the
// experts in their checkpoint layout (the inputs of dsv4::moe_pack): the CPU backend's
// expert_forward (src/cpu/moe.h: clamped SwiGLU, routing weight applied after the down
// projection, FP32) per expert on its gathered rows, then out[t] = sum over k of the
// routed rows (k order) + the shared expert (group `experts`) when has_shared.
// The oracle of dsv4::moe_forward (CUDA); round_bf16_operands stores the expert input,
// the SwiGLU output and each expert's weighted output in BF16, as those kernels do.
#include <torch/library.h>

#include <vector>

#include "cpu/moe.h"
#include "dsv4/error.h"
#include "fp4_tensors.h"
#include "tensor_checks.h"

namespace dsv4::torch_ops {

namespace {

constexpr const char* kOp = "dsv4::moe_forward_reference";

at::Tensor moe_forward_reference_cpu(c10::string_view format_name, const at::Tensor& x, const at::Tensor& topk_ids,
                                     const at::Tensor& topk_weights, const at::Tensor& w1, const at::Tensor& w1_scales,
                                     const at::Tensor& w3, const at::Tensor& w3_scales, const at::Tensor& w2,
                                     const at::Tensor& w2_scales, const std::optional<at::Tensor>& w1_global_scale,
                                     const std::optional<at::Tensor>& w3_global_scale,
                                     const std::optional<at::Tensor>& w2_global_scale, double swiglu_limit,
                                     bool has_shared, bool round_bf16_operands) {
  const Fp4Format format = parse_fp4_format(kOp, std::string_view(format_name.data(), format_name.size()));
  const StackedFp4 gate(kOp, format, {"w1", "w1_scales", "w1_global_scale"}, w1, w1_scales, w1_global_scale, 1);
  const StackedFp4 up(kOp, format, {"w3", "w3_scales", "w3_global_scale"}, w3, w3_scales, w3_global_scale, 1);
  const StackedFp4 down(kOp, format, {"w2", "w2_scales", "w2_global_scale"}, w2, w2_scales, w2_global_scale, 1);
  const int64_t groups = w1.size(0), intermediate = gate.rows(), hidden = gate.cols();
  TensorArg(kOp, "w3", w3).same_leading_dims(w1, "w1", 3);
  TensorArg(kOp, "w2", w2).size(0, groups, "experts, as w1").size(1, hidden, "hidden = 2 x w1.size(2)");
  TensorArg(kOp, "w2", w2).size(2, intermediate / 2, "intermediate / 2 = w1.size(1) / 2");
  const int64_t experts = groups - (has_shared ? 1 : 0);
  TORCH_CHECK(experts >= 0, kOp, ": has_shared=True needs the shared expert as the last of w1's ", groups, " groups");

  TensorArg(kOp, "x", x).dtype_in({at::kBFloat16, at::kFloat}).dims(2).device_type(at::kCPU).size(
      1, hidden, "hidden = 2 x w1.size(2)");
  const int64_t tokens = x.size(0);
  TensorArg(kOp, "topk_ids", topk_ids).dtype_in({at::kInt}).dims(2).device_type(at::kCPU).size(0, tokens, "tokens of x");
  const int64_t top_k = topk_ids.size(1);
  TensorArg(kOp, "topk_weights", topk_weights)
      .dtype_in({at::kFloat})
      .device_type(at::kCPU)
      .same_leading_dims(topk_ids, "topk_ids", 2)
      .dims(2);

  const at::Tensor x_f32 = x.to(at::kFloat).contiguous();
  const at::Tensor ids = topk_ids.contiguous(), weights = topk_weights.contiguous();
  const int32_t* id = ids.data_ptr<int32_t>();
  const float* weight = weights.data_ptr<float>();
  const float* input = x_f32.data_ptr<float>();

  // (token, k) pairs per expert; ids outside [0, experts) are dropped, as the CUDA dispatch drops them.
  std::vector<std::vector<int64_t>> pairs_of_expert(static_cast<size_t>(experts));
  for (int64_t pair = 0; pair < tokens * top_k; ++pair)
    if (id[pair] >= 0 && id[pair] < experts) pairs_of_expert[id[pair]].push_back(pair);

  auto expert_weights = [&](int64_t e) {
    ExpertWeights expert;
    expert.w1 = gate.matrix(e, indexed_name("w1", e));
    expert.w3 = up.matrix(e, indexed_name("w3", e));
    expert.w2 = down.matrix(e, indexed_name("w2", e));
    return expert;
  };
  std::vector<float> pair_out(static_cast<size_t>(tokens * top_k * hidden), 0.0f);  // [tokens, top_k, hidden]
  std::vector<float> gathered, pair_weight;
  at::Tensor out = at::zeros({tokens, hidden}, x.options().dtype(at::kFloat));  // [tokens, hidden]
  float* result = out.data_ptr<float>();
  try {
    for (int64_t e = 0; e < experts; ++e) {
      const std::vector<int64_t>& pairs = pairs_of_expert[e];
      if (pairs.empty()) continue;
      const int64_t count = static_cast<int64_t>(pairs.size());
      gathered.resize(static_cast<size_t>(count * hidden));
      pair_weight.resize(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) {
        std::copy_n(input + (pairs[i] / top_k) * hidden, hidden, gathered.data() + i * hidden);
        pair_weight[i] = weight[pairs[i]];
      }
      const std::vector<float> rows = cpu::expert_forward(expert_weights(e), swiglu_limit, gathered.data(), count,
                                                          round_bf16_operands, pair_weight.data());
      for (int64_t i = 0; i < count; ++i)
        std::copy_n(rows.data() + i * hidden, hidden, pair_out.data() + pairs[i] * hidden);
    }
    if (has_shared && tokens > 0) {
      const std::vector<float> shared =
          cpu::expert_forward(expert_weights(experts), swiglu_limit, input, tokens, round_bf16_operands);
      std::copy(shared.begin(), shared.end(), result);
    }
  } catch (const dsv4::Error& error) {
    TORCH_CHECK(false, kOp, ": ", error.what());
  }
  // routed (k order) + shared: the CUDA combine's order.
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t d = 0; d < hidden; ++d) {
      float routed = 0;
      for (int64_t k = 0; k < top_k; ++k) routed += pair_out[(t * top_k + k) * hidden + d];
      result[t * hidden + d] = routed + result[t * hidden + d];
    }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dsv4, CPU, m) { m.impl("moe_forward_reference", &moe_forward_reference_cpu); }

}  // namespace dsv4::torch_ops

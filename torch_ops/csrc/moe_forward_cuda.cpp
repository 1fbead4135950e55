// dsv4::moe_forward on CUDA: the MoE layer with the caller's routing (vLLM computes
// topk_ids / topk_weights itself) through the host API of src/cuda/moe/moe.h:
// launch_dispatch -> launch_moe_l1 (W13 + clamped SwiGLU) -> launch_moe_l2 (W2 x factor x
// routing weight) -> launch_combine, on the current stream, with the workspace carved by
// moe_workspace from one caching-allocator tensor. No host synchronisation: CUDA-graph
// capturable. The tile config is moe_default_tile_config(tokens), as the engine picks it.
// Routing ids outside [0, experts) (e.g. vLLM's -1 for experts of another rank) are
// dropped by the dispatch and contribute nothing.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/moe/moe.h"
#include "tensor_checks.h"

namespace dsv4::torch_ops {

namespace {

using cuda::moe::ExpertFormat;
using cuda::moe::kFragBytes;
using cuda::moe::kFragCols;
using cuda::moe::kFragRows;

constexpr const char* kOp = "dsv4::moe_forward";
constexpr int kMaxGroups = 512;   // dispatch.cu: experts + 1 <= 512
constexpr int64_t kTileEdge = 128;  // GroupedGemmParams: n % 128 == 0, k % 128 == 0

void check_launch(const char* what, cudaError_t error) {
  TORCH_CHECK(error == cudaSuccess, kOp, ": ", what, " failed: ", cudaGetErrorString(error),
              error == cudaErrorInvalidValue ? " (the launcher refused its parameters, see src/cuda/moe/moe.h)" : "");
}

// The layer's weights as moe_pack wrote them, checked against each other.
cuda::moe::MoeLayerWeights packed_layer(const at::Tensor& w13, const at::Tensor& w13_scales, const at::Tensor& w2,
                                        const at::Tensor& w2_scales, const at::Tensor& factors, bool has_shared) {
  TensorArg(kOp, "w13_packed", w13).dtype_in({at::kByte}).dims(4).device_type(at::kCUDA).size(
      3, kFragBytes, "bytes per 16 x 64 fragment block, as dsv4::moe_pack writes it");
  const int64_t groups = w13.size(0), intermediate = w13.size(1) * kFragRows / 2, hidden = w13.size(2) * kFragCols;
  TensorArg(kOp, "w13_packed_scales", w13_scales)
      .dtype_in({at::kByte})
      .dims(4)
      .same_device(w13, "w13_packed")
      .same_leading_dims(w13, "w13_packed", 3);
  const int64_t scale_bytes = w13_scales.size(3);
  if (scale_bytes != cuda::moe::frag_scale_bytes(ExpertFormat::kNVFP4) &&
      scale_bytes != cuda::moe::frag_scale_bytes(ExpertFormat::kMXFP4))
    TensorArg(kOp, "w13_packed_scales", w13_scales)
        .fail("64 (NVFP4) or 32 (MXFP4) scale bytes per fragment block in dimension 3");
  const ExpertFormat format = scale_bytes == cuda::moe::frag_scale_bytes(ExpertFormat::kNVFP4) ? ExpertFormat::kNVFP4
                                                                                                : ExpertFormat::kMXFP4;
  TensorArg(kOp, "w2_packed", w2)
      .dtype_in({at::kByte})
      .dims(4)
      .same_device(w13, "w13_packed")
      .size(0, groups, "experts, as w13_packed")
      .size(1, hidden / kFragRows, "hidden / 16, hidden = 64 x w13_packed.size(2)")
      .size(2, intermediate / kFragCols, "intermediate / 64, intermediate = 8 x w13_packed.size(1)")
      .size(3, kFragBytes, "bytes per fragment block");
  TensorArg(kOp, "w2_packed_scales", w2_scales)
      .dtype_in({at::kByte})
      .dims(4)
      .same_device(w13, "w13_packed")
      .same_leading_dims(w2, "w2_packed", 3)
      .size(3, scale_bytes, "scale bytes per fragment block, as w13_packed_scales (one format per layer)");
  TensorArg(kOp, "factors", factors)
      .dtype_in({at::kFloat})
      .dims(2)
      .same_device(w13, "w13_packed")
      .size(0, 3, "rows gate, up, down, as dsv4::moe_pack returns them")
      .size(1, groups, "one factor per expert");
  TORCH_CHECK(hidden % kTileEdge == 0 && intermediate % kTileEdge == 0, kOp, ": hidden ", hidden,
              " (64 x w13_packed.size(2)) and intermediate ", intermediate,
              " (8 x w13_packed.size(1)) must be multiples of 128, the CUDA MoE kernels' tile edge");
  const int64_t experts = groups - (has_shared ? 1 : 0);
  TORCH_CHECK(experts >= 1 && experts + 1 <= kMaxGroups, kOp, ": ", groups, " expert groups with has_shared=",
              has_shared, " leave ", experts, " routed experts; expected 1 to ", kMaxGroups - 1);

  cuda::moe::MoeLayerWeights layer;
  layer.format = format;
  layer.hidden = static_cast<int>(hidden);
  layer.intermediate = static_cast<int>(intermediate);
  layer.experts = static_cast<int>(experts);
  layer.has_shared = has_shared;
  layer.w13 = w13.data_ptr<uint8_t>();
  layer.w13_scales = w13_scales.data_ptr<uint8_t>();
  layer.w2 = w2.data_ptr<uint8_t>();
  layer.w2_scales = w2_scales.data_ptr<uint8_t>();
  layer.gate_factor = factors.data_ptr<float>();
  layer.up_factor = layer.gate_factor + groups;
  layer.down_factor = layer.gate_factor + 2 * groups;
  return layer;
}

at::Tensor moe_forward_cuda(const at::Tensor& x, const at::Tensor& topk_ids, const at::Tensor& topk_weights,
                            const at::Tensor& w13_packed, const at::Tensor& w13_packed_scales,
                            const at::Tensor& w2_packed, const at::Tensor& w2_packed_scales, const at::Tensor& factors,
                            double swiglu_limit, bool has_shared) {
  const c10::cuda::CUDAGuard guard(w13_packed.device());
  // Packed weights are read in place: moe_pack returns them contiguous, a view would be misread.
  for (const auto& [name, tensor] : {std::pair<const char*, const at::Tensor*>{"w13_packed", &w13_packed},
                                     {"w13_packed_scales", &w13_packed_scales}, {"w2_packed", &w2_packed},
                                     {"w2_packed_scales", &w2_packed_scales}, {"factors", &factors}})
    if (tensor->defined() && !tensor->is_contiguous()) TensorArg(kOp, name, *tensor).fail("a contiguous tensor");
  cuda::moe::MoeLayerWeights layer =
      packed_layer(w13_packed, w13_packed_scales, w2_packed, w2_packed_scales, factors, has_shared);
  TORCH_CHECK(swiglu_limit > 0, kOp, ": swiglu_limit ", swiglu_limit,
              " must be > 0 (the gate is clamped above, the up projection to +-limit; float('inf') for no clamp)");
  layer.swiglu_limit = static_cast<float>(swiglu_limit);

  TensorArg(kOp, "x", x).dtype_in({at::kBFloat16}).dims(2).same_device(w13_packed, "w13_packed").size(
      1, layer.hidden, "hidden = 64 x w13_packed.size(2)");
  const int64_t tokens = x.size(0);
  TensorArg(kOp, "topk_ids", topk_ids).dtype_in({at::kInt}).dims(2).same_device(x, "x").size(0, tokens, "tokens of x");
  const int64_t top_k = topk_ids.size(1);
  TORCH_CHECK(top_k >= 1, kOp, ": topk_ids ", describe(topk_ids), " has no routed expert per token");
  TensorArg(kOp, "topk_weights", topk_weights)
      .dtype_in({at::kFloat})
      .dims(2)
      .same_device(x, "x")
      .same_leading_dims(topk_ids, "topk_ids", 2);
  layer.top_k = static_cast<int>(top_k);

  const auto on_device = x.options();
  at::Tensor out = at::empty({tokens, layer.hidden}, on_device.dtype(at::kFloat));  // [tokens, hidden]
  if (tokens == 0) return out;
  // The kernels read x rows with 16-byte vector loads.
  at::Tensor x_rows = x.contiguous();
  if (reinterpret_cast<uintptr_t>(x_rows.data_ptr()) % 16 != 0) x_rows = x_rows.clone();
  const at::Tensor ids = topk_ids.contiguous(), weights = topk_weights.contiguous();

  const int T = static_cast<int>(tokens);
  const cuda::moe::TileConfig config = cuda::moe::moe_default_tile_config(T);
  const size_t workspace_bytes = cuda::moe::moe_workspace(layer, T, config, nullptr).bytes;
  at::Tensor workspace = at::empty({static_cast<int64_t>(workspace_bytes)}, on_device.dtype(at::kByte));
  const cuda::moe::MoeWorkspace ws = cuda::moe::moe_workspace(layer, T, config, workspace.data_ptr());
  // The dispatch ORs kErrorExpertOutOfRange in here for dropped ids; nobody reads it (no host sync).
  at::Tensor error_flag = at::zeros({1}, on_device.dtype(at::kInt));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int pairs_per_token = layer.top_k + (has_shared ? 1 : 0);

  cuda::moe::DispatchParams dispatch;
  dispatch.topk_ids = ids.data_ptr<int32_t>();
  dispatch.topk_weights = weights.data_ptr<float>();
  dispatch.tokens = T;
  dispatch.top_k = layer.top_k;
  dispatch.experts = layer.experts;
  dispatch.has_shared = has_shared;
  dispatch.tile_rows = cuda::moe::tile_config_rows(config);
  dispatch.max_tiles = ws.max_tiles;
  dispatch.expert_counts = ws.expert_counts;
  dispatch.expert_offsets = ws.expert_offsets;
  dispatch.slot_of_pair = ws.slot_of_pair;
  dispatch.slot_token = ws.slot_token;
  dispatch.slot_weight = ws.slot_weight;
  dispatch.tile_expert = ws.tile_expert;
  dispatch.tile_slot_begin = ws.tile_slot_begin;
  dispatch.tile_row_count = ws.tile_row_count;
  dispatch.tile_count = ws.tile_count;
  dispatch.error_flag = error_flag.data_ptr<int32_t>();
  dispatch.stream = stream;
  check_launch("launch_dispatch", cuda::moe::launch_dispatch(dispatch));

  cuda::moe::GroupedGemmParams gemm;
  gemm.format = layer.format;
  gemm.config = config;
  gemm.tile_expert = ws.tile_expert;
  gemm.tile_slot_begin = ws.tile_slot_begin;
  gemm.tile_row_count = ws.tile_row_count;
  gemm.tile_count = ws.tile_count;
  gemm.max_tiles = ws.max_tiles;
  gemm.stream = stream;

  cuda::moe::GroupedGemmParams l1 = gemm;  // h [slots, I] = SwiGLU(x[slot_token] W13^T)
  l1.weights = layer.w13;
  l1.scales = layer.w13_scales;
  l1.factor_a = layer.gate_factor;
  l1.factor_b = layer.up_factor;
  l1.act = reinterpret_cast<const uint16_t*>(x_rows.data_ptr<at::BFloat16>());
  l1.slot_token = ws.slot_token;
  l1.n = 2 * layer.intermediate;
  l1.k = layer.hidden;
  l1.swiglu_limit = layer.swiglu_limit;
  l1.out = ws.h;
  l1.split_slots = ws.split_slots;
  l1.act_rows = ws.split_slots;
  check_launch("launch_moe_l1", cuda::moe::launch_moe_l1(l1));

  cuda::moe::GroupedGemmParams l2 = gemm;  // slot_out [slots, H] = (h W2^T) x down factor x routing weight
  l2.weights = layer.w2;
  l2.scales = layer.w2_scales;
  l2.factor_a = layer.down_factor;
  l2.act = ws.h;
  l2.slot_weight = ws.slot_weight;
  l2.n = layer.hidden;
  l2.k = layer.intermediate;
  l2.out = ws.slot_out;
  l2.split_slots = ws.split_slots;
  l2.act_rows = ws.split_slots;
  check_launch("launch_moe_l2", cuda::moe::launch_moe_l2(l2));

  cuda::moe::CombineParams combine;  // out[t] = sum over k (k order, shared last) of slot_out
  combine.slot_out = ws.slot_out;
  combine.slot_of_pair = ws.slot_of_pair;
  combine.tokens = T;
  combine.pairs_per_token = pairs_per_token;
  combine.hidden = layer.hidden;
  combine.out = out.data_ptr<float>();
  combine.stream = stream;
  check_launch("launch_combine", cuda::moe::launch_combine(combine));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dsv4, CUDA, m) { m.impl("moe_forward", &moe_forward_cuda); }

}  // namespace dsv4::torch_ops

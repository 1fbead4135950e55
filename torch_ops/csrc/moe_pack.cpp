// dsv4::moe_pack: per-expert NVFP4 / MXFP4 matrices (checkpoint layout) -> the fragment
// layout and kernel scale codes the CUDA MoE kernels read (src/cuda/moe/moe_pack.h,
// fragment.h), through the library's load-time packer. Host code; CUDA inputs are
// packed on the host and the results copied back (a load-time step, not a hot path).
#include <torch/library.h>

#include "cuda/moe/moe_pack.h"
#include "dsv4/error.h"
#include "fp4_tensors.h"
#include "tensor_checks.h"

namespace dsv4::torch_ops {

namespace {

using cuda::moe::ExpertFormat;
using cuda::moe::frag_scale_bytes;
using cuda::moe::kFragBytes;
using cuda::moe::kFragCols;
using cuda::moe::kFragRows;

constexpr const char* kOp = "dsv4::moe_pack";

using PackedLayer = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

PackedLayer moe_pack_cpu(c10::string_view format_name, const at::Tensor& w1, const at::Tensor& w1_scales,
                         const at::Tensor& w3, const at::Tensor& w3_scales, const at::Tensor& w2,
                         const at::Tensor& w2_scales, const std::optional<at::Tensor>& w1_global_scale,
                         const std::optional<at::Tensor>& w3_global_scale,
                         const std::optional<at::Tensor>& w2_global_scale) {
  const Fp4Format format = parse_fp4_format(kOp, std::string_view(format_name.data(), format_name.size()));
  const StackedFp4 gate(kOp, format, {"w1", "w1_scales", "w1_global_scale"}, w1, w1_scales, w1_global_scale, 1);
  const StackedFp4 up(kOp, format, {"w3", "w3_scales", "w3_global_scale"}, w3, w3_scales, w3_global_scale, 1);
  const StackedFp4 down(kOp, format, {"w2", "w2_scales", "w2_global_scale"}, w2, w2_scales, w2_global_scale, 1);
  const int64_t groups = w1.size(0), intermediate = gate.rows(), hidden = gate.cols();
  TensorArg(kOp, "w3", w3).same_leading_dims(w1, "w1", 3);
  TensorArg(kOp, "w2", w2).size(0, groups, "experts, as w1").size(1, hidden, "hidden = 2 x w1.size(2)");
  TensorArg(kOp, "w2", w2).size(2, intermediate / 2, "intermediate / 2 = w1.size(1) / 2");
  // The packer's fragment blocks are 16 rows x 64 columns; W13 interleaves 8-row halves of w1 / w3.
  TensorArg(kOp, "w1", w1)
      .size_multiple(1, kFragCols, "intermediate: W2's k, fragment blocks of 64 columns")
      .size_multiple(2, kFragCols / 2, "hidden: fragment blocks of 64 columns, 2 values per byte");

  const ExpertFormat expert_format = format.format == WeightFormat::kNVFP4 ? ExpertFormat::kNVFP4 : ExpertFormat::kMXFP4;
  const int64_t scale_bytes = frag_scale_bytes(expert_format);
  const auto bytes = w1.options().dtype(at::kByte);
  // [experts][n / 16][k / 64][512] weights and [experts][n / 16][k / 64][SB] scales per GEMM.
  at::Tensor w13_packed = at::empty({groups, 2 * intermediate / kFragRows, hidden / kFragCols, kFragBytes}, bytes);
  at::Tensor w13_scales = at::empty({groups, 2 * intermediate / kFragRows, hidden / kFragCols, scale_bytes}, bytes);
  at::Tensor w2_packed = at::empty({groups, hidden / kFragRows, intermediate / kFragCols, kFragBytes}, bytes);
  at::Tensor w2_scales_packed = at::empty({groups, hidden / kFragRows, intermediate / kFragCols, scale_bytes}, bytes);
  at::Tensor factors = at::empty({3, groups}, w1.options().dtype(at::kFloat));  // rows: gate, up, down
  float* gate_factor = factors[0].data_ptr<float>();
  float* up_factor = factors[1].data_ptr<float>();
  float* down_factor = factors[2].data_ptr<float>();
  const int64_t w13_expert_bytes = cuda::moe::packed_data_bytes(2 * intermediate, hidden);
  const int64_t w13_scale_expert_bytes = cuda::moe::packed_scale_bytes(expert_format, 2 * intermediate, hidden);
  const int64_t w2_expert_bytes = cuda::moe::packed_data_bytes(hidden, intermediate);
  const int64_t w2_scale_expert_bytes = cuda::moe::packed_scale_bytes(expert_format, hidden, intermediate);
  try {
    for (int64_t e = 0; e < groups; ++e) {
      cuda::moe::pack_w13(gate.matrix(e, indexed_name("w1", e)), up.matrix(e, indexed_name("w3", e)),
                          w13_packed.data_ptr<uint8_t>() + e * w13_expert_bytes,
                          w13_scales.data_ptr<uint8_t>() + e * w13_scale_expert_bytes, gate_factor + e, up_factor + e,
                          nullptr);
      cuda::moe::pack_w2(down.matrix(e, indexed_name("w2", e)), w2_packed.data_ptr<uint8_t>() + e * w2_expert_bytes,
                         w2_scales_packed.data_ptr<uint8_t>() + e * w2_scale_expert_bytes, down_factor + e, nullptr);
    }
  } catch (const dsv4::Error& error) {  // e.g. a negative or NaN NVFP4 block scale, an MXFP4 NaN scale
    TORCH_CHECK(false, kOp, ": ", error.what());
  }
  return {w13_packed, w13_scales, w2_packed, w2_scales_packed, factors};
}

// CUDA inputs: pack on the host, hand the results back on the inputs' device.
PackedLayer moe_pack_via_host(c10::string_view format_name, const at::Tensor& w1, const at::Tensor& w1_scales,
                              const at::Tensor& w3, const at::Tensor& w3_scales, const at::Tensor& w2,
                              const at::Tensor& w2_scales, const std::optional<at::Tensor>& w1_global_scale,
                              const std::optional<at::Tensor>& w3_global_scale,
                              const std::optional<at::Tensor>& w2_global_scale) {
  const std::pair<const char*, const at::Tensor*> others[] = {{"w1_scales", &w1_scales}, {"w3", &w3},
                                                               {"w3_scales", &w3_scales}, {"w2", &w2},
                                                               {"w2_scales", &w2_scales}};
  for (const auto& [name, tensor] : others) TensorArg(kOp, name, *tensor).same_device(w1, "w1");
  const auto host = [](const at::Tensor& t) { return t.cpu(); };
  const auto host_optional = [](const std::optional<at::Tensor>& t) -> std::optional<at::Tensor> {
    if (!t.has_value() || !t->defined()) return std::nullopt;
    return t->cpu();
  };
  auto [w13, w13_scales, w2p, w2_scales_packed, factors] =
      moe_pack_cpu(format_name, host(w1), host(w1_scales), host(w3), host(w3_scales), host(w2), host(w2_scales),
                   host_optional(w1_global_scale), host_optional(w3_global_scale), host_optional(w2_global_scale));
  const at::Device device = w1.device();
  return {w13.to(device), w13_scales.to(device), w2p.to(device), w2_scales_packed.to(device), factors.to(device)};
}

}  // namespace

TORCH_LIBRARY_IMPL(dsv4, CPU, m) { m.impl("moe_pack", &moe_pack_cpu); }
TORCH_LIBRARY_IMPL(dsv4, CUDA, m) { m.impl("moe_pack", &moe_pack_via_host); }

}  // namespace dsv4::torch_ops

// The dsv4 operator namespace: every schema in one place. Implementations register per
// dispatch key in their own files (CPU: *_cpu.cpp, moe_pack.cpp; CUDA: *_cuda.cpp); the
// shape-only (fake) implementations that torch.compile traces live in Python
// (torch_ops/dsv4_torch/_fake.py), named here by set_python_module so that a program
// loading this library without the package is told where they are.
//
// Shapes ("..." = stacked matrices, G = experts incl. the shared one, SB = 64 NVFP4 / 32 MXFP4):
//   quantize_nvfp4(w [..., n, k] bf16|f32) -> packed u8 [..., n, k/2], scales u8 (E4M3) [..., n, k/16],
//                                             global_scale f32 [...]
//   quantize_mxfp4(w [..., n, k])           -> packed u8 [..., n, k/2], scales u8 (E8M0) [..., n, k/32]
//   dequantize_*(...)                       -> [..., n, k] out_dtype (default bf16)
//   moe_pack(format, w1 [G, I, H/2], w1_scales [G, I, H/block], w3 ..., w2 [G, H, I/2], w2_scales, globals [G])
//     -> w13 u8 [G, 2I/16, H/64, 512], w13_scales u8 [G, 2I/16, H/64, SB],
//        w2 u8 [G, H/16, I/64, 512],   w2_scales u8 [G, H/16, I/64, SB], factors f32 [3, G] (gate, up, down)
//   moe_forward(x bf16 [T, H], topk_ids i32 [T, K], topk_weights f32 [T, K], moe_pack's outputs, ...)
//     -> out f32 [T, H]                     (CUDA)
//   moe_forward_reference(format, x, topk_ids, topk_weights, moe_pack's inputs, ...) -> out f32 [T, H]  (CPU)
#include <torch/library.h>

TORCH_LIBRARY(dsv4, m) {
  m.set_python_module("dsv4_torch._fake");
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def("quantize_nvfp4(Tensor w) -> (Tensor packed, Tensor scales, Tensor global_scale)", tags);
  m.def("quantize_mxfp4(Tensor w) -> (Tensor packed, Tensor scales)", tags);
  m.def("dequantize_nvfp4(Tensor packed, Tensor scales, Tensor global_scale, ScalarType? out_dtype=None) -> Tensor", tags);
  m.def("dequantize_mxfp4(Tensor packed, Tensor scales, ScalarType? out_dtype=None) -> Tensor", tags);
  m.def(
      "moe_pack(str format, Tensor w1, Tensor w1_scales, Tensor w3, Tensor w3_scales, Tensor w2, Tensor w2_scales, "
      "Tensor? w1_global_scale=None, Tensor? w3_global_scale=None, Tensor? w2_global_scale=None) "
      "-> (Tensor w13_packed, Tensor w13_packed_scales, Tensor w2_packed, Tensor w2_packed_scales, Tensor factors)",
      tags);
  m.def(
      "moe_forward(Tensor x, Tensor topk_ids, Tensor topk_weights, Tensor w13_packed, Tensor w13_packed_scales, "
      "Tensor w2_packed, Tensor w2_packed_scales, Tensor factors, float swiglu_limit, bool has_shared=True) -> Tensor",
      tags);
  m.def(
      "moe_forward_reference(str format, Tensor x, Tensor topk_ids, Tensor topk_weights, Tensor w1, Tensor w1_scales, "
      "Tensor w3, Tensor w3_scales, Tensor w2, Tensor w2_scales, Tensor? w1_global_scale, Tensor? w3_global_scale, "
      "Tensor? w2_global_scale, float swiglu_limit, bool has_shared=True, bool round_bf16_operands=False) -> Tensor",
      tags);
}

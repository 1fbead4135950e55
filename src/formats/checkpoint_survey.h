// What a checkpoint directory stores, tensor by tensor, without the config: every
// weight matrix grouped with its quantization companions and classified by storage
// format and by role (routed expert / dense projection / kept as is). Shared by
// `dsv4 quantize` (which tensors to convert) and `dsv4 inspect` (bytes per format).
//
// Stored forms of a matrix W[out, in] under X (detected by io/stored_matrix.h, the
// loader's own rules, with [out, in] read off the stored shapes):
//   dense     X.weight F32/BF16/F16 [out, in]
//   FP8 block X.weight F8_E4M3 [out, in] + X.scale | X.weight_scale_inv E8M0/F32
//             [ceil(out/128), ceil(in/128)]
//   MXFP4     X.weight I8/U8 [out, in/2] or F4 [out, in] + X.scale E8M0/U8 [out, in/32]
//   NVFP4     X.weight U8/I8 [out, in/2] + X.weight_scale E4M3 [out, in/16]
//             + X.weight_scale_2 F32 scalar (+ X.input_scale F32 scalar)
// transformers' fused routed experts (model.layers.N.mlp.experts.gate_up_proj
// [E, 2I, H], down_proj [E, H, I]) are one entry each, role kRoutedExpert.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/safetensors.h"
#include "dsv4/weight_format.h"

namespace dsv4::formats {

enum class TensorRole {
  kRoutedExpert,     // layers.N.ffn.experts.E.w{1,2,3}.weight (and fused forms)
  kDenseProjection,  // attn.wq_a/wq_b/wkv/wo_a/wo_b, attn.indexer.wq_b, ffn.shared_experts.w{1,2,3}
  kKeep,             // everything else: embed, head, router, norms, compressors, indexer
                     // weights_proj, hc_*, sinks, ape, tid2eid, gate.bias, mtp.*, unknown
};
const char* tensor_role_name(TensorRole role);  // "routed_expert", "dense", "keep"

// Role of an official tensor name (no `model.` prefix).
TensorRole tensor_role(const std::string& official_name);

struct SurveyEntry {
  std::string name;        // stored name of the main tensor
  std::string official;    // official name; "" for mtp.*, fused experts and unknown names
  std::vector<const TensorView*> parts;  // main tensor first, then its companions
  bool is_matrix = false;  // a 2-D weight in one of the WeightFormats (matrix is valid)
  QuantMatrix matrix;      // view of the stored matrix (is_matrix only)
  std::string format;      // weight_format_name(), or the dtype name for other tensors
                           // ("i64", "f32" for vectors, "bf16 (fused experts)")
  TensorRole role = TensorRole::kKeep;
  int64_t layer = -1;      // N of layers.N.*; -1 top level; -2 mtp.*
  int64_t bytes = 0;       // all parts
};

// Every tensor of the checkpoint appears in exactly one entry (as main or companion);
// entries are sorted by stored name. Throws dsv4::Error naming the tensor for a
// quantized weight whose companions contradict it (a scale grid that does not match
// the weight's blocks, an odd packed width, a scale of the wrong dtype, an NVFP4
// weight without its F32 weight_scale_2).
std::vector<SurveyEntry> survey_checkpoint(const Checkpoint& checkpoint);

// Layer index of any stored name (official, saved or state-dict form): N, -1, or -2.
int64_t layer_of_name(const std::string& name);

}  // namespace dsv4::formats

// `dsv4 quantize`: converts a checkpoint directory (official DeepSeek names, or
// transformers' saved / state-dict names, BF16/F32/F16 or already quantized) into
// the engine's storage formats, one tensor at a time.
//
// What becomes what (roles in checkpoint_survey.h):
//   routed experts      -> --experts: nvfp4 | mxfp4 | fp8 (128x128 blocks, E8M0)
//   dense projections   -> --dense:   fp8 | bf16
//   everything else     -> copied unchanged (embed, head, router, norms, compressors,
//                          indexer weights_proj, hc_*, sinks, ape, tid2eid, mtp.*)
// A routed expert whose input width is not a whole number of FP4 blocks (MXFP4: 32,
// NVFP4: 16; e.g. the tiny test models' down projections) is stored as FP8 blocks
// instead, and the report says so (`note`).
//
// Output layout: tensors under their official names (no `model.` prefix; fused
// experts split into layers.N.ffn.experts.E.w{1,2,3}; names that are not V4 tensors,
// e.g. mtp.*, keep the input's name), in the formats
//   fp8_block  X.weight F8_E4M3 [out, in]      + X.scale F8_E8M0 [ceil(out/128), ceil(in/128)]
//   mxfp4      X.weight I8 [out, in/2]          + X.scale F8_E8M0 [out, in/32]
//   nvfp4      X.weight U8 [out, in/2]          + X.weight_scale F8_E4M3 [out, in/16]
//                                               + X.weight_scale_2 F32 [] (ModelOpt names)
//   bf16       X.weight BF16 [out, in]
// sharded safetensors + model.safetensors.index.json, config.json with
// quantization_config (official style {"quant_method": "fp8", "fmt": "e4m3",
// "scale_fmt": "ue8m0", "weight_block_size": [128, 128], "activation_scheme":
// "dynamic"} and top-level "expert_dtype": "fp4" | "fp8" for mxfp4 / fp8 experts;
// ModelOpt style {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
// "exclude_modules": [...]} for nvfp4 experts, the FP8 dense tensors then being
// recognised by their .scale companions), the input's other files (tokenizer,
// generation config) and quantize_report.json.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dsv4::formats {

enum class ExpertFormat { kNVFP4, kMXFP4, kFP8 };
enum class DenseFormat { kFP8, kBF16 };

struct QuantizeOptions {
  std::filesystem::path input;
  std::filesystem::path output;
  ExpertFormat experts = ExpertFormat::kMXFP4;
  DenseFormat dense = DenseFormat::kFP8;
  int64_t max_shard_bytes = int64_t{4} << 30;
};

struct TensorReport {
  std::string name;          // output weight name
  std::string source;        // input tensor name (fused: "NAME[e, rows]")
  std::string role;          // routed_expert | dense | keep
  std::string source_format; // as stored in the input
  std::string format;        // as written
  std::vector<int64_t> shape;  // logical [out, in] (matrices) or the stored shape
  int64_t source_bytes = 0, bytes = 0;
  double relative_frobenius = 0, cosine = 1, max_abs_diff = 0;
  bool converted = false;    // false: copied byte for byte
  std::string note;          // e.g. a fallback
};

struct QuantizeReport {
  std::vector<TensorReport> tensors;
  int64_t source_bytes = 0, bytes = 0;
  int64_t shards = 0;
  nlohmann::json to_json() const;
  // Per-(role, format) summary, the worst tensors by relative error, and every note.
  std::string table(int64_t worst = 10) const;
};

// (done, total, current tensor name); called before each tensor and once at the end.
using ProgressCallback = std::function<void(int64_t, int64_t, const std::string&)>;

// Throws dsv4::Error naming the problem: missing input / config.json, an output folder
// that already holds safetensors, a non-finite source value (tensor and position),
// a malformed quantized input tensor, a fused expert tensor of an unknown dtype.
QuantizeReport quantize_checkpoint(const QuantizeOptions& options, const ProgressCallback& progress = {});

ExpertFormat parse_expert_format(const std::string& text);  // "nvfp4" | "mxfp4" | "fp8"
DenseFormat parse_dense_format(const std::string& text);    // "fp8" | "bf16"

}  // namespace dsv4::formats

// DeepSeek-V4 model configuration: every field transformers 5.17's DeepseekV4Config
// reads, with the legacy names of the official config.json folded in.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dsv4 {

enum class AttentionType { kSliding, kCompressedSparse /*CSA*/, kHeavilyCompressed /*HCA*/ };
enum class MlpType { kHashMoE, kMoE };

const char* attention_type_name(AttentionType type);  // "sliding_attention", ...
const char* mlp_type_name(MlpType type);              // "hash_moe", "moe"

// One RoPE table ("main" or "compress"). inv_freq_i for i < rope_dim/2 is computed
// by rope_inv_freq() exactly as transformers does (fp32, YaRN with truncate).
// parse_model_config resolves every default the way transformers 5.17 does (see
// src/io/rope_config.cpp), so the values here are the ones its rotary init reads.
struct RopeConfig {
  std::string rope_type = "default";  // "default" or "yarn"
  double theta = 10000.0;
  int64_t rope_dim = 64;               // = head_dim * partial_rotary_factor
  // YaRN only:
  double factor = 1.0;                 // null in config.json -> max_position_embeddings / original
  int64_t original_max_position_embeddings = 0;  // absent -> max_position_embeddings
  double beta_fast = 32.0;             // absent, null or 0 -> 32
  double beta_slow = 1.0;              // absent, null or 0 -> 1
  bool truncate = true;   // always true: transformers 5.17 reads `truncate` from the outer
                          // {"main","compress"} dict, where V4's config never puts it
  // transformers multiplies cos and sin by this. The flat rope_scaling form gets 1.0
  // for "compress"; a nested form without it gets YaRN's mscale (0.1 ln(factor) + 1).
  // parse_model_config rejects values other than 1 (the engine's RoPE has no scale).
  double attention_factor = 1.0;
};

// Which CPU pow kernel torch runs for `theta ** exponents` (see src/io/torch_powf.h):
// its vector kernel (SLEEF) and its scalar tail (glibc powf) differ in the last bit
// for some inputs, so bit-exact inv_freq depends on the kernel.
enum class TorchCpuKernel : uint8_t {
  kScalar,  // torch's DEFAULT capability (or a non-x86 CPU): std::pow everywhere
  kAvx2,    // SLEEF powf8_u10 on chunks of 16 elements, std::pow on the tail
  kAvx512,  // SLEEF powf16_u10 on chunks of 32 elements, std::pow on the tail
};
// The kernel torch would pick on this CPU (ATen's compute_cpu_capability).
TorchCpuKernel detect_torch_cpu_kernel();

// Weight storage declared by config.json's quantization_config (official release).
struct QuantizationConfig {
  std::string quant_method;            // "" (none), "fp8", "modelopt", ...
  std::string fmt;                     // "e4m3"
  std::string scale_fmt;               // "ue8m0"
  std::vector<int64_t> weight_block_size;  // [128, 128]
  std::string expert_dtype;            // "fp4" for V4-Flash, "" otherwise
  std::string quant_algo;              // ModelOpt: "NVFP4"
  std::string activation_scheme;       // "dynamic" (official FP8)
  int64_t group_size = 0;              // ModelOpt NVFP4: 16
  std::vector<std::string> exclude_modules;  // ModelOpt "exclude_modules" / "ignore" patterns
};

struct ModelConfig {
  int64_t vocab_size = 129280;
  int64_t hidden_size = 4096;
  int64_t num_hidden_layers = 43;
  int64_t num_attention_heads = 64;
  int64_t num_key_value_heads = 1;     // must be 1 (one shared K=V head)
  int64_t head_dim = 512;
  int64_t qk_rope_head_dim = 64;       // head_dim * partial_rotary_factor
  int64_t q_lora_rank = 1024;
  int64_t o_groups = 8;
  int64_t o_lora_rank = 1024;
  int64_t moe_intermediate_size = 2048;
  int64_t n_routed_experts = 256;
  int64_t n_shared_experts = 1;        // transformers always builds exactly one
  int64_t num_experts_per_tok = 6;
  std::string scoring_func = "sqrtsoftplus";
  double routed_scaling_factor = 1.5;
  double swiglu_limit = 10.0;
  std::string hidden_act = "silu";
  double rms_norm_eps = 1e-6;
  RopeConfig rope_main;                // sliding-only layers
  RopeConfig rope_compress;            // CSA/HCA layers, their compressors, the indexer
  std::vector<AttentionType> layer_types;   // size num_hidden_layers
  std::vector<MlpType> mlp_layer_types;     // size num_hidden_layers
  int64_t compress_rate_csa = 4;       // 0 when compress_rates omits it and no layer is CSA
  int64_t compress_rate_hca = 128;     // 0 when compress_rates omits it and no layer is HCA
  int64_t sliding_window = 128;        // includes the current token
  int64_t hc_mult = 4;
  int64_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  int64_t index_n_heads = 64;
  int64_t index_head_dim = 128;
  int64_t index_topk = 512;
  int64_t max_position_embeddings = 1048576;
  int64_t bos_token_id = 0;            // -1 when config.json has null
  int64_t eos_token_id = 1;            // first of eos_token_ids, -1 when null
  std::vector<int64_t> eos_token_ids = {1};  // config.json may give a list
  int64_t num_nextn_predict_layers = 1;  // MTP layers of the checkpoint (mtp.* tensors, unused)
  bool tie_word_embeddings = false;
  QuantizationConfig quantization;

  int64_t compress_rate(int64_t layer) const;  // 0 for sliding, else CSA/HCA rate
  int64_t hc_mix_width() const { return (2 + hc_mult) * hc_mult; }
};

// Parses a config.json object. `source` names the file in error messages.
// Throws dsv4::Error naming the field for missing/invalid values, an unknown layer
// type, or a layer_types / mlp_layer_types length that disagrees with num_hidden_layers.
// Required: vocab_size, hidden_size, num_hidden_layers, num_attention_heads; every
// other field defaults as in transformers 5.17. Lists longer than num_hidden_layers
// (layer_types, compress_ratios, mlp_layer_types) are truncated as transformers does;
// shorter ones are errors.
ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source);
ModelConfig load_model_config(const std::filesystem::path& config_json);

// inv_freq[rope_dim/2] in fp32, exactly as transformers' rope init functions compute
// it on this CPU (bit for bit: the same pow kernel split as torch, see TorchCpuKernel).
std::vector<float> rope_inv_freq(const RopeConfig& rope);
std::vector<float> rope_inv_freq(const RopeConfig& rope, TorchCpuKernel kernel);

}  // namespace dsv4

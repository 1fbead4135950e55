// config.json -> ModelConfig, following transformers 5.17's DeepseekV4Config
// (configuration_deepseek_v4.py: dataclass defaults, attribute_map aliases and the
// legacy names __post_init__ folds in). RoPE resolution lives in rope_config.cpp.
#include "dsv4/config.h"

#include <fstream>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "dsv4/error.h"
#include "io/json_fields.h"
#include "io/rope_config.h"

namespace dsv4 {

using nlohmann::json;

const char* attention_type_name(AttentionType type) {
  switch (type) {
    case AttentionType::kSliding: return "sliding_attention";
    case AttentionType::kCompressedSparse: return "compressed_sparse_attention";
    case AttentionType::kHeavilyCompressed: return "heavily_compressed_attention";
  }
  return "?";
}

const char* mlp_type_name(MlpType type) { return type == MlpType::kHashMoE ? "hash_moe" : "moe"; }

int64_t ModelConfig::compress_rate(int64_t layer) const {
  switch (layer_types.at(static_cast<size_t>(layer))) {
    case AttentionType::kSliding: return 0;
    case AttentionType::kCompressedSparse: return compress_rate_csa;
    case AttentionType::kHeavilyCompressed: return compress_rate_hca;
  }
  return 0;
}

namespace {

constexpr const char* kCsa = "compressed_sparse_attention";
constexpr const char* kHca = "heavily_compressed_attention";

// A per-layer list: longer than num_hidden_layers is truncated (transformers slices
// [:num_hidden_layers]); shorter fails its validate_layer_type.
const json& layer_list(const JsonFields& f, const char* key, int64_t layers) {
  const json& list = f.at(key);
  if (!list.is_array()) f.fail_type(key, "a list");
  DSV4_CHECK(static_cast<int64_t>(list.size()) >= layers, "{}: {} has {} entries but num_hidden_layers is {}",
             f.source(), key, list.size(), layers);
  return list;
}

// layer_types: explicit > legacy compress_ratios (0/4/128 per layer; V4-Flash lists
// one more entry, its MTP layer) > the V4-Pro default (HCA, HCA, then HCA/CSA).
void parse_layer_types(const JsonFields& f, ModelConfig& c) {
  const int64_t layers = c.num_hidden_layers;
  if (f.has("layer_types")) {
    const json& list = layer_list(f, "layer_types", layers);
    for (int64_t i = 0; i < layers; ++i) {
      const json& item = list[i];
      const std::string name = item.is_string() ? item.get<std::string>() : "";
      if (name == "sliding_attention") c.layer_types.push_back(AttentionType::kSliding);
      else if (name == kCsa) c.layer_types.push_back(AttentionType::kCompressedSparse);
      else if (name == kHca) c.layer_types.push_back(AttentionType::kHeavilyCompressed);
      else
        fail("{}: layer_types[{}] = {} is not a known layer type (expected sliding_attention, "
             "compressed_sparse_attention or heavily_compressed_attention)", f.source(), i, item.dump());
    }
  } else if (f.has("compress_ratios")) {
    const json& list = layer_list(f, "compress_ratios", layers);
    for (int64_t i = 0; i < layers; ++i) {
      int64_t ratio = -1;
      json_integer(list[i], &ratio);
      if (ratio == 0) c.layer_types.push_back(AttentionType::kSliding);
      else if (ratio == 4) c.layer_types.push_back(AttentionType::kCompressedSparse);
      else if (ratio == 128) c.layer_types.push_back(AttentionType::kHeavilyCompressed);
      else
        fail("{}: compress_ratios[{}] = {} is not a known layer type (expected 0 sliding, 4 compressed_sparse "
             "or 128 heavily_compressed)", f.source(), i, list[i].dump());
    }
  } else {
    for (int64_t i = 0; i < layers; ++i)
      c.layer_types.push_back(i >= 2 && (i - 2) % 2 ? AttentionType::kCompressedSparse
                                                    : AttentionType::kHeavilyCompressed);
  }
}

// mlp_layer_types: explicit > the first num_hash_layers (default 3) hash_moe, rest moe.
void parse_mlp_layer_types(const JsonFields& f, ModelConfig& c) {
  const int64_t layers = c.num_hidden_layers;
  if (f.has("mlp_layer_types")) {
    const json& list = layer_list(f, "mlp_layer_types", layers);
    for (int64_t i = 0; i < layers; ++i) {
      const std::string name = list[i].is_string() ? list[i].get<std::string>() : "";
      if (name == "hash_moe") c.mlp_layer_types.push_back(MlpType::kHashMoE);
      else if (name == "moe") c.mlp_layer_types.push_back(MlpType::kMoE);
      else
        fail("{}: mlp_layer_types[{}] = {} is not a known mlp type (expected hash_moe or moe)", f.source(), i,
             list[i].dump());
    }
  } else {
    int64_t hash_layers = 3;
    f.read("num_hash_layers", hash_layers);
    DSV4_CHECK(hash_layers >= 0, "{}: num_hash_layers must not be negative, got {}", f.source(), hash_layers);
    for (int64_t i = 0; i < layers; ++i) c.mlp_layer_types.push_back(i < hash_layers ? MlpType::kHashMoE : MlpType::kMoE);
  }
}

// compress_rates dict (replaces the default as a whole), then the legacy scalars.
// A rate may be missing only when no layer has that type (transformers would raise
// KeyError while building such a layer).
void parse_compress_rates(const JsonFields& f, ModelConfig& c) {
  if (f.has("compress_rates")) {
    const JsonFields rates = f.object("compress_rates");
    for (const auto& [name, value] : f.at("compress_rates").items())
      DSV4_CHECK(name == kCsa || name == kHca, "{}: compress_rates has unknown layer type '{}' (expected {} or {})",
                 f.source(), name, kCsa, kHca);
    c.compress_rate_csa = c.compress_rate_hca = 0;
    rates.read(kCsa, c.compress_rate_csa);
    rates.read(kHca, c.compress_rate_hca);
  }
  f.read("compress_rate_csa", c.compress_rate_csa);
  f.read("compress_rate_hca", c.compress_rate_hca);
  for (AttentionType type : c.layer_types) {
    if (type == AttentionType::kSliding) continue;
    const bool csa = type == AttentionType::kCompressedSparse;
    const int64_t rate = csa ? c.compress_rate_csa : c.compress_rate_hca;
    DSV4_CHECK(rate > 0, "{}: compress rate of {} is {} but layers of that type exist (set compress_rates[\"{}\"])",
               f.source(), csa ? kCsa : kHca, rate, csa ? kCsa : kHca);
  }
}

// Official FP8 release: {"quant_method":"fp8","fmt":"e4m3","scale_fmt":"ue8m0",
// "weight_block_size":[128,128],"activation_scheme":"dynamic"} (+ "expert_dtype":"fp4",
// top level or inside). ModelOpt: {"quant_method":"modelopt","quant_algo":"NVFP4",
// "group_size":16,"exclude_modules"|"ignore":[...]} (or nested under "quantization").
// The loader detects each tensor's format from the checkpoint; this is what the
// config declares, and the block sizes the loader assumes are checked here.
void parse_quantization(const JsonFields& f, ModelConfig& c) {
  QuantizationConfig& q = c.quantization;
  if (f.has("quantization_config")) {
    const JsonFields qc = f.object("quantization_config");
    qc.read("quant_method", q.quant_method);
    qc.read("fmt", q.fmt);
    qc.read("scale_fmt", q.scale_fmt);
    qc.read("weight_block_size", q.weight_block_size);
    qc.read("activation_scheme", q.activation_scheme);
    qc.read("expert_dtype", q.expert_dtype);
    qc.read("quant_algo", q.quant_algo);
    qc.read("group_size", q.group_size);
    qc.read("ignore", q.exclude_modules);
    qc.read("exclude_modules", q.exclude_modules);
    if (qc.has("quantization")) {  // hf_quant_config.json style
      const JsonFields inner = qc.object("quantization");
      inner.read("quant_algo", q.quant_algo);
      inner.read("group_size", q.group_size);
      inner.read("exclude_modules", q.exclude_modules);
    }
  }
  f.read("expert_dtype", q.expert_dtype);
  const std::string& source = f.source();
  if (q.quant_method == "fp8") {
    DSV4_CHECK(q.weight_block_size.empty() || q.weight_block_size == (std::vector<int64_t>{128, 128}),
               "{}: quantization_config.weight_block_size must be [128, 128] (the FP8 block size the loader "
               "supports), got [{}]", source, fmt::join(q.weight_block_size, ", "));
    DSV4_CHECK(q.fmt.empty() || q.fmt == "e4m3", "{}: quantization_config.fmt '{}' is not supported (expected e4m3)",
               source, q.fmt);
  }
  DSV4_CHECK(q.expert_dtype.empty() || q.expert_dtype == "fp4" || q.expert_dtype == "fp8",
             "{}: expert_dtype '{}' is not supported (expected fp4 or fp8)", source, q.expert_dtype);
  if (!q.quant_algo.empty()) {
    DSV4_CHECK(q.quant_algo == "NVFP4", "{}: quant_algo '{}' is not supported (expected NVFP4)", source, q.quant_algo);
    DSV4_CHECK(q.group_size == 0 || q.group_size == 16, "{}: NVFP4 group_size must be 16, got {}", source,
               q.group_size);
  }
}

// A token id field: integer, null (-> -1) or, for eos, a list of integers.
std::vector<int64_t> token_ids(const JsonFields& f, const char* key, std::vector<int64_t> fallback) {
  if (!f.contains(key)) return fallback;
  if (f.at(key).is_null()) return {};
  int64_t single;
  if (json_integer(f.at(key), &single)) return {single};
  std::vector<int64_t> list;
  f.read(key, list);
  return list;
}

void validate(const ModelConfig& c, const std::string& source) {
  for (auto [name, value] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                             {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                             {"head_dim", c.head_dim}, {"q_lora_rank", c.q_lora_rank}, {"o_groups", c.o_groups},
                             {"o_lora_rank", c.o_lora_rank}, {"moe_intermediate_size", c.moe_intermediate_size},
                             {"n_routed_experts", c.n_routed_experts}, {"num_experts_per_tok", c.num_experts_per_tok},
                             {"sliding_window", c.sliding_window}, {"hc_mult", c.hc_mult},
                             {"hc_sinkhorn_iters", c.hc_sinkhorn_iters}, {"index_n_heads", c.index_n_heads},
                             {"index_head_dim", c.index_head_dim}, {"index_topk", c.index_topk},
                             {"max_position_embeddings", c.max_position_embeddings}})
    DSV4_CHECK(value > 0, "{}: field '{}' must be positive, got {}", source, name, value);
  DSV4_CHECK(c.num_key_value_heads == 1,
             "{}: num_key_value_heads must be 1 (DeepSeek-V4 has one shared K=V head), got {}", source,
             c.num_key_value_heads);
  DSV4_CHECK(c.num_experts_per_tok <= c.n_routed_experts, "{}: num_experts_per_tok {} exceeds n_routed_experts {}",
             source, c.num_experts_per_tok, c.n_routed_experts);
  DSV4_CHECK(c.num_attention_heads * c.head_dim % c.o_groups == 0,
             "{}: num_attention_heads x head_dim = {} x {} is not divisible by o_groups {} (the grouped output "
             "projection splits the concatenated heads into o_groups equal slices)",
             source, c.num_attention_heads, c.head_dim, c.o_groups);
  DSV4_CHECK(c.hidden_act == "silu", "{}: hidden_act '{}' is not supported (expected silu)", source, c.hidden_act);
  DSV4_CHECK(c.rms_norm_eps > 0 && c.hc_eps > 0, "{}: rms_norm_eps {} and hc_eps {} must be positive", source,
             c.rms_norm_eps, c.hc_eps);
  DSV4_CHECK(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0 && c.qk_rope_head_dim <= c.head_dim &&
                 c.qk_rope_head_dim <= c.index_head_dim,
             "{}: rope dim {} (= int(head_dim {} x partial_rotary_factor)) must be even, positive and at most "
             "head_dim and index_head_dim {}", source, c.qk_rope_head_dim, c.head_dim, c.index_head_dim);
}

ModelConfig parse_fields(const JsonFields& f) {
  const std::string& source = f.source();
  ModelConfig c;
  if (f.has("model_type")) {
    std::string model_type;
    f.read("model_type", model_type);
    DSV4_CHECK(model_type == "deepseek_v4", "{}: model_type '{}' is not supported (expected deepseek_v4)", source,
               model_type);
  }
  // Every config.json of a V4 model (official or save_pretrained) has these; a file
  // without them is not one, even though transformers would fill in V4-Flash sizes.
  f.require("vocab_size", c.vocab_size);
  f.require("hidden_size", c.hidden_size);
  f.require("num_hidden_layers", c.num_hidden_layers);
  f.require("num_attention_heads", c.num_attention_heads);
  f.read("num_key_value_heads", c.num_key_value_heads);
  f.read("head_dim", c.head_dim);
  f.read("q_lora_rank", c.q_lora_rank);
  f.read("o_groups", c.o_groups);
  f.read("o_lora_rank", c.o_lora_rank);
  f.read("intermediate_size", c.moe_intermediate_size);  // attribute_map aliases first,
  f.read("moe_intermediate_size", c.moe_intermediate_size);
  f.read("num_local_experts", c.n_routed_experts);       // the field's own name wins
  f.read("n_routed_experts", c.n_routed_experts);
  f.read("n_shared_experts", c.n_shared_experts);
  f.read("num_experts_per_tok", c.num_experts_per_tok);
  f.read("scoring_func", c.scoring_func);
  f.read("routed_scaling_factor", c.routed_scaling_factor);
  f.read("swiglu_limit", c.swiglu_limit);
  f.read("hidden_act", c.hidden_act);
  f.read("rms_norm_eps", c.rms_norm_eps);
  f.read("sliding_window", c.sliding_window);
  f.read("hc_mult", c.hc_mult);
  f.read("hc_sinkhorn_iters", c.hc_sinkhorn_iters);
  f.read("hc_eps", c.hc_eps);
  f.read("index_n_heads", c.index_n_heads);
  f.read("index_head_dim", c.index_head_dim);
  f.read("index_topk", c.index_topk);
  f.read("max_position_embeddings", c.max_position_embeddings);
  f.read("num_nextn_predict_layers", c.num_nextn_predict_layers);
  f.read("tie_word_embeddings", c.tie_word_embeddings);
  bool mlp_bias = false;
  f.read("mlp_bias", mlp_bias);
  DSV4_CHECK(!mlp_bias, "{}: mlp_bias = true is not supported (DeepSeek-V4's shared expert has no biases)", source);
  const std::vector<int64_t> bos = token_ids(f, "bos_token_id", {0});
  c.bos_token_id = bos.empty() ? -1 : bos.front();
  c.eos_token_ids = token_ids(f, "eos_token_id", {1});
  c.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids.front();

  // partial_rotary_factor: explicit > legacy qk_rope_head_dim / head_dim > 64/512.
  // (save_pretrained writes both; the explicit factor wins as in __post_init__.)
  double partial_rotary_factor = 64.0 / 512.0;
  if (f.has("partial_rotary_factor")) {
    f.read("partial_rotary_factor", partial_rotary_factor);
  } else if (f.has("qk_rope_head_dim")) {
    int64_t rope_dim = 0;
    f.read("qk_rope_head_dim", rope_dim);
    partial_rotary_factor = static_cast<double>(rope_dim) / static_cast<double>(c.head_dim);
  }
  c.qk_rope_head_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial_rotary_factor);

  validate(c, source);
  parse_layer_types(f, c);
  parse_mlp_layer_types(f, c);
  parse_compress_rates(f, c);
  parse_rope_configs(f, partial_rotary_factor, c);
  parse_quantization(f, c);
  return c;
}

}  // namespace

ModelConfig parse_model_config(const json& object, const std::string& source) {
  DSV4_CHECK(object.is_object(), "{}: config must be a JSON object, got {}", source, object.type_name());
  try {
    return parse_fields(JsonFields(object, source));
  } catch (const json::exception& error) {  // safety net: every read above is typed
    fail("{}: unexpected JSON value: {}", source, error.what());
  }
}

ModelConfig load_model_config(const std::filesystem::path& config_json) {
  const std::string source = config_json.string();
  std::ifstream in(config_json);
  DSV4_CHECK(in.good(), "cannot open {}: a DeepSeek-V4 model directory needs the config.json of its checkpoint",
             source);
  json object;
  try {
    object = json::parse(in);
  } catch (const json::exception& error) {
    fail("{}: invalid JSON: {}", source, error.what());
  }
  return parse_model_config(object, source);
}

}  // namespace dsv4

// config.json -> ModelConfig, following transformers 5.17's DeepseekV4Config.__post_init__.
#include "dsv4/config.h"

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "dsv4/error.h"

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

class Reader {
 public:
  Reader(const json& object, const std::string& source) : object_(object), source_(source) {}

  bool has(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }

  template <typename T>
  void read(const char* key, T& out) const {
    if (!has(key)) return;
    const json& value = object_[key];
    try {
      if constexpr (std::is_same_v<T, bool>) {
        DSV4_CHECK(value.is_boolean(), "not a boolean");
        out = value.get<bool>();
      } else if constexpr (std::is_integral_v<T>) {
        DSV4_CHECK(value.is_number_integer() || (value.is_number_float() && std::floor(value.get<double>()) == value.get<double>()),
                   "not an integer");
        out = static_cast<T>(value.get<double>());
      } else if constexpr (std::is_floating_point_v<T>) {
        DSV4_CHECK(value.is_number(), "not a number");
        out = value.get<T>();
      } else {
        DSV4_CHECK(value.is_string(), "not a string");
        out = value.get<std::string>();
      }
    } catch (const std::exception& error) {
      fail("{}: field '{}' has value {} which is {}", source_, key, value.dump(), error.what());
    }
  }

  const json& operator[](const char* key) const { return object_[key]; }
  const std::string& source() const { return source_; }

 private:
  const json& object_;
  const std::string& source_;
};

AttentionType parse_attention_type(const json& value, const std::string& source, size_t index) {
  if (value.is_string()) {
    const std::string name = value.get<std::string>();
    if (name == "sliding_attention") return AttentionType::kSliding;
    if (name == "compressed_sparse_attention") return AttentionType::kCompressedSparse;
    if (name == "heavily_compressed_attention") return AttentionType::kHeavilyCompressed;
  }
  fail("{}: layer_types[{}] = {} is not a known layer type (expected sliding_attention, "
       "compressed_sparse_attention or heavily_compressed_attention)", source, index, value.dump());
}

void parse_rope(const json& params, RopeConfig& rope, const std::string& source, const char* which) {
  DSV4_CHECK(params.is_object(), "{}: rope parameters '{}' must be an object, got {}", source, which, params.dump());
  if (params.contains("rope_type")) rope.rope_type = params["rope_type"].get<std::string>();
  else if (params.contains("type")) rope.rope_type = params["type"].get<std::string>();
  if (params.contains("rope_theta")) rope.theta = params["rope_theta"].get<double>();
  if (params.contains("factor") && !params["factor"].is_null()) rope.factor = params["factor"].get<double>();
  if (params.contains("original_max_position_embeddings"))
    rope.original_max_position_embeddings = params["original_max_position_embeddings"].get<int64_t>();
  if (params.contains("beta_fast") && !params["beta_fast"].is_null()) rope.beta_fast = params["beta_fast"].get<double>();
  if (params.contains("beta_slow") && !params["beta_slow"].is_null()) rope.beta_slow = params["beta_slow"].get<double>();
  if (params.contains("attention_factor") && !params["attention_factor"].is_null())
    rope.attention_factor = params["attention_factor"].get<double>();
  DSV4_CHECK(rope.rope_type == "default" || rope.rope_type == "yarn",
             "{}: rope type '{}' for '{}' is not supported (expected default or yarn)", source, rope.rope_type, which);
}

}  // namespace

ModelConfig parse_model_config(const json& object, const std::string& source) {
  DSV4_CHECK(object.is_object(), "{}: config must be a JSON object", source);
  ModelConfig c;
  Reader r(object, source);
  if (r.has("model_type")) {
    std::string model_type;
    r.read("model_type", model_type);
    DSV4_CHECK(model_type == "deepseek_v4", "{}: model_type '{}' is not supported (expected deepseek_v4)", source,
               model_type);
  }
  r.read("vocab_size", c.vocab_size);
  r.read("hidden_size", c.hidden_size);
  r.read("num_hidden_layers", c.num_hidden_layers);
  r.read("num_attention_heads", c.num_attention_heads);
  r.read("num_key_value_heads", c.num_key_value_heads);
  r.read("head_dim", c.head_dim);
  r.read("q_lora_rank", c.q_lora_rank);
  r.read("o_groups", c.o_groups);
  r.read("o_lora_rank", c.o_lora_rank);
  r.read("intermediate_size", c.moe_intermediate_size);
  r.read("moe_intermediate_size", c.moe_intermediate_size);
  r.read("num_local_experts", c.n_routed_experts);
  r.read("n_routed_experts", c.n_routed_experts);
  r.read("n_shared_experts", c.n_shared_experts);
  r.read("num_experts_per_tok", c.num_experts_per_tok);
  r.read("scoring_func", c.scoring_func);
  r.read("routed_scaling_factor", c.routed_scaling_factor);
  r.read("swiglu_limit", c.swiglu_limit);
  r.read("hidden_act", c.hidden_act);
  r.read("rms_norm_eps", c.rms_norm_eps);
  r.read("sliding_window", c.sliding_window);
  r.read("hc_mult", c.hc_mult);
  r.read("hc_sinkhorn_iters", c.hc_sinkhorn_iters);
  r.read("hc_eps", c.hc_eps);
  r.read("index_n_heads", c.index_n_heads);
  r.read("index_head_dim", c.index_head_dim);
  r.read("index_topk", c.index_topk);
  r.read("max_position_embeddings", c.max_position_embeddings);
  r.read("bos_token_id", c.bos_token_id);
  r.read("eos_token_id", c.eos_token_id);
  r.read("tie_word_embeddings", c.tie_word_embeddings);

  for (auto [name, value] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                             {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                             {"head_dim", c.head_dim}, {"q_lora_rank", c.q_lora_rank}, {"o_groups", c.o_groups},
                             {"o_lora_rank", c.o_lora_rank}, {"moe_intermediate_size", c.moe_intermediate_size},
                             {"n_routed_experts", c.n_routed_experts}, {"num_experts_per_tok", c.num_experts_per_tok},
                             {"sliding_window", c.sliding_window}, {"hc_mult", c.hc_mult},
                             {"hc_sinkhorn_iters", c.hc_sinkhorn_iters}, {"index_n_heads", c.index_n_heads},
                             {"index_head_dim", c.index_head_dim}, {"index_topk", c.index_topk}})
    DSV4_CHECK(value > 0, "{}: field '{}' must be positive, got {}", source, name, value);
  DSV4_CHECK(c.num_key_value_heads == 1, "{}: num_key_value_heads must be 1 (DeepSeek-V4 has one shared K=V head), got {}",
             source, c.num_key_value_heads);
  DSV4_CHECK(c.num_experts_per_tok <= c.n_routed_experts, "{}: num_experts_per_tok {} exceeds n_routed_experts {}",
             source, c.num_experts_per_tok, c.n_routed_experts);
  DSV4_CHECK(c.num_attention_heads % c.o_groups == 0, "{}: num_attention_heads {} is not divisible by o_groups {}",
             source, c.num_attention_heads, c.o_groups);
  DSV4_CHECK(c.hidden_act == "silu", "{}: hidden_act '{}' is not supported (expected silu)", source, c.hidden_act);

  // Compression rates: dict, then legacy scalar overrides.
  if (r.has("compress_rates")) {
    const json& rates = r["compress_rates"];
    DSV4_CHECK(rates.is_object(), "{}: compress_rates must be an object", source);
    if (rates.contains("compressed_sparse_attention")) c.compress_rate_csa = rates["compressed_sparse_attention"].get<int64_t>();
    if (rates.contains("heavily_compressed_attention")) c.compress_rate_hca = rates["heavily_compressed_attention"].get<int64_t>();
  }
  r.read("compress_rate_csa", c.compress_rate_csa);
  r.read("compress_rate_hca", c.compress_rate_hca);
  DSV4_CHECK(c.compress_rate_csa > 0 && c.compress_rate_hca > 0, "{}: compress rates must be positive", source);

  // layer_types: explicit > legacy compress_ratios > V4-Pro default; truncated to num_hidden_layers.
  const size_t layers = static_cast<size_t>(c.num_hidden_layers);
  if (r.has("layer_types")) {
    const json& types = r["layer_types"];
    DSV4_CHECK(types.is_array(), "{}: layer_types must be a list", source);
    DSV4_CHECK(types.size() == layers, "{}: layer_types has {} entries but num_hidden_layers is {}", source,
               types.size(), layers);
    for (size_t i = 0; i < types.size(); ++i) c.layer_types.push_back(parse_attention_type(types[i], source, i));
  } else if (r.has("compress_ratios")) {
    const json& ratios = r["compress_ratios"];
    DSV4_CHECK(ratios.is_array(), "{}: compress_ratios must be a list", source);
    DSV4_CHECK(ratios.size() >= layers, "{}: compress_ratios has {} entries but num_hidden_layers is {}", source,
               ratios.size(), layers);
    for (size_t i = 0; i < layers; ++i) {
      const json& v = ratios[i];
      const int64_t ratio = v.is_number_integer() ? v.get<int64_t>() : -1;
      if (ratio == 0) c.layer_types.push_back(AttentionType::kSliding);
      else if (ratio == 4) c.layer_types.push_back(AttentionType::kCompressedSparse);
      else if (ratio == 128) c.layer_types.push_back(AttentionType::kHeavilyCompressed);
      else fail("{}: compress_ratios[{}] = {} is not a known layer type (expected 0, 4 or 128)", source, i, v.dump());
    }
  } else {
    for (size_t i = 0; i < layers; ++i)
      c.layer_types.push_back(i < 2 ? AttentionType::kHeavilyCompressed
                                    : ((i - 2) % 2 ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed));
  }

  if (r.has("mlp_layer_types")) {
    const json& types = r["mlp_layer_types"];
    DSV4_CHECK(types.is_array(), "{}: mlp_layer_types must be a list", source);
    DSV4_CHECK(types.size() == layers, "{}: mlp_layer_types has {} entries but num_hidden_layers is {}", source,
               types.size(), layers);
    for (size_t i = 0; i < types.size(); ++i) {
      const std::string name = types[i].is_string() ? types[i].get<std::string>() : "";
      if (name == "hash_moe") c.mlp_layer_types.push_back(MlpType::kHashMoE);
      else if (name == "moe") c.mlp_layer_types.push_back(MlpType::kMoE);
      else fail("{}: mlp_layer_types[{}] = {} is not a known mlp type (expected hash_moe or moe)", source, i, types[i].dump());
    }
  } else {
    int64_t hash_layers = 3;
    r.read("num_hash_layers", hash_layers);
    for (size_t i = 0; i < layers; ++i)
      c.mlp_layer_types.push_back(static_cast<int64_t>(i) < hash_layers ? MlpType::kHashMoE : MlpType::kMoE);
  }

  // RoPE: partial_rotary_factor (or legacy qk_rope_head_dim), "main" and "compress" tables.
  double partial_rotary_factor = 64.0 / 512.0;
  if (r.has("partial_rotary_factor")) r.read("partial_rotary_factor", partial_rotary_factor);
  else if (r.has("qk_rope_head_dim")) {
    int64_t rope_dim = 0;
    r.read("qk_rope_head_dim", rope_dim);
    partial_rotary_factor = static_cast<double>(rope_dim) / static_cast<double>(c.head_dim);
  }
  c.qk_rope_head_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial_rotary_factor);
  DSV4_CHECK(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0 && c.qk_rope_head_dim <= c.head_dim &&
                 c.qk_rope_head_dim <= c.index_head_dim && c.qk_rope_head_dim <= 512,
             "{}: rope dim {} (head_dim x partial_rotary_factor) must be even, positive and <= head_dim and index_head_dim",
             source, c.qk_rope_head_dim);
  double rope_theta = 10000.0, compress_rope_theta = 160000.0;
  r.read("rope_theta", rope_theta);
  r.read("compress_rope_theta", compress_rope_theta);
  c.rope_main = RopeConfig{};
  c.rope_main.theta = rope_theta;
  c.rope_compress = RopeConfig{};
  c.rope_compress.theta = compress_rope_theta;
  const char* rope_key = r.has("rope_parameters") ? "rope_parameters" : (r.has("rope_scaling") ? "rope_scaling" : nullptr);
  if (rope_key) {
    const json& params = r[rope_key];
    DSV4_CHECK(params.is_object(), "{}: {} must be an object", source, rope_key);
    if (params.contains("main") && params.contains("compress")) {
      parse_rope(params["main"], c.rope_main, source, "main");
      parse_rope(params["compress"], c.rope_compress, source, "compress");
    } else {
      parse_rope(params, c.rope_compress, source, "compress");
      c.rope_compress.theta = compress_rope_theta;  // the flat dict's theta is not the compress theta
      if (c.rope_compress.rope_type == "yarn") c.rope_compress.attention_factor = 1.0;
    }
  }
  for (RopeConfig* rope : {&c.rope_main, &c.rope_compress}) {
    rope->rope_dim = c.qk_rope_head_dim;
    if (rope->rope_type == "yarn") {
      DSV4_CHECK(rope->original_max_position_embeddings > 0,
                 "{}: yarn rope scaling needs original_max_position_embeddings", source);
      DSV4_CHECK(rope->attention_factor == 1.0, "{}: yarn attention_factor {} != 1 is not supported", source,
                 rope->attention_factor);
    }
  }

  if (r.has("quantization_config")) {
    const json& q = r["quantization_config"];
    DSV4_CHECK(q.is_object(), "{}: quantization_config must be an object", source);
    auto str = [&](const char* key, std::string& out) {
      if (q.contains(key) && q[key].is_string()) out = q[key].get<std::string>();
    };
    str("quant_method", c.quantization.quant_method);
    str("fmt", c.quantization.fmt);
    str("scale_fmt", c.quantization.scale_fmt);
    str("quant_algo", c.quantization.quant_algo);
    if (q.contains("weight_block_size") && q["weight_block_size"].is_array())
      c.quantization.weight_block_size = q["weight_block_size"].get<std::vector<int64_t>>();
  }
  r.read("expert_dtype", c.quantization.expert_dtype);
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& config_json) {
  std::ifstream in(config_json);
  DSV4_CHECK(in.good(), "cannot open {} (a checkpoint directory needs config.json)", config_json.string());
  json object;
  try {
    object = json::parse(in);
  } catch (const json::exception& error) {
    fail("{}: invalid JSON: {}", config_json.string(), error.what());
  }
  try {
    return parse_model_config(object, config_json.string());
  } catch (const json::exception& error) {
    fail("{}: wrong value type: {}", config_json.string(), error.what());
  }
}

std::vector<float> rope_inv_freq(const RopeConfig& rope) {
  const int64_t dim = rope.rope_dim, pairs = dim / 2;
  const float base = static_cast<float>(rope.theta);
  std::vector<float> pos_freqs(static_cast<size_t>(pairs)), inv_freq(static_cast<size_t>(pairs));
  for (int64_t i = 0; i < pairs; ++i)
    pos_freqs[i] = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
  if (rope.rope_type != "yarn") {
    for (int64_t i = 0; i < pairs; ++i) inv_freq[i] = 1.0f / pos_freqs[i];
    return inv_freq;
  }
  // transformers' _compute_yarn_parameters (truncate=True): ramp between the
  // correction dims of beta_fast and beta_slow; interpolate below, extrapolate above.
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(dim) * std::log(static_cast<double>(rope.original_max_position_embeddings) /
                                                (rotations * 2 * M_PI))) /
           (2 * std::log(rope.theta));
  };
  double low = std::floor(correction_dim(rope.beta_fast));
  double high = std::ceil(correction_dim(rope.beta_slow));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  const float low_f = static_cast<float>(low), span = static_cast<float>(high - low);
  const float factor = static_cast<float>(rope.factor);
  for (int64_t i = 0; i < pairs; ++i) {
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / span, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    const float extrapolation = 1.0f / pos_freqs[i];
    const float interpolation = 1.0f / (factor * pos_freqs[i]);
    inv_freq[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return inv_freq;
}

}  // namespace dsv4

#include "io/key_names.h"

#include <regex>
#include <utility>

namespace dsv4 {

namespace {

// Official suffix (after `layers.N.` or at top level) -> transformers state-dict suffixes.
// save_pretrained's hybrid names are the official ones under `model.` except those
// listed as extra aliases here (kv_norm saved as attn.norm).
struct Alias {
  const char* official;
  std::vector<const char*> others;
};

const std::vector<Alias>& top_level_aliases() {
  static const std::vector<Alias> aliases = {
      {"embed.weight", {"model.embed_tokens.weight", "embed_tokens.weight"}},
      {"head.weight", {"lm_head.weight"}},
      {"norm.weight", {"model.norm.weight"}},
      {"hc_head_fn", {"model.hc_head.hc_fn", "hc_head.hc_fn"}},
      {"hc_head_base", {"model.hc_head.hc_base", "hc_head.hc_base"}},
      {"hc_head_scale", {"model.hc_head.hc_scale", "hc_head.hc_scale"}},
  };
  return aliases;
}

const std::vector<Alias>& layer_aliases() {
  static const std::vector<Alias> aliases = {
      {"attn_norm.weight", {"input_layernorm.weight"}},
      {"ffn_norm.weight", {"post_attention_layernorm.weight"}},
      {"hc_attn_fn", {"attn_hc.fn"}},
      {"hc_attn_base", {"attn_hc.base"}},
      {"hc_attn_scale", {"attn_hc.scale"}},
      {"hc_ffn_fn", {"ffn_hc.fn"}},
      {"hc_ffn_base", {"ffn_hc.base"}},
      {"hc_ffn_scale", {"ffn_hc.scale"}},
      {"attn.attn_sink", {"self_attn.sinks"}},
      {"attn.wq_a.weight", {"self_attn.q_a_proj.weight"}},
      {"attn.q_norm.weight", {"self_attn.q_a_norm.weight"}},
      {"attn.wq_b.weight", {"self_attn.q_b_proj.weight"}},
      {"attn.wkv.weight", {"self_attn.kv_proj.weight"}},
      {"attn.kv_norm.weight", {"attn.norm.weight", "self_attn.kv_norm.weight"}},
      {"attn.wo_a.weight", {"self_attn.o_a_proj.weight"}},
      {"attn.wo_b.weight", {"self_attn.o_b_proj.weight"}},
      {"attn.compressor.ape", {"self_attn.compressor.position_bias"}},
      {"attn.compressor.wkv.weight", {"self_attn.compressor.kv_proj.weight"}},
      {"attn.compressor.wgate.weight", {"self_attn.compressor.gate_proj.weight"}},
      {"attn.compressor.norm.weight", {"self_attn.compressor.kv_norm.weight"}},
      {"attn.indexer.wq_b.weight", {"self_attn.compressor.indexer.q_b_proj.weight"}},
      {"attn.indexer.weights_proj.weight", {"self_attn.compressor.indexer.scorer.weights_proj.weight"}},
      {"attn.indexer.compressor.ape", {"self_attn.compressor.indexer.position_bias"}},
      {"attn.indexer.compressor.wkv.weight", {"self_attn.compressor.indexer.kv_proj.weight"}},
      {"attn.indexer.compressor.wgate.weight", {"self_attn.compressor.indexer.gate_proj.weight"}},
      {"attn.indexer.compressor.norm.weight", {"self_attn.compressor.indexer.kv_norm.weight"}},
      {"ffn.gate.weight", {"mlp.gate.weight"}},
      {"ffn.gate.bias", {"mlp.gate.e_score_correction_bias"}},
      {"ffn.gate.tid2eid", {"mlp.gate.tid2eid"}},
      {"ffn.shared_experts.w1.weight", {"mlp.shared_experts.gate_proj.weight"}},
      {"ffn.shared_experts.w2.weight", {"mlp.shared_experts.down_proj.weight"}},
      {"ffn.shared_experts.w3.weight", {"mlp.shared_experts.up_proj.weight"}},
  };
  return aliases;
}

const std::regex& layer_pattern() {
  static const std::regex pattern(R"(^(?:model\.)?layers\.(\d+)\.(.+)$)");
  return pattern;
}

}  // namespace

std::vector<std::string> candidate_names(const std::string& official) {
  std::vector<std::string> names = {official, "model." + official};
  std::smatch match;
  if (std::regex_match(official, match, layer_pattern())) {
    const std::string prefix = "layers." + match[1].str() + ".";
    const std::string suffix = match[2].str();
    for (const auto& alias : layer_aliases()) {
      if (suffix != alias.official) continue;
      for (const char* other : alias.others) {
        names.push_back("model." + prefix + other);
        names.push_back(prefix + other);
      }
    }
  } else {
    for (const auto& alias : top_level_aliases())
      if (official == alias.official)
        for (const char* other : alias.others) names.push_back(other);
  }
  return names;
}

std::string official_name_for(const std::string& any_name) {
  std::smatch match;
  if (std::regex_match(any_name, match, layer_pattern())) {
    const std::string prefix = "layers." + match[1].str() + ".";
    const std::string suffix = match[2].str();
    for (const auto& alias : layer_aliases()) {
      if (suffix == alias.official) return prefix + suffix;
      for (const char* other : alias.others)
        if (suffix == other) return prefix + alias.official;
    }
    // Routed experts keep their official layout under both conventions.
    static const std::regex expert(R"(^ffn\.experts\.\d+\.w[123]\.(weight|scale|weight_scale|weight_scale_2|input_scale)$)");
    if (std::regex_match(suffix, expert)) return prefix + suffix;
    return "";
  }
  std::string name = any_name;
  for (const auto& alias : top_level_aliases()) {
    if (name == alias.official || name == "model." + std::string(alias.official)) return alias.official;
    for (const char* other : alias.others)
      if (name == other) return alias.official;
  }
  return "";
}

}  // namespace dsv4

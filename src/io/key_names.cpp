// Name table, checked against a real transformers 5.17 save (tests/fixtures/io/
// transformers_keys.txt lists every key of save_pretrained and of state_dict()).
#include "io/key_names.h"

#include <cctype>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace dsv4 {

namespace {

// official suffix -> other names. Layer entries are relative to `layers.N.`; under
// `model.layers.N.` the first alias is transformers' state-dict name. save_pretrained's
// hybrid names are the official ones under `model.`, except those listed with them
// here (the attention kv_norm is saved as `attn.norm`).
struct Alias {
  std::string_view official;
  std::vector<std::string_view> others;
};

const std::vector<Alias> kTopLevel = {
    {"embed.weight", {"model.embed_tokens.weight", "embed_tokens.weight"}},
    {"head.weight", {"lm_head.weight"}},
    {"norm.weight", {}},  // model.norm.weight: the `model.` rule
    {"hc_head_fn", {"model.hc_head.hc_fn", "hc_head.hc_fn"}},
    {"hc_head_base", {"model.hc_head.hc_base", "hc_head.hc_base"}},
    {"hc_head_scale", {"model.hc_head.hc_scale", "hc_head.hc_scale"}},
};

const std::vector<Alias> kLayer = {
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
    {"attn.kv_norm.weight", {"self_attn.kv_norm.weight", "attn.norm.weight"}},
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

// Companions of `X.weight` (quantization scales): official FP8/MXFP4 `X.scale`,
// transformers' FP8 rename `X.weight_scale_inv`, ModelOpt's NVFP4 names.
const std::pair<std::string_view, std::string_view> kCompanions[] = {
    {".weight_scale_inv", ".scale"}, {".weight_scale_2", ".weight_scale_2"}, {".weight_scale", ".weight_scale"},
    {".input_scale", ".input_scale"}, {".scale", ".scale"}};

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() > suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// "layers.N.rest" or "model.layers.N.rest" -> (N as text, rest).
bool split_layer(std::string_view name, std::string_view* layer, std::string_view* rest) {
  if (name.substr(0, 6) == "model.") name.remove_prefix(6);
  if (name.substr(0, 7) != "layers.") return false;
  name.remove_prefix(7);
  size_t digits = 0;
  while (digits < name.size() && std::isdigit(static_cast<unsigned char>(name[digits]))) ++digits;
  if (digits == 0 || digits >= name.size() || name[digits] != '.') return false;
  *layer = name.substr(0, digits);
  *rest = name.substr(digits + 1);
  return !rest->empty();
}

// Routed experts keep the official layout in both official and saved checkpoints.
bool is_expert_suffix(std::string_view rest) {
  constexpr std::string_view prefix = "ffn.experts.";
  if (rest.substr(0, prefix.size()) != prefix) return false;
  rest.remove_prefix(prefix.size());
  size_t digits = 0;
  while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) ++digits;
  if (digits == 0) return false;
  rest.remove_prefix(digits);
  return rest == ".w1.weight" || rest == ".w2.weight" || rest == ".w3.weight";
}

// Official names of names without a companion suffix.
std::string official_of_plain(std::string_view name) {
  std::string_view layer, rest;
  if (split_layer(name, &layer, &rest)) {
    const std::string prefix = "layers." + std::string(layer) + ".";
    if (is_expert_suffix(rest)) return prefix + std::string(rest);
    for (const Alias& alias : kLayer) {
      if (rest == alias.official) return prefix + std::string(rest);
      for (std::string_view other : alias.others)
        if (rest == other) return prefix + std::string(alias.official);
    }
    return "";
  }
  for (const Alias& alias : kTopLevel) {
    if (name == alias.official || (name.substr(0, 6) == "model." && name.substr(6) == alias.official))
      return std::string(alias.official);
    for (std::string_view other : alias.others)
      if (name == other) return std::string(alias.official);
  }
  return "";
}

}  // namespace

std::vector<std::string> candidate_names(const std::string& official) {
  std::vector<std::string> names = {official, "model." + official};
  std::string_view layer, rest;
  if (split_layer(official, &layer, &rest)) {
    const std::string prefix = "layers." + std::string(layer) + ".";
    for (const Alias& alias : kLayer) {
      if (rest != alias.official) continue;
      for (std::string_view other : alias.others) {
        names.push_back("model." + prefix + std::string(other));
        names.push_back(prefix + std::string(other));
      }
    }
  } else {
    for (const Alias& alias : kTopLevel)
      if (official == alias.official)
        for (std::string_view other : alias.others) names.emplace_back(other);
  }
  return names;
}

std::string official_name_for(const std::string& any_name) {
  if (std::string official = official_of_plain(any_name); !official.empty()) return official;
  for (const auto& [suffix, official_suffix] : kCompanions) {
    if (!ends_with(any_name, suffix)) continue;
    const std::string base = any_name.substr(0, any_name.size() - suffix.size());
    const std::string weight = official_of_plain(base + ".weight");
    if (weight.empty()) return "";
    return weight.substr(0, weight.size() - 7) + std::string(official_suffix);  // 7 = ".weight"
  }
  return "";
}

}  // namespace dsv4

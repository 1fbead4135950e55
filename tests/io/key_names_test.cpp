// Key-name table against a real transformers 5.17 save: every key save_pretrained
// wrote and every state_dict() key (tests/fixtures/io/transformers_keys.txt) maps to
// an official name, and candidate_names() of that official name finds it again.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "io/key_names.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

struct KeyListing {
  std::vector<std::string> saved, state;
};

KeyListing read_listing() {
  KeyListing listing;
  std::ifstream in(fs::path(DSV4_FIXTURES_DIR) / "io" / "transformers_keys.txt");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string kind, name;
    words >> kind >> name;
    (kind == "saved" ? listing.saved : listing.state).push_back(name);
  }
  return listing;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

TEST(KeyNames, EverySavedAndStateDictKeyRoundTrips) {
  const KeyListing listing = read_listing();
  ASSERT_GT(listing.saved.size(), 100u);
  ASSERT_GT(listing.state.size(), 50u);
  std::set<std::string> from_saved, from_state;
  for (const std::string& name : listing.saved) {
    const std::string official = official_name_for(name);
    ASSERT_FALSE(official.empty()) << name;
    EXPECT_EQ(official.rfind("model.", 0), std::string::npos) << name << " -> " << official;
    EXPECT_TRUE(contains(candidate_names(official), name)) << official << " does not list " << name;
    from_saved.insert(official);
  }
  for (const std::string& name : listing.state) {
    const bool fused = name.find(".mlp.experts.") != std::string::npos;
    const std::string official = official_name_for(name);
    if (fused) {  // several official tensors in one: bound as views by weights.cpp
      EXPECT_EQ(official, "") << name;
      continue;
    }
    ASSERT_FALSE(official.empty()) << name;
    EXPECT_TRUE(contains(candidate_names(official), name)) << official << " does not list " << name;
    from_state.insert(official);
  }
  // Same official tensors either way, once the per-expert ones (saved only) are set aside.
  std::set<std::string> saved_without_experts;
  for (const std::string& official : from_saved)
    if (official.find(".ffn.experts.") == std::string::npos) saved_without_experts.insert(official);
  EXPECT_EQ(saved_without_experts, from_state);
}

TEST(KeyNames, HybridNamesOfSavePretrained) {
  EXPECT_EQ(official_name_for("model.layers.3.attn.norm.weight"), "layers.3.attn.kv_norm.weight");
  EXPECT_EQ(official_name_for("model.embed_tokens.weight"), "embed.weight");
  EXPECT_EQ(official_name_for("head.weight"), "head.weight");
  EXPECT_EQ(official_name_for("model.norm.weight"), "norm.weight");
  EXPECT_EQ(official_name_for("model.hc_head.hc_fn"), "hc_head_fn");
  EXPECT_EQ(official_name_for("model.hc_head.hc_scale"), "hc_head_scale");
  EXPECT_EQ(official_name_for("model.layers.12.hc_attn_fn"), "layers.12.hc_attn_fn");
  EXPECT_EQ(official_name_for("model.layers.0.attn_norm.weight"), "layers.0.attn_norm.weight");
  EXPECT_EQ(official_name_for("model.layers.0.ffn.experts.7.w2.weight"), "layers.0.ffn.experts.7.w2.weight");
  EXPECT_EQ(official_name_for("model.layers.1.attn.indexer.compressor.ape"), "layers.1.attn.indexer.compressor.ape");
}

TEST(KeyNames, StateDictNames) {
  EXPECT_EQ(official_name_for("model.layers.3.self_attn.q_a_proj.weight"), "layers.3.attn.wq_a.weight");
  EXPECT_EQ(official_name_for("model.layers.3.self_attn.kv_norm.weight"), "layers.3.attn.kv_norm.weight");
  EXPECT_EQ(official_name_for("model.layers.2.self_attn.compressor.indexer.scorer.weights_proj.weight"),
            "layers.2.attn.indexer.weights_proj.weight");
  EXPECT_EQ(official_name_for("model.layers.2.self_attn.compressor.position_bias"), "layers.2.attn.compressor.ape");
  EXPECT_EQ(official_name_for("model.layers.4.mlp.gate.e_score_correction_bias"), "layers.4.ffn.gate.bias");
  EXPECT_EQ(official_name_for("model.layers.4.mlp.shared_experts.up_proj.weight"), "layers.4.ffn.shared_experts.w3.weight");
  EXPECT_EQ(official_name_for("model.layers.0.attn_hc.scale"), "layers.0.hc_attn_scale");
  EXPECT_EQ(official_name_for("model.layers.0.post_attention_layernorm.weight"), "layers.0.ffn_norm.weight");
  EXPECT_EQ(official_name_for("lm_head.weight"), "head.weight");
  EXPECT_EQ(official_name_for("model.layers.0.mlp.experts.gate_up_proj"), "");
}

TEST(KeyNames, OfficialToCandidates) {
  auto names = candidate_names("layers.2.attn.indexer.weights_proj.weight");
  EXPECT_EQ(names.front(), "layers.2.attn.indexer.weights_proj.weight");
  EXPECT_TRUE(contains(names, "model.layers.2.attn.indexer.weights_proj.weight"));
  EXPECT_TRUE(contains(names, "model.layers.2.self_attn.compressor.indexer.scorer.weights_proj.weight"));
  names = candidate_names("layers.5.attn.kv_norm.weight");
  EXPECT_TRUE(contains(names, "model.layers.5.attn.norm.weight"));
  EXPECT_TRUE(contains(names, "model.layers.5.self_attn.kv_norm.weight"));
  names = candidate_names("embed.weight");
  EXPECT_TRUE(contains(names, "model.embed_tokens.weight"));
  names = candidate_names("hc_head_base");
  EXPECT_TRUE(contains(names, "model.hc_head.hc_base"));
  EXPECT_TRUE(contains(candidate_names("head.weight"), "lm_head.weight"));
  EXPECT_TRUE(contains(candidate_names("norm.weight"), "model.norm.weight"));
}

TEST(KeyNames, QuantizationCompanions) {
  EXPECT_EQ(official_name_for("layers.3.attn.wq_a.scale"), "layers.3.attn.wq_a.scale");
  EXPECT_EQ(official_name_for("model.layers.3.self_attn.q_a_proj.weight_scale_inv"), "layers.3.attn.wq_a.scale");
  EXPECT_EQ(official_name_for("layers.3.ffn.experts.9.w1.weight_scale_2"), "layers.3.ffn.experts.9.w1.weight_scale_2");
  EXPECT_EQ(official_name_for("model.layers.3.ffn.experts.9.w3.weight_scale"), "layers.3.ffn.experts.9.w3.weight_scale");
  EXPECT_EQ(official_name_for("layers.0.ffn.shared_experts.w2.input_scale"), "layers.0.ffn.shared_experts.w2.input_scale");
  EXPECT_EQ(official_name_for("head.scale"), "head.scale");
}

TEST(KeyNames, NotV4Tensors) {
  for (const char* name : {"mtp.0.attn.wq_a.weight", "model.layers.x.attn.wq_a.weight", "layers.1.unknown.weight",
                           "layers..attn.wq_a.weight", "layers.1", "model.layers.0.ffn.experts.a.w1.weight",
                           "layers.0.ffn.experts.1.w4.weight", "model.mtp.weight", "", "scale", ".scale"})
    EXPECT_EQ(official_name_for(name), "") << name;
}

}  // namespace
}  // namespace dsv4

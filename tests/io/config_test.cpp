// config.json parsing: V4-Flash's official config (legacy names), transformers'
// nested form, YaRN frequencies, and errors that name the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dsv4/config.h"
#include "dsv4/error.h"

namespace dsv4 {
namespace {

using nlohmann::json;

json flash_config() {
  json ratios = json::array({0, 0});
  for (int i = 0; i < 20; ++i) { ratios.push_back(4); ratios.push_back(128); }
  ratios.push_back(4);
  ratios.push_back(0);
  return json{{"model_type", "deepseek_v4"}, {"vocab_size", 129280}, {"hidden_size", 4096}, {"num_hidden_layers", 43},
              {"num_attention_heads", 64}, {"num_key_value_heads", 1}, {"head_dim", 512}, {"qk_rope_head_dim", 64},
              {"q_lora_rank", 1024}, {"o_groups", 8}, {"o_lora_rank", 1024}, {"moe_intermediate_size", 2048},
              {"n_routed_experts", 256}, {"num_experts_per_tok", 6}, {"compress_ratios", ratios}, {"num_hash_layers", 3},
              {"compress_rope_theta", 160000.0},
              {"rope_scaling", {{"type", "yarn"}, {"factor", 16}, {"original_max_position_embeddings", 65536},
                                {"beta_fast", 32}, {"beta_slow", 1}}},
              {"quantization_config", {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"scale_fmt", "ue8m0"},
                                       {"weight_block_size", {128, 128}}, {"activation_scheme", "dynamic"}}},
              {"expert_dtype", "fp4"}};
}

TEST(Config, FlashLegacyNames) {
  const ModelConfig c = parse_model_config(flash_config(), "flash/config.json");
  ASSERT_EQ(c.layer_types.size(), 43u);
  EXPECT_EQ(c.layer_types[0], AttentionType::kSliding);
  EXPECT_EQ(c.layer_types[1], AttentionType::kSliding);
  for (int i = 2; i < 43; ++i)
    EXPECT_EQ(c.layer_types[i], i % 2 == 0 ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed) << i;
  for (int i = 0; i < 43; ++i) EXPECT_EQ(c.mlp_layer_types[i], i < 3 ? MlpType::kHashMoE : MlpType::kMoE) << i;
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.rope_compress.rope_type, "yarn");
  EXPECT_EQ(c.rope_main.rope_type, "default");
  EXPECT_EQ(c.quantization.quant_method, "fp8");
  EXPECT_EQ(c.quantization.expert_dtype, "fp4");
  EXPECT_EQ(c.quantization.weight_block_size, (std::vector<int64_t>{128, 128}));
}

TEST(Config, FlashYarnInverseFrequencies) {
  // Values printed by transformers 5.17 (fp32) for the V4-Flash compress RoPE.
  const float expected[32] = {1.0f, 0.68765604f, 0.47287080f, 0.32517245f, 0.22360680f, 0.15376456f, 0.10573712f,
                              0.07271077f, 0.05f, 0.03438280f, 0.02364354f, 0.01625862f, 0.01118034f, 0.00768823f,
                              0.00528686f, 0.00363554f, 0.00226562f, 0.00139680f, 0.00084969f, 0.00050808f,
                              0.00029698f, 0.00016818f, 9.0868e-05f, 4.5444e-05f, 1.9531e-05f, 5.3723e-06f,
                              3.6943e-06f, 2.5404e-06f, 1.7469e-06f, 1.2013e-06f, 8.2607e-07f, 5.6805e-07f};
  const ModelConfig c = parse_model_config(flash_config(), "flash/config.json");
  const std::vector<float> inv_freq = rope_inv_freq(c.rope_compress);
  ASSERT_EQ(inv_freq.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(inv_freq[i], expected[i], expected[i] * 2e-5) << "pair " << i;
}

TEST(Config, DefaultsFollowTransformers) {
  const ModelConfig c = parse_model_config(json{{"num_hidden_layers", 6}}, "c.json");
  // V4-Pro default layout: HCA, HCA, then HCA/CSA alternating.
  EXPECT_EQ(c.layer_types, (std::vector<AttentionType>{AttentionType::kHeavilyCompressed, AttentionType::kHeavilyCompressed,
                                                       AttentionType::kHeavilyCompressed, AttentionType::kCompressedSparse,
                                                       AttentionType::kHeavilyCompressed, AttentionType::kCompressedSparse}));
  EXPECT_EQ(c.rope_compress.rope_type, "default");
  EXPECT_EQ(c.compress_rate_hca, 128);
}

std::string error_of(const json& config) {
  try {
    parse_model_config(config, "bad/config.json");
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(Config, LayerTypesLengthMismatch) {
  const std::string message = error_of(json{{"num_hidden_layers", 3}, {"layer_types", {"sliding_attention"}}});
  EXPECT_NE(message.find("bad/config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("layer_types has 1 entries but num_hidden_layers is 3"), std::string::npos) << message;
}

TEST(Config, UnknownLayerType) {
  std::string message = error_of(json{{"num_hidden_layers", 1}, {"layer_types", {"full_attention"}}});
  EXPECT_NE(message.find("\"full_attention\" is not a known layer type"), std::string::npos) << message;
  message = error_of(json{{"num_hidden_layers", 2}, {"compress_ratios", {0, 16}}});
  EXPECT_NE(message.find("compress_ratios[1] = 16"), std::string::npos) << message;
  message = error_of(json{{"num_hidden_layers", 1}, {"mlp_layer_types", {"dense"}}});
  EXPECT_NE(message.find("mlp_layer_types[0]"), std::string::npos) << message;
}

TEST(Config, WrongTypesAndValues) {
  EXPECT_NE(error_of(json{{"hidden_size", "big"}}).find("field 'hidden_size'"), std::string::npos);
  EXPECT_NE(error_of(json{{"num_key_value_heads", 8}}).find("num_key_value_heads must be 1"), std::string::npos);
  EXPECT_NE(error_of(json{{"vocab_size", 0}}).find("'vocab_size' must be positive"), std::string::npos);
  EXPECT_NE(error_of(json{{"model_type", "llama"}}).find("model_type 'llama'"), std::string::npos);
}

}  // namespace
}  // namespace dsv4

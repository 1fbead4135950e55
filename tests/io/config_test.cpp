// config.json parsing: V4-Flash's official config (legacy names), transformers'
// nested form, every legacy alias, YaRN frequencies bit for bit against transformers,
// and errors that name the file and the field.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "dsv4/config.h"
#include "dsv4/error.h"

namespace dsv4 {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The official DeepSeek-V4-Flash config.json (legacy V3-style names).
constexpr const char* kFlashConfig = R"({
  "architectures": ["DeepseekV4ForCausalLM"],
  "model_type": "deepseek_v4",
  "vocab_size": 129280, "hidden_size": 4096, "num_hidden_layers": 43,
  "num_attention_heads": 64, "num_key_value_heads": 1, "head_dim": 512, "qk_rope_head_dim": 64,
  "q_lora_rank": 1024, "o_groups": 8, "o_lora_rank": 1024,
  "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 6,
  "scoring_func": "sqrtsoftplus", "norm_topk_prob": true, "routed_scaling_factor": 1.5, "swiglu_limit": 10.0,
  "hidden_act": "silu", "rms_norm_eps": 1e-6, "sliding_window": 128,
  "compress_ratios": [0, 0, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                      4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 0],
  "num_hash_layers": 3, "rope_theta": 10000.0, "compress_rope_theta": 160000.0,
  "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                   "beta_fast": 32, "beta_slow": 1},
  "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-6,
  "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512,
  "num_nextn_predict_layers": 1, "max_position_embeddings": 1048576,
  "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                          "weight_block_size": [128, 128], "activation_scheme": "dynamic"},
  "expert_dtype": "fp4"
})";

json flash() { return json::parse(kFlashConfig); }
json minimal(int64_t layers) {
  return json{{"vocab_size", 64}, {"hidden_size", 32}, {"num_hidden_layers", layers}, {"num_attention_heads", 4}};
}

std::string error_of(const json& config) {
  try {
    parse_model_config(config, "bad/config.json");
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

TEST(Config, FlashOfficialConfig) {
  const ModelConfig c = parse_model_config(flash(), "flash/config.json");
  ASSERT_EQ(c.layer_types.size(), 43u);  // compress_ratios has 44 entries: the last is the MTP layer
  EXPECT_EQ(c.layer_types[0], AttentionType::kSliding);
  EXPECT_EQ(c.layer_types[1], AttentionType::kSliding);
  for (int i = 2; i < 43; ++i)
    EXPECT_EQ(c.layer_types[i], i % 2 == 0 ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed) << i;
  ASSERT_EQ(c.mlp_layer_types.size(), 43u);
  for (int i = 0; i < 43; ++i) EXPECT_EQ(c.mlp_layer_types[i], i < 3 ? MlpType::kHashMoE : MlpType::kMoE) << i;
  EXPECT_EQ(c.compress_rate(0), 0);
  EXPECT_EQ(c.compress_rate(2), 4);
  EXPECT_EQ(c.compress_rate(3), 128);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.hc_mix_width(), 24);
  EXPECT_EQ(c.rope_main.rope_type, "default");
  EXPECT_EQ(c.rope_main.theta, 10000.0);
  EXPECT_EQ(c.rope_main.rope_dim, 64);
  EXPECT_EQ(c.rope_compress.rope_type, "yarn");
  EXPECT_EQ(c.rope_compress.theta, 160000.0);
  EXPECT_EQ(c.rope_compress.factor, 16.0);
  EXPECT_EQ(c.rope_compress.original_max_position_embeddings, 65536);
  EXPECT_EQ(c.rope_compress.beta_fast, 32.0);
  EXPECT_EQ(c.rope_compress.beta_slow, 1.0);
  EXPECT_EQ(c.rope_compress.attention_factor, 1.0);
  EXPECT_EQ(c.quantization.quant_method, "fp8");
  EXPECT_EQ(c.quantization.fmt, "e4m3");
  EXPECT_EQ(c.quantization.scale_fmt, "ue8m0");
  EXPECT_EQ(c.quantization.activation_scheme, "dynamic");
  EXPECT_EQ(c.quantization.expert_dtype, "fp4");
  EXPECT_EQ(c.quantization.weight_block_size, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1}));
}

TEST(Config, FlashYarnMatchesSpecValues) {
  // The V4-Flash compress inv_freq the reference spec lists (5.17.0, fp32, printed
  // with 5 significant digits; the bit-exact comparison is the next test).
  const float expected[32] = {1.0f, 0.68765604f, 0.47287080f, 0.32517245f, 0.22360680f, 0.15376456f, 0.10573712f,
                              0.07271077f, 0.05f, 0.03438280f, 0.02364354f, 0.01625862f, 0.01118034f, 0.00768823f,
                              0.00528686f, 0.00363554f, 0.00226562f, 0.00139680f, 0.00084969f, 0.00050808f,
                              0.00029698f, 0.00016818f, 9.0868e-05f, 4.5444e-05f, 1.9531e-05f, 5.3723e-06f,
                              3.6943e-06f, 2.5404e-06f, 1.7469e-06f, 1.2013e-06f, 8.2607e-07f, 5.6805e-07f};
  const std::vector<float> inv_freq = rope_inv_freq(parse_model_config(flash(), "flash").rope_compress);
  ASSERT_EQ(inv_freq.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(inv_freq[i], expected[i], expected[i] * 5e-5) << "pair " << i;
}

// inv_freq bits printed by transformers 5.17 (tests/io/gen_rope_expected.py) under
// each torch CPU capability: exact equality, element by element.
struct RopeCase {
  const char* name;
  const char* capability;
  const char* config;
  const char* main_bits;
  const char* compress_bits;
};
const RopeCase kRopeCases[] = {
#include "rope_expected.inc"
};

std::vector<uint32_t> parse_bits(const char* text) {
  std::vector<uint32_t> bits;
  std::istringstream in(text);
  std::string word;
  while (in >> word) bits.push_back(static_cast<uint32_t>(std::stoul(word, nullptr, 16)));
  return bits;
}

void expect_bits(const std::vector<float>& values, const char* expected_text, const std::string& what) {
  const std::vector<uint32_t> expected = parse_bits(expected_text);
  ASSERT_EQ(values.size(), expected.size()) << what;
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    float want;
    std::memcpy(&want, &expected[i], 4);
    EXPECT_EQ(bits, expected[i]) << what << " pair " << i << ": got " << values[i] << " want " << want;
  }
}

TEST(Config, RopeInvFreqBitExactAgainstTransformers) {
  ASSERT_EQ(std::size(kRopeCases), 24u);
  for (const RopeCase& test : kRopeCases) {
    const std::string capability = test.capability;
    const TorchCpuKernel kernel = capability == "avx512" ? TorchCpuKernel::kAvx512
                                  : capability == "avx2" ? TorchCpuKernel::kAvx2
                                                         : TorchCpuKernel::kScalar;
    const ModelConfig c = parse_model_config(json::parse(test.config), test.name);
    expect_bits(rope_inv_freq(c.rope_main, kernel), test.main_bits, std::string(test.name) + "/" + capability + " main");
    expect_bits(rope_inv_freq(c.rope_compress, kernel), test.compress_bits,
                std::string(test.name) + "/" + capability + " compress");
  }
}

TEST(Config, TinyYarnMatchesSpec) {
  // Spec section 6: RD = 8 with the Flash YaRN dict gives [1.0, 0.05, 0.00171875, 4.6875e-05].
  json config = minimal(2);
  config["head_dim"] = 64;
  config["rope_scaling"] = flash()["rope_scaling"];
  const std::vector<float> inv_freq = rope_inv_freq(parse_model_config(config, "tiny").rope_compress);
  const float expected[4] = {1.0f, 0.05f, 0.00171875f, 4.6875e-05f};  // as printed (repr)
  ASSERT_EQ(inv_freq.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(inv_freq[i], expected[i], expected[i] * 1e-6) << "pair " << i;
}

TEST(Config, DefaultsFollowTransformers) {
  const ModelConfig c = parse_model_config(minimal(6), "c.json");
  // V4-Pro default layout: HCA, HCA, then HCA/CSA alternating; 3 hash layers.
  const auto H = AttentionType::kHeavilyCompressed, C = AttentionType::kCompressedSparse;
  EXPECT_EQ(c.layer_types, (std::vector<AttentionType>{H, H, H, C, H, C}));
  EXPECT_EQ(c.mlp_layer_types, (std::vector<MlpType>{MlpType::kHashMoE, MlpType::kHashMoE, MlpType::kHashMoE,
                                                     MlpType::kMoE, MlpType::kMoE, MlpType::kMoE}));
  EXPECT_EQ(c.rope_compress.rope_type, "default");  // no YaRN without rope_scaling
  EXPECT_EQ(c.rope_compress.theta, 160000.0);
  EXPECT_EQ(c.rope_main.theta, 10000.0);
  EXPECT_EQ(c.compress_rate_csa, 4);
  EXPECT_EQ(c.compress_rate_hca, 128);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.index_topk, 512);
  EXPECT_EQ(c.quantization.quant_method, "");
  // One layer: a single HCA.
  EXPECT_EQ(parse_model_config(minimal(1), "c.json").layer_types, (std::vector<AttentionType>{H}));
}

TEST(Config, LegacyAliases) {
  json config = minimal(4);
  config["num_local_experts"] = 16;
  config["intermediate_size"] = 48;
  config["compress_rate_csa"] = 8;
  config["compress_rate_hca"] = 32;
  config["num_hash_layers"] = 1;
  config["head_dim"] = 128;
  config["qk_rope_head_dim"] = 32;
  config["eos_token_id"] = json::array({7, 9});
  config["bos_token_id"] = nullptr;
  ModelConfig c = parse_model_config(config, "legacy.json");
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_EQ(c.moe_intermediate_size, 48);
  EXPECT_EQ(c.compress_rate_csa, 8);
  EXPECT_EQ(c.compress_rate_hca, 32);
  EXPECT_EQ(c.mlp_layer_types,
            (std::vector<MlpType>{MlpType::kHashMoE, MlpType::kMoE, MlpType::kMoE, MlpType::kMoE}));
  EXPECT_EQ(c.qk_rope_head_dim, 32);
  EXPECT_EQ(c.rope_main.rope_dim, 32);
  EXPECT_EQ(c.eos_token_id, 7);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{7, 9}));
  EXPECT_EQ(c.bos_token_id, -1);
  // The field's own name wins over its attribute_map alias; partial_rotary_factor over qk_rope_head_dim.
  config["n_routed_experts"] = 32;
  config["partial_rotary_factor"] = 0.5;
  c = parse_model_config(config, "legacy.json");
  EXPECT_EQ(c.n_routed_experts, 32);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  // compress_rates dict; the legacy scalar overrides its entry.
  config = minimal(3);
  config["compress_rates"] = {{"compressed_sparse_attention", 16}, {"heavily_compressed_attention", 64}};
  config["compress_rate_csa"] = 2;
  c = parse_model_config(config, "rates.json");
  EXPECT_EQ(c.compress_rate_csa, 2);
  EXPECT_EQ(c.compress_rate_hca, 64);
  // num_hash_layers beyond the layer count, and 0.
  config = minimal(2);
  config["num_hash_layers"] = 5;
  EXPECT_EQ(parse_model_config(config, "h").mlp_layer_types, (std::vector<MlpType>(2, MlpType::kHashMoE)));
  config["num_hash_layers"] = 0;
  EXPECT_EQ(parse_model_config(config, "h").mlp_layer_types, (std::vector<MlpType>(2, MlpType::kMoE)));
}

TEST(Config, ExplicitLayerTypesWinAndLongListsTruncate) {
  json config = minimal(2);
  config["layer_types"] = {"sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"};
  config["compress_ratios"] = {128, 128};
  config["mlp_layer_types"] = {"moe", "hash_moe", "moe"};
  const ModelConfig c = parse_model_config(config, "c.json");
  EXPECT_EQ(c.layer_types, (std::vector<AttentionType>{AttentionType::kSliding, AttentionType::kCompressedSparse}));
  EXPECT_EQ(c.mlp_layer_types, (std::vector<MlpType>{MlpType::kMoE, MlpType::kHashMoE}));
}

TEST(Config, SavePretrainedNestedRope) {
  // What transformers 5.17 writes for the Flash config: nested rope_parameters.
  json config = minimal(2);
  config["partial_rotary_factor"] = 0.125;
  config["qk_rope_head_dim"] = 64;
  config["rope_parameters"] = json::parse(R"({
    "main": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.125},
    "compress": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536, "beta_fast": 32,
                 "beta_slow": 1, "rope_theta": 160000.0, "rope_type": "yarn", "partial_rotary_factor": 0.125,
                 "attention_factor": 1.0}})");
  const ModelConfig nested = parse_model_config(config, "nested.json");
  const ModelConfig official = parse_model_config(flash(), "flash.json");
  EXPECT_EQ(rope_inv_freq(nested.rope_compress), rope_inv_freq(official.rope_compress));
  EXPECT_EQ(rope_inv_freq(nested.rope_main), rope_inv_freq(official.rope_main));
  // A nested compress dict without rope_theta takes rope_theta (not compress_rope_theta).
  config["rope_parameters"]["compress"].erase("rope_theta");
  config["rope_theta"] = 5000.0;
  EXPECT_EQ(parse_model_config(config, "nested.json").rope_compress.theta, 5000.0);
}

TEST(Config, RopeScalingPrecedenceAndDefaults) {
  json config = minimal(2);
  config["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 4096}};
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", 8}};  // non-empty rope_scaling wins
  ModelConfig c = parse_model_config(config, "c.json");
  EXPECT_EQ(c.rope_compress.factor, 8.0);
  EXPECT_EQ(c.rope_compress.original_max_position_embeddings, 1048576);  // max_position_embeddings
  EXPECT_EQ(c.rope_compress.theta, 160000.0);
  config["rope_scaling"] = json::object();  // empty: falls back to rope_parameters
  c = parse_model_config(config, "c.json");
  EXPECT_EQ(c.rope_compress.factor, 4.0);
  EXPECT_EQ(c.rope_compress.original_max_position_embeddings, 4096);
  EXPECT_EQ(c.rope_main.rope_type, "default");
  // factor null -> max_position_embeddings / original; beta 0 / null -> 32 / 1.
  config = minimal(2);
  config["max_position_embeddings"] = 32768;
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", nullptr}, {"original_max_position_embeddings", 4096},
                            {"beta_fast", 0}, {"beta_slow", nullptr}};
  c = parse_model_config(config, "c.json");
  EXPECT_EQ(c.rope_compress.factor, 8.0);
  EXPECT_EQ(c.rope_compress.beta_fast, 32.0);
  EXPECT_EQ(c.rope_compress.beta_slow, 1.0);
}

TEST(Config, Quantization) {
  json config = minimal(1);
  config["quantization_config"] = json::parse(R"({"quant_method": "modelopt", "quant_algo": "NVFP4",
      "group_size": 16, "ignore": ["lm_head", "model.layers.*.attn*"], "expert_dtype": "fp4"})");
  ModelConfig c = parse_model_config(config, "nvfp4.json");
  EXPECT_EQ(c.quantization.quant_method, "modelopt");
  EXPECT_EQ(c.quantization.quant_algo, "NVFP4");
  EXPECT_EQ(c.quantization.group_size, 16);
  EXPECT_EQ(c.quantization.exclude_modules, (std::vector<std::string>{"lm_head", "model.layers.*.attn*"}));
  EXPECT_EQ(c.quantization.expert_dtype, "fp4");
  config["quantization_config"] = json::parse(R"({"quant_method": "modelopt",
      "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}})");
  c = parse_model_config(config, "nvfp4.json");
  EXPECT_EQ(c.quantization.quant_algo, "NVFP4");
  EXPECT_EQ(c.quantization.exclude_modules, (std::vector<std::string>{"lm_head"}));
}

TEST(Config, LayerTypesLengthMismatch) {
  json config = minimal(3);
  config["layer_types"] = {"sliding_attention"};
  std::string message = error_of(config);
  EXPECT_CONTAINS(message, "bad/config.json");
  EXPECT_CONTAINS(message, "layer_types has 1 entries but num_hidden_layers is 3");
  config = minimal(3);
  config["compress_ratios"] = {0, 4};
  EXPECT_CONTAINS(error_of(config), "compress_ratios has 2 entries but num_hidden_layers is 3");
  config = minimal(3);
  config["mlp_layer_types"] = {"moe", "moe"};
  EXPECT_CONTAINS(error_of(config), "mlp_layer_types has 2 entries but num_hidden_layers is 3");
}

TEST(Config, UnknownLayerType) {
  json config = minimal(1);
  config["layer_types"] = {"full_attention"};
  EXPECT_CONTAINS(error_of(config), "layer_types[0] = \"full_attention\" is not a known layer type");
  config = minimal(2);
  config["compress_ratios"] = {0, 16};
  EXPECT_CONTAINS(error_of(config), "compress_ratios[1] = 16 is not a known layer type");
  config = minimal(1);
  config["mlp_layer_types"] = {"dense"};
  EXPECT_CONTAINS(error_of(config), "mlp_layer_types[0] = \"dense\" is not a known mlp type");
  config = minimal(1);
  config["compress_rates"] = {{"sliding_attention", 4}};
  EXPECT_CONTAINS(error_of(config), "compress_rates has unknown layer type 'sliding_attention'");
}

TEST(Config, MissingAndWrongTypes) {
  json config = minimal(2);
  config.erase("hidden_size");
  EXPECT_CONTAINS(error_of(config), "bad/config.json: missing required field 'hidden_size'");
  config = minimal(2);
  config["hidden_size"] = "big";
  EXPECT_CONTAINS(error_of(config), "field 'hidden_size' must be an integer, got \"big\"");
  config = minimal(2);
  config["head_dim"] = 64.5;
  EXPECT_CONTAINS(error_of(config), "field 'head_dim' must be an integer, got 64.5");
  config = minimal(2);
  config["layer_types"] = "sliding_attention";
  EXPECT_CONTAINS(error_of(config), "field 'layer_types' must be a list");
  config = minimal(2);
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", "sixteen"}};
  EXPECT_CONTAINS(error_of(config), "field 'rope_scaling.factor' must be a number, got \"sixteen\"");
  config = minimal(2);
  config["rope_scaling"] = {{"type", "yarn"}};
  EXPECT_CONTAINS(error_of(config), "is yarn but has no field 'rope_scaling.factor'");
  config = minimal(2);
  config["rope_scaling"] = {{"type", "longrope"}};
  EXPECT_CONTAINS(error_of(config), "RoPE type 'longrope' of the 'compress' table is not supported");
  config = minimal(2);
  config["quantization_config"] = "fp8";
  EXPECT_CONTAINS(error_of(config), "field 'quantization_config' must be an object");
  config = minimal(2);
  config["tie_word_embeddings"] = 1;
  EXPECT_CONTAINS(error_of(config), "field 'tie_word_embeddings' must be true or false");
  EXPECT_CONTAINS(error_of(json::array()), "config must be a JSON object");
}

TEST(Config, InvalidValues) {
  auto with = [](const char* key, json value) {
    json config = minimal(2);
    config[key] = std::move(value);
    return error_of(config);
  };
  EXPECT_CONTAINS(with("num_key_value_heads", 8), "num_key_value_heads must be 1");
  EXPECT_CONTAINS(with("vocab_size", 0), "field 'vocab_size' must be positive, got 0");
  EXPECT_CONTAINS(with("model_type", "llama"), "model_type 'llama' is not supported");
  EXPECT_CONTAINS(with("o_groups", 3), "num_attention_heads x head_dim = 4 x 512 is not divisible by o_groups 3");
  EXPECT_CONTAINS(with("num_experts_per_tok", 300), "num_experts_per_tok 300 exceeds n_routed_experts 256");
  EXPECT_CONTAINS(with("partial_rotary_factor", 0.001), "rope dim 0");
  EXPECT_CONTAINS(with("hidden_act", "gelu"), "hidden_act 'gelu' is not supported");
  EXPECT_CONTAINS(with("mlp_bias", true), "mlp_bias = true is not supported");
  EXPECT_CONTAINS(with("compress_rates", {{"compressed_sparse_attention", 4}}),
                  "compress rate of heavily_compressed_attention is 0 but layers of that type exist");
  json flash_config = flash();
  flash_config["quantization_config"]["weight_block_size"] = {64, 64};
  EXPECT_CONTAINS(error_of(flash_config), "weight_block_size must be [128, 128]");
  // Nested YaRN without attention_factor: transformers would scale cos/sin by 1.277.
  json config = minimal(2);
  config["rope_parameters"] = {{"main", {{"rope_type", "default"}}},
                               {"compress", {{"rope_type", "yarn"}, {"factor", 16}}}};
  EXPECT_CONTAINS(error_of(config), "has attention_factor 1.277");
  config["rope_parameters"].erase("main");
  EXPECT_CONTAINS(error_of(config), "must hold both 'main' and 'compress' objects");
  config["rope_parameters"] = {{"main", {{"rope_type", "default"}, {"partial_rotary_factor", 0.25}}},
                               {"compress", {{"rope_type", "default"}}}};
  EXPECT_CONTAINS(error_of(config), "'rope_parameters.main.partial_rotary_factor' = 0.25 disagrees");
}

TEST(Config, LoadFromFile) {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_config_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << kFlashConfig;
  EXPECT_EQ(load_model_config(dir / "config.json").num_hidden_layers, 43);
  std::ofstream(dir / "broken.json") << "{\"vocab_size\": 12,";
  try {
    load_model_config(dir / "broken.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(error.what(), "broken.json: invalid JSON");
  }
  try {
    load_model_config(dir / "absent.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(error.what(), "cannot open");
    EXPECT_CONTAINS(error.what(), "absent.json");
  }
  std::ofstream(dir / "short.json") << R"({"vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 3,
      "num_attention_heads": 4, "layer_types": ["sliding_attention", "sliding_attention"]})";
  try {
    load_model_config(dir / "short.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(error.what(), (dir / "short.json").string() + ": layer_types has 2 entries but num_hidden_layers is 3");
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dsv4

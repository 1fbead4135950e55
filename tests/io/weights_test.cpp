// Weight binding on a golden checkpoint: transformers' names and DeepSeek's official
// names both load; a missing tensor, a wrong shape and a wrong dtype are errors that
// name the tensor and the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <algorithm>
#include <cstring>
#include <functional>

#include "dsv4/error.h"
#include "dsv4/weights.h"
#include "io/key_names.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path kGolden = fs::path(DSV4_FIXTURES_DIR) / "golden" / "small_rates";

// Copies the golden model to a temp dir, passing each tensor through `edit`
// (which may rename, drop (return false) or change it).
fs::path rewrite(const std::string& name, const std::function<bool(TensorToWrite&)>& edit) {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_weights_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(kGolden / "config.json", dir / "config.json");
  Checkpoint source(kGolden);
  std::vector<TensorToWrite> tensors;
  for (const auto& tensor_name : source.names()) {
    const TensorView& view = source.get(tensor_name);
    TensorToWrite t{view.name, view.dtype, view.shape, view.data, view.nbytes};
    if (edit(t)) tensors.push_back(t);
  }
  write_safetensors(dir / "model.safetensors", tensors);
  return dir;
}

std::string load_error(const fs::path& dir) {
  try {
    load_model(dir);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(Weights, LoadsTransformersNames) {
  const ModelWeights w = load_model(kGolden);
  ASSERT_EQ(static_cast<int64_t>(w.layers.size()), w.config.num_hidden_layers);
  EXPECT_EQ(w.embed.format, WeightFormat::kF32);
  for (const LayerWeights& layer : w.layers) {
    EXPECT_EQ(layer.attn.has_indexer, layer.attention_type == AttentionType::kCompressedSparse);
    EXPECT_EQ(layer.attn.has_compressor, layer.attention_type != AttentionType::kSliding);
    EXPECT_EQ(static_cast<int64_t>(layer.ffn.experts.size()), w.config.n_routed_experts);
  }
  EXPECT_EQ(w.layers[0].ffn.tid2eid.size(), static_cast<size_t>(w.config.vocab_size * w.config.num_experts_per_tok));
}

TEST(Weights, LoadsOfficialNames) {
  const fs::path dir = rewrite("official", [](TensorToWrite& t) {
    const std::string official = official_name_for(t.name);
    EXPECT_FALSE(official.empty()) << "no official name for " << t.name;
    t.name = official;
    return true;
  });
  const ModelWeights official = load_model(dir);
  const ModelWeights hf = load_model(kGolden);
  EXPECT_EQ(official.embed.rows, hf.embed.rows);
  for (size_t l = 0; l < hf.layers.size(); ++l) {
    EXPECT_EQ(std::memcmp(official.layers[l].attn.wq_b.data, hf.layers[l].attn.wq_b.data,
                          hf.layers[l].attn.wq_b.storage_bytes()), 0);
    EXPECT_EQ(official.layers[l].attn.kv_norm.values, hf.layers[l].attn.kv_norm.values);
  }
}

TEST(KeyNames, BothWays) {
  EXPECT_EQ(official_name_for("model.layers.3.attn.norm.weight"), "layers.3.attn.kv_norm.weight");
  EXPECT_EQ(official_name_for("model.layers.3.self_attn.q_a_proj.weight"), "layers.3.attn.wq_a.weight");
  EXPECT_EQ(official_name_for("model.embed_tokens.weight"), "embed.weight");
  EXPECT_EQ(official_name_for("lm_head.weight"), "head.weight");
  EXPECT_EQ(official_name_for("model.hc_head.hc_fn"), "hc_head_fn");
  EXPECT_EQ(official_name_for("model.layers.0.ffn.experts.7.w2.weight"), "layers.0.ffn.experts.7.w2.weight");
  const auto names = candidate_names("layers.2.attn.indexer.weights_proj.weight");
  EXPECT_NE(std::find(names.begin(), names.end(), "model.layers.2.self_attn.compressor.indexer.scorer.weights_proj.weight"),
            names.end());
  EXPECT_EQ(official_name_for("mtp.0.whatever"), "");
}

TEST(Weights, MissingTensor) {
  const fs::path dir = rewrite("missing", [](TensorToWrite& t) { return t.name != "model.layers.2.attn.wq_b.weight"; });
  const std::string message = load_error(dir);
  EXPECT_NE(message.find("missing tensor layers.2.attn.wq_b.weight"), std::string::npos) << message;
}

TEST(Weights, WrongShape) {
  const fs::path dir2 = rewrite("shape2", [](TensorToWrite& t) {
    if (t.name == "model.layers.1.attn.wkv.weight") {
      t.shape = {t.shape[0] / 2, t.shape[1] * 2};
    }
    return true;
  });
  const std::string message2 = load_error(dir2);
  EXPECT_NE(message2.find("model.layers.1.attn.wkv.weight in model.safetensors: shape ["), std::string::npos) << message2;
  EXPECT_NE(message2.find("but config expects"), std::string::npos) << message2;
}

TEST(Weights, WrongDtype) {
  const fs::path dir = rewrite("dtype", [](TensorToWrite& t) {
    if (t.name == "model.layers.0.attn.wq_a.weight") {
      t.dtype = DType::kI8;
      t.nbytes /= 4;
    }
    return true;
  });
  const std::string message = load_error(dir);
  EXPECT_NE(message.find("model.layers.0.attn.wq_a.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("dtype I8"), std::string::npos) << message;
}

TEST(Weights, NoConfig) {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_noconfig_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string message = load_error(dir);
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
}

}  // namespace
}  // namespace dsv4

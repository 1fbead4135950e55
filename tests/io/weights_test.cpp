// Weight binding on tiny transformers 5.17 checkpoints (tests/fixtures/io, made by
// make_tiny.py): save_pretrained's hybrid names, state_dict names with fused experts
// in BF16, official names, every quantized storage format, and errors that name the
// tensor, the file and expected vs actual.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <unistd.h>

#include "dsv4/error.h"
#include "dsv4/formats.h"
#include "dsv4/weights.h"
#include "io/key_names.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

const fs::path kSaved = fs::path(DSV4_FIXTURES_DIR) / "io" / "tiny_saved";  // F32, hybrid names
const fs::path kState = fs::path(DSV4_FIXTURES_DIR) / "io" / "tiny_state";  // BF16, state_dict names

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

OwnedTensor copy_of(const TensorView& view) {
  return {view.name, view.dtype, view.shape, std::vector<uint8_t>(view.data, view.data + view.nbytes)};
}

std::vector<float> floats_of(const TensorView& view) {
  EXPECT_EQ(view.dtype, DType::kF32) << view.name;
  std::vector<float> values(static_cast<size_t>(view.numel()));
  std::memcpy(values.data(), view.data, values.size() * 4);
  return values;
}

template <typename T>
OwnedTensor make(const std::string& name, DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  OwnedTensor t{name, dtype, std::move(shape), std::vector<uint8_t>(values.size() * sizeof(T))};
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

// Copies a checkpoint to a temp dir; `edit` sees each tensor and appends what to
// write instead (nothing = drop it). config.json is copied unless `config` is given.
using Edit = std::function<void(const TensorView&, std::vector<OwnedTensor>&)>;
fs::path rewrite(const fs::path& source, const std::string& name, const Edit& edit, const std::string& config = "") {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_weights_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  if (config.empty()) fs::copy_file(source / "config.json", dir / "config.json");
  else std::ofstream(dir / "config.json") << config;
  Checkpoint checkpoint(source);
  std::vector<OwnedTensor> owned;
  for (const auto& tensor_name : checkpoint.names()) edit(checkpoint.get(tensor_name), owned);
  std::vector<TensorToWrite> tensors;
  for (const OwnedTensor& t : owned)
    tensors.push_back({t.name, t.dtype, t.shape, t.bytes.data(), static_cast<int64_t>(t.bytes.size())});
  write_safetensors(dir / "model.safetensors", tensors);
  return dir;
}

void keep(const TensorView& view, std::vector<OwnedTensor>& out) { out.push_back(copy_of(view)); }

std::string load_error(const fs::path& dir) {
  try {
    load_model(dir);
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

// Every matrix of a model with a readable name.
std::vector<std::pair<std::string, const QuantMatrix*>> matrices(const ModelWeights& w) {
  std::vector<std::pair<std::string, const QuantMatrix*>> all = {{"embed", &w.embed}, {"head", &w.head}};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& layer = w.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    const AttentionWeights& a = layer.attn;
    for (auto [name, m] : {std::pair{"wq_a", &a.wq_a}, {"wq_b", &a.wq_b}, {"wkv", &a.wkv}, {"wo_a", &a.wo_a},
                           {"wo_b", &a.wo_b}, {"gate", &layer.ffn.gate}, {"shared.w1", &layer.ffn.shared.w1},
                           {"shared.w2", &layer.ffn.shared.w2}, {"shared.w3", &layer.ffn.shared.w3}})
      all.emplace_back(p + name, m);
    if (a.has_compressor) {
      all.emplace_back(p + "compressor.wkv", &a.compressor.wkv);
      all.emplace_back(p + "compressor.wgate", &a.compressor.wgate);
    }
    if (a.has_indexer) {
      all.emplace_back(p + "indexer.wq_b", &a.indexer.wq_b);
      all.emplace_back(p + "indexer.weights_proj", &a.indexer.weights_proj);
      all.emplace_back(p + "indexer.compressor.wkv", &a.indexer.compressor.wkv);
      all.emplace_back(p + "indexer.compressor.wgate", &a.indexer.compressor.wgate);
    }
    for (size_t e = 0; e < layer.ffn.experts.size(); ++e) {
      const std::string q = p + "expert " + std::to_string(e) + " ";
      all.emplace_back(q + "w1", &layer.ffn.experts[e].w1);
      all.emplace_back(q + "w2", &layer.ffn.experts[e].w2);
      all.emplace_back(q + "w3", &layer.ffn.experts[e].w3);
    }
  }
  return all;
}

// Every small FP32 tensor of a model.
std::vector<std::pair<std::string, const FloatTensor*>> vectors(const ModelWeights& w) {
  std::vector<std::pair<std::string, const FloatTensor*>> all = {
      {"norm", &w.norm}, {"hc_head.fn", &w.hc_head.fn}, {"hc_head.base", &w.hc_head.base},
      {"hc_head.scale", &w.hc_head.scale}};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& layer = w.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    for (auto [name, t] : {std::pair{"attn_norm", &layer.attn_norm}, {"ffn_norm", &layer.ffn_norm},
                           {"hc_attn.fn", &layer.hc_attn.fn}, {"hc_attn.base", &layer.hc_attn.base},
                           {"hc_attn.scale", &layer.hc_attn.scale}, {"hc_ffn.fn", &layer.hc_ffn.fn},
                           {"hc_ffn.base", &layer.hc_ffn.base}, {"hc_ffn.scale", &layer.hc_ffn.scale},
                           {"q_norm", &layer.attn.q_norm}, {"kv_norm", &layer.attn.kv_norm},
                           {"attn_sink", &layer.attn.attn_sink}, {"gate_bias", &layer.ffn.gate_bias}})
      all.emplace_back(p + name, t);
    if (layer.attn.has_compressor) {
      all.emplace_back(p + "compressor.ape", &layer.attn.compressor.ape);
      all.emplace_back(p + "compressor.norm", &layer.attn.compressor.norm);
    }
    if (layer.attn.has_indexer) {
      all.emplace_back(p + "indexer.compressor.ape", &layer.attn.indexer.compressor.ape);
      all.emplace_back(p + "indexer.compressor.norm", &layer.attn.indexer.compressor.norm);
    }
  }
  return all;
}

std::vector<float> dequantized(const QuantMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
  dequantize_rows(m, 0, m.rows, out.data());
  return out;
}

TEST(Weights, LoadsSavePretrainedCheckpoint) {
  const ModelWeights w = load_model(kSaved);
  const ModelConfig& c = w.config;
  ASSERT_EQ(w.layers.size(), 3u);
  EXPECT_EQ(w.layers[0].attention_type, AttentionType::kSliding);
  EXPECT_EQ(w.layers[1].attention_type, AttentionType::kCompressedSparse);
  EXPECT_EQ(w.layers[2].attention_type, AttentionType::kHeavilyCompressed);
  EXPECT_EQ(w.layers[0].mlp_type, MlpType::kHashMoE);
  EXPECT_EQ(w.layers[1].mlp_type, MlpType::kMoE);
  EXPECT_FALSE(w.layers[0].attn.has_compressor);
  EXPECT_TRUE(w.layers[1].attn.has_indexer);
  EXPECT_TRUE(w.layers[2].attn.has_compressor);
  EXPECT_FALSE(w.layers[2].attn.has_indexer);
  for (const auto& [name, m] : matrices(w)) {
    EXPECT_EQ(m->format, WeightFormat::kF32) << name;
    EXPECT_NE(m->data, nullptr) << name;
  }
  // Shapes from the config: CSA compressor projects to 2*head_dim (overlap), HCA to head_dim.
  EXPECT_EQ(w.layers[1].attn.compressor.wkv.rows, 2 * c.head_dim);
  EXPECT_EQ(w.layers[2].attn.compressor.wkv.rows, c.head_dim);
  EXPECT_EQ(w.layers[1].attn.compressor.ape.shape, (std::vector<int64_t>{4, 2 * c.head_dim}));
  EXPECT_EQ(w.layers[2].attn.compressor.ape.shape, (std::vector<int64_t>{8, c.head_dim}));
  EXPECT_EQ(w.hc_head.fn.shape, (std::vector<int64_t>{c.hc_mult, c.hc_mult * c.hidden_size}));
  EXPECT_EQ(w.layers[0].hc_attn.fn.shape, (std::vector<int64_t>{c.hc_mix_width(), c.hc_mult * c.hidden_size}));
  // Values: the bound views and vectors are the file's bytes.
  const Checkpoint checkpoint(kSaved);
  EXPECT_EQ(w.layers[1].attn.kv_norm.values, floats_of(checkpoint.get("model.layers.1.attn.norm.weight")));
  EXPECT_EQ(w.layers[2].ffn.gate_bias.values, floats_of(checkpoint.get("model.layers.2.ffn.gate.bias")));
  EXPECT_EQ(dequantized(w.layers[2].ffn.experts[3].w2),
            floats_of(checkpoint.get("model.layers.2.ffn.experts.3.w2.weight")));
  const TensorView& tid2eid = checkpoint.get("model.layers.0.ffn.gate.tid2eid");
  ASSERT_EQ(w.layers[0].ffn.tid2eid.size(), static_cast<size_t>(tid2eid.numel()));
  for (size_t i = 0; i < w.layers[0].ffn.tid2eid.size(); ++i) {
    int64_t expected;
    std::memcpy(&expected, tid2eid.data + 8 * i, 8);
    EXPECT_EQ(w.layers[0].ffn.tid2eid[i], expected) << i;
  }
}

TEST(Weights, StateDictNamesWithFusedExpertsInBf16) {
  // The same model as kSaved, cast to BF16, saved as state_dict(): transformers'
  // module names, fused gate_up_proj [E, 2I, H] / down_proj [E, H, I].
  const ModelWeights saved = load_model(kSaved);
  const ModelWeights state = load_model(kState);
  const auto saved_matrices = matrices(saved), state_matrices = matrices(state);
  ASSERT_EQ(saved_matrices.size(), state_matrices.size());
  for (size_t i = 0; i < saved_matrices.size(); ++i) {
    const std::string& name = saved_matrices[i].first;
    EXPECT_EQ(state_matrices[i].second->format, WeightFormat::kBF16) << name;
    const std::vector<float> reference = dequantized(*saved_matrices[i].second);
    const std::vector<float> ours = dequantized(*state_matrices[i].second);
    ASSERT_EQ(ours.size(), reference.size()) << name;
    for (size_t k = 0; k < ours.size(); ++k)
      ASSERT_EQ(ours[k], bf16_to_float(float_to_bf16(reference[k]))) << name << " element " << k;
  }
  EXPECT_EQ(state.layers[1].ffn.experts[2].w1.name, "model.layers.1.mlp.experts.gate_up_proj[2, :8]");
  EXPECT_EQ(state.layers[1].ffn.experts[2].w3.name, "model.layers.1.mlp.experts.gate_up_proj[2, 8:]");
  const auto saved_vectors = vectors(saved), state_vectors = vectors(state);
  for (size_t i = 0; i < saved_vectors.size(); ++i) {
    const std::string& name = saved_vectors[i].first;
    EXPECT_EQ(state_vectors[i].second->shape, saved_vectors[i].second->shape) << name;
    for (size_t k = 0; k < saved_vectors[i].second->values.size(); ++k)
      ASSERT_EQ(state_vectors[i].second->values[k], bf16_to_float(float_to_bf16(saved_vectors[i].second->values[k])))
          << name << " element " << k;
  }
  EXPECT_EQ(state.layers[0].ffn.tid2eid, saved.layers[0].ffn.tid2eid);
}

TEST(Weights, LoadsOfficialNamesAndIgnoresMtp) {
  const fs::path dir = rewrite(kSaved, "official", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    OwnedTensor t = copy_of(view);
    t.name = official_name_for(view.name);
    EXPECT_FALSE(t.name.empty()) << "no official name for " << view.name;
    out.push_back(t);
    if (t.name == "layers.0.attn.wq_a.weight") {  // the MTP layer's tensors are not used
      t.name = "mtp.0.attn.wq_a.weight";
      out.push_back(t);
    }
  });
  const ModelWeights official = load_model(dir);
  const ModelWeights saved = load_model(kSaved);
  EXPECT_EQ(official.layers[1].attn.wq_b.name, "layers.1.attn.wq_b.weight");
  const auto a = matrices(official), b = matrices(saved);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(dequantized(*a[i].second), dequantized(*b[i].second)) << a[i].first;
  const auto va = vectors(official), vb = vectors(saved);
  for (size_t i = 0; i < va.size(); ++i) EXPECT_EQ(va[i].second->values, vb[i].second->values) << va[i].first;
}

TEST(Weights, GoldenFixturesLoad) {
  const fs::path golden = fs::path(DSV4_FIXTURES_DIR) / "golden";
  if (!fs::exists(golden)) GTEST_SKIP() << "no golden fixtures";
  int loaded = 0;
  for (const auto& entry : fs::directory_iterator(golden)) {
    if (!fs::exists(entry.path() / "config.json")) continue;
    const ModelWeights w = load_model(entry.path());
    EXPECT_EQ(static_cast<int64_t>(w.layers.size()), w.config.num_hidden_layers) << entry.path();
    ++loaded;
  }
  EXPECT_GT(loaded, 0);
}

// --- Quantized storage -------------------------------------------------------------

// Power-of-two FP8 block scale for a block's amax (E8M0 code, 127 = 1.0).
uint8_t fp8_block_exponent(float amax) {
  if (amax == 0.0f) return 127;
  return static_cast<uint8_t>(127 + static_cast<int>(std::ceil(std::log2(amax / 448.0f))));
}

// Quantizes a dense F32 [rows, cols] tensor X.weight to `format`, appending X.weight
// and its companions. Returns the dequantized reference values (from the codes).
std::vector<float> quantize(const TensorView& view, WeightFormat format, bool variant, std::vector<OwnedTensor>& out) {
  const std::vector<float> w = floats_of(view);
  const int64_t rows = view.shape[0], cols = view.shape[1];
  const std::string base = view.name.substr(0, view.name.size() - 7);
  std::vector<float> reference(w.size());
  if (format == WeightFormat::kFP8Block) {  // variant: F32 scales (the -Base checkpoints)
    const int64_t scale_rows = (rows + 127) / 128, scale_cols = (cols + 127) / 128;
    std::vector<uint8_t> codes(w.size()), exponents(static_cast<size_t>(scale_rows * scale_cols));
    for (int64_t br = 0; br < scale_rows; ++br)
      for (int64_t bc = 0; bc < scale_cols; ++bc) {
        float amax = 0;
        for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
          for (int64_t c = bc * 128; c < std::min(cols, bc * 128 + 128); ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
        exponents[br * scale_cols + bc] = fp8_block_exponent(amax);
      }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float scale = e8m0_to_float(exponents[(r / 128) * scale_cols + c / 128]);
        codes[r * cols + c] = float_to_e4m3(w[r * cols + c] / scale);
        reference[r * cols + c] = e4m3_to_float(codes[r * cols + c]) * scale;
      }
    out.push_back(make(view.name, DType::kF8_E4M3, {rows, cols}, codes));
    if (variant) {
      std::vector<float> scales;
      for (uint8_t e : exponents) scales.push_back(e8m0_to_float(e));
      out.push_back(make(base + ".scale", DType::kF32, {scale_rows, scale_cols}, scales));
    } else {
      out.push_back(make(base + ".scale", DType::kF8_E8M0, {scale_rows, scale_cols}, exponents));
    }
  } else if (format == WeightFormat::kMXFP4) {  // variant: F4 dtype (shape counts elements)
    std::vector<uint8_t> packed(w.size() / 2), scales(w.size() / 32);
    for (int64_t r = 0; r < rows; ++r)
      quantize_mxfp4_row(&w[r * cols], cols, &packed[r * cols / 2], &scales[r * cols / 32]);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const uint8_t nibble = (packed[(r * cols + c) / 2] >> (4 * (c & 1))) & 0xf;
        reference[r * cols + c] = e2m1_to_float(nibble) * e8m0_to_float(scales[r * cols / 32 + c / 32]);
      }
    if (variant) out.push_back(make(view.name, DType::kF4, {rows, cols}, packed));
    else out.push_back(make(view.name, DType::kI8, {rows, cols / 2}, packed));
    out.push_back(make(base + ".scale", DType::kF8_E8M0, {rows, cols / 32}, scales));
  } else {  // NVFP4; variant: with the (ignored) activation input_scale
    const float tensor_scale = nvfp4_tensor_scale(w.data(), static_cast<int64_t>(w.size()));
    std::vector<uint8_t> packed(w.size() / 2), scales(w.size() / 16);
    for (int64_t r = 0; r < rows; ++r)
      quantize_nvfp4_row(&w[r * cols], cols, tensor_scale, &packed[r * cols / 2], &scales[r * cols / 16]);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const uint8_t nibble = (packed[(r * cols + c) / 2] >> (4 * (c & 1))) & 0xf;
        reference[r * cols + c] = e2m1_to_float(nibble) * e4m3_to_float(scales[r * cols / 16 + c / 16]) * tensor_scale;
      }
    out.push_back(make(view.name, DType::kU8, {rows, cols / 2}, packed));
    out.push_back(make(base + ".weight_scale", DType::kF8_E4M3, {rows, cols / 16}, scales));
    out.push_back(make(base + ".weight_scale_2", DType::kF32, {}, std::vector<float>{tensor_scale}));
    if (variant) out.push_back(make(base + ".input_scale", DType::kF32, {}, std::vector<float>{1.0f}));
  }
  return reference;
}

TEST(Weights, QuantizedFormatsBindToTheirScales) {
  // Every 2-D matrix gets a format its shape allows, cycling through all variants.
  std::map<std::string, std::pair<WeightFormat, std::vector<float>>> expected;  // by stored name
  int counter = 0;
  const fs::path dir = rewrite(kSaved, "quantized", [&](const TensorView& view, std::vector<OwnedTensor>& out) {
    const bool matrix = view.shape.size() == 2 && view.name.size() > 7 &&
                        view.name.compare(view.name.size() - 7, 7, ".weight") == 0;
    if (!matrix) return keep(view, out);
    const int64_t cols = view.shape[1];
    std::vector<WeightFormat> allowed = {WeightFormat::kFP8Block};
    if (cols % 16 == 0) allowed.push_back(WeightFormat::kNVFP4);
    if (cols % 32 == 0) allowed.push_back(WeightFormat::kMXFP4);
    const WeightFormat format = allowed[counter % allowed.size()];
    const bool variant = (counter / 3) % 2 == 1;
    ++counter;
    expected[view.name] = {format, quantize(view, format, variant, out)};
  });
  const ModelWeights w = load_model(dir);
  std::map<WeightFormat, int> seen;
  for (const auto& [name, m] : matrices(w)) {
    const auto it = expected.find(m->name);
    ASSERT_NE(it, expected.end()) << name << " bound to " << m->name;
    EXPECT_EQ(m->format, it->second.first) << m->name;
    ++seen[m->format];
    const std::vector<float> ours = dequantized(*m);
    const std::vector<float>& reference = it->second.second;
    ASSERT_EQ(ours.size(), reference.size()) << m->name;
    for (size_t k = 0; k < ours.size(); ++k)
      ASSERT_NEAR(ours[k], reference[k], std::fabs(reference[k]) * 1e-6f) << m->name << " element " << k;
  }
  EXPECT_GT(seen[WeightFormat::kFP8Block], 10);
  EXPECT_GT(seen[WeightFormat::kNVFP4], 10);
  EXPECT_GT(seen[WeightFormat::kMXFP4], 0);  // wo_a: the only input width divisible by 32
}

TEST(Weights, TransformersFp8ScaleName) {
  // transformers renames the official `.scale` to `.weight_scale_inv`.
  const fs::path dir = rewrite(kSaved, "scale_inv", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    if (view.name != "model.layers.0.attn.wq_a.weight") return keep(view, out);
    quantize(view, WeightFormat::kFP8Block, false, out);
    out.back().name = "model.layers.0.attn.wq_a.weight_scale_inv";
  });
  EXPECT_EQ(load_model(dir).layers[0].attn.wq_a.format, WeightFormat::kFP8Block);
}

// --- Errors ------------------------------------------------------------------------

TEST(Weights, MissingTensor) {
  const fs::path dir = rewrite(kSaved, "missing", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    if (view.name != "model.layers.2.attn.wq_b.weight") keep(view, out);
  });
  const std::string message = load_error(dir);
  EXPECT_CONTAINS(message, "(1 problem)");
  EXPECT_CONTAINS(message, "missing tensor layers.2.attn.wq_b.weight (layer 2 wq_b");
  EXPECT_CONTAINS(message, dir.string());
}

TEST(Weights, WrongShape) {
  const fs::path dir = rewrite(kSaved, "shape", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    OwnedTensor t = copy_of(view);
    if (t.name == "model.layers.1.attn.wq_b.weight") {  // [64, 8] stored as [32, 16]
      t.shape = {t.shape[0] / 2, t.shape[1] * 2};
    }
    out.push_back(t);
  });
  EXPECT_CONTAINS(load_error(dir),
                  "tensor model.layers.1.attn.wq_b.weight in model.safetensors: shape [32, 16] but config expects "
                  "[64, 8] (layer 1 wq_b (num_attention_heads*head_dim, q_lora_rank); dense)");
}

TEST(Weights, WrongDtype) {
  const fs::path dir = rewrite(kSaved, "dtype", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    OwnedTensor t = copy_of(view);
    if (t.name == "model.layers.0.attn.wq_a.weight" || t.name == "model.layers.0.attn.q_norm.weight") {
      t.dtype = DType::kI8;
      t.bytes.resize(t.bytes.size() / 4);
    }
    if (t.name == "model.layers.0.ffn.gate.tid2eid") {
      t.dtype = DType::kF32;
      t.bytes.resize(t.bytes.size() / 2);
    }
    out.push_back(t);
  });
  const std::string message = load_error(dir);
  EXPECT_CONTAINS(message, "(3 problems)");
  EXPECT_CONTAINS(message, "tensor model.layers.0.attn.wq_a.weight in model.safetensors: dtype I8 but expected F32, BF16 "
                           "or F16, or quantized data");
  EXPECT_CONTAINS(message, "tensor model.layers.0.attn.q_norm.weight in model.safetensors: dtype I8 but expected F32, "
                           "BF16 or F16 (layer 0 q_norm)");
  EXPECT_CONTAINS(message, "tensor model.layers.0.ffn.gate.tid2eid in model.safetensors: dtype F32 but expected I64 or I32");
}

TEST(Weights, ManyProblemsAreReportedTogether) {
  const fs::path dir = rewrite(kSaved, "many", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    if (view.name.find("experts") == std::string::npos) keep(view, out);
  });
  const std::string message = load_error(dir);
  EXPECT_CONTAINS(message, "does not fit its config (");
  EXPECT_CONTAINS(message, "missing tensor layers.0.ffn.experts.0.w1.weight (routed expert 0 of layer 0, gate");
  EXPECT_CONTAINS(message, "... and ");
}

TEST(Weights, QuantizedCompanionErrors) {
  auto with_edit = [](const std::string& name, const std::function<void(std::vector<OwnedTensor>&)>& damage) {
    return rewrite(kSaved, name, [&](const TensorView& view, std::vector<OwnedTensor>& out) {
      if (view.name != "model.layers.0.ffn.shared_experts.w1.weight") return keep(view, out);
      quantize(view, WeightFormat::kNVFP4, false, out);
      damage(out);
    });
  };
  // NVFP4 without its per-tensor scale.
  std::string message = load_error(with_edit("nvfp4_no_global", [](std::vector<OwnedTensor>& out) { out.pop_back(); }));
  EXPECT_CONTAINS(message, "tensor model.layers.0.ffn.shared_experts.w1.weight_scale_2 (the F32 per-tensor scale of "
                           "NVFP4 weight model.layers.0.ffn.shared_experts.w1.weight in model.safetensors) is missing");
  // Block scales of the wrong shape.
  message = load_error(with_edit("nvfp4_scale_shape", [](std::vector<OwnedTensor>& out) {
    OwnedTensor& scales = out[out.size() - 2];
    scales.shape = {scales.shape[1], scales.shape[0]};
  }));
  EXPECT_CONTAINS(message, "tensor model.layers.0.ffn.shared_experts.w1.weight_scale in model.safetensors: shape [1, 8] "
                           "but config expects [8, 1] (layer 0 shared expert gate; NVFP4: one E4M3 scale per 16 inputs)");
  // FP8 data with a scale of the wrong dtype.
  const fs::path dir = rewrite(kSaved, "fp8_scale_dtype", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    if (view.name != "model.layers.0.attn.wkv.weight") return keep(view, out);
    quantize(view, WeightFormat::kFP8Block, false, out);
    out.back().dtype = DType::kI8;
  });
  EXPECT_CONTAINS(load_error(dir), "tensor model.layers.0.attn.wkv.scale in model.safetensors: dtype I8 but FP8 block "
                                   "scales must be F8_E8M0 or F32");
}

TEST(Weights, HashTableAsI32AndOutOfRange) {
  auto narrowed = [](int32_t poison) {
    return [poison](const TensorView& view, std::vector<OwnedTensor>& out) {
      if (view.name != "model.layers.0.ffn.gate.tid2eid") return keep(view, out);
      std::vector<int32_t> values(static_cast<size_t>(view.numel()));
      for (size_t i = 0; i < values.size(); ++i) {
        int64_t value;
        std::memcpy(&value, view.data + 8 * i, 8);
        values[i] = static_cast<int32_t>(value);
      }
      if (poison) values[5] = poison;
      out.push_back(make(view.name, DType::kI32, view.shape, values));
    };
  };
  const ModelWeights w = load_model(rewrite(kSaved, "i32", narrowed(0)));
  EXPECT_EQ(w.layers[0].ffn.tid2eid, load_model(kSaved).layers[0].ffn.tid2eid);
  EXPECT_CONTAINS(load_error(rewrite(kSaved, "i32_bad", narrowed(4))),
                  "tensor model.layers.0.ffn.gate.tid2eid in model.safetensors: entry [2, 1] = 4 is not an expert id in "
                  "[0, n_routed_experts = 4)");
}

TEST(Weights, FusedExpertsWithWrongShape) {
  const fs::path dir = rewrite(kState, "fused_shape", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    OwnedTensor t = copy_of(view);
    if (t.name == "model.layers.2.mlp.experts.gate_up_proj") t.shape = {t.shape[0] * 2, t.shape[1] / 2, t.shape[2]};
    out.push_back(t);
  });
  EXPECT_CONTAINS(load_error(dir), "tensor model.layers.2.mlp.experts.gate_up_proj in model.safetensors: shape [8, 8, 16] "
                                   "but config expects [4, 16, 16] (n_routed_experts, 2*moe_intermediate_size, hidden_size)");
}

TEST(Weights, TiedEmbeddings) {
  std::ifstream in(kSaved / "config.json");
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = config.find("\"tie_word_embeddings\": false");
  ASSERT_NE(at, std::string::npos);
  config.replace(at, 28, "\"tie_word_embeddings\": true");
  const fs::path dir = rewrite(kSaved, "tied", [](const TensorView& view, std::vector<OwnedTensor>& out) {
    if (view.name != "head.weight") keep(view, out);
  }, config);
  const ModelWeights w = load_model(dir);
  EXPECT_EQ(w.head.data, w.embed.data);
}

TEST(Weights, NoConfigJson) {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_noconfig_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(kSaved / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  EXPECT_CONTAINS(load_error(dir), "model directory " + dir.string() + " has no config.json");
  EXPECT_CONTAINS(load_error(dir / "absent"), "does not exist");
}

}  // namespace
}  // namespace dsv4

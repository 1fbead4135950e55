// `dsv4 quantize` / `dsv4 inspect` end to end: the golden BF16/F32 models quantized
// with every (--experts, --dense) pair load through src/io with the right WeightFormat
// per tensor, dequantize_rows reproduces exactly what the block quantizers make of the
// source, weight cosines stay >= 0.99 and the CPU model's logits >= 0.98 against the
// source model. Also: transformers' fused expert layout, re-quantizing a quantized
// checkpoint, sharding, and the named errors for bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "cpu/model.h"
#include "dsv4/error.h"
#include "dsv4/formats.h"
#include "dsv4/weights.h"
#include "formats/checkpoint_inspector.h"
#include "formats/checkpoint_quantizer.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using formats::DenseFormat;
using formats::ExpertFormat;

fs::path golden(const char* name) { return fs::path(DSV4_FIXTURES_DIR) / "golden" / name; }

class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_(fs::temp_directory_path() / ("dsv4_formats_" + tag + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The source matrix as FP32 rows.
std::vector<float> source_rows(const QuantMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
  dequantize_rows(m, 0, m.rows, out.data());
  return out;
}

// What the block quantizers make of `w` (independently of the pipeline), dequantized.
std::vector<float> expected_dequantized(WeightFormat format, const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<float> out(w.size());
  QuantMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.format = format;
  std::vector<uint8_t> data, scales;
  switch (format) {
    case WeightFormat::kFP8Block:
      data.resize(rows * cols);
      m.scale_rows = (rows + 127) / 128;
      m.scale_cols = (cols + 127) / 128;
      scales.resize(m.scale_rows * m.scale_cols);
      quantize_fp8_block(w.data(), rows, cols, data.data(), scales.data());
      break;
    case WeightFormat::kMXFP4:
      data.resize(rows * cols / 2);
      scales.resize(rows * cols / 32);
      m.scale_cols = cols / 32;
      for (int64_t r = 0; r < rows; ++r) quantize_mxfp4_row(&w[r * cols], cols, &data[r * cols / 2], &scales[r * cols / 32]);
      break;
    case WeightFormat::kNVFP4:
      data.resize(rows * cols / 2);
      scales.resize(rows * cols / 16);
      m.scale_cols = cols / 16;
      m.tensor_scale = nvfp4_tensor_scale(w.data(), rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        quantize_nvfp4_row(&w[r * cols], cols, m.tensor_scale, &data[r * cols / 2], &scales[r * cols / 16]);
      break;
    case WeightFormat::kBF16:
      for (size_t i = 0; i < w.size(); ++i) out[i] = bf16_to_float(float_to_bf16(w[i]));
      return out;
    default:
      return w;
  }
  m.data = data.data();
  m.scales = scales.data();
  dequantize_rows(m, 0, rows, out.data());
  return out;
}

void expect_exact(const QuantMatrix& loaded, const QuantMatrix& source, WeightFormat format, const std::string& what) {
  ASSERT_EQ(loaded.format, format) << what << ": loader bound " << weight_format_name(loaded.format);
  ASSERT_EQ(loaded.rows, source.rows);
  ASSERT_EQ(loaded.cols, source.cols);
  const std::vector<float> expected = expected_dequantized(format, source_rows(source), source.rows, source.cols);
  const std::vector<float> got = source_rows(loaded);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], expected[i]) << what << " element [" << i / source.cols << ", " << i % source.cols << "]";
}

double logits_cosine(const fs::path& a, const fs::path& b) {
  auto wa = std::make_shared<const ModelWeights>(load_model(a));
  auto wb = std::make_shared<const ModelWeights>(load_model(b));
  cpu::CpuModel ma(wa), mb(wb);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 19; ++i) prompt.push_back((i * 37 + 11) % static_cast<int32_t>(ma.config().vocab_size));
  cpu::SequenceCache ca = ma.new_cache(), cb = mb.new_cache();
  const std::vector<float> la = ma.forward(ca, prompt, true), lb = mb.forward(cb, prompt, true);
  ErrorStats s;
  s.add(la.data(), lb.data(), static_cast<int64_t>(la.size()));
  return s.cosine();
}

struct Combo {
  ExpertFormat experts;
  DenseFormat dense;
  WeightFormat expert_format;  // of w1/w3 (in = hidden = 64)
  WeightFormat down_format;    // of w2 (in = moe_intermediate_size = 16: not an MXFP4 block)
  WeightFormat dense_format;
  const char* tag;
};

class QuantizeGolden : public testing::TestWithParam<Combo> {};

TEST_P(QuantizeGolden, LoadsBindsAndReproduces) {
  const Combo c = GetParam();
  TempDir out(c.tag);
  formats::QuantizeOptions options;
  options.input = golden("small_rates");
  options.output = out.path();
  options.experts = c.experts;
  options.dense = c.dense;
  const formats::QuantizeReport report = formats::quantize_checkpoint(options);
  for (const formats::TensorReport& t : report.tensors)
    if (t.converted) {
      EXPECT_GE(t.cosine, 0.99) << t.name << " (" << t.format << ")";
    }

  const ModelWeights source = load_model(options.input);
  const ModelWeights quantized = load_model(out.path());
  for (size_t l = 0; l < source.layers.size(); ++l) {
    const std::string at = c.tag + std::string(" layer ") + std::to_string(l);
    const auto& s = source.layers[l];
    const auto& q = quantized.layers[l];
    for (size_t e = 0; e < s.ffn.experts.size(); ++e) {
      expect_exact(q.ffn.experts[e].w1, s.ffn.experts[e].w1, c.expert_format, at + " expert w1");
      expect_exact(q.ffn.experts[e].w2, s.ffn.experts[e].w2, c.down_format, at + " expert w2");
      expect_exact(q.ffn.experts[e].w3, s.ffn.experts[e].w3, c.expert_format, at + " expert w3");
    }
    expect_exact(q.attn.wq_a, s.attn.wq_a, c.dense_format, at + " wq_a");
    expect_exact(q.attn.wo_b, s.attn.wo_b, c.dense_format, at + " wo_b");
    expect_exact(q.ffn.shared.w2, s.ffn.shared.w2, c.dense_format, at + " shared w2");
    if (s.attn.has_indexer) {
      expect_exact(q.attn.indexer.wq_b, s.attn.indexer.wq_b, c.dense_format, at + " indexer wq_b");
      expect_exact(q.attn.indexer.weights_proj, s.attn.indexer.weights_proj, WeightFormat::kF32, at + " weights_proj");
    }
    if (s.attn.has_compressor) expect_exact(q.attn.compressor.wkv, s.attn.compressor.wkv, WeightFormat::kF32, at);
    expect_exact(q.ffn.gate, s.ffn.gate, WeightFormat::kF32, at + " router");
  }
  expect_exact(quantized.embed, source.embed, WeightFormat::kF32, "embed");
  expect_exact(quantized.head, source.head, WeightFormat::kF32, "head");

  // config.json declares the format as the loader reads it.
  const ModelConfig config = load_model_config(out.path() / "config.json");
  if (c.experts == ExpertFormat::kNVFP4) {
    EXPECT_EQ(config.quantization.quant_method, "modelopt");
    EXPECT_EQ(config.quantization.quant_algo, "NVFP4");
  } else {
    EXPECT_EQ(config.quantization.quant_method, "fp8");
    EXPECT_EQ(config.quantization.expert_dtype, c.experts == ExpertFormat::kMXFP4 ? "fp4" : "fp8");
  }
  EXPECT_TRUE(fs::exists(out.path() / "quantize_report.json"));
  EXPECT_TRUE(fs::exists(out.path() / "model.safetensors.index.json"));
  // The golden models have random weights: hash routing, top-k experts and the
  // indexer's top-k amplify any perturbation (even FP8 everywhere, relative weight
  // error 3%, gives logit cosine 0.977-0.982 on them; NVFP4/MXFP4 experts 0.948-0.975).
  // Only a sanity bound here; the 0.98 bound is checked on the trained default model.
  EXPECT_GE(logits_cosine(options.input, out.path()), 0.90) << c.tag;
}

// A trained model (tests/fixtures/trained_byte_model, the byte-vocabulary model bundled
// before the BPE one; BF16, hidden 128, intermediate 128: every
// expert is a whole number of FP4 blocks): logits stay within cosine 0.98 of the
// source for every format pair (measured 0.9987-0.9995).
TEST(QuantizeTrainedModel, LogitCosineAtLeast098) {
  const fs::path source = fs::path(DSV4_FIXTURES_DIR) / "trained_byte_model";
  for (auto [experts, dense, tag] : {std::tuple{ExpertFormat::kMXFP4, DenseFormat::kFP8, "mxfp4_fp8"},
                                     std::tuple{ExpertFormat::kNVFP4, DenseFormat::kFP8, "nvfp4_fp8"},
                                     std::tuple{ExpertFormat::kNVFP4, DenseFormat::kBF16, "nvfp4_bf16"},
                                     std::tuple{ExpertFormat::kFP8, DenseFormat::kFP8, "fp8_fp8"}}) {
    TempDir out(std::string("trained_") + tag);
    formats::QuantizeOptions options;
    options.input = source;
    options.output = out.path();
    options.experts = experts;
    options.dense = dense;
    const formats::QuantizeReport report = formats::quantize_checkpoint(options);
    for (const formats::TensorReport& t : report.tensors) {
      EXPECT_TRUE(t.note.empty() || t.note == "already bf16: copied") << t.name << ": " << t.note;
      if (t.converted) {
        EXPECT_GE(t.cosine, 0.99) << tag << " " << t.name;
      }
    }
    EXPECT_GE(logits_cosine(source, out.path()), 0.98) << tag;
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryPair, QuantizeGolden,
    testing::Values(Combo{ExpertFormat::kMXFP4, DenseFormat::kFP8, WeightFormat::kMXFP4, WeightFormat::kFP8Block,
                          WeightFormat::kFP8Block, "mxfp4_fp8"},
                    Combo{ExpertFormat::kMXFP4, DenseFormat::kBF16, WeightFormat::kMXFP4, WeightFormat::kFP8Block,
                          WeightFormat::kBF16, "mxfp4_bf16"},
                    Combo{ExpertFormat::kNVFP4, DenseFormat::kFP8, WeightFormat::kNVFP4, WeightFormat::kNVFP4,
                          WeightFormat::kFP8Block, "nvfp4_fp8"},
                    Combo{ExpertFormat::kNVFP4, DenseFormat::kBF16, WeightFormat::kNVFP4, WeightFormat::kNVFP4,
                          WeightFormat::kBF16, "nvfp4_bf16"},
                    Combo{ExpertFormat::kFP8, DenseFormat::kFP8, WeightFormat::kFP8Block, WeightFormat::kFP8Block,
                          WeightFormat::kFP8Block, "fp8_fp8"}),
    [](const testing::TestParamInfo<Combo>& info) { return std::string(info.param.tag); });

TEST(QuantizePipeline, FusedTransformersExpertsSplitIntoOfficialNames) {
  TempDir out("fused");
  formats::QuantizeOptions options;
  options.input = fs::path(DSV4_FIXTURES_DIR) / "io" / "tiny_state";
  options.output = out.path();
  options.experts = ExpertFormat::kNVFP4;
  options.dense = DenseFormat::kBF16;
  formats::quantize_checkpoint(options);
  const Checkpoint written(out.path());
  EXPECT_TRUE(written.has("layers.0.ffn.experts.3.w1.weight"));
  EXPECT_TRUE(written.has("layers.0.ffn.experts.3.w1.weight_scale_2"));
  EXPECT_TRUE(written.has("layers.0.ffn.experts.3.w2.scale")) << "in 8: not an NVFP4 block, FP8 fallback";
  EXPECT_FALSE(written.has("model.layers.0.mlp.experts.gate_up_proj"));
  EXPECT_TRUE(written.has("embed.weight")) << "official names on output";
  const ModelWeights source = load_model(options.input);
  const ModelWeights quantized = load_model(out.path());
  for (size_t l = 0; l < source.layers.size(); ++l)
    for (size_t e = 0; e < source.layers[l].ffn.experts.size(); ++e) {
      expect_exact(quantized.layers[l].ffn.experts[e].w1, source.layers[l].ffn.experts[e].w1, WeightFormat::kNVFP4, "w1");
      expect_exact(quantized.layers[l].ffn.experts[e].w3, source.layers[l].ffn.experts[e].w3, WeightFormat::kNVFP4, "w3");
      expect_exact(quantized.layers[l].ffn.experts[e].w2, source.layers[l].ffn.experts[e].w2, WeightFormat::kFP8Block, "w2");
    }
  expect_exact(quantized.layers[0].attn.wq_b, source.layers[0].attn.wq_b, WeightFormat::kBF16, "wq_b (already bf16)");
}

TEST(QuantizePipeline, RequantizesAQuantizedCheckpointAcrossShards) {
  TempDir first("requant_a"), second("requant_b");
  formats::QuantizeOptions options;
  options.input = golden("small_rates");
  options.output = first.path();
  options.experts = ExpertFormat::kMXFP4;
  options.dense = DenseFormat::kFP8;
  options.max_shard_bytes = 100 * 1024;
  const formats::QuantizeReport a = formats::quantize_checkpoint(options);
  EXPECT_GT(a.shards, 3);
  options.input = first.path();
  options.output = second.path();
  options.experts = ExpertFormat::kNVFP4;
  options.dense = DenseFormat::kBF16;
  options.max_shard_bytes = int64_t{1} << 30;
  const formats::QuantizeReport b = formats::quantize_checkpoint(options);
  EXPECT_EQ(b.shards, 1);
  const ModelWeights mx = load_model(first.path());
  const ModelWeights nv = load_model(second.path());
  // The MXFP4 experts, dequantized, are the NVFP4 quantizer's input.
  expect_exact(nv.layers[2].ffn.experts[1].w1, mx.layers[2].ffn.experts[1].w1, WeightFormat::kNVFP4, "mxfp4 -> nvfp4");
  expect_exact(nv.layers[2].attn.wq_a, mx.layers[2].attn.wq_a, WeightFormat::kBF16, "fp8 -> bf16");
  for (const formats::TensorReport& t : b.tensors)
    if (t.name == "layers.2.attn.wq_a.weight") {
      EXPECT_EQ(t.source_format, "fp8_block");
      EXPECT_EQ(t.relative_frobenius, 0.0) << "FP8 values are exact in BF16";
    }
}

// A checkpoint folder with config.json and the given tensors.
void write_checkpoint(const fs::path& dir, const std::vector<TensorToWrite>& tensors) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << "{\"vocab_size\": 8}\n";
  write_safetensors(dir / "model.safetensors", tensors);
}

std::string quantize_error(const fs::path& in, const fs::path& out, ExpertFormat experts = ExpertFormat::kMXFP4) {
  formats::QuantizeOptions options;
  options.input = in;
  options.output = out;
  options.experts = experts;
  try {
    formats::quantize_checkpoint(options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(QuantizePipeline, NamedErrorsForBadInput) {
  TempDir dir("errors");
  std::vector<float> w(2 * 32, 0.5f);
  w[37] = NAN;
  write_checkpoint(dir.path() / "nan", {{"layers.0.ffn.experts.0.w1.weight", DType::kF32, {2, 32}, w.data(), 256}});
  std::string error = quantize_error(dir.path() / "nan", dir.path() / "out_nan");
  EXPECT_NE(error.find("layers.0.ffn.experts.0.w1.weight"), std::string::npos) << error;
  EXPECT_NE(error.find("[1, 5]"), std::string::npos) << error;

  const std::vector<uint8_t> packed(2 * 16), scales(2 * 2);
  write_checkpoint(dir.path() / "grid", {{"layers.0.ffn.experts.0.w1.weight", DType::kI8, {2, 16}, packed.data(), 32},
                                         {"layers.0.ffn.experts.0.w1.scale", DType::kF8_E8M0, {2, 2}, scales.data(), 4}});
  error = quantize_error(dir.path() / "grid", dir.path() / "out_grid");
  EXPECT_NE(error.find("layers.0.ffn.experts.0.w1.scale"), std::string::npos) << error;
  EXPECT_NE(error.find("one scale per 32 inputs"), std::string::npos) << error;

  const std::vector<uint8_t> nv_scales(2 * 2);
  write_checkpoint(dir.path() / "nv", {{"layers.0.ffn.experts.0.w1.weight", DType::kU8, {2, 16}, packed.data(), 32},
                                       {"layers.0.ffn.experts.0.w1.weight_scale", DType::kF8_E4M3, {2, 2}, nv_scales.data(), 4}});
  error = quantize_error(dir.path() / "nv", dir.path() / "out_nv");
  EXPECT_NE(error.find("weight_scale_2"), std::string::npos) << error;

  const std::vector<float> head(2 * 32, 0.25f);
  write_checkpoint(dir.path() / "twice", {{"head.weight", DType::kF32, {2, 32}, head.data(), 256},
                                          {"lm_head.weight", DType::kF32, {2, 32}, head.data(), 256}});
  error = quantize_error(dir.path() / "twice", dir.path() / "out_twice");
  EXPECT_NE(error.find("both the official tensor head.weight"), std::string::npos) << error;

  error = quantize_error(dir.path() / "missing", dir.path() / "out_missing");
  EXPECT_NE(error.find("not a directory"), std::string::npos) << error;
  error = quantize_error(dir.path() / "nan", dir.path() / "nan");
  EXPECT_NE(error.find("input folder"), std::string::npos) << error;
  fs::create_directories(dir.path() / "full");
  std::ofstream(dir.path() / "full" / "model.safetensors") << "x";
  error = quantize_error(dir.path() / "grid", dir.path() / "full");
  EXPECT_NE(error.find("already holds a checkpoint"), std::string::npos) << error;
  EXPECT_THROW(formats::parse_expert_format("int4"), Error);
  EXPECT_THROW(formats::parse_dense_format("nvfp4"), Error);
}

TEST(Inspect, ReportAndKvCacheEstimate) {
  TempDir out("inspect");
  formats::QuantizeOptions options;
  options.input = golden("small_rates");
  options.output = out.path();
  options.experts = ExpertFormat::kMXFP4;
  options.dense = DenseFormat::kFP8;
  formats::quantize_checkpoint(options);
  formats::InspectOptions inspect;
  inspect.context = 1000;
  inspect.list_tensors = true;
  const std::string text = formats::inspect_checkpoint(out.path(), inspect);
  for (const char* needle : {"mxfp4", "fp8_block", "compressed_sparse_attention", "heavily_compressed_attention",
                             "hash_moe", "quant_method fp8", "expert_dtype fp4", "GPU memory estimate",
                             "layers.1.ffn.experts.0.w1.weight", "+ layers.1.ffn.experts.0.w1.scale"})
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;

  // small_rates: 4 layers (sliding, CSA 4, HCA 8, CSA 4), head_dim 64, window 8, index_head_dim 32.
  const ModelConfig config = load_model_config(golden("small_rates") / "config.json");
  const formats::KvCacheElements kv = formats::kv_cache_elements(config, 1000);
  EXPECT_EQ(kv.sliding, 4 * 8 * 64);
  EXPECT_EQ(kv.compressed, (250 + 125 + 250) * 64);
  EXPECT_EQ(kv.indexer, 2 * 250 * 32);
  EXPECT_THROW(formats::inspect_checkpoint(out.path() / "nope", inspect), Error);
}

}  // namespace
}  // namespace dsv4

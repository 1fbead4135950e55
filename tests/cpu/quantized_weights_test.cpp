// The CPU backend computing with MXFP4 / NVFP4 experts gives the same logits as the
// same model with those experts stored dequantized in FP32 (issue 3, item 3).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "cpu/model.h"
#include "dsv4/formats.h"
#include "dsv4/weights.h"
#include "golden_fixture.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

enum class Experts { kMXFP4, kNVFP4 };

// Writes two copies of the golden model: experts quantized (`quantized`) and the same
// quantized experts stored dequantized as F32 (`reference`).
void write_pair(Experts format, const fs::path& quantized, const fs::path& reference) {
  const fs::path source = fs::path(DSV4_FIXTURES_DIR) / "golden" / "small_rates";
  Checkpoint checkpoint(source);
  std::vector<TensorToWrite> q_tensors, r_tensors;
  std::vector<std::vector<uint8_t>> storage;
  storage.reserve(4 * checkpoint.names().size());
  auto keep = [&](std::vector<uint8_t> bytes) -> const void* {
    storage.push_back(std::move(bytes));
    return storage.back().data();
  };
  for (const auto& name : checkpoint.names()) {
    const TensorView& v = checkpoint.get(name);
    const int64_t block = format == Experts::kMXFP4 ? 32 : 16;
    // Routed experts whose input width is a whole number of blocks (a fixture's down
    // projection may be narrower than one MXFP4 block: those stay F32 in both copies).
    const bool expert = name.find(".ffn.experts.") != std::string::npos && v.dtype == DType::kF32 &&
                        v.shape.size() == 2 && v.shape[1] % block == 0;
    if (!expert) {
      q_tensors.push_back({name, v.dtype, v.shape, v.data, v.nbytes});
      r_tensors.push_back({name, v.dtype, v.shape, v.data, v.nbytes});
      continue;
    }
    const int64_t rows = v.shape[0], cols = v.shape[1];
    const float* values = reinterpret_cast<const float*>(v.data);
    std::vector<uint8_t> packed(static_cast<size_t>(rows * cols / 2)), scales(static_cast<size_t>(rows * cols / block));
    const float tensor_scale = nvfp4_tensor_scale(values, rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      if (format == Experts::kMXFP4)
        quantize_mxfp4_row(values + r * cols, cols, packed.data() + r * cols / 2, scales.data() + r * cols / block);
      else
        quantize_nvfp4_row(values + r * cols, cols, tensor_scale, packed.data() + r * cols / 2,
                           scales.data() + r * cols / block);
    }
    QuantMatrix m;
    m.format = format == Experts::kMXFP4 ? WeightFormat::kMXFP4 : WeightFormat::kNVFP4;
    m.rows = rows;
    m.cols = cols;
    m.data = packed.data();
    m.scales = scales.data();
    m.scale_cols = cols / block;
    m.scale_dtype = format == Experts::kMXFP4 ? DType::kF8_E8M0 : DType::kF8_E4M3;
    m.tensor_scale = tensor_scale;
    std::vector<uint8_t> dequantized(static_cast<size_t>(rows * cols * 4));
    dequantize_rows(m, 0, rows, reinterpret_cast<float*>(dequantized.data()));
    r_tensors.push_back({name, DType::kF32, v.shape, keep(std::move(dequantized)), rows * cols * 4});
    const std::string base = name.substr(0, name.size() - std::string(".weight").size());
    const int64_t scale_bytes = static_cast<int64_t>(scales.size());
    const void* packed_data = keep(std::move(packed));
    const void* scale_data = keep(std::move(scales));
    q_tensors.push_back({name, DType::kU8, {rows, cols / 2}, packed_data, rows * cols / 2});
    if (format == Experts::kMXFP4) {
      q_tensors.push_back({base + ".scale", DType::kF8_E8M0, {rows, cols / block}, scale_data, scale_bytes});
    } else {
      q_tensors.push_back({base + ".weight_scale", DType::kF8_E4M3, {rows, cols / block}, scale_data, scale_bytes});
      std::vector<uint8_t> global(4);
      std::memcpy(global.data(), &tensor_scale, 4);
      q_tensors.push_back({base + ".weight_scale_2", DType::kF32, {}, keep(std::move(global)), 4});
    }
  }
  for (const auto& dir : {quantized, reference}) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(source / "config.json", dir / "config.json");
  }
  write_safetensors(quantized / "model.safetensors", q_tensors);
  write_safetensors(reference / "model.safetensors", r_tensors);
}

void expect_same_logits(Experts format, WeightFormat expected_format) {
  const std::string tag = expected_format == WeightFormat::kMXFP4 ? "mxfp4" : "nvfp4";
  const fs::path base = fs::temp_directory_path() / ("dsv4_quantized_" + tag + "_" + std::to_string(::getpid()));
  write_pair(format, base / "quantized", base / "reference");
  auto quantized = std::make_shared<const ModelWeights>(load_model(base / "quantized"));
  auto reference = std::make_shared<const ModelWeights>(load_model(base / "reference"));
  ASSERT_EQ(quantized->layers[0].ffn.experts[0].w1.format, expected_format);
  ASSERT_EQ(reference->layers[0].ffn.experts[0].w1.format, WeightFormat::kF32);
  cpu::CpuModel q_model(quantized), r_model(reference);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 23; ++i) prompt.push_back((i * 37 + 11) % static_cast<int32_t>(q_model.config().vocab_size));
  cpu::SequenceCache q_cache = q_model.new_cache(), r_cache = r_model.new_cache();
  const std::vector<float> q_logits = q_model.forward(q_cache, prompt, true);
  const std::vector<float> r_logits = r_model.forward(r_cache, prompt, true);
  ASSERT_EQ(q_logits.size(), r_logits.size());
  // Dequantization is exact, so the two runs do identical arithmetic.
  const testing::Comparison c = testing::compare(q_logits.data(), r_logits.data(), static_cast<int64_t>(q_logits.size()));
  EXPECT_EQ(c.max_abs_diff, 0.0) << tag << ": " << c.describe();
  fs::remove_all(base);
}

TEST(QuantizedWeights, MXFP4ExpertsEqualDequantizedRun) { expect_same_logits(Experts::kMXFP4, WeightFormat::kMXFP4); }
TEST(QuantizedWeights, NVFP4ExpertsEqualDequantizedRun) { expect_same_logits(Experts::kNVFP4, WeightFormat::kNVFP4); }

TEST(BlockQuantizers, ZeroBlockAndRoundTripBounds) {
  std::vector<float> row(64, 0.0f);
  for (int i = 32; i < 64; ++i) row[i] = 0.37f * (i - 47);
  std::vector<uint8_t> packed(32), scales(2);
  quantize_mxfp4_row(row.data(), 64, packed.data(), scales.data());
  EXPECT_EQ(scales[0], 0) << "an all-zero block gets the smallest exponent";
  for (int i = 0; i < 16; ++i) EXPECT_EQ(packed[i], 0) << "zeros stay zero";
  QuantMatrix m;
  m.format = WeightFormat::kMXFP4;
  m.rows = 1;
  m.cols = 64;
  m.data = packed.data();
  m.scales = scales.data();
  m.scale_cols = 2;
  std::vector<float> back(64);
  dequantize_rows(m, 0, 1, back.data());
  // amax 5.92 -> exponent floor(log2 5.92) - 2 = 0: step at most 2 (between 4 and 6) -> error <= 1.
  for (int i = 32; i < 64; ++i) EXPECT_LE(std::fabs(back[i] - row[i]), 1.0f) << i;
  EXPECT_EQ(back[47], 0.0f);
}

}  // namespace
}  // namespace dsv4

// CpuRounding: the CPU reference stores BF16 values exactly where asked (KV rows and
// compressed attention entries; 4-bit expert operands) and nowhere else.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "cpu/model.h"
#include "cpu/moe.h"
#include "dsv4/dtype.h"
#include "dsv4/error.h"
#include "dsv4/weights.h"
#include "golden_fixture.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

bool bf16_exact(float v) { return bf16_to_float(float_to_bf16(v)) == v; }
int64_t count_not_bf16(const std::vector<float>& values) {
  int64_t n = 0;
  for (float v : values) n += bf16_exact(v) ? 0 : 1;
  return n;
}

// The golden config with compressed layers (CSA + HCA).
std::shared_ptr<const ModelWeights> compressed_golden_model() {
  for (const fs::path& dir : testing::golden_model_dirs()) {
    auto weights = std::make_shared<const ModelWeights>(load_model(dir));
    bool csa = false, hca = false;
    for (const LayerWeights& l : weights->layers) {
      csa |= l.attention_type == AttentionType::kCompressedSparse;
      hca |= l.attention_type == AttentionType::kHeavilyCompressed;
    }
    if (csa && hca) return weights;
  }
  return nullptr;
}

std::vector<int32_t> prompt(int64_t length, int64_t vocab) {
  std::mt19937 rng(3);
  std::vector<int32_t> ids(static_cast<size_t>(length));
  for (auto& t : ids) t = static_cast<int32_t>(rng() % vocab);
  return ids;
}

TEST(CpuRounding, KvCacheHoldsBf16ValuesOnlyWhenAsked) {
  auto weights = compressed_golden_model();
  ASSERT_NE(weights, nullptr) << "no golden fixture has both CSA and HCA layers";
  const std::vector<int32_t> ids = prompt(300, weights->config.vocab_size);
  for (bool round : {false, true}) {
    CpuRounding rounding;
    rounding.kv_cache = round;
    cpu::CpuModel model(weights, rounding);
    cpu::SequenceCache cache = model.new_cache();
    model.forward(cache, ids, false);
    int64_t kv_off = 0, entries_off = 0, entries = 0, index_off = 0, index_entries = 0;
    for (const cpu::LayerCache& l : cache.layers) {
      kv_off += count_not_bf16(l.kv_rows);
      entries_off += count_not_bf16(l.compressor.entries);
      entries += static_cast<int64_t>(l.compressor.entries.size());
      index_off += count_not_bf16(l.indexer.entries);
      index_entries += static_cast<int64_t>(l.indexer.entries.size());
    }
    ASSERT_GT(entries, 0);
    ASSERT_GT(index_entries, 0);
    SCOPED_TRACE(round ? "kv_cache rounding on" : "off");
    if (round) {
      EXPECT_EQ(kv_off, 0);
      EXPECT_EQ(entries_off, 0);
    } else {
      EXPECT_GT(kv_off, 0);
      EXPECT_GT(entries_off, 0);
    }
    EXPECT_GT(index_off, 0) << "the indexer's keys stay FP32 either way";
  }
}

TEST(CpuRounding, ExpertOperandsRoundedAfterTheRoutingWeight) {
  // A small F32 expert: hidden 32, intermediate 16.
  const int64_t hidden = 32, inter = 16, tokens = 3;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<float> w1(inter * hidden), w3(inter * hidden), w2(hidden * inter), x(tokens * hidden);
  for (auto* v : {&w1, &w3, &w2, &x})
    for (float& f : *v) f = normal(rng);
  auto matrix = [](const std::vector<float>& data, int64_t rows, int64_t cols) {
    QuantMatrix m;
    m.format = WeightFormat::kF32;
    m.rows = rows;
    m.cols = cols;
    m.data = reinterpret_cast<const uint8_t*>(data.data());
    return m;
  };
  ExpertWeights e;
  e.w1 = matrix(w1, inter, hidden);
  e.w3 = matrix(w3, inter, hidden);
  e.w2 = matrix(w2, hidden, inter);
  const float scale[tokens] = {0.3f, 1.7f, 0.01f};
  const std::vector<float> exact = cpu::expert_forward(e, 10.0, x.data(), tokens, false, scale);
  const std::vector<float> rounded = cpu::expert_forward(e, 10.0, x.data(), tokens, true, scale);
  EXPECT_EQ(count_not_bf16(rounded), 0);
  EXPECT_GT(count_not_bf16(exact), 0);
  for (size_t i = 0; i < exact.size(); ++i)
    EXPECT_NEAR(rounded[i], exact[i], 0.02 * std::fabs(exact[i]) + 1e-3) << "element " << i;
  // Without rounding the scale is a plain product.
  const std::vector<float> unscaled = cpu::expert_forward(e, 10.0, x.data(), tokens);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t d = 0; d < hidden; ++d) EXPECT_EQ(exact[t * hidden + d], unscaled[t * hidden + d] * scale[t]);
}

TEST(CpuRounding, Fp8KvCacheNeedsHeadDim512) {
  auto weights = compressed_golden_model();
  ASSERT_NE(weights, nullptr);
  ASSERT_NE(weights->config.head_dim, 512);
  CpuRounding rounding;
  rounding.kv_cache_fp8 = true;
  cpu::CpuModel model(weights, rounding);
  try {
    model.new_cache();
    FAIL() << "head_dim " << weights->config.head_dim << " accepted by the FP8 KV codec";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsv4

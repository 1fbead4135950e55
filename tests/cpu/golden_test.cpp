// The CPU reference backend against transformers' DeepseekV4ForCausalLM (FP32 goldens):
// prompt logits, 64 greedy decode steps with caches, decode == full re-run, and
// chunked prefill == one prefill.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "cpu/model.h"
#include "dsv4/weights.h"
#include "golden_fixture.h"

namespace dsv4 {
namespace {

using testing::compare;
using testing::Comparison;

// Issue 2's bounds on prompt logits.
constexpr double kMinCosine = 0.99999;
constexpr double kMaxRelativeDiff = 1e-3;  // x max|logit|

void expect_close(const Comparison& c, const std::string& what) {
  EXPECT_GE(c.cosine, kMinCosine) << what << ": " << c.describe();
  EXPECT_LE(c.max_abs_diff, kMaxRelativeDiff * c.max_abs_ref) << what << ": " << c.describe();
}

int32_t argmax(const float* row, int64_t count) {
  return static_cast<int32_t>(std::max_element(row, row + count) - row);
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST(GoldenFixtures, Exist) {
  // No silent skip: the golden suite must find fixtures.
  EXPECT_GE(testing::golden_model_dirs().size(), 3u) << "expected >= 3 configs under tests/fixtures/golden";
}

TEST_P(GoldenTest, PromptAndGreedyDecodeMatchTransformers) {
  const std::filesystem::path dir = GetParam();
  auto weights = std::make_shared<const ModelWeights>(load_model(dir));
  cpu::CpuModel model(weights);
  const int64_t vocab = model.config().vocab_size;
  const testing::GoldenModel golden = testing::load_golden(dir, vocab);
  ASSERT_FALSE(golden.cases.empty());
  for (const auto& c : golden.cases) {
    SCOPED_TRACE(dir.filename().string() + " " + c.name + " prompt length " + std::to_string(c.prompt_ids.size()));
    const int64_t length = static_cast<int64_t>(c.prompt_ids.size());
    cpu::SequenceCache cache = model.new_cache();
    std::vector<float> logits = model.forward(cache, c.prompt_ids, /*all_logits=*/true);
    const Comparison prompt = compare(logits.data(), c.prompt_logits.data(), length * vocab);
    expect_close(prompt, "prompt logits");
    std::printf("  %s %s (prompt %lld): %s\n", dir.filename().c_str(), c.name.c_str(),
                static_cast<long long>(length), prompt.describe().c_str());

    // Free-running greedy decode with the cache: identical tokens, close logits.
    const int64_t steps = static_cast<int64_t>(c.generated_ids.size());
    std::vector<int32_t> ours;
    int32_t token = argmax(logits.data() + (length - 1) * vocab, vocab);
    std::vector<float> decode_logits;
    for (int64_t k = 0; k < steps; ++k) {
      ours.push_back(token);
      if (token != c.generated_ids[k]) break;
      const int32_t feed[] = {token};
      std::vector<float> step = model.forward(cache, feed, false);
      expect_close(compare(step.data(), c.decode_logits.data() + k * vocab, vocab), "decode step " + std::to_string(k));
      decode_logits.insert(decode_logits.end(), step.begin(), step.end());
      token = argmax(step.data(), vocab);
    }
    EXPECT_EQ(ours, c.generated_ids) << "greedy tokens differ";

    // Decode with cache == one full forward over prompt + generated tokens.
    if (static_cast<int64_t>(decode_logits.size()) == steps * vocab) {
      std::vector<int32_t> all = c.prompt_ids;
      all.insert(all.end(), c.generated_ids.begin(), c.generated_ids.end());
      cpu::SequenceCache fresh = model.new_cache();
      const std::vector<float> full = model.forward(fresh, all, true);
      const Comparison rerun = compare(decode_logits.data(), full.data() + length * vocab, steps * vocab);
      EXPECT_GE(rerun.cosine, 0.999999) << "cached decode vs full re-run: " << rerun.describe();
      EXPECT_LE(rerun.max_abs_diff, 1e-4 * rerun.max_abs_ref) << "cached decode vs full re-run: " << rerun.describe();
    }
  }
}

TEST_P(GoldenTest, ChunkedPrefillEqualsOnePrefill) {
  const std::filesystem::path dir = GetParam();
  auto weights = std::make_shared<const ModelWeights>(load_model(dir));
  cpu::CpuModel model(weights);
  const int64_t vocab = model.config().vocab_size;
  const testing::GoldenModel golden = testing::load_golden(dir, vocab);
  // The longest prompt, split at awkward places (inside windows and groups).
  const auto& c = *std::max_element(golden.cases.begin(), golden.cases.end(), [](const auto& a, const auto& b) {
    return a.prompt_ids.size() < b.prompt_ids.size();
  });
  const int64_t length = static_cast<int64_t>(c.prompt_ids.size());
  cpu::SequenceCache cache = model.new_cache();
  std::vector<float> chunked;
  const int64_t cuts[] = {length / 3 + 1, length / 3 + 6, length};
  int64_t begin = 0;
  for (int64_t end : cuts) {
    end = std::min(end, length);
    if (end <= begin) continue;
    std::vector<int32_t> piece(c.prompt_ids.begin() + begin, c.prompt_ids.begin() + end);
    std::vector<float> part = model.forward(cache, piece, true);
    chunked.insert(chunked.end(), part.begin(), part.end());
    begin = end;
  }
  ASSERT_EQ(static_cast<int64_t>(chunked.size()), length * vocab);
  expect_close(compare(chunked.data(), c.prompt_logits.data(), length * vocab), "chunked prefill");
}

std::vector<std::string> golden_dirs() {
  std::vector<std::string> dirs;
  for (const auto& d : testing::golden_model_dirs()) dirs.push_back(d.string());
  return dirs;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::ValuesIn(golden_dirs()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = std::filesystem::path(info.param).filename().string();
                           for (char& ch : name)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenTest);

}  // namespace
}  // namespace dsv4

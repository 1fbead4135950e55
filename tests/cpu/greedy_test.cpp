// dsv4::greedy_token (the greedy rule every engine path shares: first index of the largest
// non-NaN logit) and Engine::decode_greedy's default (decode, then greedy_token per row) on
// the CPU engine, against decode's logits for the same steps.
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "dsv4/weights.h"

namespace dsv4 {
namespace {

TEST(GreedyToken, FirstLargestNonNaN) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(greedy_token(std::vector<float>{1, 3, 2, 3}), 1);
  EXPECT_EQ(greedy_token(std::vector<float>{-0.0f, 0.0f}), 0);
  EXPECT_EQ(greedy_token(std::vector<float>{nan, 1, 5, nan, 5}), 2);
  EXPECT_EQ(greedy_token(std::vector<float>{-inf, -inf}), 0);
  EXPECT_EQ(greedy_token(std::vector<float>{nan, -inf, nan}), 1);
  EXPECT_EQ(greedy_token(std::vector<float>{nan, nan}), 0);
  EXPECT_EQ(greedy_token(std::vector<float>{1, inf, inf}), 1);
  EXPECT_THROW(greedy_token(std::vector<float>{}), Error);
}

TEST(DecodeGreedy, CpuEngineEqualsGreedyTokenOfDecode) {
  const std::filesystem::path model = std::filesystem::path(DSV4_FIXTURES_DIR) / "trained_byte_model";
  auto weights = std::make_shared<const ModelWeights>(load_model(model));
  EngineOptions options;
  std::unique_ptr<Engine> a = create_engine(weights, options), b = create_engine(weights, options);
  const int64_t vocab = weights->config.vocab_size;
  std::vector<SequenceId> ia, ib;
  std::vector<int32_t> next;
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> prompt = {1, static_cast<int32_t>(10 + s), 20, 30 + 7 * s};
    ia.push_back(a->add_sequence());
    ib.push_back(b->add_sequence());
    next.push_back(greedy_token(a->prefill(ia.back(), prompt)));
    b->prefill(ib.back(), prompt);
  }
  for (int k = 0; k < 4; ++k) {
    const std::vector<float> logits = a->decode(ia, next);
    const std::vector<int32_t> ids = b->decode_greedy(ib, next);
    ASSERT_EQ(ids.size(), next.size());
    for (size_t s = 0; s < ids.size(); ++s) {
      EXPECT_EQ(ids[s], greedy_token(std::span<const float>(logits).subspan(s * vocab, vocab))) << "step " << k;
      next[s] = ids[s];
    }
  }
}

}  // namespace
}  // namespace dsv4

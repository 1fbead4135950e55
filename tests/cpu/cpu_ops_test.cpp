// Unit tests of CPU reference primitives whose behaviour the goldens rely on.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cpu/attention.h"
#include "cpu/cpu_ops.h"
#include "cpu/rope.h"
#include "dsv4/engine.h"

namespace dsv4::cpu {
namespace {

TEST(Rope, InverseUndoesForwardAndRotatesTrailingPairs) {
  RopeConfig config;
  config.theta = 10000.0;
  config.rope_dim = 8;
  RopeTable rope(config);
  std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // width 12: nope 4 | rope 8
  std::vector<float> original = v;
  rope.apply(v.data(), 1, 12, 37);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(v[i], original[i]) << "nope channel " << i << " must not rotate";
  // pair 0 rotates by 37 rad * inv_freq[0] = 37.
  EXPECT_NEAR(v[4], 5 * std::cos(37.0f) - 6 * std::sin(37.0f), 1e-5);
  EXPECT_NEAR(v[5], 6 * std::cos(37.0f) + 5 * std::sin(37.0f), 1e-5);
  rope.apply(v.data(), 1, 12, 37, /*inverse=*/true);
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(v[i], original[i], 1e-5);
}

TEST(IndexerSelect, AllVisibleWhenFewerThanK) {
  const float scores[] = {0.5f, 0.1f, 0.9f};
  EXPECT_EQ(indexer_select(scores, 3, 8), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(indexer_select(scores, 0, 8).empty());
}

TEST(IndexerSelect, TopKWithTiesTowardLowerIndex) {
  const float scores[] = {0.0f, 0.7f, 0.0f, 0.7f, 0.2f, 0.0f};
  EXPECT_EQ(indexer_select(scores, 6, 3), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(indexer_select(scores, 6, 4), (std::vector<int64_t>{0, 1, 3, 4}));
}

TEST(Softplus, MatchesTorchThreshold) {
  EXPECT_FLOAT_EQ(softplus(25.0f), 25.0f);
  EXPECT_NEAR(softplus(0.0f), std::log(2.0f), 1e-7);
  EXPECT_NEAR(softplus(-30.0f), std::exp(-30.0f), 1e-18);
}

TEST(Sampler, GreedyPicksFirstMaximum) {
  Sampler sampler(SamplingParams{});
  const std::vector<float> logits = {0.1f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(sampler.sample(logits), 1);
}

TEST(Sampler, SeededSamplingIsDeterministicAndRespectsTopK) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, 1.5f, -2.0f};
  SamplingParams params{1.0f, 1.0f, 2, 1234};
  Sampler a(params), b(params);
  for (int i = 0; i < 100; ++i) {
    const int32_t x = a.sample(logits);
    EXPECT_EQ(x, b.sample(logits));
    EXPECT_TRUE(x == 1 || x == 3) << "top_k=2 allows only ids 1 and 3, got " << x;
  }
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(Sampler(SamplingParams{-1.0f, 1.0f, 0, 0}), std::exception);
  EXPECT_THROW(Sampler(SamplingParams{1.0f, 0.0f, 0, 0}), std::exception);
  EXPECT_THROW(Sampler(SamplingParams{1.0f, 1.0f, -3, 0}), std::exception);
}

}  // namespace
}  // namespace dsv4::cpu

// Lightning indexer scores + top-k on the GPU vs cpu::indexer_select over CPU scores of
// the same keys (FP32), on a decode batch of several slots at different positions:
//   V4-Flash shape (64 heads x 128, rate 4, top_k 512) with visible 3001 / 700 / 100;
//   exact ties (duplicated key rows) and all-negative head weights (scores <= 0 with
//     many exact zeros): ties must go to the lower index exactly;
//   positions past max_entries * rate (visible capped), visible == top_k, visible 0.
// Key rows past each slot's visible count are NaN: a stray read shows as a NaN pick.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention/attention_test_util.h"
#include "cpu/attention.h"
#include "cpu/cpu_ops.h"
#include "cuda/attention/attention.h"

namespace dsv4::attention_test {
namespace {

struct IndexerCase {
  int heads = 4, dim = 32, rate = 4, top_k = 6, max_entries = 64;
  std::vector<int> positions;   // one token per slot (slot = 2 i + 1)
  int duplicate_every = 0;      // > 0: key row w copies row w % duplicate_every (exact ties)
  bool negative_weights = false;
};

void run_case(const IndexerCase& c, uint64_t seed) {
  Random random(seed);
  const int tokens = static_cast<int>(c.positions.size()), slots = 2 * tokens + 1;
  BatchArrays rows;
  for (int t = 0; t < tokens; ++t) rows.add_sequence(2 * t + 1, c.positions[t], 1);
  const cuda::TokenBatch batch = rows.upload();

  std::vector<float> entries(static_cast<size_t>(slots) * c.max_entries * c.dim, kNaN);  // [slots, max_entries, dim]
  for (int t = 0; t < tokens; ++t) {
    const int visible = std::min((c.positions[t] + 1) / c.rate, c.max_entries);
    float* slot_rows = entries.data() + static_cast<size_t>(2 * t + 1) * c.max_entries * c.dim;
    for (int w = 0; w < visible; ++w)
      for (int d = 0; d < c.dim; ++d)
        slot_rows[static_cast<size_t>(w) * c.dim + d] =
            c.duplicate_every > 0 && w >= c.duplicate_every
                ? slot_rows[static_cast<size_t>(w % c.duplicate_every) * c.dim + d]
                : random.uniform(-1.0f, 1.0f);
  }
  const std::vector<float> q = random.vector(static_cast<size_t>(tokens) * c.heads * c.dim, -1.0f, 1.0f);
  std::vector<float> head_weights = random.vector(static_cast<size_t>(tokens) * c.heads, -1.0f, 1.0f);
  if (c.negative_weights)
    for (float& w : head_weights) w = -std::fabs(w) - 0.01f;

  DeviceArray<float> d_entries(entries.size()), d_q(q.size()), d_weights(head_weights.size());
  d_entries.upload(entries);
  d_q.upload(q);
  d_weights.upload(head_weights);
  DeviceArray<float> d_scores(static_cast<size_t>(tokens) * c.max_entries);
  d_scores.fill(kNaN);
  DeviceArray<int32_t> d_selected(static_cast<size_t>(tokens) * c.top_k);
  d_selected.fill(0x7f7f7f7f);
  cuda::attention::IndexerParams p;
  p.q = d_q.get();
  p.head_weights = d_weights.get();
  p.entries = d_entries.get();
  p.max_entries = c.max_entries;
  p.heads = c.heads;
  p.dim = c.dim;
  p.rate = c.rate;
  p.top_k = c.top_k;
  p.batch = batch;
  p.scores = d_scores.get();
  p.selected = d_selected.get();
  cuda::attention::indexer_topk(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<int32_t> selected = d_selected.download();
  const std::vector<float> gpu_scores = d_scores.download();

  const float score_scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  const float weight_scale = 1.0f / std::sqrt(static_cast<float>(c.heads));
  for (int t = 0; t < tokens; ++t) {
    const int position = c.positions[t];
    const int visible = std::min((position + 1) / c.rate, c.max_entries);
    const float* slot_rows = entries.data() + static_cast<size_t>(2 * t + 1) * c.max_entries * c.dim;
    std::vector<float> scores(visible);
    for (int w = 0; w < visible; ++w) {
      float total = 0;
      for (int h = 0; h < c.heads; ++h) {
        const float relu =
            std::max(cpu::dot(q.data() + (static_cast<size_t>(t) * c.heads + h) * c.dim, slot_rows + w * c.dim, c.dim),
                     0.0f) *
            score_scale;
        total += relu * (head_weights[static_cast<size_t>(t) * c.heads + h] * weight_scale);
      }
      scores[w] = total;
    }
    const std::string token = "token " + std::to_string(t) + " (position " + std::to_string(position) +
                              ", visible " + std::to_string(visible) + ")";
    expect_close(token + " scores", gpu_scores.data() + static_cast<size_t>(t) * c.max_entries, scores.data(),
                 scores.size(), 1e-5, 1e-4, [](size_t w) { return "entry " + std::to_string(w); });
    const std::vector<int64_t> want = cpu::indexer_select(scores.data(), visible, c.top_k);
    const int32_t* got = selected.data() + static_cast<size_t>(t) * c.top_k;
    const int expected = static_cast<int>(want.size());
    float threshold = std::numeric_limits<float>::infinity(), row_max = 0;
    for (int64_t w : want) threshold = std::min(threshold, scores[w]);
    for (float v : scores) row_max = std::max(row_max, std::fabs(v));
    for (int i = 0; i < c.top_k; ++i) {
      if (i >= expected) {
        EXPECT_EQ(got[i], -1) << token << ": selected[" << i << "] should be the -1 pad";
        continue;
      }
      ASSERT_TRUE(got[i] >= 0 && got[i] < visible && (i == 0 || got[i] > got[i - 1]))
          << token << ": selected[" << i << "] = " << got[i] << " (want ascending picks in [0, visible))";
      if (got[i] == want[i]) continue;
      if (std::binary_search(want.begin(), want.end(), static_cast<int64_t>(got[i]))) continue;
      // A near-tie (FP32 summation order) may pick differently. In the exact-tie cases the
      // GPU's tied scores are bitwise equal (duplicated rows, exact zeros), so a pick of
      // an equal score at a higher index is a tie-break bug.
      const bool exact = c.duplicate_every > 0 || c.negative_weights;
      const float mine = scores[got[i]];
      const double tolerance = 1e-4 * std::max(std::fabs(mine), std::fabs(threshold)) + 1e-6 * row_max;
      EXPECT_TRUE(std::fabs(mine - threshold) <= tolerance && !(exact && mine == threshold))
          << token << ": picked entry " << got[i] << " (CPU score " << mine << ", GPU "
          << gpu_scores[static_cast<size_t>(t) * c.max_entries + got[i]] << ") where the CPU picks entry " << want[i]
          << "; the CPU's k-th score is " << threshold;
    }
  }
}

TEST(IndexerTopk, FlashShapeDecodeBatch) {
  IndexerCase c;
  c.heads = 64;
  c.dim = 128;
  c.top_k = 512;
  c.max_entries = 1100;
  c.positions = {3999, 2803, 403, 2047};  // visible 1000, 700, 100, 512 == top_k
  run_case(c, 11);
  c.positions = {4403, 4415};  // past max_entries * rate: visible capped at 1100
  run_case(c, 12);
}

TEST(IndexerTopk, GoldenShapes) {
  for (int heads : {4, 8, 32}) {
    for (int top_k : {3, 6, 128}) {
      IndexerCase c;
      c.heads = heads;
      c.top_k = top_k;
      c.max_entries = 300;
      c.positions = {0, 2, 3, 13, 27, 514, 777, 1199, 1203};  // visible 0, 0, 1, 3, 7, 128, 194, 300, capped
      SCOPED_TRACE("heads " + std::to_string(heads) + " top_k " + std::to_string(top_k));
      run_case(c, 100 + heads + top_k);
    }
  }
}

TEST(IndexerTopk, ExactTiesGoToLowerIndex) {
  IndexerCase c;
  c.heads = 8;
  c.top_k = 6;
  c.max_entries = 400;
  c.positions = {63, 255, 1599};
  c.duplicate_every = 5;  // every score value repeats every 5 entries
  run_case(c, 21);
  c.duplicate_every = 0;
  c.negative_weights = true;  // scores <= 0, many exactly 0 (all relu terms zero)
  c.heads = 2;
  run_case(c, 22);
  c.top_k = 128;
  run_case(c, 23);
}

}  // namespace
}  // namespace dsv4::attention_test

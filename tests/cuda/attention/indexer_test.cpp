// Lightning indexer scores + top-k on the GPU vs cpu::indexer_select over CPU scores of
// the same keys, on batches of sequences (slot 2 i + 1 for sequence i) at various
// positions: decode batches (one token per sequence), prefill chunks and mixes.
//
// Two score paths:
//   * heads 64 x dim 128 (V4) by default: BF16 tensor cores (indexer_mma.cu). Asserted:
//     - scores equal an FP32 CPU evaluation on BF16-rounded q and keys (atol 2e-5, rtol 2e-4:
//       only the summation order differs);
//     - the selection equals cpu::indexer_select over those scores except at genuine near-ties
//       (|score - k-th score| <= 1e-4 relative), and exact ties (duplicated key rows) go to
//       the lower index exactly;
//     - against the CPU on FP32 operands (the engine's reference): recall of the picked set
//       >= 0.99 per token, and the FP32 score sum of the picks within 2e-4 (relative to the sum
//       of |scores|) of the CPU picks' sum. (A numpy emulation of BF16 rounding on this data
//       gave recall >= 0.996 and sum differences <= 2.3e-5.)
//   * other shapes, or params.fp32_scores: the FP32 kernels; scores within 1e-5 / 1e-4 and the
//     selection exact except near-ties, as before.
// Ragged cases: keys not multiples of the 64-key tile, visible 0, visible < 64, visible < k,
// visible == k, positions past max_entries * rate (capped), token counts not multiples of
// the 4-token CTA group, CTA groups mixing slots, the top-k's unstaged path (long rows).
// Key rows past each slot's visible count are NaN: a stray read shows as a NaN score/pick.
//
// The flash-shape and chunked cases run with both tensor-core kernels (IndexerParams::
// score_kernel kMma = indexer_mma.cu, kWgmma = indexer_wgmma.cu), each under the bounds
// above; WgmmaMatches* compare the two directly (see compare_kernels).
//
// Bounded workspace (IndexerParams::scores_floats < tokens * max_entries: the batch runs in
// token chunks sharing the workspace): with chunk_rows set, the case also runs chunked
// (rows 1, 3, 7 -> 4, ...) and its picks must equal the whole-batch run's exactly (every
// index); cpu_check false skips the CPU scores (long rows, 2048-token chunks) and keeps the
// structural checks (ascending, in range, min(k, visible) picks, -1 pads).
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

struct Sequence {
  int start = 0, count = 1;  // positions start .. start + count - 1
};

struct IndexerCase {
  int heads = 4, dim = 32, rate = 4, top_k = 6, max_entries = 64;
  std::vector<Sequence> sequences;  // sequence i in slot 2 i + 1
  int duplicate_every = 0;          // > 0: key row w copies row w % duplicate_every (exact ties)
  bool negative_weights = false;
  bool fp32_scores = false;
  std::vector<int> chunk_rows;      // also run with scores_floats = rows * max_entries, picks must match
  bool cpu_check = true;            // false: no CPU scores (too slow at 8192+ keys x 2048 tokens)
  cuda::attention::IndexerParams::ScoreKernel kernel = cuda::attention::IndexerParams::ScoreKernel::kAuto;
};

using ScoreKernel = cuda::attention::IndexerParams::ScoreKernel;
// Both tensor-core score kernels (the flash-shape cases run once per kernel).
constexpr ScoreKernel kTensorKernels[] = {ScoreKernel::kMma, ScoreKernel::kWgmma};
const char* kernel_name(ScoreKernel k) {
  return k == ScoreKernel::kWgmma ? "wgmma" : (k == ScoreKernel::kMma ? "mma.sync" : "auto");
}

// Decode batch: one token per sequence at each position.
std::vector<Sequence> decode(const std::vector<int>& positions) {
  std::vector<Sequence> out;
  for (int p : positions) out.push_back({p, 1});
  return out;
}

void run_case(const IndexerCase& c, uint64_t seed) {
  Random random(seed);
  const int sequences = static_cast<int>(c.sequences.size()), slots = 2 * sequences + 1;
  BatchArrays rows;
  std::vector<int> token_sequence;
  for (int s = 0; s < sequences; ++s) {
    rows.add_sequence(2 * s + 1, c.sequences[s].start, c.sequences[s].count);
    for (int i = 0; i < c.sequences[s].count; ++i) token_sequence.push_back(s);
  }
  const int tokens = rows.tokens();
  const cuda::TokenBatch batch = rows.upload();
  const bool bf16 = c.heads == 64 && c.dim == 128 && !c.fp32_scores;

  std::vector<float> entries(static_cast<size_t>(slots) * c.max_entries * c.dim, kNaN);  // [slots, max_entries, dim]
  for (int s = 0; s < sequences; ++s) {
    const int last = c.sequences[s].start + c.sequences[s].count - 1;
    const int visible = std::min((last + 1) / c.rate, c.max_entries);
    float* slot_rows = entries.data() + static_cast<size_t>(2 * s + 1) * c.max_entries * c.dim;
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
  p.fp32_scores = c.fp32_scores;
  p.score_kernel = c.kernel;
  cuda::attention::indexer_topk(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<int32_t> selected = d_selected.download();
  const std::vector<float> gpu_scores = d_scores.download();

  // Chunked runs (workspace of `rows` token rows) against the whole-batch picks.
  for (int chunk : c.chunk_rows) {
    const int64_t floats = static_cast<int64_t>(chunk) * c.max_entries;
    DeviceArray<float> d_chunk_scores(static_cast<size_t>(floats));
    d_chunk_scores.fill(kNaN);
    DeviceArray<int32_t> d_chunk_selected(static_cast<size_t>(tokens) * c.top_k);
    d_chunk_selected.fill(0x7f7f7f7f);
    cuda::attention::IndexerParams chunked = p;
    chunked.scores = d_chunk_scores.get();
    chunked.scores_floats = floats;
    chunked.selected = d_chunk_selected.get();
    cuda::attention::indexer_topk(chunked, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<int32_t> chunk_selected = d_chunk_selected.download();
    int mismatches = 0;
    for (size_t i = 0; i < selected.size(); ++i) {
      if (chunk_selected[i] == selected[i]) continue;
      if (++mismatches <= 8)
        ADD_FAILURE() << "chunk rows " << chunk << ": token " << i / c.top_k << " (position "
                      << rows.positions[i / c.top_k] << ") selected[" << i % c.top_k << "] = " << chunk_selected[i]
                      << ", whole batch " << selected[i];
    }
    EXPECT_EQ(mismatches, 0) << "chunk rows " << chunk << ": picks differing from the whole-batch run";
  }

  if (!c.cpu_check) {  // structural checks only
    for (int t = 0; t < tokens; ++t) {
      const int visible = std::min((rows.positions[t] + 1) / c.rate, c.max_entries);
      const int expected = std::min(visible, c.top_k);
      const int32_t* got = selected.data() + static_cast<size_t>(t) * c.top_k;
      for (int i = 0; i < c.top_k; ++i) {
        if (i >= expected) {
          ASSERT_EQ(got[i], -1) << "token " << t << " (visible " << visible << "): selected[" << i << "] not the pad";
          continue;
        }
        ASSERT_TRUE(got[i] >= 0 && got[i] < visible && (i == 0 || got[i] > got[i - 1]))
            << "token " << t << " (visible " << visible << "): selected[" << i << "] = " << got[i]
            << " (want ascending picks in [0, visible))";
        if (visible <= c.top_k) {
          ASSERT_EQ(got[i], i) << "token " << t << ": every visible entry is picked";
        }
      }
    }
    return;
  }

  // BF16-rounded operands (the tensor-core path's inputs).
  std::vector<float> q_bf16 = q, entries_bf16 = entries;
  if (bf16) {
    for (float& v : q_bf16) v = round_bf16(v);
    for (float& v : entries_bf16) v = std::isnan(v) ? v : round_bf16(v);
  }
  const float score_scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  const float weight_scale = 1.0f / std::sqrt(static_cast<float>(c.heads));
  auto cpu_scores = [&](const std::vector<float>& qs, const std::vector<float>& keys, int t, int visible) {
    const float* slot_rows = keys.data() + static_cast<size_t>(2 * token_sequence[t] + 1) * c.max_entries * c.dim;
    std::vector<float> scores(visible);
    for (int w = 0; w < visible; ++w) {
      float total = 0;
      for (int h = 0; h < c.heads; ++h) {
        const float relu = std::max(cpu::dot(qs.data() + (static_cast<size_t>(t) * c.heads + h) * c.dim,
                                             slot_rows + static_cast<size_t>(w) * c.dim, c.dim),
                                    0.0f) *
                           score_scale;
        total += relu * (head_weights[static_cast<size_t>(t) * c.heads + h] * weight_scale);
      }
      scores[w] = total;
    }
    return scores;
  };

  for (int t = 0; t < tokens; ++t) {
    const int position = rows.positions[t];
    const int visible = std::min((position + 1) / c.rate, c.max_entries);
    const std::vector<float> scores = cpu_scores(q_bf16, entries_bf16, t, visible);
    const std::string token = "token " + std::to_string(t) + " (position " + std::to_string(position) +
                              ", visible " + std::to_string(visible) + (bf16 ? ", BF16 path)" : ", FP32 path)");
    expect_close(token + " scores", gpu_scores.data() + static_cast<size_t>(t) * c.max_entries, scores.data(),
                 scores.size(), bf16 ? 2e-5 : 1e-5, bf16 ? 2e-4 : 1e-4,
                 [](size_t w) { return "entry " + std::to_string(w); });
    const std::vector<int64_t> want = cpu::indexer_select(scores.data(), visible, c.top_k);
    const int32_t* got = selected.data() + static_cast<size_t>(t) * c.top_k;
    const int expected = static_cast<int>(want.size());
    float threshold = std::numeric_limits<float>::infinity(), row_max = 0;
    for (int64_t w : want) threshold = std::min(threshold, scores[w]);
    for (float v : scores) row_max = std::max(row_max, std::fabs(v));
    bool picks_valid = true;
    for (int i = 0; i < c.top_k; ++i) {
      if (i >= expected) {
        EXPECT_EQ(got[i], -1) << token << ": selected[" << i << "] should be the -1 pad";
        continue;
      }
      const bool valid = got[i] >= 0 && got[i] < visible && (i == 0 || got[i] > got[i - 1]);
      ASSERT_TRUE(valid) << token << ": selected[" << i << "] = " << got[i]
                         << " (want ascending picks in [0, visible))";
      picks_valid = picks_valid && valid;
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
    if (!bf16 || expected == 0 || !picks_valid || c.duplicate_every > 0) continue;
    // Against FP32 operands: recall and score-sum agreement.
    const std::vector<float> exact_scores = cpu_scores(q, entries, t, visible);
    const std::vector<int64_t> exact_want = cpu::indexer_select(exact_scores.data(), visible, c.top_k);
    int hits = 0;
    double got_sum = 0, want_sum = 0, want_abs = 0;
    for (int i = 0; i < expected; ++i) {
      hits += std::binary_search(exact_want.begin(), exact_want.end(), static_cast<int64_t>(got[i]));
      got_sum += exact_scores[got[i]];
      want_sum += exact_scores[exact_want[i]];
      want_abs += std::fabs(exact_scores[exact_want[i]]);
    }
    EXPECT_GE(static_cast<double>(hits) / expected, 0.99)
        << token << ": only " << hits << " of " << expected << " picks agree with the CPU on FP32 operands";
    EXPECT_LE(std::fabs(got_sum - want_sum), 2e-4 * want_abs + 1e-6)
        << token << ": FP32 score sum of the picks " << got_sum << " vs the CPU's " << want_sum;
  }
}

// The case once per tensor-core kernel (mma.sync, wgmma), each against the CPU.
void run_both(IndexerCase c, uint64_t seed) {
  for (ScoreKernel k : kTensorKernels) {
    SCOPED_TRACE(std::string("score kernel ") + kernel_name(k));
    c.kernel = k;
    run_case(c, seed);
  }
}

IndexerCase flash_case() {
  IndexerCase c;
  c.heads = 64;
  c.dim = 128;
  c.top_k = 512;
  c.max_entries = 1100;
  return c;
}

TEST(IndexerTopk, FlashShapeDecodeBatch) {
  IndexerCase c = flash_case();
  c.sequences = decode({3999, 2803, 403, 2047});  // visible 1000, 700, 100, 512 == top_k
  run_both(c, 11);
  c.sequences = decode({4403, 4415});  // past max_entries * rate: visible capped at 1100
  run_both(c, 12);
  // 9 tokens (groups of 4 + a ragged 1), visible 0, 1, 15, 63, 64, 65, 512, 513, 1100.
  c.sequences = decode({0, 3, 62, 252, 255, 260, 2047, 2051, 4399});
  run_both(c, 13);
}

TEST(IndexerTopk, FlashShapePrefillChunk) {
  IndexerCase c = flash_case();
  c.max_entries = 1300;
  c.sequences = {{3700, 301}};  // one sequence, visible 925 .. 1000, 301 tokens (ragged CTA groups)
  run_both(c, 31);
  // A prefill chunk, decode tokens and a short prompt in one batch: CTA groups mix slots.
  c.sequences = {{1, 1}, {2000, 70}, {5000, 1}, {0, 6}, {4100, 3}};
  run_both(c, 32);
}

TEST(IndexerTopk, FlashShapeExactTies) {
  IndexerCase c = flash_case();
  c.max_entries = 900;
  c.duplicate_every = 97;  // every score value repeats every 97 entries (bitwise-equal GPU scores)
  c.sequences = decode({3599, 1999});
  run_both(c, 41);
  c.duplicate_every = 0;
  c.negative_weights = true;  // scores <= 0
  run_both(c, 42);
}

TEST(IndexerTopk, FlashShapeFp32Oracle) {
  IndexerCase c = flash_case();
  c.fp32_scores = true;
  c.sequences = decode({3999, 403, 2047, 7});
  run_case(c, 51);
}

// Bounded workspace: chunked runs == the whole-batch run (exact indices), plus the CPU checks.
TEST(IndexerTopk, ChunkedWorkspaceDecodeRagged) {
  IndexerCase c = flash_case();
  c.max_entries = 1100;
  c.chunk_rows = {1, 3, 7, 64};
  // visible 0, 1, 2, 101, 511, 512 == k, 513 = k + 1, 1000, 1100 (capped).
  c.sequences = decode({0, 3, 8, 403, 2043, 2047, 2051, 3999, 4403});
  run_both(c, 71);
}

TEST(IndexerTopk, ChunkedWorkspaceMixedBatch) {
  IndexerCase c = flash_case();
  c.max_entries = 1300;
  c.chunk_rows = {1, 5, 16, 100};
  c.sequences = {{1, 1}, {2000, 70}, {5000, 1}, {0, 6}, {4100, 3}, {2047, 2}};
  run_both(c, 72);
  c.duplicate_every = 97;  // exact ties across chunk boundaries
  c.sequences = {{3599, 9}, {1999, 1}, {2051, 5}};
  run_both(c, 73);
}

TEST(IndexerTopk, ChunkedWorkspaceLongRows) {
  // visible 8192 and 16385 (past the top-k's 16384 staging): CPU checks on a few tokens.
  IndexerCase c = flash_case();
  c.max_entries = 16400;
  c.chunk_rows = {1, 2};
  c.sequences = decode({32767, 65539, 2047, 0});  // visible 8192, 16385, 512, 0
  run_both(c, 74);
}

TEST(IndexerTopk, ChunkedWorkspacePrefill2048) {
  // A 2048-token prefill chunk at the end of a 32k context (causal: visible 7680 .. 8192),
  // plus decode tokens of other sequences; whole-batch vs chunks of 64 / 100 / 512 rows
  // and the engine's indexer_workspace_floats. No CPU scores (2048 x 8192 x 8192 x 2 FLOP).
  IndexerCase c = flash_case();
  c.max_entries = 8192;
  c.cpu_check = false;
  const int engine_rows = static_cast<int>(cuda::attention::indexer_workspace_floats(2048 + 3, c.max_entries) /
                                           c.max_entries);
  c.chunk_rows = {64, 100, 512, engine_rows};
  c.sequences = {{30720, 2048}, {32767, 1}, {4095, 1}, {2048, 1}};
  run_both(c, 75);
  // 16385 visible keys (unstaged top-k rows) in a prefill chunk crossing it.
  c.max_entries = 16500;
  c.chunk_rows = {7, 64};
  c.sequences = {{65500, 100}};  // visible 16375 .. 16400
  run_both(c, 76);
}

TEST(IndexerTopk, WorkspaceSizeAndErrors) {  // host only: no kernel runs
  using cuda::attention::indexer_workspace_floats;
  EXPECT_EQ(indexer_workspace_floats(2048, 8192), int64_t{2048} * 8192);        // 64 MiB: the whole matrix
  EXPECT_EQ(indexer_workspace_floats(2048, 262144), int64_t{64} * 262144);      // 1M context: 64 rows
  EXPECT_EQ(indexer_workspace_floats(2048, 1 << 20), int64_t{64} * (1 << 20));  // at least 64 rows
  EXPECT_EQ(indexer_workspace_floats(16, 262144), int64_t{16} * 262144);        // never more than the batch
  EXPECT_EQ(indexer_workspace_floats(0, 100), 100);
  // scores_floats below one row is an error naming it (checked before any launch).
  cuda::attention::IndexerParams p;
  p.heads = 64;
  p.dim = 128;
  p.rate = 4;
  p.top_k = 512;
  p.max_entries = 1000;
  int32_t fake[1] = {0};
  float fake_f[1] = {0};
  p.q = p.head_weights = p.entries = p.scores = fake_f;
  p.selected = fake;
  p.batch.tokens = 2;
  p.batch.positions = p.batch.slots = fake;
  p.scores_floats = 999;
  EXPECT_THROW(cuda::attention::indexer_topk(p, nullptr), Error);
  p.scores_floats = -1;
  EXPECT_THROW(cuda::attention::indexer_topk(p, nullptr), Error);
}

TEST(IndexerTopk, GoldenShapes) {
  for (int heads : {4, 8, 32}) {
    for (int top_k : {3, 6, 128}) {
      IndexerCase c;
      c.heads = heads;
      c.top_k = top_k;
      c.max_entries = 300;
      c.sequences = decode({0, 2, 3, 13, 27, 514, 777, 1199, 1203});  // visible 0, 0, 1, 3, 7, 128, 194, 300, capped
      SCOPED_TRACE("heads " + std::to_string(heads) + " top_k " + std::to_string(top_k));
      run_case(c, 100 + heads + top_k);
    }
  }
}

TEST(IndexerTopk, LongRowUnstagedTopk) {
  // visible > 16384: the top-k reads those rows from global memory; shorter rows staged.
  IndexerCase c;
  c.heads = 4;
  c.top_k = 512;
  c.max_entries = 45000;
  c.sequences = decode({179999, 100003, 65539, 65535, 2047});  // visible 45000, 25001, 16385, 16384, 512
  run_case(c, 61);
}

TEST(IndexerTopk, ExactTiesGoToLowerIndex) {
  IndexerCase c;
  c.heads = 8;
  c.top_k = 6;
  c.max_entries = 400;
  c.sequences = decode({63, 255, 1599});
  c.duplicate_every = 5;  // every score value repeats every 5 entries
  run_case(c, 21);
  c.duplicate_every = 0;
  c.negative_weights = true;  // scores <= 0, many exactly 0 (all relu terms zero)
  c.heads = 2;
  run_case(c, 22);
  c.top_k = 128;
  run_case(c, 23);
}

// wgmma vs mma.sync on the same inputs (no CPU scores, so long rows and large batches are
// cheap). Asserted per token, over w < visible:
//   * scores within the BF16 path's bounds of each other (atol 2e-5, rtol 2e-4; the two
//     differ only in FP32 summation order);
//   * where the two score rows are bitwise identical, the picks are identical (every index);
//   * otherwise a differing pick is a near-tie: its mma.sync score is within 1e-4 (relative)
//     of the mma.sync run's k-th score;
//   * the usual structure (min(k, visible) ascending picks in range, -1 pads).
void compare_kernels(const IndexerCase& c, uint64_t seed) {
  Random random(seed);
  const int sequences = static_cast<int>(c.sequences.size()), slots = 2 * sequences + 1;
  BatchArrays rows;
  for (int s = 0; s < sequences; ++s) rows.add_sequence(2 * s + 1, c.sequences[s].start, c.sequences[s].count);
  const int tokens = rows.tokens();
  const cuda::TokenBatch batch = rows.upload();
  std::vector<float> entries(static_cast<size_t>(slots) * c.max_entries * c.dim, kNaN);
  for (int s = 0; s < sequences; ++s) {
    const int last = c.sequences[s].start + c.sequences[s].count - 1;
    const int visible = std::min((last + 1) / c.rate, c.max_entries);
    float* slot_rows = entries.data() + static_cast<size_t>(2 * s + 1) * c.max_entries * c.dim;
    for (size_t i = 0; i < static_cast<size_t>(visible) * c.dim; ++i)
      slot_rows[i] = c.duplicate_every > 0 && i >= static_cast<size_t>(c.duplicate_every) * c.dim
                         ? slot_rows[i % (static_cast<size_t>(c.duplicate_every) * c.dim)]
                         : random.uniform(-1.0f, 1.0f);
  }
  const std::vector<float> q = random.vector(static_cast<size_t>(tokens) * c.heads * c.dim, -1.0f, 1.0f);
  const std::vector<float> head_weights = random.vector(static_cast<size_t>(tokens) * c.heads, -1.0f, 1.0f);
  DeviceArray<float> d_entries(entries.size()), d_q(q.size()), d_weights(head_weights.size());
  d_entries.upload(entries);
  d_q.upload(q);
  d_weights.upload(head_weights);
  std::vector<float> scores[2];
  std::vector<int32_t> picks[2];
  for (int k = 0; k < 2; ++k) {
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
    p.score_kernel = kTensorKernels[k];
    cuda::attention::indexer_topk(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    scores[k] = d_scores.download();
    picks[k] = d_selected.download();
  }
  int identical_rows = 0, reported = 0;
  for (int t = 0; t < tokens; ++t) {
    const int visible = std::min((rows.positions[t] + 1) / c.rate, c.max_entries);
    const std::string token = "token " + std::to_string(t) + " (position " + std::to_string(rows.positions[t]) +
                              ", visible " + std::to_string(visible) + ")";
    const float* mma = scores[0].data() + static_cast<size_t>(t) * c.max_entries;
    const float* wg = scores[1].data() + static_cast<size_t>(t) * c.max_entries;
    expect_close(token + " wgmma vs mma.sync scores", wg, mma, visible, 2e-5, 2e-4,
                 [](size_t w) { return "entry " + std::to_string(w); });
    const bool identical = std::equal(mma, mma + visible, wg);
    identical_rows += identical;
    const int32_t* got = picks[1].data() + static_cast<size_t>(t) * c.top_k;
    const int32_t* want = picks[0].data() + static_cast<size_t>(t) * c.top_k;
    const int expected = std::min(visible, c.top_k);
    float threshold = std::numeric_limits<float>::infinity(), row_max = 0;
    for (int i = 0; i < expected; ++i) threshold = std::min(threshold, mma[want[i]]);
    for (int w = 0; w < visible; ++w) row_max = std::max(row_max, std::fabs(mma[w]));
    for (int i = 0; i < c.top_k; ++i) {
      if (i >= expected) {
        ASSERT_EQ(got[i], -1) << token << ": wgmma selected[" << i << "] should be the -1 pad";
        continue;
      }
      ASSERT_TRUE(got[i] >= 0 && got[i] < visible && (i == 0 || got[i] > got[i - 1]))
          << token << ": wgmma selected[" << i << "] = " << got[i] << " (want ascending picks in [0, visible))";
      if (got[i] == want[i]) continue;
      if (identical) {
        if (++reported <= 8)
          ADD_FAILURE() << token << ": identical scores but wgmma selected[" << i << "] = " << got[i]
                        << ", mma.sync " << want[i];
        continue;
      }
      if (std::binary_search(want, want + expected, got[i])) continue;
      const float mine = mma[got[i]];
      const double tolerance = 1e-4 * std::max(std::fabs(mine), std::fabs(threshold)) + 1e-6 * row_max;
      if (std::fabs(mine - threshold) > tolerance && ++reported <= 8)
        ADD_FAILURE() << token << ": wgmma picks entry " << got[i] << " (mma.sync score " << mine
                      << ") outside the near-ties of mma.sync's k-th score " << threshold;
    }
  }
  ::testing::Test::RecordProperty("identical_score_rows", identical_rows);
}

TEST(IndexerTopk, WgmmaMatchesMmaDecode) {
  IndexerCase c = flash_case();
  c.max_entries = 1100;
  // < 64 tokens (1 token per CTA): visible 0, 1, 2, 15, 63, 64, 65, 511, 512, 513, 1000, 1100.
  c.sequences = decode({0, 3, 8, 62, 255, 259, 263, 2047, 2051, 2055, 3999, 4403});
  compare_kernels(c, 81);
  // 70 decode tokens (8 per CTA, each of another slot: 8 passes per CTA), ragged visible.
  std::vector<int> positions;
  for (int i = 0; i < 70; ++i) positions.push_back((i * 977 + 13) % 4400);
  c.sequences = decode(positions);
  compare_kernels(c, 82);
}

TEST(IndexerTopk, WgmmaMatchesMmaPrefillAndMixed) {
  IndexerCase c = flash_case();
  c.max_entries = 2100;
  // Prefill chunk with causal growth: visible 500 .. 575 over 301 tokens (ragged groups).
  c.sequences = {{2000, 301}};
  compare_kernels(c, 83);
  // Mixed batch >= 64 tokens: groups of 8 mix chunks, decode tokens and a short prompt
  // (visible 0 / 1 / < k inside a group).
  c.sequences = {{1, 1}, {2000, 70}, {5000, 1}, {0, 6}, {4100, 3}, {3, 2}, {8399, 1}, {6, 9}};
  compare_kernels(c, 84);
  // Exact ties (row w copies row w % 97): equal scores are bitwise equal in each kernel.
  c.duplicate_every = 97;
  c.sequences = {{3599, 67}, {1999, 1}};
  compare_kernels(c, 85);
}

TEST(IndexerTopk, WgmmaMatchesMmaLongRows) {
  // 32k-context prefill tail (visible 8127 .. 8192) and long decode rows, multi-split CTAs.
  IndexerCase c = flash_case();
  c.max_entries = 16400;
  c.sequences = {{32508, 260}, {65539, 1}, {40000, 1}};
  compare_kernels(c, 86);
}

}  // namespace
}  // namespace dsv4::attention_test

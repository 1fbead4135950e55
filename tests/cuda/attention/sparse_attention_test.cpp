// Sparse MQA attention on the GPU vs an FP64 CPU loop over the same BF16 keys, on a
// decode batch of several slots (one token each) at different positions:
//   p < window (first window), ring wrap (p >= ring_rows), no compressed entries yet;
//   kAllVisible (HCA) and kSelected (CSA) with picks that must be skipped: -1, negative,
//   >= visible, >= max_entries; padding in the middle of the list;
//   head_dim 64 / 128 / 512, heads not a multiple of the CTA's 8.
// The FP32 kernel (Kernel::kSimple) within 1e-4; for 64 heads x 512 also the wgmma
// kernel, within 1e-2 + 2e-2 relative (q rounded to BF16 there).
// Only the rows a token may read hold data; every other ring row and entry row is NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention/attention_test_util.h"
#include "cuda/attention/attention.h"

namespace dsv4::attention_test {
namespace {

using cuda::attention::CompressedKeys;

struct AttentionCase {
  int heads = 4, head_dim = 64, window = 8, ring_rows = 11, rate = 4, max_entries = 40, top_k = 6;
  CompressedKeys mode = CompressedKeys::kNone;
  std::vector<int> positions;  // one token per slot (slot = 2 i + 1)
};

void run_case(const AttentionCase& c, uint64_t seed) {
  Random random(seed);
  const int tokens = static_cast<int>(c.positions.size()), slots = 2 * tokens + 1, hd = c.head_dim;
  BatchArrays rows;
  for (int t = 0; t < tokens; ++t) rows.add_sequence(2 * t + 1, c.positions[t], 1);
  const cuda::TokenBatch batch = rows.upload();

  std::vector<uint16_t> window(static_cast<size_t>(slots) * c.ring_rows * hd, kBf16NaN);
  std::vector<uint16_t> entries(static_cast<size_t>(slots) * c.max_entries * hd, kBf16NaN);
  std::vector<int32_t> selected(static_cast<size_t>(tokens) * c.top_k, -1);
  std::vector<std::vector<std::vector<float>>> keys(tokens);  // per token: its key rows (FP32 of BF16)
  auto random_row = [&](uint16_t* row) {
    std::vector<float> key(hd);
    for (int d = 0; d < hd; ++d) {
      row[d] = float_to_bf16(random.uniform(-1.0f, 1.0f));
      key[d] = bf16_to_float(row[d]);
    }
    return key;
  };
  for (int t = 0; t < tokens; ++t) {
    const int p = c.positions[t], slot = 2 * t + 1;
    for (int pos = std::max(0, p - c.window + 1); pos <= p; ++pos)
      keys[t].push_back(random_row(window.data() + (static_cast<size_t>(slot) * c.ring_rows + pos % c.ring_rows) * hd));
    const int visible = c.mode == CompressedKeys::kNone ? 0 : std::min((p + 1) / c.rate, c.max_entries);
    std::vector<std::vector<float>> entry_keys;
    for (int w = 0; w < visible; ++w)
      entry_keys.push_back(random_row(entries.data() + (static_cast<size_t>(slot) * c.max_entries + w) * hd));
    if (c.mode == CompressedKeys::kAllVisible) keys[t].insert(keys[t].end(), entry_keys.begin(), entry_keys.end());
    if (c.mode == CompressedKeys::kSelected)
      for (int w : fill_selected_with_junk(visible, c.max_entries, c.top_k,
                                           selected.data() + static_cast<size_t>(t) * c.top_k))
        keys[t].push_back(entry_keys[w]);
  }
  const std::vector<float> q = random.vector(static_cast<size_t>(tokens) * c.heads * hd, -3.0f, 3.0f);
  const std::vector<float> sinks = random.vector(c.heads, -1.0f, 2.0f);

  DeviceArray<uint16_t> d_window(window.size()), d_entries(entries.size());
  d_window.upload(window);
  d_entries.upload(entries);
  DeviceArray<int32_t> d_selected(selected.size());
  d_selected.upload(selected);
  DeviceArray<float> d_q(q.size()), d_sinks(sinks.size()), d_out(q.size());
  d_q.upload(q);
  d_sinks.upload(sinks);
  d_out.fill(kNaN);
  cuda::attention::SparseAttentionParams p;
  p.q = d_q.get();
  p.heads = c.heads;
  p.head_dim = hd;
  p.window_kv = d_window.get();
  p.ring_rows = c.ring_rows;
  p.window = c.window;
  p.compressed = c.mode;
  p.entries = d_entries.get();
  p.max_entries = c.max_entries;
  p.rate = c.rate;
  p.selected = d_selected.get();
  p.top_k = c.top_k;
  p.sinks = d_sinks.get();
  p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  p.batch = batch;
  p.out = d_out.get();
  p.kernel = cuda::attention::SparseAttentionParams::Kernel::kSimple;  // FP32 kernel: 1e-4 below
  cuda::attention::sparse_attention(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> out = d_out.download();
  // Where it applies, the wgmma kernel too (BF16 q and weights: looser bound, checked
  // after `want`); the BF16-exact cases are in sparse_attention_wgmma_test.cpp.
  std::vector<float> out_wgmma;
  if (c.head_dim == 512 && c.heads % 64 == 0) {
    p.kernel = cuda::attention::SparseAttentionParams::Kernel::kWgmma;
    d_out.fill(kNaN);
    cuda::attention::sparse_attention(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    out_wgmma = d_out.download();
  }

  std::vector<float> want(out.size());
  for (int t = 0; t < tokens; ++t)
    for (int h = 0; h < c.heads; ++h) {
      const float* qh = q.data() + (static_cast<size_t>(t) * c.heads + h) * hd;
      std::vector<double> weights(keys[t].size());
      double max_logit = sinks[h];
      for (size_t k = 0; k < keys[t].size(); ++k) {
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * keys[t][k][d];
        weights[k] = dot / std::sqrt(static_cast<double>(hd));
        max_logit = std::max(max_logit, weights[k]);
      }
      double denominator = std::exp(sinks[h] - max_logit);
      for (double& w : weights) denominator += (w = std::exp(w - max_logit));
      for (int d = 0; d < hd; ++d) {
        double sum = 0;
        for (size_t k = 0; k < keys[t].size(); ++k) sum += weights[k] * keys[t][k][d];
        want[(static_cast<size_t>(t) * c.heads + h) * hd + d] = static_cast<float>(sum / denominator);
      }
    }
  auto where = [&](size_t i) {
    const size_t t = i / (static_cast<size_t>(c.heads) * hd);
    return "token " + std::to_string(t) + " (position " + std::to_string(c.positions[t]) + ", " +
           std::to_string(keys[t].size()) + " keys) head " + std::to_string((i / hd) % c.heads) + " channel " +
           std::to_string(i % hd);
  };
  expect_close("attention output", out.data(), want.data(), out.size(), 1e-4, 1e-4, where);
  if (!out_wgmma.empty()) expect_close("wgmma attention output", out_wgmma.data(), want.data(), out.size(), 1e-2, 2e-2, where);
}

TEST(SparseAttention, SlidingOnly) {
  for (int head_dim : {64, 128, 512}) {
    AttentionCase c;
    c.head_dim = head_dim;
    c.heads = head_dim == 512 ? 64 : 13;
    c.positions = {0, 1, 6, 7, 8, 30, 101};
    SCOPED_TRACE("head_dim " + std::to_string(head_dim));
    run_case(c, 1 + head_dim);
  }
}

TEST(SparseAttention, AllVisibleEntries) {
  AttentionCase c;
  c.mode = CompressedKeys::kAllVisible;
  c.rate = 8;
  c.window = 16;
  c.ring_rows = 19;
  c.max_entries = 20;
  c.positions = {3, 7, 8, 15, 100, 159, 170};  // 0, 1, 1, 2, 12, 20, 20 (capped) entries
  for (int head_dim : {64, 128, 512}) {
    c.head_dim = head_dim;
    c.heads = head_dim == 512 ? 64 : 9;
    SCOPED_TRACE("head_dim " + std::to_string(head_dim));
    run_case(c, 50 + head_dim);
  }
  c.rate = 128;  // more entries than a key tile with a short window
  c.window = 4;
  c.max_entries = 80;
  c.head_dim = 128;
  c.positions = {127, 5000, 10239};
  run_case(c, 77);
}

TEST(SparseAttention, SelectedEntriesSkipJunk) {
  AttentionCase c;
  c.mode = CompressedKeys::kSelected;
  c.max_entries = 30;
  for (int top_k : {3, 6, 128}) {
    c.top_k = top_k;
    c.positions = {2, 3, 9, 40, 119, 130, 500};  // visible 0, 1, 2, 10, 30, 30, 30
    for (int head_dim : {64, 512}) {
      c.head_dim = head_dim;
      c.heads = head_dim == 512 ? 64 : 4;
      SCOPED_TRACE("top_k " + std::to_string(top_k) + " head_dim " + std::to_string(head_dim));
      run_case(c, 90 + top_k + head_dim);
    }
  }
}

}  // namespace
}  // namespace dsv4::attention_test

// Compressor error path and ring bookkeeping not covered by the pipeline test:
// a window past max_entries sets kErrorCompressedEntryOverflow and writes nothing.
// (Entries vs the CPU CompressorState over chunk patterns: pipeline_test.cpp, which
// also runs Kernel::kWide.) Kernel::kWide vs kSimple: entries and state ring bitwise
// equal after every batch of chunk patterns (prefill from 0 and mid-window, chunks
// longer than the ring, several sequences per batch, padding rows, decode with and
// without single_token_chunks), at V4-Flash shapes and ragged ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "attention/attention_test_util.h"
#include "cuda/attention/attention.h"

namespace dsv4::attention_test {
namespace {

using Kernel = cuda::attention::CompressorParams::Kernel;

void entry_past_max_entries_is_an_error_not_a_write(Kernel kernel) {
  SCOPED_TRACE("kernel " + std::to_string(static_cast<int>(kernel)));
  const int rate = 4, dim = 32, width = 2 * dim, max_entries = 2, slots = 2, tokens = 16;
  BatchArrays rows;
  rows.add_sequence(1, 0, tokens);  // closes windows 0..3; 2 and 3 are past max_entries
  const cuda::TokenBatch batch = rows.upload();
  Random random(5);
  DeviceArray<float> kv(static_cast<size_t>(tokens) * width), gate(kv.size()), ape(static_cast<size_t>(rate) * width),
      norm(dim), inv_freq(8);
  kv.upload(random.vector(kv.size(), -1, 1));
  gate.upload(random.vector(gate.size(), -1, 1));
  ape.upload(random.vector(ape.size(), -1, 1));
  norm.upload(std::vector<float>(dim, 1.0f));
  inv_freq.upload(random.vector(8, 0.0f, 1.0f));
  DeviceArray<float> state_kv(static_cast<size_t>(slots) * 2 * rate * width), state_gate(state_kv.size());
  DeviceArray<float> entries(static_cast<size_t>(slots) * max_entries * dim + dim);  // one guard row after
  entries.fill(kNaN);
  DeviceArray<int32_t> error(1);
  error.fill(0);
  cuda::attention::CompressorParams p;
  p.kv_proj = kv.get();
  p.gate_proj = gate.get();
  p.ape = ape.get();
  p.norm_weight = norm.get();
  p.inv_freq = inv_freq.get();
  p.rope_dim = 16;
  p.rate = rate;
  p.dim = dim;
  p.overlapping = true;
  p.state_kv = state_kv.get();
  p.state_gate = state_gate.get();
  p.state_rows = 2 * rate;
  p.entries = entries.get();
  p.entries_bf16 = false;
  p.max_entries = max_entries;
  p.batch = batch;
  p.error_flag = error.get();
  p.kernel = kernel;
  cuda::attention::compressor_update(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(error.download()[0], cuda::attention::kErrorCompressedEntryOverflow);
  const std::vector<float> got = entries.download();
  for (size_t i = 0; i < got.size(); ++i) {
    const bool written = i >= static_cast<size_t>(max_entries) * dim && i < static_cast<size_t>(2) * max_entries * dim;
    ASSERT_EQ(std::isnan(got[i]), !written) << "entries element " << i << " (slot " << i / (max_entries * dim)
                                            << ", entry " << (i / dim) % max_entries << ") = " << got[i];
  }
}

TEST(CompressorUpdate, EntryPastMaxEntriesIsAnErrorNotAWrite) {
  entry_past_max_entries_is_an_error_not_a_write(Kernel::kSimple);
  entry_past_max_entries_is_an_error_not_a_write(Kernel::kWide);
}

// ---- kWide vs kSimple -----------------------------------------------------------------

struct Shape {
  std::string name;
  int dim = 0, rate = 0, rope_dim = 0;
  bool overlapping = false, bf16 = true;
  int width() const { return (overlapping ? 2 : 1) * dim; }
  int state_rows() const { return (overlapping ? 2 : 1) * rate; }
};

// A batch: (sequence, tokens) in row order; sequence -1 is one padding row (position -1).
using Batch = std::vector<std::pair<int, int>>;

// Both kernels' caches, updated with the same inputs batch after batch.
class WideVsSimple {
 public:
  WideVsSimple(const Shape& shape, int sequences, int max_entries, uint64_t seed)
      : s_(shape), sequences_(sequences), max_entries_(max_entries), random_(seed), next_(sequences, 0) {
    const int slots = sequences + 1;  // sequence q in slot q + 1: slot 0 stays untouched
    ape_ = upload(random_.vector(static_cast<size_t>(s_.rate) * s_.width(), -1, 1));
    norm_ = upload(random_.vector(s_.dim, 0.8f, 1.2f));
    std::vector<float> inv_freq(std::max(1, s_.rope_dim / 2));
    for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / std::max(2, s_.rope_dim));
    inv_freq_ = upload(inv_freq);
    // The rings start as the same random values (a mid-sequence chunk reads them), entries as NaN.
    const std::vector<float> ring_kv = random_.vector(static_cast<size_t>(slots) * s_.state_rows() * s_.width(), -1, 1);
    const std::vector<float> ring_gate = random_.vector(ring_kv.size(), -2, 2);
    const size_t entry_elems = static_cast<size_t>(slots) * max_entries * s_.dim;
    for (Side& side : sides_) {
      side.state_kv = upload(ring_kv);
      side.state_gate = upload(ring_gate);
      side.entries = DeviceArray<float>(s_.bf16 ? (entry_elems + 1) / 2 : entry_elems);
      side.entries.fill(kNaN);
      side.error = DeviceArray<int32_t>(1);
      side.error.fill(0);
    }
  }

  // Starts sequence q at `position` (mid-sequence chunks: the ring holds random "earlier" rows).
  void jump(int q, int position) { next_[q] = position; }

  // Runs one batch on both; wide_single_token: kWide with single_token_chunks.
  void run(const std::string& what, const Batch& spec, bool wide_single_token = false) {
    BatchArrays rows;
    for (auto [q, count] : spec) {
      if (q < 0) {
        rows.add_sequence(0, -1, 1);  // padding row: position -1 (skipped by both)
        rows.positions.back() = -1;
        continue;
      }
      rows.add_sequence(q + 1, next_[q], count);
      next_[q] += count;
    }
    const cuda::TokenBatch batch = rows.upload();
    DeviceArray<float> kv = upload(random_.vector(static_cast<size_t>(rows.tokens()) * s_.width(), -1, 1));
    DeviceArray<float> gate = upload(random_.vector(kv.size(), -3, 3));
    for (int side = 0; side < 2; ++side) {
      cuda::attention::CompressorParams p;
      p.kv_proj = kv.get();
      p.gate_proj = gate.get();
      p.ape = ape_.get();
      p.norm_weight = norm_.get();
      p.inv_freq = inv_freq_.get();
      p.rope_dim = s_.rope_dim;
      p.rate = s_.rate;
      p.dim = s_.dim;
      p.overlapping = s_.overlapping;
      p.state_kv = sides_[side].state_kv.get();
      p.state_gate = sides_[side].state_gate.get();
      p.state_rows = s_.state_rows();
      p.entries = sides_[side].entries.get();
      p.entries_bf16 = s_.bf16;
      p.max_entries = max_entries_;
      p.batch = batch;
      p.error_flag = sides_[side].error.get();
      p.kernel = side == 0 ? Kernel::kSimple : Kernel::kWide;
      p.single_token_chunks = side == 1 && wide_single_token;
      cuda::attention::compressor_update(p, nullptr);
    }
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::string at = s_.name + ", " + what + (wide_single_token ? " (wide: single_token_chunks)" : "");
    for (int side = 0; side < 2; ++side)
      EXPECT_EQ(sides_[side].error.download()[0], 0) << at << ": error flag of side " << side;
    expect_same_bits(at + ": entries", sides_[0].entries.download(), sides_[1].entries.download(), s_.dim);
    expect_same_bits(at + ": state_kv", sides_[0].state_kv.download(), sides_[1].state_kv.download(), s_.width());
    expect_same_bits(at + ": state_gate", sides_[0].state_gate.download(), sides_[1].state_gate.download(),
                     s_.width());
    // Something was pooled by now (all NaN would compare equal too).
    size_t written = 0;  // 32-bit words no longer the NaN poison (FP32 or two BF16)
    for (float v : sides_[1].entries.download()) written += std::memcmp(&v, &kNaN, sizeof(float)) != 0;
    pooled_any_ = pooled_any_ || written > 0;
  }
  bool pooled_any() const { return pooled_any_; }

 private:
  struct Side {
    DeviceArray<float> state_kv, state_gate, entries;  // entries: BF16 pairs or FP32
    DeviceArray<int32_t> error;
  };
  static DeviceArray<float> upload(const std::vector<float>& host) {
    DeviceArray<float> d(host.size());
    d.upload(host);
    return d;
  }
  // Bitwise comparison of two float buffers (BF16 pairs compared as their 32-bit words);
  // reports the first differing word with its row (of `row_elems`, in float units for FP32).
  void expect_same_bits(const std::string& what, const std::vector<float>& a, const std::vector<float>& b,
                        int row_elems) const {
    ASSERT_EQ(a.size(), b.size());
    size_t differ = 0, first = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
        if (differ++ == 0) first = i;
      }
    }
    const size_t row = s_.bf16 && what.find("entries") != std::string::npos ? first * 2 / row_elems : first / row_elems;
    EXPECT_EQ(differ, 0u) << what << ": " << differ << " of " << a.size() << " 32-bit words differ; first at word "
                          << first << " (row " << row << "): simple " << a[first] << ", wide " << b[first];
  }

  Shape s_;
  int sequences_, max_entries_;
  Random random_;
  std::vector<int> next_;
  DeviceArray<float> ape_, norm_, inv_freq_;
  Side sides_[2];
  bool pooled_any_ = false;
};

void wide_vs_simple(const Shape& shape) {
  SCOPED_TRACE(shape.name);
  const int max_entries = 1200 / shape.rate + 4;
  WideVsSimple run(shape, 3, max_entries, 11);
  run.run("prefill 300 + 7 + padding", {{0, 300}, {1, 7}, {-1, 1}});
  run.run("chunk 37 mid-window + decode", {{0, 37}, {1, 1}});
  run.jump(2, 3 * shape.rate - 2);  // sequence 2 starts mid-sequence: its first windows read the random ring
  run.run("mid-sequence chunk 2 rate + 5", {{2, 2 * shape.rate + 5}, {0, 1}});
  for (int step = 0; step < 2 * shape.rate + 1; ++step) {
    const bool single = step % 2 == 1;
    run.run("decode step " + std::to_string(step), {{1, 1}, {-1, 1}, {0, 1}, {2, 1}}, single);
    if (::testing::Test::HasFailure()) return;
  }
  run.run("chunk 1.5 x state_rows", {{1, shape.state_rows() * 3 / 2 + 1}, {2, 3}});
  run.run("chunk 400 (wraps the ring)", {{2, 400}});
  EXPECT_TRUE(run.pooled_any());
}

TEST(CompressorWide, BitwiseSimpleFlashShapes) {
  wide_vs_simple({"CSA attention 512 rate 4", 512, 4, 64, true, true});
  wide_vs_simple({"HCA attention 512 rate 128", 512, 128, 64, false, true});
  wide_vs_simple({"indexer 128 rate 4", 128, 4, 64, true, false});
}

TEST(CompressorWide, BitwiseSimpleRaggedShapes) {
  // dim not a multiple of 128 (idle threads in the norm sum), > 512 (channels loop), odd
  // rates, slot counts not a multiple of the 8 / 16 load batch.
  wide_vs_simple({"dim 200 rate 8 overlapping", 200, 8, 16, true, false});
  wide_vs_simple({"dim 96 rate 3 HCA", 96, 3, 32, false, true});
  wide_vs_simple({"dim 640 rate 5 overlapping", 640, 5, 64, true, true});
  wide_vs_simple({"dim 72 rate 21 HCA", 72, 21, 8, false, false});
  wide_vs_simple({"dim 32 rate 1 HCA", 32, 1, 0, false, false});
}

// single_token_chunks with a two-token chunk: kErrorCompressorNotSingleToken, and the
// one-token sequence next to it is still pooled and saved.
TEST(CompressorWide, SingleTokenPromiseBrokenIsAnError) {
  const int rate = 4, dim = 128, width = 2 * dim, max_entries = 8;
  BatchArrays rows;
  rows.add_sequence(1, 3, 1);  // closes window 0
  rows.add_sequence(2, 6, 2);  // two tokens: breaks the promise
  const cuda::TokenBatch batch = rows.upload();
  Random random(3);
  DeviceArray<float> kv(static_cast<size_t>(3) * width), gate(kv.size()), ape(static_cast<size_t>(rate) * width),
      norm(dim), inv_freq(32);
  kv.upload(random.vector(kv.size(), -1, 1));
  gate.upload(random.vector(gate.size(), -1, 1));
  ape.upload(random.vector(ape.size(), -1, 1));
  norm.upload(std::vector<float>(dim, 1.0f));
  inv_freq.upload(random.vector(32, 0.0f, 1.0f));
  DeviceArray<float> state_kv(static_cast<size_t>(3) * 2 * rate * width), state_gate(state_kv.size());
  state_kv.fill(0.5f);
  state_gate.fill(0.25f);
  DeviceArray<float> entries(static_cast<size_t>(3) * max_entries * dim);
  entries.fill(kNaN);
  DeviceArray<int32_t> error(1);
  error.fill(0);
  cuda::attention::CompressorParams p;
  p.kv_proj = kv.get();
  p.gate_proj = gate.get();
  p.ape = ape.get();
  p.norm_weight = norm.get();
  p.inv_freq = inv_freq.get();
  p.rope_dim = 64;
  p.rate = rate;
  p.dim = dim;
  p.overlapping = true;
  p.state_kv = state_kv.get();
  p.state_gate = state_gate.get();
  p.state_rows = 2 * rate;
  p.entries = entries.get();
  p.entries_bf16 = false;
  p.max_entries = max_entries;
  p.batch = batch;
  p.error_flag = error.get();
  p.kernel = Kernel::kWide;
  p.single_token_chunks = true;
  cuda::attention::compressor_update(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(error.download()[0], cuda::attention::kErrorCompressorNotSingleToken);
  const std::vector<float> got = entries.download();
  EXPECT_FALSE(std::isnan(got[static_cast<size_t>(1) * max_entries * dim])) << "slot 1 entry 0 was not pooled";
  const std::vector<float> ring = state_kv.download();
  const size_t saved = (static_cast<size_t>(1) * 2 * rate + 3) * width;  // slot 1, position 3
  EXPECT_EQ(ring[saved], kv.download()[0]) << "slot 1 position 3 was not saved";
  const size_t skipped = (static_cast<size_t>(2) * 2 * rate + 6) * width;  // slot 2, position 6
  EXPECT_EQ(ring[skipped], 0.5f) << "slot 2 (promise broken) was saved";
}

}  // namespace
}  // namespace dsv4::attention_test

// Compressor error path and ring bookkeeping not covered by the pipeline test:
// a window past max_entries sets kErrorCompressedEntryOverflow and writes nothing.
// (Entries vs the CPU CompressorState over chunk patterns: pipeline_test.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attention/attention_test_util.h"
#include "cuda/attention/attention.h"

namespace dsv4::attention_test {
namespace {

TEST(CompressorUpdate, EntryPastMaxEntriesIsAnErrorNotAWrite) {
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

}  // namespace
}  // namespace dsv4::attention_test

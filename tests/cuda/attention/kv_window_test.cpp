// KV window ring write: each token's row lands, BF16-rounded (RNE), in row
// position % ring_rows of its slot; every other row and slot stays NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attention/attention_test_util.h"
#include "cuda/attention/attention.h"

namespace dsv4::attention_test {
namespace {

TEST(KvWindowWrite, RowsLandAtPositionModuloRing) {
  for (int head_dim : {64, 128, 512}) {
    SCOPED_TRACE("head_dim " + std::to_string(head_dim));
    const int ring_rows = 13, slots = 5;
    BatchArrays rows;  // a prefill chunk of 9 wrapping the ring, and two decode tokens
    rows.add_sequence(3, 8, 9);
    rows.add_sequence(1, 0, 1);
    rows.add_sequence(4, 1000, 1);
    const cuda::TokenBatch batch = rows.upload();
    Random random(head_dim);
    const std::vector<float> kv = random.vector(static_cast<size_t>(rows.tokens()) * head_dim, -4.0f, 4.0f);
    DeviceArray<float> d_kv(kv.size());
    d_kv.upload(kv);
    DeviceArray<uint16_t> d_window(static_cast<size_t>(slots) * ring_rows * head_dim);
    d_window.fill(kBf16NaN);
    cuda::attention::kv_window_write(d_kv.get(), head_dim, d_window.get(), ring_rows, batch, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<uint16_t> window = d_window.download();

    std::vector<uint16_t> want(window.size(), kBf16NaN);
    for (int t = 0; t < rows.tokens(); ++t)
      for (int d = 0; d < head_dim; ++d)
        want[(static_cast<size_t>(rows.slots[t]) * ring_rows + rows.positions[t] % ring_rows) * head_dim + d] =
            float_to_bf16(kv[static_cast<size_t>(t) * head_dim + d]);
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < want.size(); ++i)
      if (window[i] != want[i] && mismatches++ == 0) first = i;
    EXPECT_EQ(mismatches, 0u) << "first at slot " << first / (ring_rows * head_dim) << " row "
                              << (first / head_dim) % ring_rows << " channel " << first % head_dim << ": got 0x"
                              << std::hex << window[first] << ", want 0x" << want[first];
  }
}

}  // namespace
}  // namespace dsv4::attention_test

// Embedding lookup (every format, exact), RMSNorm (weighted / unweighted), RoPE
// (forward / inverse) and the small conversions vs their CPU twins.
//
// Tolerances: embedding and conversions exact (bit for bit); RMSNorm 1e-5 x |ref|
// (elementwise products after one FP32 reduction); RoPE 1e-5 x (|even| + |odd|) of the
// input pair (cos/sin differ by a few ulp between CUDA and glibc), untouched channels exact.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/rope.h"
#include "dsv4/config.h"
#include "ops_test_util.h"

namespace dsv4::ops_test {
namespace {

TEST(CudaOpsEmbed, EveryFormatExactInEveryStream) {
  constexpr int64_t vocab = 50;
  constexpr int n_streams = 4;
  const std::vector<int32_t> ids = {0, 49, 7, 7, 23, 1, 48};
  const int tokens = static_cast<int>(ids.size());
  for (auto [format, hidden] : {std::pair<WeightFormat, int64_t>{WeightFormat::kF32, 77}, {WeightFormat::kBF16, 77},
                                {WeightFormat::kF16, 64}, {WeightFormat::kFP8Block, 200}, {WeightFormat::kMXFP4, 96},
                                {WeightFormat::kNVFP4, 64}}) {
    SCOPED_TRACE(std::string(weight_format_name(format)) + " hidden " + std::to_string(hidden));
    const TestWeight embed = make_weight(format, vocab, hidden, random_normal(vocab * hidden, 1.0f, 3));
    const std::vector<float> table = embed.dequantized();
    std::vector<float> want(tokens * n_streams * hidden);
    for (int t = 0; t < tokens; ++t)
      for (int i = 0; i < n_streams; ++i)
        for (int64_t d = 0; d < hidden; ++d) want[(t * n_streams + i) * hidden + d] = table[ids[t] * hidden + d];
    DeviceBuffer<int32_t> d_ids(ids), flag(std::vector<int32_t>{0});
    DeviceBuffer<float> streams(want.size());
    streams.poison();
    cuda::ops::embed_tokens(embed.device(), d_ids.get(), tokens, n_streams, streams.get(), flag.get(), nullptr);
    expect_close("embedding streams", streams.download(), want, {0, 0}, {tokens, n_streams, hidden},
                 {"t", "stream", "d"});
    EXPECT_EQ(flag.download()[0], 0);
  }
}

TEST(CudaOpsEmbed, OutOfRangeIdsFlagAndWriteZeros) {
  constexpr int64_t vocab = 10, hidden = 64;
  const std::vector<int32_t> ids = {3, -1, 10, 9};
  const TestWeight embed = make_weight(WeightFormat::kBF16, vocab, hidden, random_normal(vocab * hidden, 1.0f, 4));
  const std::vector<float> table = embed.dequantized();
  DeviceBuffer<int32_t> d_ids(ids), flag(std::vector<int32_t>{0});
  DeviceBuffer<float> streams(4 * 2 * hidden);
  streams.poison();
  cuda::ops::embed_tokens(embed.device(), d_ids.get(), 4, 2, streams.get(), flag.get(), nullptr);
  const std::vector<float> got = streams.download();
  EXPECT_EQ(flag.download()[0], cuda::ops::kErrorIdOutOfRange);
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < 2; ++i)
      for (int64_t d = 0; d < hidden; ++d) {
        const bool valid = ids[t] >= 0 && ids[t] < vocab;
        ASSERT_EQ(got[(t * 2 + i) * hidden + d], valid ? table[ids[t] * hidden + d] : 0.0f)
            << "token " << t << " (id " << ids[t] << ") stream " << i << " d " << d;
      }
}

TEST(CudaOpsRmsNorm, WeightedAndUnweightedMatchCpu) {
  for (int64_t width : {77, 512, 4096}) {
    constexpr int64_t rows = 5;
    for (bool weighted : {true, false}) {
      SCOPED_TRACE("width " + std::to_string(width) + (weighted ? " weighted" : " unweighted"));
      const std::vector<float> x = random_normal(rows * width, 3.0f, 50 + width);
      const std::vector<float> weight = random_normal(width, 1.0f, 51);
      std::vector<float> want = x;
      if (weighted)
        cpu::rms_norm(want.data(), rows, width, weight.data(), 1e-6);
      else
        cpu::rms_norm_unweighted(want.data(), rows, width, 1e-6);
      DeviceBuffer<float> d_x(x), d_w(weight);
      cuda::ops::rms_norm(d_x.get(), rows, width, weighted ? d_w.get() : nullptr, 1e-6f, nullptr);
      expect_close("rms_norm x", d_x.download(), want, {1e-5, 0}, {rows, width}, {"row", "i"});
    }
  }
}

TEST(CudaOpsRope, ForwardAndInverseMatchCpu) {
  constexpr int tokens = 4, vectors = 5, width = 96, rope_dim = 64;
  RopeConfig config;
  config.theta = 10000.0;
  config.rope_dim = rope_dim;
  const cpu::RopeTable table(config);
  const std::vector<float> inv_freq = rope_inv_freq(config);
  const std::vector<int32_t> positions = {0, 7, 4095, 100000};
  for (bool inverse : {false, true}) {
    SCOPED_TRACE(inverse ? "inverse" : "forward");
    const std::vector<float> x = random_normal(tokens * vectors * width, 1.0f, 60);
    std::vector<float> want = x;
    for (int t = 0; t < tokens; ++t) table.apply(want.data() + t * vectors * width, vectors, width, positions[t], inverse);
    std::vector<double> scale(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t even = i & ~size_t{1};  // width and the rope offset are even: pairs align to even indices
      scale[i] = std::abs(double(x[even])) + std::abs(double(x[even + 1]));
    }
    DeviceBuffer<float> d_x(x), d_freq(inv_freq);
    DeviceBuffer<int32_t> d_pos(positions);
    cuda::ops::rope(d_x.get(), tokens, vectors, width, rope_dim, d_freq.get(), d_pos.get(), inverse, nullptr);
    const std::vector<float> got = d_x.download();
    expect_close("rope x", got, want, {1e-5, 0}, {tokens, vectors, width}, {"t", "v", "c"}, scale);
    for (int64_t v = 0; v < tokens * vectors; ++v)
      for (int c = 0; c < width - rope_dim; ++c)
        ASSERT_EQ(got[v * width + c], x[v * width + c]) << "non-rope channel " << c << " of vector " << v << " changed";
  }
}

// rms_norm_rope (the engine's q and kv paths in one launch): rms_norm then rope to within
// an ulp or two of the rotated pair (the compiler contracts the rotation differently in the
// fused kernel: 1 ulp seen on the H200), and vs the CPU (rms_norm, then RopeTable::apply). Ragged: width 78 with rope 64
// (odd non-rope part), 512/64 (V4's head_dim), vectors 1 and 3, a weighted and an
// unweighted norm, rope_dim 0 (norm only, null inv_freq/positions). The same call with
// out_bf16 (the attention's q_bf16): x bitwise the call without it, and out_bf16 bitwise
// the CPU RNE (float_to_bf16) of every element of that FP32 output.
TEST(CudaOpsRmsNormRope, FusedMatchesSeparateAndCpu) {
  struct Case {
    int tokens, vectors, width, rope_dim;
    bool weighted;
  };
  const Case cases[] = {{3, 1, 512, 64, true}, {2, 3, 512, 64, false}, {5, 2, 78, 64, true}, {1, 4, 96, 0, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE("tokens " + std::to_string(c.tokens) + " vectors " + std::to_string(c.vectors) + " width " +
                 std::to_string(c.width) + " rope " + std::to_string(c.rope_dim) + (c.weighted ? " weighted" : ""));
    const int64_t rows = int64_t{c.tokens} * c.vectors;
    const std::vector<float> x = random_normal(rows * c.width, 3.0f, 70 + c.width);
    const std::vector<float> weight = random_normal(c.width, 1.0f, 71);
    RopeConfig config;
    config.theta = 10000.0;
    config.rope_dim = c.rope_dim > 0 ? c.rope_dim : 2;
    const std::vector<float> inv_freq = rope_inv_freq(config);
    std::vector<int32_t> positions = {0, 7, 4095, 100000, 33};
    positions.resize(static_cast<size_t>(c.tokens));
    DeviceBuffer<float> d_a(x), d_b(x), d_w(weight), d_freq(inv_freq);
    DeviceBuffer<int32_t> d_pos(positions);
    const float* w = c.weighted ? d_w.get() : nullptr;
    cuda::ops::rms_norm(d_a.get(), rows, c.width, w, 1e-6f, nullptr);
    if (c.rope_dim > 0)
      cuda::ops::rope(d_a.get(), c.tokens, c.vectors, c.width, c.rope_dim, d_freq.get(), d_pos.get(), false, nullptr);
    cuda::ops::rms_norm_rope(d_b.get(), c.tokens, c.vectors, c.width, w, 1e-6f, c.rope_dim,
                             c.rope_dim > 0 ? d_freq.get() : nullptr, c.rope_dim > 0 ? d_pos.get() : nullptr, nullptr);
    const std::vector<float> separate = d_a.download(), fused = d_b.download();
    {
      DeviceBuffer<float> d_c(x);
      DeviceBuffer<uint16_t> d_bits(x.size());
      d_bits.poison();
      cuda::ops::rms_norm_rope(d_c.get(), c.tokens, c.vectors, c.width, w, 1e-6f, c.rope_dim,
                               c.rope_dim > 0 ? d_freq.get() : nullptr, c.rope_dim > 0 ? d_pos.get() : nullptr,
                               nullptr, d_bits.get());
      const std::vector<float> with_bits = d_c.download();
      const std::vector<uint16_t> bits = d_bits.download();
      ASSERT_EQ(std::memcmp(with_bits.data(), fused.data(), fused.size() * sizeof(float)), 0)
          << "x with out_bf16 differs from x without";
      size_t differing = 0, first = 0;
      for (size_t i = 0; i < bits.size(); ++i)
        if (bits[i] != float_to_bf16(fused[i]) && differing++ == 0) first = i;
      EXPECT_EQ(differing, 0u) << "out_bf16 vs CPU RNE of x: " << differing << " differ, first at row "
                               << first / c.width << " channel " << first % c.width << ": " << bits[first] << " vs "
                               << float_to_bf16(fused[first]);
    }
    std::vector<float> want = x;
    if (c.weighted)
      cpu::rms_norm(want.data(), rows, c.width, weight.data(), 1e-6);
    else
      cpu::rms_norm_unweighted(want.data(), rows, c.width, 1e-6);
    if (c.rope_dim > 0) {
      const cpu::RopeTable table(config);
      for (int t = 0; t < c.tokens; ++t)
        table.apply(want.data() + int64_t{t} * c.vectors * c.width, c.vectors, c.width, positions[t], false);
    }
    std::vector<double> scale(want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      const size_t even = i & ~size_t{1};  // width even: pairs at even indices
      scale[i] = std::abs(double(want[even])) + std::abs(double(want[even + 1]));
    }
    expect_close("rms_norm_rope x", fused, want, {1e-5, 0}, {rows, c.width}, {"row", "c"}, scale);
    expect_close("rms_norm_rope vs rms_norm + rope", fused, separate, {4e-7, 0}, {rows, c.width}, {"row", "c"}, scale);
  }
}

TEST(CudaOpsConversions, F32ToBf16AndAddExact) {
  const std::vector<float> a = random_normal(1001, 10.0f, 70), b = random_normal(1001, 10.0f, 71);
  DeviceBuffer<float> d_a(a), d_b(b);
  DeviceBuffer<uint16_t> d_bits(a.size());
  d_bits.poison();
  cuda::ops::f32_to_bf16(d_a.get(), d_bits.get(), static_cast<int64_t>(a.size()), nullptr);
  const std::vector<uint16_t> bits = d_bits.download();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(bits[i], float_to_bf16(a[i])) << "element " << i << " = " << a[i];
  cuda::ops::add_inplace(d_a.get(), d_b.get(), static_cast<int64_t>(a.size()), nullptr);
  const std::vector<float> sum = d_a.download();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(sum[i], a[i] + b[i]) << "element " << i;
}

}  // namespace
}  // namespace dsv4::ops_test

// mHC collapse (with Sinkhorn), expand and HyperHead vs cpu::hyper_collapse /
// hyper_expand / hyper_head, on hc_mult 4 (V4) and 3, ragged hidden sizes.
//
// Tolerances (FP32; differences come from reduction order and expf/sqrtf ulps):
//   collapsed: 1e-5 x sum_i |streams[t, i, d]| (pre <= 1 + eps)
//   post: 2e-5 x |ref|; comb (entries in [0, 1]): 2e-5 absolute (the mixes are dots of
//   n*hidden terms, 16K at V4's width: summation order alone moves them ~1e-5)
//   expand: 1e-5 x (|post[k] out[d]| + sum_j |comb[j, k] old[j, d]|)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cpu/hyper_connection.h"
#include "ops_test_util.h"

namespace dsv4::ops_test {
namespace {

struct HyperCase {
  int n;
  int64_t hidden;
  int tokens;
  int iters;
};

ModelConfig config_for(const HyperCase& c) {
  ModelConfig config;
  config.hc_mult = c.n;
  config.hidden_size = c.hidden;
  config.hc_sinkhorn_iters = c.iters;
  config.hc_eps = 1e-6;
  config.rms_norm_eps = 1e-6;
  return config;
}

cuda::ops::HyperShape shape_for(const HyperCase& c) {
  cuda::ops::HyperShape shape;
  shape.n = c.n;
  shape.hidden = static_cast<int>(c.hidden);
  shape.sinkhorn_iters = c.iters;
  shape.hc_eps = 1e-6f;
  shape.rms_eps = 1e-6f;
  return shape;
}

HyperConnectionWeights make_hyper_weights(int n, int64_t hidden, int64_t mix, int scales, uint64_t seed) {
  HyperConnectionWeights w;
  w.fn.shape = {mix, n * hidden};
  w.fn.values = random_normal(static_cast<size_t>(mix * n * hidden), 0.05f, seed);
  w.base.shape = {mix};
  w.base.values = random_normal(static_cast<size_t>(mix), 0.5f, seed + 1);
  w.scale.shape = {scales};
  w.scale.values = random_normal(static_cast<size_t>(scales), 0.5f, seed + 2);
  for (float& s : w.scale.values) s = 1.0f + s;  // around 1, either sign unlikely
  return w;
}

// sum_i |streams[t, i, d]|: [tokens, hidden].
std::vector<double> stream_magnitude(const std::vector<float>& streams, int n, int64_t hidden, int tokens) {
  std::vector<double> m(static_cast<size_t>(tokens * hidden), 0.0);
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < n; ++i)
      for (int64_t d = 0; d < hidden; ++d) m[t * hidden + d] += std::abs(double(streams[(t * n + i) * hidden + d]));
  return m;
}

const HyperCase kCases[] = {{4, 64, 5, 20}, {4, 200, 3, 20}, {3, 77, 4, 7}, {4, 4096, 2, 20}, {4, 64, 1, 1}};

std::string describe(const HyperCase& c) {
  return "n " + std::to_string(c.n) + " hidden " + std::to_string(c.hidden) + " tokens " + std::to_string(c.tokens) +
         " iters " + std::to_string(c.iters);
}

TEST(CudaOpsHyper, CollapseMatchesCpu) {
  for (const HyperCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    const ModelConfig config = config_for(c);
    const int64_t mix = config.hc_mix_width();
    const HyperConnectionWeights w = make_hyper_weights(c.n, c.hidden, mix, 3, 80 + c.hidden);
    const std::vector<float> streams = random_normal(c.tokens * c.n * c.hidden, 1.0f, 81);
    cpu::HyperMix mix_ref;
    const std::vector<float> want = cpu::hyper_collapse(w, config, streams.data(), c.tokens, &mix_ref);

    DeviceBuffer<float> fn(w.fn.values), base(w.base.values), scale(w.scale.values), d_streams(streams);
    DeviceBuffer<float> collapsed(want.size()), post(mix_ref.post.size()), comb(mix_ref.comb.size());
    collapsed.poison();
    post.poison();
    comb.poison();
    cuda::ops::hyper_collapse({fn.get(), base.get(), scale.get()}, shape_for(c), d_streams.get(), c.tokens,
                              collapsed.get(), post.get(), comb.get(), nullptr);
    expect_close("collapsed", collapsed.download(), want, {1e-5, 0}, {c.tokens, c.hidden}, {"t", "d"},
                 stream_magnitude(streams, c.n, c.hidden, c.tokens));
    expect_close("post", post.download(), mix_ref.post, {2e-5, 0}, {c.tokens, c.n}, {"t", "k"});
    expect_close("comb", comb.download(), mix_ref.comb, {0, 2e-5}, {c.tokens, c.n, c.n}, {"t", "j", "k"});
    EXPECT_EQ(d_streams.download(), streams) << "collapse must not modify the streams";
  }
}

TEST(CudaOpsHyper, ExpandMatchesCpu) {
  for (const HyperCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    const ModelConfig config = config_for(c);
    const HyperConnectionWeights w = make_hyper_weights(c.n, c.hidden, config.hc_mix_width(), 3, 90);
    const std::vector<float> streams = random_normal(c.tokens * c.n * c.hidden, 1.0f, 91);
    const std::vector<float> output = random_normal(c.tokens * c.hidden, 1.0f, 92);
    cpu::HyperMix mix;  // a real post/comb from the CPU collapse, the input of both expands
    cpu::hyper_collapse(w, config, streams.data(), c.tokens, &mix);
    std::vector<float> want = streams;
    cpu::hyper_expand(mix, config, output.data(), c.tokens, want.data());
    std::vector<double> scale(want.size(), 0.0);
    for (int t = 0; t < c.tokens; ++t)
      for (int k = 0; k < c.n; ++k)
        for (int64_t d = 0; d < c.hidden; ++d) {
          double s = std::abs(double(mix.post[t * c.n + k]) * output[t * c.hidden + d]);
          for (int j = 0; j < c.n; ++j)
            s += std::abs(double(mix.comb[(t * c.n + j) * c.n + k]) * streams[(t * c.n + j) * c.hidden + d]);
          scale[(t * c.n + k) * c.hidden + d] = s;
        }
    DeviceBuffer<float> post(mix.post), comb(mix.comb), d_out(output), d_streams(streams);
    cuda::ops::hyper_expand(post.get(), comb.get(), shape_for(c), d_out.get(), c.tokens, d_streams.get(), nullptr);
    expect_close("expanded streams", d_streams.download(), want, {1e-5, 0}, {c.tokens, c.n, c.hidden},
                 {"t", "stream", "d"}, scale);
  }
}

TEST(CudaOpsHyper, HeadMatchesCpu) {
  for (const HyperCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    const ModelConfig config = config_for(c);
    const HyperConnectionWeights w = make_hyper_weights(c.n, c.hidden, c.n, 1, 100);
    const std::vector<float> streams = random_normal(c.tokens * c.n * c.hidden, 1.0f, 101);
    const std::vector<float> want = cpu::hyper_head(w, config, streams.data(), c.tokens);
    DeviceBuffer<float> fn(w.fn.values), base(w.base.values), scale(w.scale.values), d_streams(streams);
    DeviceBuffer<float> collapsed(want.size());
    collapsed.poison();
    cuda::ops::hyper_head({fn.get(), base.get(), scale.get()}, shape_for(c), d_streams.get(), c.tokens,
                          collapsed.get(), nullptr);
    expect_close("head collapsed", collapsed.download(), want, {1e-5, 0}, {c.tokens, c.hidden}, {"t", "d"},
                 stream_magnitude(streams, c.n, c.hidden, c.tokens));
  }
}

}  // namespace
}  // namespace dsv4::ops_test

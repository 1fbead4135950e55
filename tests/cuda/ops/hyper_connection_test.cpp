// mHC collapse (with Sinkhorn), expand and HyperHead vs cpu::hyper_collapse /
// hyper_expand / hyper_head, on hc_mult 4 (V4) and 3, ragged hidden sizes.
//
// Tolerances (FP32; differences come from reduction order and expf/sqrtf ulps):
//   collapsed: 1e-5 x sum_i |streams[t, i, d]| (pre <= 1 + eps)
//   post: 2e-5 x |ref|; comb (entries in [0, 1]): 2e-5 absolute (the mixes are dots of
//   n*hidden terms, 16K at V4's width: summation order alone moves them ~1e-5)
//   expand: 1e-5 x (|post[k] out[d]| + sum_j |comb[j, k] old[j, d]|)
//   fused collapse + norm: 1e-5 x (|w[d]| inv_rms[t] sum_i |streams[t, i, d]| + |ref|)
//   (the collapse bound carried through the norm, plus the norm's own rounding)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
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

// Fused collapse / head + RMSNorm (hyper_collapse_norm, hyper_head_norm) vs the CPU
// collapse followed by cpu::rms_norm. The cases reach both tilings (tokens <= 64 and
// > 64), ragged flat widths (no float4 path), two mix passes (n 5: 35 mix rows > 24),
// the serial Sinkhorn (n 6: 36 entries > 32 lanes) and V4's width.
struct FusedCase {
  int n;
  int64_t hidden;
  int tokens;
  int iters;
  bool norm;
};
const FusedCase kFusedCases[] = {{4, 64, 5, 20, true},    {4, 200, 3, 20, true},  {3, 77, 4, 7, true},
                                 {4, 4096, 2, 20, true},  {4, 64, 1, 1, false},   {4, 96, 70, 20, true},
                                 {3, 77, 67, 5, true},    {5, 33, 9, 20, true},   {6, 40, 3, 20, true},
                                 {4, 4096, 65, 20, true}, {4, 128, 200, 20, false}};

std::string describe(const FusedCase& c) {
  return describe(HyperCase{c.n, c.hidden, c.tokens, c.iters}) + (c.norm ? " norm" : " no norm");
}

// want (collapsed, [tokens, hidden]) through cpu::rms_norm in place when norm; returns the
// tolerance scale per element.
std::vector<double> fused_reference(std::vector<float>& want, const std::vector<float>& streams,
                                    const std::vector<float>& norm_weight, const FusedCase& c) {
  std::vector<double> mag = stream_magnitude(streams, c.n, c.hidden, c.tokens);
  if (!c.norm) return mag;
  std::vector<double> inv(static_cast<size_t>(c.tokens));
  for (int t = 0; t < c.tokens; ++t) {
    double ss = 0;
    for (int64_t d = 0; d < c.hidden; ++d) ss += double(want[t * c.hidden + d]) * want[t * c.hidden + d];
    inv[t] = 1.0 / std::sqrt(ss / double(c.hidden) + 1e-6);
  }
  cpu::rms_norm(want.data(), c.tokens, c.hidden, norm_weight.data(), 1e-6);
  for (int t = 0; t < c.tokens; ++t)
    for (int64_t d = 0; d < c.hidden; ++d) {
      const size_t i = t * c.hidden + d;
      mag[i] = std::abs(double(norm_weight[d])) * inv[t] * mag[i] + std::abs(double(want[i]));
    }
  return mag;
}

TEST(CudaOpsHyper, FusedCollapseNormMatchesCpu) {
  for (const FusedCase& c : kFusedCases) {
    SCOPED_TRACE(describe(c));
    const HyperCase hc{c.n, c.hidden, c.tokens, c.iters};
    const ModelConfig config = config_for(hc);
    const int64_t mix = config.hc_mix_width();
    const HyperConnectionWeights w = make_hyper_weights(c.n, c.hidden, mix, 3, 180 + c.hidden);
    const std::vector<float> streams = random_normal(c.tokens * c.n * c.hidden, 1.0f, 181 + c.tokens);
    std::vector<float> norm_weight = random_normal(static_cast<size_t>(c.hidden), 0.3f, 182);
    for (float& v : norm_weight) v += 1.0f;
    cpu::HyperMix mix_ref;
    std::vector<float> want = cpu::hyper_collapse(w, config, streams.data(), c.tokens, &mix_ref);
    const std::vector<double> scale = fused_reference(want, streams, norm_weight, c);

    const cuda::ops::HyperShape shape = shape_for(hc);
    const int64_t ws_floats = cuda::ops::hyper_workspace_floats(shape, c.tokens);
    DeviceBuffer<float> fn(w.fn.values), base(w.base.values), scale_w(w.scale.values), d_streams(streams);
    DeviceBuffer<float> d_norm(norm_weight), workspace(static_cast<size_t>(ws_floats));
    DeviceBuffer<float> collapsed(want.size()), post(mix_ref.post.size()), comb(mix_ref.comb.size());
    DeviceBuffer<uint16_t> collapsed_bf16(want.size());
    workspace.poison();
    collapsed.poison();
    post.poison();
    comb.poison();
    collapsed_bf16.poison();
    cuda::ops::hyper_collapse_norm({fn.get(), base.get(), scale_w.get()}, shape, d_streams.get(), c.tokens,
                                   c.norm ? d_norm.get() : nullptr, 1e-6f, workspace.get(), ws_floats,
                                   collapsed.get(), post.get(), comb.get(), nullptr, collapsed_bf16.get());
    const std::vector<float> got = collapsed.download();
    expect_close("collapsed+norm", got, want, {1e-5, 0}, {c.tokens, c.hidden}, {"t", "d"}, scale);
    // The BF16 copy (the fast MoE's input) is bf16_rn of the FP32 result, bit for bit.
    const std::vector<uint16_t> got_bf16 = collapsed_bf16.download();
    for (size_t i = 0; i < got.size(); ++i)
      if (got_bf16[i] != float_to_bf16(got[i])) {
        ADD_FAILURE() << "collapsed_bf16 at [t " << i / c.hidden << ", d " << i % c.hidden << "] is 0x" << std::hex
                      << got_bf16[i] << ", bf16_rn(" << got[i] << ") = 0x" << float_to_bf16(got[i]);
        break;
      }
    // post = 2 sigmoid(z), |d post / d z| <= 1/2: z's own FP32 error (a hidden x n-term dot
    // summed in another order) is absolute, so small posts (z << 0) get an absolute floor.
    expect_close("post", post.download(), mix_ref.post, {2e-5, 1e-7}, {c.tokens, c.n}, {"t", "k"});
    expect_close("comb", comb.download(), mix_ref.comb, {0, 2e-5}, {c.tokens, c.n, c.n}, {"t", "j", "k"});
    EXPECT_EQ(d_streams.download(), streams) << "collapse must not modify the streams";
  }
}

TEST(CudaOpsHyper, FusedHeadNormMatchesCpu) {
  for (const FusedCase& c : kFusedCases) {
    SCOPED_TRACE(describe(c));
    const HyperCase hc{c.n, c.hidden, c.tokens, c.iters};
    const ModelConfig config = config_for(hc);
    const HyperConnectionWeights w = make_hyper_weights(c.n, c.hidden, c.n, 1, 200);
    const std::vector<float> streams = random_normal(c.tokens * c.n * c.hidden, 1.0f, 201 + c.tokens);
    std::vector<float> norm_weight = random_normal(static_cast<size_t>(c.hidden), 0.3f, 202);
    for (float& v : norm_weight) v += 1.0f;
    std::vector<float> want = cpu::hyper_head(w, config, streams.data(), c.tokens);
    const std::vector<double> scale = fused_reference(want, streams, norm_weight, c);

    const cuda::ops::HyperShape shape = shape_for(hc);
    const int64_t ws_floats = cuda::ops::hyper_workspace_floats(shape, c.tokens);
    DeviceBuffer<float> fn(w.fn.values), base(w.base.values), scale_w(w.scale.values), d_streams(streams);
    DeviceBuffer<float> d_norm(norm_weight), workspace(static_cast<size_t>(ws_floats)), collapsed(want.size());
    workspace.poison();
    collapsed.poison();
    cuda::ops::hyper_head_norm({fn.get(), base.get(), scale_w.get()}, shape, d_streams.get(), c.tokens,
                               c.norm ? d_norm.get() : nullptr, 1e-6f, workspace.get(), ws_floats, collapsed.get(),
                               nullptr);
    expect_close("head collapsed+norm", collapsed.download(), want, {1e-5, 0}, {c.tokens, c.hidden}, {"t", "d"},
                 scale);
  }
}

TEST(CudaOpsHyper, FusedRejectsSmallWorkspace) {
  const HyperCase hc{4, 64, 5, 20};
  const cuda::ops::HyperShape shape = shape_for(hc);
  const int64_t ws_floats = cuda::ops::hyper_workspace_floats(shape, hc.tokens);
  DeviceBuffer<float> buf(1024);
  EXPECT_THROW(cuda::ops::hyper_collapse_norm({buf.get(), buf.get(), buf.get()}, shape, buf.get(), hc.tokens, nullptr,
                                              1e-6f, buf.get(), ws_floats - 1, buf.get(), buf.get(), buf.get(),
                                              nullptr),
               Error);
}

}  // namespace
}  // namespace dsv4::ops_test

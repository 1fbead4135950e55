// cuda::ops::moe_generic_forward vs cpu::moe_forward (score and hash routing, every
// expert format, tiny and V4-sized shapes, with and without the shared expert),
// out-of-range ids, and a CUDA-graph capture.
//
// Tolerance (FP32 on both sides, only the summation order differs): per token row,
// |got - ref| <= 1e-4 x max_d |ref[t, d]| and cosine >= 0.99999. Tokens whose k-th and
// (k+1)-th biased scores lie within 1e-4 (a near-tie the router GEMM's summation order
// may flip) are left out and counted; at most a quarter of a case may be.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/moe.h"
#include "ops_test_util.h"

namespace dsv4::ops_test {
namespace {

struct MoeCase {
  WeightFormat format;
  int hidden, intermediate, experts, top_k, tokens;
  bool hash = false;
  bool shared = true;
};

std::string describe(const MoeCase& c) {
  return std::string(weight_format_name(c.format)) + " H " + std::to_string(c.hidden) + " I " +
         std::to_string(c.intermediate) + " E " + std::to_string(c.experts) + " k " + std::to_string(c.top_k) +
         " tokens " + std::to_string(c.tokens) + (c.hash ? " hash" : " score") + (c.shared ? "" : " no-shared");
}

constexpr float kScaling = 1.5f, kSwigluLimit = 3.0f;

// Experts 0..E-1 routed, index E the shared one (zeros when the case has none, so the
// CPU's "shared + routed" equals the GPU's routed-only sum exactly).
struct MoeLayer {
  MoeCase c;
  int64_t vocab = 0;
  std::vector<TestWeight> w1, w2, w3;
  std::vector<float> gate, bias;
  std::vector<int32_t> tid2eid;
  DeviceBuffer<cuda::DeviceMatrix> d_w1, d_w2, d_w3;
  DeviceBuffer<float> d_gate, d_bias;
  DeviceBuffer<int32_t> d_tid2eid;

  MoeLayer(const MoeCase& mc, uint64_t seed) : c(mc) {
    const int H = c.hidden, I = c.intermediate, E = c.experts;
    std::vector<cuda::DeviceMatrix> m1, m2, m3;
    for (int e = 0; e <= E; ++e) {
      const bool zero = e == E && !c.shared;
      auto values = [&](int64_t count, float sigma, uint64_t s) {
        return zero ? std::vector<float>(static_cast<size_t>(count), 0.0f) : random_normal(count, sigma, s);
      };
      const float in_sigma = 2.0f / std::sqrt(static_cast<float>(H)), down_sigma = 1.0f / std::sqrt(static_cast<float>(I));
      w1.push_back(make_weight(c.format, I, H, values(int64_t{I} * H, in_sigma, seed + 10 * e)));
      w3.push_back(make_weight(c.format, I, H, values(int64_t{I} * H, in_sigma, seed + 10 * e + 1)));
      w2.push_back(make_weight(c.format, H, I, values(int64_t{H} * I, down_sigma, seed + 10 * e + 2)));
      if (e < E) {
        m1.push_back(w1.back().device());
        m2.push_back(w2.back().device());
        m3.push_back(w3.back().device());
      }
    }
    d_w1 = DeviceBuffer<cuda::DeviceMatrix>(m1);
    d_w2 = DeviceBuffer<cuda::DeviceMatrix>(m2);
    d_w3 = DeviceBuffer<cuda::DeviceMatrix>(m3);
    gate = random_normal(static_cast<size_t>(E) * H, 1.0f / std::sqrt(static_cast<float>(H)), seed + 1000);
    bias = random_normal(E, 0.1f, seed + 1001);
    d_gate = DeviceBuffer<float>(gate);
    d_bias = DeviceBuffer<float>(bias);
    if (c.hash) {
      vocab = 97;
      std::mt19937_64 rng(seed + 1002);
      std::vector<int32_t> order(E);
      for (int64_t v = 0; v < vocab; ++v) {
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        tid2eid.insert(tid2eid.end(), order.begin(), order.begin() + c.top_k);
      }
      d_tid2eid = DeviceBuffer<int32_t>(tid2eid);
    }
  }

  ModelConfig config() const {
    ModelConfig config;
    config.hidden_size = c.hidden;
    config.moe_intermediate_size = c.intermediate;
    config.n_routed_experts = c.experts;
    config.num_experts_per_tok = c.top_k;
    config.routed_scaling_factor = kScaling;
    config.swiglu_limit = kSwigluLimit;
    if (c.hash) config.vocab_size = vocab;
    return config;
  }
  QuantMatrix gate_matrix() const {
    QuantMatrix g;
    g.name = "gate";
    g.format = WeightFormat::kF32;
    g.rows = c.experts;
    g.cols = c.hidden;
    g.data = reinterpret_cast<const uint8_t*>(gate.data());
    return g;
  }
  MoEWeights cpu_weights() const {
    MoEWeights w;
    w.gate = gate_matrix();
    w.gate_bias.shape = {c.experts};
    w.gate_bias.values = bias;
    w.tid2eid = tid2eid;
    for (int e = 0; e < c.experts; ++e) w.experts.push_back({w1[e].matrix, w2[e].matrix, w3[e].matrix});
    w.shared = {w1[c.experts].matrix, w2[c.experts].matrix, w3[c.experts].matrix};
    return w;
  }
  cuda::ops::GenericMoeWeights device_weights() const {
    cuda::ops::GenericMoeWeights w;
    w.hidden = c.hidden;
    w.intermediate = c.intermediate;
    w.experts = c.experts;
    w.top_k = c.top_k;
    w.w1 = d_w1.get();
    w.w2 = d_w2.get();
    w.w3 = d_w3.get();
    w.shared_w1 = w1[c.experts].device();
    w.shared_w2 = w2[c.experts].device();
    w.shared_w3 = w3[c.experts].device();
    w.has_shared = c.shared;
    w.gate_weight = d_gate.get();
    w.gate_bias = d_bias.get();
    w.tid2eid = c.hash ? d_tid2eid.get() : nullptr;
    w.vocab_size = vocab;
    w.routed_scaling_factor = kScaling;
    w.swiglu_limit = kSwigluLimit;
    return w;
  }
  // Per token: true when score routing has a near-tie at the top-k boundary.
  std::vector<bool> near_ties(const std::vector<float>& x) const {
    std::vector<bool> tie(static_cast<size_t>(c.tokens), false);
    if (c.hash || c.top_k == c.experts) return tie;
    std::vector<float> logits(static_cast<size_t>(c.tokens) * c.experts);
    cpu::linear(gate_matrix(), x.data(), c.tokens, logits.data());
    for (int t = 0; t < c.tokens; ++t) {
      std::vector<float> biased(c.experts);
      for (int e = 0; e < c.experts; ++e) biased[e] = std::sqrt(cpu::softplus(logits[t * c.experts + e])) + bias[e];
      std::sort(biased.begin(), biased.end(), std::greater<float>());
      tie[t] = biased[c.top_k - 1] - biased[c.top_k] < 1e-4f;
    }
    return tie;
  }
};

struct MoeRun {
  std::vector<float> out;
  int32_t flag = 0;
};

MoeRun run_gpu(const MoeLayer& layer, const std::vector<float>& x, const std::vector<int32_t>& ids) {
  const int tokens = static_cast<int>(ids.size());
  const cuda::ops::GenericMoeWeights w = layer.device_weights();
  TestLinearContext context(1, 1);
  DeviceBuffer<float> d_x(x), d_out(x.size());
  DeviceBuffer<int32_t> d_ids(ids), flag(std::vector<int32_t>{0});
  DeviceBuffer<uint8_t> workspace(cuda::ops::moe_generic_workspace_bytes(w, tokens));
  workspace.poison();
  d_out.poison();
  cuda::ops::moe_generic_forward(context.ctx, w, d_x.get(), d_ids.get(), tokens, workspace.get(), d_out.get(),
                                 flag.get());
  context.sync();
  return {d_out.download(), flag.download()[0]};
}

void check_case(const MoeCase& c, uint64_t seed) {
  SCOPED_TRACE(describe(c));
  const MoeLayer layer(c, seed);
  const std::vector<float> x = random_normal(static_cast<size_t>(c.tokens) * c.hidden, 1.0f, seed + 5000);
  std::vector<int32_t> ids(c.tokens);
  for (int t = 0; t < c.tokens; ++t) ids[t] = static_cast<int32_t>((t * 37 + 11) % (c.hash ? layer.vocab : 1000));
  const std::vector<float> want =
      cpu::moe_forward(layer.cpu_weights(), c.hash ? MlpType::kHashMoE : MlpType::kMoE, layer.config(), x.data(),
                       c.tokens, ids);
  const MoeRun gpu = run_gpu(layer, x, ids);
  EXPECT_EQ(gpu.flag, 0) << "error flag raised on valid routing";

  const std::vector<bool> tie = layer.near_ties(x);
  const int skipped = static_cast<int>(std::count(tie.begin(), tie.end(), true));
  EXPECT_LE(skipped * 4, c.tokens) << skipped << " near-tie tokens: too many to trust this case";
  std::vector<float> got_kept, want_kept;
  std::vector<double> scale;
  for (int t = 0; t < c.tokens; ++t) {
    if (tie[t]) continue;
    double row_max = 0;
    for (int d = 0; d < c.hidden; ++d) row_max = std::max(row_max, std::abs(double(want[t * c.hidden + d])));
    for (int d = 0; d < c.hidden; ++d) {
      got_kept.push_back(gpu.out[t * c.hidden + d]);
      want_kept.push_back(want[t * c.hidden + d]);
      scale.push_back(row_max);
    }
  }
  const int64_t kept = c.tokens - skipped;
  expect_close("moe out (near-tie tokens removed)", got_kept, want_kept, {1e-4, 0}, {kept, c.hidden},
               {"kept token", "d"}, scale);
  expect_row_cosine("moe out", got_kept, want_kept, c.hidden, 0.99999);
}

TEST(CudaOpsMoeGeneric, TinyShapesEveryFormat) {
  uint64_t seed = 1;
  check_case({WeightFormat::kBF16, 64, 16, 8, 2, 5}, seed += 100);
  check_case({WeightFormat::kFP8Block, 64, 8, 16, 4, 7}, seed += 100);
  check_case({WeightFormat::kNVFP4, 64, 16, 16, 3, 9}, seed += 100);
  check_case({WeightFormat::kMXFP4, 64, 32, 8, 2, 3}, seed += 100);
  check_case({WeightFormat::kF32, 64, 12, 8, 2, 4}, seed += 100);
  check_case({WeightFormat::kF16, 96, 10, 12, 3, 6}, seed += 100);
  check_case({WeightFormat::kFP8Block, 200, 16, 8, 8, 13}, seed += 100);  // top_k == experts
}

TEST(CudaOpsMoeGeneric, HashRouting) {
  check_case({WeightFormat::kF32, 64, 12, 8, 2, 4, /*hash=*/true}, 11);
  check_case({WeightFormat::kNVFP4, 64, 16, 16, 4, 21, true}, 12);
  check_case({WeightFormat::kFP8Block, 64, 8, 12, 3, 6, true}, 13);
}

TEST(CudaOpsMoeGeneric, WithoutSharedExpert) {
  check_case({WeightFormat::kBF16, 64, 16, 8, 2, 77, false, /*shared=*/false}, 21);
  check_case({WeightFormat::kMXFP4, 64, 32, 8, 3, 5, true, false}, 22);
}

// V4-Flash's expert width (slow: the generic path decodes every weight per pair).
TEST(CudaOpsMoeGeneric, V4SizedExperts) { check_case({WeightFormat::kMXFP4, 4096, 2048, 4, 2, 2}, 31); }

TEST(CudaOpsMoeGeneric, OutOfRangeIdsFlagAndStayFinite) {
  const MoeCase c{WeightFormat::kBF16, 64, 16, 8, 2, 5, /*hash=*/true};
  MoeLayer layer(c, 41);
  // Token row 1 has an id past the vocabulary; id 5's tid2eid row names expert 8 (= experts).
  const std::vector<int32_t> ids = {3, static_cast<int32_t>(layer.vocab), 4, 5, 6};
  layer.tid2eid[5 * c.top_k + 1] = c.experts;
  layer.d_tid2eid.upload(layer.tid2eid);
  const std::vector<float> x = random_normal(static_cast<size_t>(c.tokens) * c.hidden, 1.0f, 42);
  const MoeRun gpu = run_gpu(layer, x, ids);
  EXPECT_EQ(gpu.flag, cuda::ops::kErrorIdOutOfRange);
  for (size_t i = 0; i < gpu.out.size(); ++i)
    ASSERT_TRUE(std::isfinite(gpu.out[i])) << "token " << i / c.hidden << " d " << i % c.hidden;
  // The valid tokens still match the CPU (each token is independent).
  for (int t : {0, 2, 4}) {
    const std::vector<float> xt(x.begin() + t * c.hidden, x.begin() + (t + 1) * c.hidden);
    const std::vector<int32_t> id = {ids[t]};
    const std::vector<float> want =
        cpu::moe_forward(layer.cpu_weights(), MlpType::kHashMoE, layer.config(), xt.data(), 1, id);
    const std::vector<float> got(gpu.out.begin() + t * c.hidden, gpu.out.begin() + (t + 1) * c.hidden);
    expect_row_cosine("valid token " + std::to_string(t), got, want, c.hidden, 0.99999);
  }
}

TEST(CudaOpsMoeGeneric, GraphCaptureMatchesEager) {
  const MoeCase c{WeightFormat::kFP8Block, 64, 16, 8, 2, 9};
  const MoeLayer layer(c, 51);
  const cuda::ops::GenericMoeWeights w = layer.device_weights();
  const std::vector<float> x = random_normal(static_cast<size_t>(c.tokens) * c.hidden, 1.0f, 52);
  TestLinearContext context(1, 1);
  DeviceBuffer<float> d_x(x), eager(x.size()), graphed(x.size());
  DeviceBuffer<int32_t> d_ids(std::vector<int32_t>(c.tokens, 0)), flag(std::vector<int32_t>{0});
  DeviceBuffer<uint8_t> workspace(cuda::ops::moe_generic_workspace_bytes(w, c.tokens));
  eager.poison();
  graphed.poison();
  cuda::ops::moe_generic_forward(context.ctx, w, d_x.get(), d_ids.get(), c.tokens, workspace.get(), eager.get(),
                                 flag.get());
  context.sync();
  cudaGraph_t graph = nullptr;
  OPS_CUDA_OK(cudaStreamBeginCapture(context.stream, cudaStreamCaptureModeThreadLocal));
  cuda::ops::moe_generic_forward(context.ctx, w, d_x.get(), d_ids.get(), c.tokens, workspace.get(), graphed.get(),
                                 flag.get());
  OPS_CUDA_OK(cudaStreamEndCapture(context.stream, &graph));
  cudaGraphExec_t exec = nullptr;
  OPS_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  OPS_CUDA_OK(cudaGraphLaunch(exec, context.stream));
  context.sync();
  const std::vector<float> a = eager.download(), b = graphed.download();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(std::memcmp(&a[i], &b[i], 4), 0) << "element " << i;
  EXPECT_EQ(flag.download()[0], 0);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

}  // namespace
}  // namespace dsv4::ops_test

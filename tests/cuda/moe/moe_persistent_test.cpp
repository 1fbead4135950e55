// TileConfig::kDecodePersistent (L1 + L2 + fused combine in one launch of resident CTAs with a
// grid barrier; src/cuda/moe/decode_persistent.cuh) against the CPU and the two-launch kernels.
//   MoePersistent.SplitChoice   host only: moe_persistent_split_k's picks and clamps.
//   MoePersistent.Refusals      launch_moe_l1 with the config, a launch without a barrier
//                               counter or with mismatched GEMMs: cudaErrorInvalidValue.
//   MoePersistent.Flash*        V4-Flash shapes (hidden 4096, intermediate 2048, 256 experts,
//                               top-6 + shared) at 1, 2, 7, 8, 64 tokens, uniform routing and
//                               every token on expert 42:
//     - automatic S: all rows vs the CPU (cosine >= 0.9999), every output finite, rerun on a
//       fresh poisoned workspace bit-identical, and bitwise equal to L1 / L2 launched apart
//       (kDecode where S == 1, kDecodeSplitK with the same S otherwise) + the combine kernel,
//       on the same dispatch state (h compared too);
//     - S forced to 1: bitwise == the kDecode forward; S forced to 3 (uneven slices) and 4:
//       bitwise == the kDecodeSplitK forward with the same decode_split;
//     - 5 and 37 CTAs instead of every resident one (many units per CTA, the barrier of a
//       small grid), a non-cooperative launch, the combine kernel instead of the fused
//       combine: bitwise == the automatic run.
//   MoePersistent.RepeatedLaunchesAndGraph*  1 and 8 tokens: after one forward, 4 direct
//                               launches on the same workspace (the epoch barrier: its counter
//                               is not re-zeroed) give the same output each time; moe_forward
//                               captured in a CUDA graph and replayed 3 times == eager.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "moe/moe_fixture.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::TileConfig;

constexpr double kCosineBound = 0.9999;
constexpr float kScaling = 1.5f, kLimit = 10.0f;
constexpr int kExperts = 256, kHidden = 4096, kInter = 2048, kTopK = 6;

bool have_gpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(MoePersistent, SplitChoice) {
  using cuda::moe::moe_persistent_split_k;
  // 1 token, V4-Flash: 7 tiles x 32 column blocks = 224 units on 396 CTAs.
  // L1 (32 k-tiles): S 1 -> 1 x 34, 2 -> 2 x 18, 4 -> 3 x 10, 8 -> 5 x 6, 16 -> 10 x 4: S = 4 (first least).
  EXPECT_EQ(moe_persistent_split_k(7, 4096, 4096, 396, 0), 4);
  // L2 (16 k-tiles): 1 -> 18, 2 -> 20, 4 -> 18, 8 -> 20, 16 -> 30: S = 1.
  EXPECT_EQ(moe_persistent_split_k(7, 4096, 2048, 396, 0), 1);
  // 64 tokens (313 tiles): 10016 units, S = 1.
  EXPECT_EQ(moe_persistent_split_k(313, 4096, 4096, 396, 0), 1);
  // forced: clamped to k / 128 and 16
  EXPECT_EQ(moe_persistent_split_k(7, 4096, 4096, 396, 3), 3);
  EXPECT_EQ(moe_persistent_split_k(7, 4096, 4096, 396, 99), 16);
  EXPECT_EQ(moe_persistent_split_k(7, 256, 256, 396, 99), 2);
  EXPECT_EQ(moe_persistent_split_k(7, 4096, 128, 396, 0), 1);  // one k-tile: nothing to split
}

// The layer's GEMM parameters as moe_forward builds them, on workspace `ws`.
cuda::moe::DecodePersistentParams persistent_params(const cuda::moe::MoeLayerWeights& w,
                                                    const cuda::moe::MoeWorkspace& ws, const uint16_t* x, int tokens,
                                                    float* out) {
  cuda::moe::GroupedGemmParams gemm;
  gemm.format = w.format;
  gemm.config = TileConfig::kDecodePersistent;
  gemm.tile_expert = ws.tile_expert;
  gemm.tile_slot_begin = ws.tile_slot_begin;
  gemm.tile_row_count = ws.tile_row_count;
  gemm.tile_count = ws.tile_count;
  gemm.max_tiles = ws.max_tiles;
  gemm.split_partials = ws.split_partials;
  gemm.split_slots = ws.split_slots;
  cuda::moe::DecodePersistentParams p;
  p.l1 = gemm;
  p.l1.weights = w.w13;
  p.l1.scales = w.w13_scales;
  p.l1.factor_a = w.gate_factor;
  p.l1.factor_b = w.up_factor;
  p.l1.act = x;
  p.l1.slot_token = ws.slot_token;
  p.l1.n = 2 * w.intermediate;
  p.l1.k = w.hidden;
  p.l1.swiglu_limit = w.swiglu_limit;
  p.l1.out = ws.h;
  p.l1.split_k = ws.split_l1;
  p.l1.split_done = ws.split_done_l1;
  p.l2 = gemm;
  p.l2.weights = w.w2;
  p.l2.scales = w.w2_scales;
  p.l2.factor_a = w.down_factor;
  p.l2.act = ws.h;
  p.l2.slot_weight = ws.slot_weight;
  p.l2.n = w.hidden;
  p.l2.k = w.intermediate;
  p.l2.out = ws.slot_out;
  p.l2.split_k = ws.split_l2;
  p.l2.split_done = ws.split_done_l2;
  if (out != nullptr) {  // fused combine
    p.l2.combine_out = out;
    p.l2.slot_of_pair = ws.slot_of_pair;
    p.l2.combine_done = ws.combine_done;
    p.l2.combine_tokens = tokens;
    p.l2.pairs_per_token = w.top_k + (w.has_shared ? 1 : 0);
  }
  p.grid_barrier = ws.grid_barrier;
  return p;
}

struct Knobs {
  TileConfig config = TileConfig::kDecodePersistent;
  int decode_split = 0;
  int persistent_grid = 0;
  bool fuse_combine = true;
  bool cooperative = true;  // only through direct launches (moe_forward always asks for it)
};

// One forward on a poisoned workspace; the workspace stays allocated for follow-up launches.
struct Forward {
  const cuda::moe::MoeLayerWeights& w;
  int tokens;
  Knobs knobs;
  uint16_t* d_x = nullptr;
  void* d_ws = nullptr;
  float* d_out = nullptr;
  int32_t* d_flag = nullptr;
  cuda::moe::MoeWorkspace ws{};

  Forward(const cuda::moe::MoeLayerWeights& weights, const std::vector<uint16_t>& x, int t, const Knobs& k)
      : w(weights), tokens(t), knobs(k) {
    d_x = device_copy(x);
    const cuda::moe::MoeWorkspace size = cuda::moe::moe_workspace(w, tokens, knobs.config, nullptr, knobs.decode_split);
    DSV4_CUDA_OK(cudaMalloc(&d_ws, size.bytes));
    DSV4_CUDA_OK(cudaMalloc(&d_out, static_cast<size_t>(tokens) * kHidden * sizeof(float)));
    DSV4_CUDA_OK(cudaMalloc(&d_flag, sizeof(int32_t)));
    DSV4_CUDA_OK(cudaMemset(d_ws, 0xff, size.bytes));  // poison: stray reads show as NaN / -1
    DSV4_CUDA_OK(cudaMemset(d_out, 0xff, static_cast<size_t>(tokens) * kHidden * sizeof(float)));
    DSV4_CUDA_OK(cudaMemset(d_flag, 0, sizeof(int32_t)));
    ws = cuda::moe::moe_workspace(w, tokens, knobs.config, d_ws, knobs.decode_split);
  }
  ~Forward() {
    cudaFree(d_x);
    cudaFree(d_ws);
    cudaFree(d_out);
    cudaFree(d_flag);
  }
  Forward(const Forward&) = delete;
  Forward& operator=(const Forward&) = delete;

  cuda::moe::MoeForwardParams params(cudaStream_t stream = nullptr) const {
    cuda::moe::MoeForwardParams p;
    p.weights = &w;
    p.x = d_x;
    p.tokens = tokens;
    p.config = knobs.config;
    p.fuse_combine = knobs.fuse_combine;
    p.decode_split = knobs.decode_split;
    p.persistent_grid = knobs.persistent_grid;
    p.workspace = d_ws;
    p.out = d_out;
    p.error_flag = d_flag;
    p.stream = stream;
    return p;
  }
  std::vector<float> run() {
    DSV4_CUDA_OK(cuda::moe::moe_forward(params()));
    DSV4_CUDA_OK(cudaDeviceSynchronize());
    return output();
  }
  std::vector<float> output() const {
    std::vector<float> out(static_cast<size_t>(tokens) * kHidden);
    DSV4_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return out;
  }
  int32_t flag() const {
    int32_t f = 0;
    DSV4_CUDA_OK(cudaMemcpy(&f, d_flag, sizeof(f), cudaMemcpyDeviceToHost));
    return f;
  }
  template <typename T>
  std::vector<T> read(const T* ptr, size_t count) const {
    std::vector<T> v(count);
    DSV4_CUDA_OK(cudaMemcpy(v.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// L1 and L2 launched apart on f's dispatch state (kDecode where S == 1, else kDecodeSplitK with
// the persistent run's S), into separate h / slot_out buffers, then the combine kernel.
// Returns the combined output; *h_ref gets the reference h of the tile list's slots.
std::vector<float> two_launch_reference(const Forward& f, std::vector<uint16_t>* h_ref) {
  const size_t pairs = static_cast<size_t>(f.tokens) * (kTopK + 1);
  uint16_t *d_h = nullptr, *d_slot_out = nullptr;
  float* d_out = nullptr;
  DSV4_CUDA_OK(cudaMalloc(&d_h, pairs * kInter * 2));
  DSV4_CUDA_OK(cudaMalloc(&d_slot_out, pairs * kHidden * 2));
  DSV4_CUDA_OK(cudaMalloc(&d_out, static_cast<size_t>(f.tokens) * kHidden * 4));
  DSV4_CUDA_OK(cudaMemset(d_h, 0xff, pairs * kInter * 2));
  DSV4_CUDA_OK(cudaMemset(d_out, 0xff, static_cast<size_t>(f.tokens) * kHidden * 4));
  cuda::moe::DecodePersistentParams p = persistent_params(f.w, f.ws, f.d_x, f.tokens, nullptr);
  p.l1.out = d_h;
  p.l2.act = d_h;
  p.l2.out = d_slot_out;
  p.l1.config = p.l1.split_k > 1 ? TileConfig::kDecodeSplitK : TileConfig::kDecode;
  p.l2.config = p.l2.split_k > 1 ? TileConfig::kDecodeSplitK : TileConfig::kDecode;
  DSV4_CUDA_OK(cuda::moe::launch_moe_l1(p.l1));
  DSV4_CUDA_OK(cuda::moe::launch_moe_l2(p.l2));
  cuda::moe::CombineParams c;
  c.slot_out = d_slot_out;
  c.slot_of_pair = f.ws.slot_of_pair;
  c.tokens = f.tokens;
  c.pairs_per_token = kTopK + 1;
  c.hidden = kHidden;
  c.out = d_out;
  DSV4_CUDA_OK(cuda::moe::launch_combine(c));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  *h_ref = f.read(d_h, pairs * kInter);
  std::vector<float> out = f.read(d_out, static_cast<size_t>(f.tokens) * kHidden);
  cudaFree(d_h);
  cudaFree(d_slot_out);
  cudaFree(d_out);
  return out;
}

// h rows of the slots the tile list covers (the others are never written): equal bits?
int differing_h_rows(const Forward& f, const std::vector<uint16_t>& h_ref) {
  const int tiles = f.read(f.ws.tile_count, 1)[0];
  const std::vector<int32_t> begin = f.read(f.ws.tile_slot_begin, tiles), rows = f.read(f.ws.tile_row_count, tiles);
  const std::vector<uint16_t> h = f.read(f.ws.h, h_ref.size());
  int bad = 0;
  for (int t = 0; t < tiles; ++t)
    for (int r = 0; r < rows[t]; ++r) {
      const size_t off = static_cast<size_t>(begin[t] + r) * kInter;
      bad += std::memcmp(h.data() + off, h_ref.data() + off, kInter * 2) != 0;
    }
  return bad;
}

void run_flash(ExpertFormat format) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  const ExpertSet set = make_expert_set(format, kHidden, kInter, kExperts, 21);
  const RouterWeights router = make_router(kExperts, kHidden, 22);
  const DeviceMoe dev(set, router, kTopK, kScaling, kLimit);
  std::vector<float> bias42 = router.bias;
  bias42[42] += 100.0f;
  float* d_bias42 = device_copy(bias42);
  cuda::moe::MoeLayerWeights weights42 = dev.weights;
  weights42.router_bias = d_bias42;
  for (bool skew : {false, true})
    for (int tokens : {1, 2, 7, 8, 64}) {
      const std::string label = std::string(skew ? "one_expert" : "uniform") + " tokens " + std::to_string(tokens);
      SCOPED_TRACE(label);
      const cuda::moe::MoeLayerWeights& w = skew ? weights42 : dev.weights;
      RouterWeights host_router = router;
      if (skew) host_router.bias = bias42;
      const std::vector<uint16_t> x = make_activations(tokens, kHidden, 9000 + tokens);

      Forward f(w, x, tokens, Knobs{});
      const std::vector<float> got = f.run();
      EXPECT_EQ(f.flag(), 0);
      // routing + every row vs the CPU
      const std::vector<int32_t> ids = f.read(f.ws.topk_ids, static_cast<size_t>(tokens) * kTopK);
      const std::vector<float> rw = f.read(f.ws.topk_weights, ids.size());
      const std::vector<double> scores = cpu_scores(x, host_router, tokens, kHidden, kExperts);
      const RoutingCheck routing =
          check_routing(scores, host_router, tokens, kExperts, kTopK, kScaling, ids, rw, nullptr, nullptr);
      EXPECT_EQ(routing.mismatched_ids, 0) << routing.first_problem;
      std::vector<int> rows;
      for (int t = 0; t < tokens; ++t) rows.push_back(t);
      const std::vector<double> ref = cpu_moe_rows(set, x, rows, kTopK, ids, rw, kLimit);
      const RowCompare cmp = compare_rows(ref, got, rows, kHidden, kCosineBound);
      int non_finite = 0;
      for (float v : got) non_finite += !std::isfinite(v);
      EXPECT_EQ(non_finite, 0) << "unwritten or non-finite outputs";
      EXPECT_EQ(cmp.bad_rows, 0) << "min cosine " << cmp.min_cosine << " at row " << cmp.worst_row;
      std::printf("[moe] %s persistent %s S=%d/%d min_cosine=%.7f worst_row=%d max_abs_err=%.3g\n",
                  format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", label.c_str(), f.ws.split_l1, f.ws.split_l2,
                  cmp.min_cosine, cmp.worst_row, cmp.max_abs_error);
      std::fflush(stdout);

      // the same arithmetic launched apart, on this dispatch state
      std::vector<uint16_t> h_ref;
      const std::vector<float> apart = two_launch_reference(f, &h_ref);
      EXPECT_EQ(differing_h_rows(f, h_ref), 0) << "h differs from L1 launched alone";
      EXPECT_TRUE(same_bits(got, apart)) << "differs from L1 + L2 + combine launched apart (S " << f.ws.split_l1
                                         << "/" << f.ws.split_l2 << ")";
      {
        Forward again(w, x, tokens, Knobs{});
        EXPECT_TRUE(same_bits(got, again.run())) << "rerun differs";
      }
      auto variant = [&](const Knobs& k) {
        Forward v(w, x, tokens, k);
        return v.run();
      };
      {  // S == 1 forced: kDecode's arithmetic
        Knobs k;
        k.decode_split = 1;
        Knobs d = k;
        d.config = TileConfig::kDecode;
        EXPECT_TRUE(same_bits(variant(k), variant(d))) << "S = 1 differs from kDecode";
      }
      for (int s : {3, 4}) {  // K slices: kDecodeSplitK's arithmetic with the same S
        Knobs k;
        k.decode_split = s;
        Knobs d = k;
        d.config = TileConfig::kDecodeSplitK;
        EXPECT_TRUE(same_bits(variant(k), variant(d))) << "S = " << s << " differs from kDecodeSplitK";
      }
      for (int grid : {5, 37}) {  // few CTAs, many units each
        Knobs k;
        k.persistent_grid = grid;
        EXPECT_TRUE(same_bits(got, variant(k))) << grid << " CTAs differ from the full grid";
      }
      {
        Knobs k;
        k.fuse_combine = false;
        EXPECT_TRUE(same_bits(got, variant(k))) << "combine kernel differs from the fused combine";
      }
      {  // a plain (non-cooperative) launch of the same grid on the same dispatch state
        cuda::moe::DecodePersistentParams p = persistent_params(f.w, f.ws, f.d_x, tokens, f.d_out);
        p.cooperative = false;
        DSV4_CUDA_OK(cudaMemset(f.ws.combine_done, 0, (kHidden / 16 + 1) * sizeof(int32_t)));
        DSV4_CUDA_OK(cudaMemset(f.d_out, 0xff, static_cast<size_t>(tokens) * kHidden * 4));
        DSV4_CUDA_OK(cuda::moe::launch_moe_decode_persistent(p));
        DSV4_CUDA_OK(cudaDeviceSynchronize());
        EXPECT_TRUE(same_bits(got, f.output())) << "non-cooperative launch differs";
      }
    }
  cudaFree(d_bias42);
}

TEST(MoePersistent, FlashNvfp4) { run_flash(ExpertFormat::kNVFP4); }
TEST(MoePersistent, FlashMxfp4) { run_flash(ExpertFormat::kMXFP4); }

void run_repeated_and_graph(ExpertFormat format) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  const ExpertSet set = make_expert_set(format, kHidden, kInter, kExperts, 31);
  const RouterWeights router = make_router(kExperts, kHidden, 32);
  const DeviceMoe dev(set, router, kTopK, kScaling, kLimit);
  for (int tokens : {1, 8}) {
    SCOPED_TRACE("tokens " + std::to_string(tokens));
    const std::vector<uint16_t> x = make_activations(tokens, kHidden, 9500 + tokens);
    Forward f(dev.weights, x, tokens, Knobs{});
    const std::vector<float> eager = f.run();
    // Direct launches on the same workspace: the barrier counter keeps counting (epochs), the
    // split counters are reset by their last arrivers; only combine_done needs zeroing.
    cuda::moe::DecodePersistentParams p = persistent_params(f.w, f.ws, f.d_x, tokens, f.d_out);
    for (int rep = 0; rep < 4; ++rep) {
      DSV4_CUDA_OK(cudaMemsetAsync(f.ws.combine_done, 0, (kHidden / 16 + 1) * sizeof(int32_t)));
      DSV4_CUDA_OK(cudaMemsetAsync(f.d_out, 0xff, static_cast<size_t>(tokens) * kHidden * 4));
      DSV4_CUDA_OK(cuda::moe::launch_moe_decode_persistent(p));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      EXPECT_TRUE(same_bits(eager, f.output())) << "direct launch " << rep << " differs";
    }
    const unsigned long long counter = f.read(f.ws.grid_barrier, 1)[0];
    const int ctas = cuda::moe::moe_decode_persistent_ctas(format);
    EXPECT_EQ(counter % static_cast<unsigned long long>(ctas), 0ull) << "barrier counter " << counter;
    EXPECT_EQ(counter, 5ull * ctas) << "the forward's launch (after its zeroing) + 4 direct launches";
    // CUDA graph: capture the forward on a side stream, replay 3 times.
    cudaStream_t stream;
    DSV4_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    DSV4_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    DSV4_CUDA_OK(cuda::moe::moe_forward(f.params(stream)));
    DSV4_CUDA_OK(cudaStreamEndCapture(stream, &graph));
    DSV4_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int rep = 0; rep < 3; ++rep) {
      DSV4_CUDA_OK(cudaMemsetAsync(f.d_out, 0xff, static_cast<size_t>(tokens) * kHidden * 4, stream));
      DSV4_CUDA_OK(cudaGraphLaunch(exec, stream));
      DSV4_CUDA_OK(cudaStreamSynchronize(stream));
      EXPECT_TRUE(same_bits(eager, f.output())) << "graph replay " << rep << " differs";
    }
    EXPECT_EQ(f.flag(), 0);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST(MoePersistent, RepeatedLaunchesAndGraphNvfp4) { run_repeated_and_graph(ExpertFormat::kNVFP4); }
TEST(MoePersistent, RepeatedLaunchesAndGraphMxfp4) { run_repeated_and_graph(ExpertFormat::kMXFP4); }

TEST(MoePersistent, Refusals) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  const ExpertSet set = make_expert_set(ExpertFormat::kNVFP4, 256, 128, 4, 41);
  const RouterWeights router = make_router(4, 256, 42);
  const DeviceMoe dev(set, router, 2, kScaling, kLimit);
  const std::vector<uint16_t> x = make_activations(1, 256, 43);
  uint16_t* d_x = device_copy(x);
  const cuda::moe::MoeWorkspace size = cuda::moe::moe_workspace(dev.weights, 1, TileConfig::kDecodePersistent, nullptr);
  void* d_ws = nullptr;
  DSV4_CUDA_OK(cudaMalloc(&d_ws, size.bytes));
  const cuda::moe::MoeWorkspace ws = cuda::moe::moe_workspace(dev.weights, 1, TileConfig::kDecodePersistent, d_ws);
  ASSERT_NE(ws.grid_barrier, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ws.grid_barrier) % 8, 0u);
  EXPECT_EQ(cuda::moe::moe_workspace(dev.weights, 1, TileConfig::kDecode, nullptr).grid_barrier, nullptr);
  cuda::moe::DecodePersistentParams p = persistent_params(dev.weights, ws, d_x, 1, nullptr);
  EXPECT_EQ(cuda::moe::launch_moe_l1(p.l1), cudaErrorInvalidValue) << "L1 alone with kDecodePersistent";
  EXPECT_EQ(cuda::moe::launch_moe_l2(p.l2), cudaErrorInvalidValue) << "L2 alone with kDecodePersistent";
  cuda::moe::DecodePersistentParams bad = p;
  bad.grid_barrier = nullptr;
  EXPECT_EQ(cuda::moe::launch_moe_decode_persistent(bad), cudaErrorInvalidValue) << "no barrier counter";
  bad = p;
  bad.l2.k = 256;  // h width of L1 is 128
  EXPECT_EQ(cuda::moe::launch_moe_decode_persistent(bad), cudaErrorInvalidValue) << "L2 k != L1 n / 2";
  bad = p;
  bad.l1.combine_out = reinterpret_cast<float*>(d_ws);
  EXPECT_EQ(cuda::moe::launch_moe_decode_persistent(bad), cudaErrorInvalidValue) << "combine on L1";
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  cudaFree(d_x);
  cudaFree(d_ws);
}

}  // namespace
}  // namespace dsv4::moe_test

// TileConfig::kPrefillWgmmaPipe against TileConfig::kPrefillWgmma (the wgmma kernel that
// passed the CPU-reference tests on the H200) at the V4-Flash GEMM shapes: L1 W13 [4096,
// 4096] (hidden 4096, intermediate 2048: 16 CTA columns, 32 k tiles), L2 W2 [4096, 2048]
// (16 k tiles), 6 experts with 1, 64, 97, 128, 300 and 1000 slots (full and partial tiles,
// every wgmma N of the pipe kernel: 64, 96, 128), gathered x rows. Weights are random
// packed bytes (every nibble is an E2M1 code) with random in-range kernel scale codes, so
// no host quantization is needed: both kernels read the same packed data. Bound per
// element: |pipe - wgmma| <= 1e-2 * max |wgmma row| (the MoeGemm bound); the share of
// bit-identical elements is printed (same k order, so expected to be all).
// TileConfig::kPrefillWgmmaTma (TMA producer warp, persistent CTAs, N always 128) runs on
// the same inputs and must equal kPrefillWgmmaPipe bit for bit (every element, poison included).
// max_tiles = tile count + 5 (padding entries -1), as moe_forward has it: every kernel's CTAs
// (kPrefillWgmmaTma: persistent items) past the tile count must stop before the tile list.
// The pipe output must equal kPrefillWgmma's in every element (asserted).
//   MoeGemmPipe.FlashShapesNvfp4 / FlashShapesMxfp4
//   MoeGemmPipe.RingTailsNvfp4 / RingTailsMxfp4: k / 128 = 1, 2, 3, 5, 6, 7, 9 stages (the
//     tails of the pipe kernel's loop unrolled by 4), small n, every wgmma N, bitwise vs kPrefillWgmma.
#include <gtest/gtest.h>

#include <cstdio>

#include "moe/moe_fixture.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::TileConfig;

constexpr int kHidden = 4096, kInter = 2048, kExperts = 6, kTokens = 1024;
constexpr int kCounts[kExperts] = {1, 64, 97, 128, 300, 1000};  // slots per expert
constexpr float kLimit = 10.0f, kFactor = 1.0f / 64.0f;
constexpr uint16_t kPoison = 0xffff;

struct Problem {
  std::vector<int32_t> tile_expert, tile_begin, tile_rows, slot_token;
  std::vector<float> slot_weight;
  int slots = 0;
};

Problem make_problem() {
  Problem p;
  uint64_t state = 1234;
  for (int e = 0; e < kExperts; ++e) {
    for (int r = 0; r < kCounts[e]; r += 128) {
      p.tile_expert.push_back(e);
      p.tile_begin.push_back(p.slots + r);
      p.tile_rows.push_back(std::min(128, kCounts[e] - r));
    }
    p.slots += kCounts[e];
  }
  p.slot_token.resize(p.slots);
  p.slot_weight.resize(p.slots);
  for (int s = 0; s < p.slots; ++s) {
    p.slot_token[s] = static_cast<int32_t>(splitmix(state) % kTokens);
    p.slot_weight[s] = 0.1f + 0.05f * static_cast<float>(s % 7);
  }
  return p;
}

void run(ExpertFormat format) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  const Problem prob = make_problem();
  const std::vector<uint16_t> x = make_activations(kTokens, kHidden, 901);
  const std::vector<uint16_t> h = make_activations(prob.slots, kInter, 902);
  const std::vector<float> factors(kExperts, kFactor);
  for (const GemmLayer layer : {GemmLayer{true, 2 * kInter, kHidden}, GemmLayer{false, kHidden, kInter}}) {
    SCOPED_TRACE(layer.l1 ? "l1" : "l2");
    const DeviceGemmInputs in(format, kExperts, layer.n, layer.k, layer.l1 ? 11 : 12, layer.l1 ? 13 : 14, factors,
                              layer.l1 ? x : h, prob.slot_token, prob.slot_weight);
    // max_tiles > *tile_count, as moe_forward sizes it: the CTAs (kPrefillWgmmaTma: the
    // persistent loop's items) past the tile count must stop without reading the tile list
    // (padding entries -1).
    constexpr int kSpareTiles = 5;
    const DeviceTileList tiles(prob.tile_expert, prob.tile_begin, prob.tile_rows, kSpareTiles);
    const int cols = layer.l1 ? layer.n / 2 : layer.n;
    std::vector<uint16_t> outs[3];
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<uint16_t> out(size_t(prob.slots) * cols, kPoison);
      uint16_t* d_out = device_copy(out);
      const TileConfig config = variant == 0   ? TileConfig::kPrefillWgmma
                                : variant == 1 ? TileConfig::kPrefillWgmmaPipe
                                               : TileConfig::kPrefillWgmmaTma;
      cuda::moe::GroupedGemmParams p = gemm_test_params(format, config, layer.n, layer.k, in, tiles, kLimit, d_out);
      p.act_rows = prob.slots;  // kPrefillWgmmaTma: L1 slots (x gathered into d_perm first), L2 rows of h
      uint16_t* d_perm = nullptr;
      if (variant == 2 && layer.l1) DSV4_CUDA_OK(cudaMalloc(&d_perm, size_t(prob.slots) * layer.k * 2));
      p.act_perm = d_perm;
      DSV4_CUDA_OK(layer.l1 ? cuda::moe::launch_moe_l1(p) : cuda::moe::launch_moe_l2(p));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      DSV4_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
      cudaFree(d_out);
      cudaFree(d_perm);
      outs[variant] = std::move(out);
    }
    const GemmCompare c = compare_gemm_outputs(outs[1], outs[0], outs[0], prob.slots, cols, "pipe");
    EXPECT_EQ(c.bad, 0) << c.first;
    EXPECT_GT(c.max_row, 0.0) << "reference output all zero";
    // Same BF16 A values in the same k order as kPrefillWgmma (fragment_decode.h is bit-exact,
    // tested on the host): every element equal (also seen on the H200 before the rework).
    EXPECT_EQ(c.identical, c.total) << "kPrefillWgmmaPipe != kPrefillWgmma bitwise";
    std::printf("[moe_gemm_pipe] %s %s n=%d k=%d slots=%d bad=%lld identical=%lld/%lld max_row=%.3g %s\n",
                format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", layer.l1 ? "l1" : "l2", layer.n, layer.k,
                prob.slots, static_cast<long long>(c.bad), static_cast<long long>(c.identical),
                static_cast<long long>(c.total), c.max_row, c.first.c_str());
    size_t tma_diff = 0;
    for (size_t i = 0; i < outs[2].size(); ++i) tma_diff += outs[2][i] != outs[1][i];
    EXPECT_EQ(tma_diff, 0u) << "kPrefillWgmmaTma != kPrefillWgmmaPipe";
    std::printf("[moe_gemm_pipe] %s %s tma vs pipe: %zu of %zu elements differ\n",
                format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", layer.l1 ? "l1" : "l2", tma_diff, outs[2].size());
  }
}

// The pipe kernel's k loop is unrolled over its 4 ring slots (grouped_gemm_wgmma_pipe.cuh):
// stage counts k / 128 = 1, 2, 3, 5, 6, 7, 9 leave every possible tail (1-3 stages past the
// last full group, and groups shorter than the 2-stage prologue), which the Flash shapes
// (32 / 16 stages) never do. n = 512 (two CTA columns), tiles of 1, 70, 128, 2 and 97 rows (wgmma N 64,
// 96, 128, 64, 128: every N path), x gathered for L1. Every element must equal
// kPrefillWgmma's bit for bit.
void run_ring_tails(ExpertFormat format) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  constexpr int kN = 512, kTailExperts = 3, kTailTokens = 300;
  // Experts with 1, 200, 97 slots; expert 1 cut into tiles of 70, 128 and 2 rows.
  Problem prob;
  prob.tile_expert = {0, 1, 1, 1, 2};
  prob.tile_begin = {0, 1, 71, 199, 201};
  prob.tile_rows = {1, 70, 128, 2, 97};
  prob.slots = 298;
  uint64_t state = 77;
  prob.slot_token.resize(prob.slots);
  prob.slot_weight.resize(prob.slots);
  for (int s = 0; s < prob.slots; ++s) {
    prob.slot_token[s] = static_cast<int32_t>(splitmix(state) % kTailTokens);
    prob.slot_weight[s] = 0.2f + 0.1f * static_cast<float>(s % 5);
  }
  const std::vector<float> factors(kTailExperts, kFactor);
  for (const int stages : {1, 2, 3, 5, 6, 7, 9}) {
    const int k = 128 * stages;
    for (const bool l1 : {true, false}) {
      SCOPED_TRACE((l1 ? "l1 k=" : "l2 k=") + std::to_string(k));
      const std::vector<uint16_t> act = make_activations(l1 ? kTailTokens : prob.slots, k, 500 + stages);
      const DeviceGemmInputs in(format, kTailExperts, kN, k, 31 + stages, 41 + stages, factors, act, prob.slot_token,
                                prob.slot_weight);
      const DeviceTileList tiles(prob.tile_expert, prob.tile_begin, prob.tile_rows, 2);
      const int cols = l1 ? kN / 2 : kN;
      std::vector<uint16_t> outs[2];
      for (int variant = 0; variant < 2; ++variant) {
        std::vector<uint16_t> out(size_t(prob.slots) * cols, kPoison);
        uint16_t* d_out = device_copy(out);
        const TileConfig config = variant == 0 ? TileConfig::kPrefillWgmma : TileConfig::kPrefillWgmmaPipe;
        cuda::moe::GroupedGemmParams p = gemm_test_params(format, config, kN, k, in, tiles, kLimit, d_out);
        DSV4_CUDA_OK(l1 ? cuda::moe::launch_moe_l1(p) : cuda::moe::launch_moe_l2(p));
        DSV4_CUDA_OK(cudaDeviceSynchronize());
        DSV4_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
        cudaFree(d_out);
        outs[variant] = std::move(out);
      }
      const GemmCompare c = compare_gemm_outputs(outs[1], outs[0], outs[0], prob.slots, cols, "pipe");
      EXPECT_EQ(c.bad, 0) << c.first;
      EXPECT_GT(c.max_row, 0.0) << "reference output all zero";
      EXPECT_EQ(c.identical, c.total) << "kPrefillWgmmaPipe != kPrefillWgmma bitwise";
      std::printf("[moe_gemm_pipe] ring tails %s %s k=%d identical=%lld/%lld\n",
                  format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", l1 ? "l1" : "l2", k,
                  static_cast<long long>(c.identical), static_cast<long long>(c.total));
    }
  }
}

TEST(MoeGemmPipe, FlashShapesNvfp4) { run(ExpertFormat::kNVFP4); }
TEST(MoeGemmPipe, FlashShapesMxfp4) { run(ExpertFormat::kMXFP4); }
TEST(MoeGemmPipe, RingTailsNvfp4) { run_ring_tails(ExpertFormat::kNVFP4); }
TEST(MoeGemmPipe, RingTailsMxfp4) { run_ring_tails(ExpertFormat::kMXFP4); }

}  // namespace
}  // namespace dsv4::moe_test

// TileConfig::kPrefillWgmmaWide (wgmma N = 256, 128 weight rows x 256 slots per CTA,
// tiles of 256 slots) against TileConfig::kPrefillWgmma (the wgmma kernel that passed the
// CPU-reference tests on the H200; the oracle of MoeGemmPipe) and kPrefillWgmmaPipe at the
// V4-Flash GEMM shapes: L1 W13 [4096, 4096] (32 CTA columns of 128 rows, 64 k stages of
// 64), L2 W2 [4096, 2048] (32 k stages), 12 experts with 1, 0, 127, 128, 129, 0, 255, 256,
// 257, 384, 64 and 0 slots: empty experts (no tiles, their weights skipped), full 256-slot
// tiles (N 256), partial ones above 128 rows (N 256, zero-filled B rows) and at or below
// 128 (N 128), gathered x rows. The kPrefillWgmma / kPrefillWgmmaPipe runs get the same
// slots cut into 128-slot tiles (as the dispatch builds them for their configs), the wide run
// 256-slot tiles. Weights are random packed bytes with random in-range kernel scale codes
// (as MoeGemmPipe). Asserted per element: finite (the output starts as NaN poison, so an
// unwritten element fails) and |wide - wgmma| <= 1e-2 * max |wgmma row| (the MoeGemm bound).
// Printed (not asserted): how many elements are bitwise equal to kPrefillWgmmaPipe (the
// per-element k order is the same, so expected all). max_tiles = tile count + 5 (padding
// entries -1): CTAs past *tile_count must stop before reading the tile list.
//   MoeGemmWide.TileRows       host only: tile_config_rows / moe_workspace use 256-slot tiles
//   MoeGemmWide.FlashShapesNvfp4 / FlashShapesMxfp4
//   MoeGemmWide.RefusesBadShapes  n % 128 != 0 or k % 64 != 0 -> cudaErrorInvalidValue
#include <gtest/gtest.h>

#include <cstdio>

#include "moe/moe_fixture.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::TileConfig;

constexpr int kHidden = 4096, kInter = 2048, kTokens = 1024;
constexpr int kCounts[] = {1, 0, 127, 128, 129, 0, 255, 256, 257, 384, 64, 0};  // slots per expert
constexpr int kExperts = sizeof(kCounts) / sizeof(kCounts[0]);
constexpr float kLimit = 10.0f, kFactor = 1.0f / 64.0f;
constexpr uint16_t kPoison = 0xffff;  // BF16 NaN
constexpr int kSpareTiles = 5;

struct TileList {
  std::vector<int32_t> expert, begin, rows;
};

// The dispatch's tile list for tiles of `tile_rows` slots (dispatch.cu: expert e's slots in
// runs of tile_rows, experts in order, none for an empty expert), padded with -1 entries.
TileList make_tiles(int tile_rows) {
  TileList t;
  int slot = 0;
  for (int e = 0; e < kExperts; ++e) {
    for (int r = 0; r < kCounts[e]; r += tile_rows) {
      t.expert.push_back(e);
      t.begin.push_back(slot + r);
      t.rows.push_back(std::min(tile_rows, kCounts[e] - r));
    }
    slot += kCounts[e];
  }
  return t;
}

int total_slots() {
  int s = 0;
  for (int c : kCounts) s += c;
  return s;
}

TEST(MoeGemmWide, TileRows) {
  EXPECT_EQ(cuda::moe::tile_config_rows(TileConfig::kPrefillWgmmaWide), 256);
  EXPECT_EQ(cuda::moe::tile_config_rows(TileConfig::kPrefillWgmmaPipe), 128);
  cuda::moe::MoeLayerWeights w;
  w.hidden = kHidden;
  w.intermediate = kInter;
  w.experts = 256;
  w.top_k = 6;
  w.has_shared = true;
  // 16384 tokens x 7 pairs: ceil(114688 / 256) + 257 tiles of 256 slots.
  const cuda::moe::MoeWorkspace ws = cuda::moe::moe_workspace(w, 16384, TileConfig::kPrefillWgmmaWide, nullptr);
  EXPECT_EQ(ws.max_tiles, 114688 / 256 + 257);
  EXPECT_EQ(ws.max_tiles, cuda::moe::moe_max_tiles(16384, 7, 257, 256));
}

void run(ExpertFormat format) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  const int slots = total_slots();
  std::vector<int32_t> slot_token(slots);
  std::vector<float> slot_weight(slots);
  uint64_t state = 4321;
  for (int s = 0; s < slots; ++s) {
    slot_token[s] = static_cast<int32_t>(splitmix(state) % kTokens);
    slot_weight[s] = 0.1f + 0.05f * static_cast<float>(s % 7);
  }
  const TileList tiles128 = make_tiles(128), tiles256 = make_tiles(256);
  const std::vector<uint16_t> x = make_activations(kTokens, kHidden, 911);
  const std::vector<uint16_t> h = make_activations(slots, kInter, 912);
  const std::vector<float> factors(kExperts, kFactor);
  for (const GemmLayer layer : {GemmLayer{true, 2 * kInter, kHidden}, GemmLayer{false, kHidden, kInter}}) {
    SCOPED_TRACE(layer.l1 ? "l1" : "l2");
    const DeviceGemmInputs in(format, kExperts, layer.n, layer.k, layer.l1 ? 21 : 22, layer.l1 ? 23 : 24, factors,
                              layer.l1 ? x : h, slot_token, slot_weight);
    const int cols = layer.l1 ? layer.n / 2 : layer.n;
    std::vector<uint16_t> outs[3];  // kPrefillWgmma, kPrefillWgmmaPipe, kPrefillWgmmaWide
    for (int variant = 0; variant < 3; ++variant) {
      const TileList& tl = variant == 2 ? tiles256 : tiles128;
      const DeviceTileList tiles(tl.expert, tl.begin, tl.rows, kSpareTiles);
      std::vector<uint16_t> out(size_t(slots) * cols, kPoison);
      uint16_t* d_out = device_copy(out);
      const TileConfig config = variant == 0   ? TileConfig::kPrefillWgmma
                                : variant == 1 ? TileConfig::kPrefillWgmmaPipe
                                               : TileConfig::kPrefillWgmmaWide;
      const cuda::moe::GroupedGemmParams p = gemm_test_params(format, config, layer.n, layer.k, in, tiles, kLimit, d_out);
      DSV4_CUDA_OK(layer.l1 ? cuda::moe::launch_moe_l1(p) : cuda::moe::launch_moe_l2(p));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      DSV4_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
      if (variant == 2) {  // rerun on the same output: bit-identical
        DSV4_CUDA_OK(cudaMemset(d_out, 0xff, out.size() * 2));
        DSV4_CUDA_OK(layer.l1 ? cuda::moe::launch_moe_l1(p) : cuda::moe::launch_moe_l2(p));
        DSV4_CUDA_OK(cudaDeviceSynchronize());
        std::vector<uint16_t> again(out.size());
        DSV4_CUDA_OK(cudaMemcpy(again.data(), d_out, again.size() * 2, cudaMemcpyDeviceToHost));
        EXPECT_TRUE(again == out) << "kPrefillWgmmaWide rerun differs";
      }
      cudaFree(d_out);
      outs[variant] = std::move(out);
    }
    const GemmCompare c = compare_gemm_outputs(outs[2], outs[0], outs[1], slots, cols, "wide");
    EXPECT_EQ(c.bad, 0) << c.first;
    EXPECT_GT(c.max_row, 0.0) << "reference output all zero";
    std::printf("[moe_gemm_wide] %s %s n=%d k=%d slots=%d tiles128=%zu tiles256=%zu bad=%lld "
                "identical_to_pipe=%lld/%lld max_row=%.3g %s\n",
                format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", layer.l1 ? "l1" : "l2", layer.n, layer.k, slots,
                tiles128.expert.size(), tiles256.expert.size(), static_cast<long long>(c.bad),
                static_cast<long long>(c.identical), static_cast<long long>(c.total), c.max_row, c.first.c_str());
    // Where wide and pipe differ: the first few elements with their expert's slot count.
    int shown = 0;
    for (size_t i = 0; i < outs[2].size() && shown < 5; ++i)
      if (outs[2][i] != outs[1][i]) {
        const int s = static_cast<int>(i / cols);
        int e = 0, before = 0;
        while (before + kCounts[e] <= s) before += kCounts[e++];
        std::printf("[moe_gemm_wide]   differs from pipe: slot %d (expert %d, %d slots) col %zu: wide %.6g pipe %.6g\n",
                    s, e, kCounts[e], i % cols, bf16_to_float(outs[2][i]), bf16_to_float(outs[1][i]));
        ++shown;
      }
    std::fflush(stdout);
  }
}

TEST(MoeGemmWide, FlashShapesNvfp4) { run(ExpertFormat::kNVFP4); }
TEST(MoeGemmWide, FlashShapesMxfp4) { run(ExpertFormat::kMXFP4); }

TEST(MoeGemmWide, RefusesBadShapes) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  cuda::moe::GroupedGemmParams p;
  p.config = TileConfig::kPrefillWgmmaWide;
  p.max_tiles = 1;
  p.n = 4096 + 64;  // not a multiple of 128 weight rows
  p.k = 4096;
  EXPECT_EQ(cuda::moe::launch_moe_l1(p), cudaErrorInvalidValue);
  p.n = 4096;
  p.k = 4096 + 32;  // not a multiple of 64
  EXPECT_EQ(cuda::moe::launch_moe_l2(p), cudaErrorInvalidValue);
  cudaGetLastError();
}

}  // namespace
}  // namespace dsv4::moe_test

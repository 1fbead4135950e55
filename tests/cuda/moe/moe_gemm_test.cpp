// The grouped GEMMs alone (no router / dispatch) on one expert with tiny ragged shapes,
// every tile config, against the CPU on the same 4-bit weights, so a layout bug of a
// kernel (fragment / swizzle / descriptor / epilogue mapping) shows as the exact
// (slot, column) that is wrong:
//   MoeGemm.L1TinyRagged*  W13 [512, 512] (hidden 512, intermediate 256), rows 1..9, 64,
//                         65, 96, 97, 127..129 (more than one tile), gathered x rows, SwiGLU epilogue
//   MoeGemm.L2TinyRagged*  W2 [512, 256], same rows, routing-weight epilogue
// (n = 512: two CTA columns of the wgmma tile's 256 weight rows, four of the mma tiles').
//   MoeGemm.L1DeepK* / L2DeepK*  wgmma configs only, k = 2048 / 1024 (smem ring wraps)
// kPrefillWgmmaTma (TMA producer warp, persistent CTAs) runs in every case after
// kPrefillWgmmaPipe and must also equal its output bit for bit (same k order).
// kPrefillWgmmaWide (wgmma N 256, 256-slot tiles from tile_config_rows) runs in every case
// too (CPU bound; differences from kPrefillWgmmaPipe printed), and in
//   MoeGemm.L1WideRows* / L2WideRows*  rows 130, 200, 255, 256, 257, 300 (pipe and wide only).
// Slots outside the tiles keep their poison (checked). Bound per element:
// |gpu - ref| <= 1e-2 * max |ref row| (BF16 output rounding is 2^-9 relative).
#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "moe/moe_fixture.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::TileConfig;

constexpr int kHidden = 512, kInter = 256, kExpert = 1;  // expert 1 of 2 (non-zero expert offset)
constexpr int kSlot0 = 3;                                // first slot of the expert
constexpr float kLimit = 10.0f;
constexpr uint16_t kPoison = 0xffff;                     // BF16 NaN

const char* config_name(TileConfig config) {
  return config == TileConfig::kDecode            ? "decode"
         : config == TileConfig::kPrefill         ? "prefill_mma"
         : config == TileConfig::kPrefillWgmma    ? "prefill_wgmma"
         : config == TileConfig::kPrefillWgmmaPipe ? "prefill_wgmma_pipe"
         : config == TileConfig::kPrefillWgmmaTma ? "prefill_wgmma_tma"
         : config == TileConfig::kPrefillWgmmaWide ? "prefill_wgmma_wide"
                                                   : "?";
}

const std::vector<TileConfig> kAllConfigs = {TileConfig::kDecode, TileConfig::kPrefill, TileConfig::kPrefillWgmma,
                                             TileConfig::kPrefillWgmmaPipe, TileConfig::kPrefillWgmmaTma,
                                             TileConfig::kPrefillWgmmaWide};
const std::vector<TileConfig> kWgmmaConfigs = {TileConfig::kPrefillWgmma, TileConfig::kPrefillWgmmaPipe,
                                               TileConfig::kPrefillWgmmaTma, TileConfig::kPrefillWgmmaWide};
// kPrefillWgmmaWide's 256-slot tiles: N 128 / 256 edges and more than one tile.
const std::vector<TileConfig> kWideConfigs = {TileConfig::kPrefillWgmmaPipe, TileConfig::kPrefillWgmmaWide};
const std::vector<int> kWideRows = {130, 200, 255, 256, 257, 300};

// kPrefillWgmmaTma against kPrefillWgmmaPipe's output of the same case (stored by rows):
// every element bitwise equal, poison included. kPrefillWgmmaWide: the differing elements
// are printed (expected none: same k order), not asserted (the CPU bound is).
void expect_same_as_pipe(std::map<int, std::vector<uint16_t>>& pipe_out, TileConfig config, int rows,
                         const std::vector<uint16_t>& out) {
  if (config == TileConfig::kPrefillWgmmaPipe) pipe_out[rows] = out;
  if (config == TileConfig::kPrefillWgmmaWide) {
    const auto it = pipe_out.find(rows);
    if (it == pipe_out.end() || it->second.size() != out.size()) return;
    size_t diff = 0;
    for (size_t i = 0; i < out.size(); ++i) diff += out[i] != it->second[i];
    std::printf("[moe_gemm] prefill_wgmma_wide rows=%d: %zu of %zu elements differ from prefill_wgmma_pipe\n", rows,
                diff, out.size());
    return;
  }
  if (config != TileConfig::kPrefillWgmmaTma) return;
  const auto it = pipe_out.find(rows);
  ASSERT_NE(it, pipe_out.end()) << "kPrefillWgmmaPipe must run before kPrefillWgmmaTma";
  ASSERT_EQ(it->second.size(), out.size());
  size_t diff = 0, first = out.size();
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] != it->second[i]) {
      ++diff;
      if (first == out.size()) first = i;
    }
  EXPECT_EQ(diff, 0u) << "tma != pipe at element " << first << " of " << out.size();
}
// 64 / 65 / 96 / 97: the edges of kPrefillWgmmaPipe's wgmma N choice (64, 96, 128 by rows).
const std::vector<int> kTinyRows = {1, 2, 3, 4, 5, 6, 7, 8, 9, 64, 65, 96, 97, 127, 128, 129};

struct PackedExperts {
  std::vector<uint8_t> w13, w13s, w2, w2s;
  std::vector<float> gate, up, down;
};

PackedExperts pack(const ExpertSet& set) {
  const int hidden = set.hidden, inter = set.intermediate;
  PackedExperts p;
  const int total = set.experts + 1;
  const ExpertFormat f = set.format;
  const int64_t b13 = cuda::moe::packed_data_bytes(2 * inter, hidden), s13 = cuda::moe::packed_scale_bytes(f, 2 * inter, hidden);
  const int64_t b2 = cuda::moe::packed_data_bytes(hidden, inter), s2 = cuda::moe::packed_scale_bytes(f, hidden, inter);
  p.w13.resize(total * b13), p.w13s.resize(total * s13), p.w2.resize(total * b2), p.w2s.resize(total * s2);
  p.gate.resize(total), p.up.resize(total), p.down.resize(total);
  cuda::moe::PackStats stats;
  for (int e = 0; e < total; ++e) {
    cuda::moe::pack_w13(set.matrix(e, 0), set.matrix(e, 1), p.w13.data() + e * b13, p.w13s.data() + e * s13, &p.gate[e],
                        &p.up[e], &stats);
    cuda::moe::pack_w2(set.matrix(e, 2), p.w2.data() + e * b2, p.w2s.data() + e * s2, &p.down[e], &stats);
  }
  return p;
}

// Tile list of one expert: `rows` slots from kSlot0, cut into tiles of the config's rows.
struct TileList {
  std::vector<int32_t> expert, begin, count;
};
TileList tiles_for(TileConfig config, int rows) {
  TileList t;
  const int per = cuda::moe::tile_config_rows(config);
  for (int r = 0; r < rows; r += per) {
    t.expert.push_back(kExpert);
    t.begin.push_back(kSlot0 + r);
    t.count.push_back(std::min(per, rows - r));
  }
  return t;
}

struct Mismatch {
  int bad = 0;
  std::string first;
  int by_row8[8] = {};    // bad elements by tile row % 8 (swizzle / B-operand bugs show here)
  int by_col16[16] = {};  // ... by column % 16 (fragment / A-operand / epilogue bugs show here)
  std::string pattern() const {
    if (bad == 0) return "";
    std::string s = " bad_by_row%8=[";
    for (int i = 0; i < 8; ++i) s += std::to_string(by_row8[i]) + (i < 7 ? "," : "]");
    s += " bad_by_col%16=[";
    for (int i = 0; i < 16; ++i) s += std::to_string(by_col16[i]) + (i < 15 ? "," : "]");
    return s;
  }
};

// Compares out [slots, cols] (BF16) with ref for slots [kSlot0, kSlot0 + rows); every other
// slot must hold the poison.
Mismatch compare(const std::vector<uint16_t>& out, const std::vector<double>& ref, int slots, int cols, int rows) {
  Mismatch m;
  for (int s = 0; s < slots; ++s) {
    const bool inside = s >= kSlot0 && s < kSlot0 + rows;
    double row_max = 0;
    if (inside)
      for (int c = 0; c < cols; ++c) row_max = std::max(row_max, std::abs(ref[static_cast<size_t>(s - kSlot0) * cols + c]));
    for (int c = 0; c < cols; ++c) {
      const uint16_t bits = out[static_cast<size_t>(s) * cols + c];
      bool ok;
      double want = 0, got = bf16_to_float(bits);
      if (inside) {
        want = ref[static_cast<size_t>(s - kSlot0) * cols + c];
        ok = std::isfinite(got) && std::abs(got - want) <= 1e-2 * row_max + 1e-30;
      } else {
        ok = bits == kPoison;
      }
      if (!ok) {
        if (m.bad == 0)
          m.first = "slot " + std::to_string(s) + " (tile row " + std::to_string(s - kSlot0) + ") col " +
                    std::to_string(c) + ": gpu " + std::to_string(got) + (inside ? ", ref " + std::to_string(want) : ", expected untouched");
        ++m.bad;
        if (inside) ++m.by_row8[(s - kSlot0) % 8], ++m.by_col16[c % 16];
      }
    }
  }
  return m;
}

void run_l1(ExpertFormat format, int hidden, int inter, const std::vector<TileConfig>& configs,
            const std::vector<int>& row_counts) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  const ExpertSet set = make_expert_set(format, hidden, inter, 1, 77);
  const PackedExperts packed = pack(set);
  std::vector<float> w1(inter * hidden), w3(inter * hidden);
  dequantize_rows(set.matrix(kExpert, 0), 0, inter, w1.data());
  dequantize_rows(set.matrix(kExpert, 1), 0, inter, w3.data());
  constexpr int kTokens = 150;
  const std::vector<uint16_t> x = make_activations(kTokens, hidden, 78);
  uint8_t* d_w = device_copy(packed.w13);
  uint8_t* d_s = device_copy(packed.w13s);
  float* d_gate = device_copy(packed.gate);
  float* d_up = device_copy(packed.up);
  uint16_t* d_x = device_copy(x);
  std::map<int, std::vector<uint16_t>> pipe_out;
  for (TileConfig config : configs)
    for (int rows : row_counts) {
      SCOPED_TRACE(std::string(config_name(config)) + " rows " + std::to_string(rows));
      const int slots = kSlot0 + rows + 5;
      std::vector<int32_t> slot_token(slots);
      for (int s = 0; s < slots; ++s) slot_token[s] = (s * 37 + 11) % kTokens;  // scattered x rows
      const TileList tl = tiles_for(config, rows);
      const DeviceTileList tiles(tl.expert, tl.begin, tl.count, /*spare=*/0);
      int32_t* d_slot_token = device_copy(slot_token);
      std::vector<uint16_t> out(static_cast<size_t>(slots) * inter, kPoison);
      uint16_t* d_out = device_copy(out);
      cuda::moe::GroupedGemmParams p;
      p.format = format;
      p.config = config;
      p.weights = d_w;
      p.scales = d_s;
      p.factor_a = d_gate;
      p.factor_b = d_up;
      p.act = d_x;
      p.slot_token = d_slot_token;
      p.tile_expert = tiles.expert;
      p.tile_slot_begin = tiles.begin;
      p.tile_row_count = tiles.rows;
      p.tile_count = tiles.count;
      p.max_tiles = tiles.max_tiles;
      p.n = 2 * inter;
      p.k = hidden;
      p.swiglu_limit = kLimit;
      p.out = d_out;
      p.act_rows = slots;  // kPrefillWgmmaTma: x gathered into slot order first
      uint16_t* d_perm = nullptr;
      if (config == TileConfig::kPrefillWgmmaTma)
        DSV4_CUDA_OK(cudaMalloc(&d_perm, static_cast<size_t>(slots) * hidden * 2));
      p.act_perm = d_perm;
      DSV4_CUDA_OK(cuda::moe::launch_moe_l1(p));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      DSV4_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
      cudaFree(d_perm);
      expect_same_as_pipe(pipe_out, config, rows, out);
      std::vector<double> ref(static_cast<size_t>(rows) * inter);
      for (int r = 0; r < rows; ++r) {
        const uint16_t* xr = x.data() + static_cast<size_t>(slot_token[kSlot0 + r]) * hidden;
        for (int j = 0; j < inter; ++j) {
          double g = 0, u = 0;
          for (int c = 0; c < hidden; ++c) {
            const double xv = bf16_to_float(xr[c]);
            g += xv * w1[j * hidden + c], u += xv * w3[j * hidden + c];
          }
          g = std::min(g, static_cast<double>(kLimit));
          u = std::clamp(u, -static_cast<double>(kLimit), static_cast<double>(kLimit));
          ref[static_cast<size_t>(r) * inter + j] = g / (1.0 + std::exp(-g)) * u;
        }
      }
      const Mismatch m = compare(out, ref, slots, inter, rows);
      EXPECT_EQ(m.bad, 0) << m.first << m.pattern();
      std::printf("[moe_gemm] l1 %s %s rows=%d bad=%d %s%s\n", format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4",
                  config_name(config), rows, m.bad, m.first.c_str(), m.pattern().c_str());
      for (void* ptr : {static_cast<void*>(d_slot_token), static_cast<void*>(d_out)}) cudaFree(ptr);
    }
  for (void* ptr : {static_cast<void*>(d_w), static_cast<void*>(d_s), static_cast<void*>(d_gate),
                    static_cast<void*>(d_up), static_cast<void*>(d_x)})
    cudaFree(ptr);
}

void run_l2(ExpertFormat format, int hidden, int inter, const std::vector<TileConfig>& configs,
            const std::vector<int>& row_counts) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  const ExpertSet set = make_expert_set(format, hidden, inter, 1, 79);
  const PackedExperts packed = pack(set);
  std::vector<float> w2(hidden * inter);
  dequantize_rows(set.matrix(kExpert, 2), 0, hidden, w2.data());
  uint8_t* d_w = device_copy(packed.w2);
  uint8_t* d_s = device_copy(packed.w2s);
  float* d_down = device_copy(packed.down);
  std::map<int, std::vector<uint16_t>> pipe_out;
  for (TileConfig config : configs)
    for (int rows : row_counts) {
      SCOPED_TRACE(std::string(config_name(config)) + " rows " + std::to_string(rows));
      const int slots = kSlot0 + rows + 5;
      const std::vector<uint16_t> h = make_activations(slots, inter, 80 + rows);  // [slots, I]
      std::vector<float> slot_weight(slots);
      for (int s = 0; s < slots; ++s) slot_weight[s] = 0.25f + 0.01f * static_cast<float>(s % 50);
      const TileList tl = tiles_for(config, rows);
      const DeviceTileList tiles(tl.expert, tl.begin, tl.count, /*spare=*/0);
      uint16_t* d_h = device_copy(h);
      float* d_sw = device_copy(slot_weight);
      std::vector<uint16_t> out(static_cast<size_t>(slots) * hidden, kPoison);
      uint16_t* d_out = device_copy(out);
      cuda::moe::GroupedGemmParams p;
      p.format = format;
      p.config = config;
      p.weights = d_w;
      p.scales = d_s;
      p.factor_a = d_down;
      p.act = d_h;
      p.slot_weight = d_sw;
      p.tile_expert = tiles.expert;
      p.tile_slot_begin = tiles.begin;
      p.tile_row_count = tiles.rows;
      p.tile_count = tiles.count;
      p.max_tiles = tiles.max_tiles;
      p.n = hidden;
      p.k = inter;
      p.out = d_out;
      p.act_rows = slots;  // kPrefillWgmmaTma: rows of h
      DSV4_CUDA_OK(cuda::moe::launch_moe_l2(p));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      DSV4_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
      expect_same_as_pipe(pipe_out, config, rows, out);
      std::vector<double> ref(static_cast<size_t>(rows) * hidden);
      for (int r = 0; r < rows; ++r) {
        const uint16_t* hr = h.data() + static_cast<size_t>(kSlot0 + r) * inter;
        for (int d = 0; d < hidden; ++d) {
          double y = 0;
          for (int j = 0; j < inter; ++j) y += static_cast<double>(bf16_to_float(hr[j])) * w2[d * inter + j];
          ref[static_cast<size_t>(r) * hidden + d] = y * slot_weight[kSlot0 + r];
        }
      }
      const Mismatch m = compare(out, ref, slots, hidden, rows);
      EXPECT_EQ(m.bad, 0) << m.first << m.pattern();
      std::printf("[moe_gemm] l2 %s %s rows=%d bad=%d %s%s\n", format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4",
                  config_name(config), rows, m.bad, m.first.c_str(), m.pattern().c_str());
      for (void* ptr : {static_cast<void*>(d_h), static_cast<void*>(d_sw), static_cast<void*>(d_out)}) cudaFree(ptr);
    }
  for (void* ptr : {static_cast<void*>(d_w), static_cast<void*>(d_s), static_cast<void*>(d_down)}) cudaFree(ptr);
}

TEST(MoeGemm, L1TinyRaggedNvfp4) { run_l1(ExpertFormat::kNVFP4, kHidden, kInter, kAllConfigs, kTinyRows); }
TEST(MoeGemm, L1TinyRaggedMxfp4) { run_l1(ExpertFormat::kMXFP4, kHidden, kInter, kAllConfigs, kTinyRows); }
TEST(MoeGemm, L2TinyRaggedNvfp4) { run_l2(ExpertFormat::kNVFP4, kHidden, kInter, kAllConfigs, kTinyRows); }
TEST(MoeGemm, L2TinyRaggedMxfp4) { run_l2(ExpertFormat::kMXFP4, kHidden, kInter, kAllConfigs, kTinyRows); }
// Deep K (L1 k = 2048: 16 k tiles of 128; L2 k = 1024: 8), so the wgmma kernels' 4-slot
// smem ring wraps several times (the tiny shapes, 4 and 2 k tiles, never refill a slot
// that a wgmma read): catches a refill racing an in-flight wgmma (kPrefillWgmmaPipe
// keeps groups in flight across the stage barrier).
// kPrefillWgmmaWide beyond one 128-slot tile (N 256 partial / full, two 256-slot tiles).
TEST(MoeGemm, L1WideRowsNvfp4) { run_l1(ExpertFormat::kNVFP4, kHidden, kInter, kWideConfigs, kWideRows); }
TEST(MoeGemm, L1WideRowsMxfp4) { run_l1(ExpertFormat::kMXFP4, kHidden, kInter, kWideConfigs, kWideRows); }
TEST(MoeGemm, L2WideRowsNvfp4) { run_l2(ExpertFormat::kNVFP4, kHidden, kInter, kWideConfigs, kWideRows); }
TEST(MoeGemm, L2WideRowsMxfp4) { run_l2(ExpertFormat::kMXFP4, kHidden, kInter, kWideConfigs, kWideRows); }
TEST(MoeGemm, L1DeepKNvfp4) { run_l1(ExpertFormat::kNVFP4, 2048, 256, kWgmmaConfigs, {5, 90, 129}); }
TEST(MoeGemm, L1DeepKMxfp4) { run_l1(ExpertFormat::kMXFP4, 2048, 256, kWgmmaConfigs, {5, 90, 129}); }
TEST(MoeGemm, L2DeepKNvfp4) { run_l2(ExpertFormat::kNVFP4, 512, 1024, kWgmmaConfigs, {5, 90, 129}); }
TEST(MoeGemm, L2DeepKMxfp4) { run_l2(ExpertFormat::kMXFP4, 512, 1024, kWgmmaConfigs, {5, 90, 129}); }

}  // namespace
}  // namespace dsv4::moe_test

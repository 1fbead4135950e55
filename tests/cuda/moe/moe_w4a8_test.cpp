// W4A8 (TileConfig::kPrefillW4A8: MXFP4 weights -> E4M3 in registers, E4M3 activations,
// FP8 wgmma, per-128-K FP32 promotion) and its activation quantizer.
//   MoeW4a8.ActQuantMatchesCpu: launch_act_quant_fp8 vs a CPU quantizer, bit for bit
//     (E4M3 bytes in the fragment K order and the FP32 scales), ragged rows, a zero block
//     and a block with values far outside E4M3's range.
//   kPrefillW4A8Producer (the producer-warpgroup kernel, grouped_gemm_w4a8_producer.cu) runs
//   beside them in GemmL1L2MatchEmulation (same bounds; its output must equal kPrefillW4A8's
//   bit for bit; tile lists with 3 spare entries; one layer with more work items than SMs)
//   and in LauncherRejectsBadArguments.
//   kPrefillW4A8Ws (warp-specialised, 128 x 256 tiles, per-row weight exponent reference,
//   grouped_gemm_w4a8_ws.cu) runs in GemmL1L2MatchEmulation on a tile list of 256-slot tiles
//   (tiles of 1..256 rows: one-half and two-half CTAs) against its own emulation (row
//   reference: d = kc - row_ref + 6, one FFMA per block with the activation scale, the row
//   factor 2^(row_ref - 259) after the K loop) with the same bounds, and against W4A16 with
//   the same statistical bound; an extra layer with scale codes spread over 25 octaves runs
//   its cvt-table path (d < -5) and the RN-rounded blocks (d < -8). RowRefMatchesCpu checks
//   launch_w4a8_row_ref bit for bit; LauncherRejectsBadArguments covers it (null row_ref too).
//   kPrefillW4A8WsSS (kPrefillW4A8Ws with the weight conversion in the producer warpgroup, SS
//   wgmma, grouped_gemm_w4a8_ws_ss.cu) runs on the same 256-slot tile list in every layer: its
//   output must equal kPrefillW4A8Ws's bit for bit, and it is checked against the same
//   emulation and W4A16 bounds; LauncherRejectsBadArguments covers it.
//   MoeW4a8.GemmL1L2MatchEmulation: kPrefillW4A8 (convert / wgmma overlap, K loop unrolled
//     by 2), kPrefillW4A8Lut (the same with the PRMT table conversion: its output must equal
//     kPrefillW4A8's bit for bit; the test scales span 11 octaves, so both the table-add
//     path (d >= -5) and the cvt-table path (d < -5) run) and kPrefillW4A8Serial, L1 (SwiGLU) and L2 (x factor x routing weight) on 6
//     experts with 1..500 slots (full and partial tiles, gathered x rows), K = 1024 / 512
//     (8 / 4 stages) plus two small layers with an odd stage count (L2 K = 384: 3 stages,
//     fewer than the prologue; L1 K = 128: 1 stage), against
//     (a) a CPU emulation with the kernel's roundings (weights code * 2^d rounded to E4M3
//     exactly as the kernel does, activations the quantizer's E4M3 bytes x block scale,
//     FP64 sums per 128-K block, FP32 promotion), bound |gpu - emu| <= 1e-2 |emu| +
//     4e-3 max|emu row| (BF16 output rounding + FP8 tensor-core accumulation order);
//     (b) the W4A16 kernel (kPrefillWgmma, same packed weights, BF16 activations): the
//     E4M3 activation error, bound max |w4a8 - w4a16| <= 0.12 max|row| and relative RMS
//     error over all elements <= 0.06 (E4M3 has 3 mantissa bits: ~3.6% RMS per product).
#include <gtest/gtest.h>

#include <cstdio>

#include "cuda/moe/grouped_gemm_w4a8_ws.cuh"
#include "moe/moe_fixture.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::TileConfig;

// ---- CPU E4M3 (OCP "fn": bias 7, max 448, subnormals k * 2^-9) --------------------
double e4m3_value(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  const double v = e == 0 ? m * std::ldexp(1.0, -9) : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
  return s ? -v : v;
}
// Round to nearest, ties to even code, saturating to +-448 (NaN inputs not used).
uint8_t e4m3_rn(double v) {
  static const std::vector<double> mags = [] {
    std::vector<double> t(127);
    for (int c = 0; c < 127; ++c) t[c] = e4m3_value(static_cast<uint8_t>(c));
    return t;
  }();
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;  // -0 -> 0x80, as the GPU's cvt
  const double a = std::abs(v);
  if (a >= 448.0) return sign | 126;
  const auto it = std::upper_bound(mags.begin(), mags.end(), a);  // first > a
  const int hi = static_cast<int>(it - mags.begin()), lo = hi - 1;  // mags[lo] <= a < mags[hi]
  int c = lo;
  if (a - mags[lo] > mags[hi] - a) c = hi;
  else if (a - mags[lo] == mags[hi] - a) c = (lo % 2 == 0) ? lo : hi;
  return static_cast<uint8_t>(sign | c);
}
// Logical byte L of a 32-block holds physical column phys_of_logical(L).
int phys_of_logical(int l) {
  const int h = l / 16, t = (l % 16) / 4, i = l % 4;
  const int off[4] = {0, 1, 8, 9};
  return 16 * h + 2 * t + off[i];
}

struct Quantized {
  std::vector<uint8_t> x8;
  std::vector<float> scale;
  std::vector<float> value;  // E4M3 value (without the scale), PHYSICAL order
};
Quantized cpu_quantize(const std::vector<uint16_t>& x, int rows, int k) {
  Quantized q;
  q.x8.resize(size_t(rows) * k);
  q.scale.resize(size_t(rows) * (k / 128));
  q.value.resize(size_t(rows) * k);
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < k / 128; ++b) {
      const size_t base = size_t(r) * k + b * 128;
      float amax = 0.0f;
      for (int i = 0; i < 128; ++i) amax = std::max(amax, std::abs(bf16_to_float(x[base + i])));
      const float inv = amax > 0.0f ? 448.0f / amax : 0.0f;
      const float scale = amax / 448.0f;
      q.scale[size_t(r) * (k / 128) + b] = scale;
      for (int l = 0; l < 128; ++l) {
        const int p = (l / 32) * 32 + phys_of_logical(l % 32);
        const float v = bf16_to_float(x[base + p]) * inv;  // FP32 product, as the kernel
        const uint8_t c = e4m3_rn(v);
        q.x8[base + l] = c;
        q.value[base + p] = static_cast<float>(e4m3_value(c));
      }
    }
  return q;
}

Quantized gpu_quantize(const std::vector<uint16_t>& x, int rows, int k) {
  Quantized q;
  q.x8.assign(size_t(rows) * k, 0xAB);
  q.scale.assign(size_t(rows) * (k / 128), -1.0f);
  uint16_t* d_x = device_copy(x);
  uint8_t* d_x8 = device_copy(q.x8);
  float* d_s = device_copy(q.scale);
  cuda::moe::ActQuantParams p;
  p.x = d_x;
  p.rows = rows;
  p.k = k;
  p.x8 = d_x8;
  p.scale = d_s;
  DSV4_CUDA_OK(cuda::moe::launch_act_quant_fp8(p));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  DSV4_CUDA_OK(cudaMemcpy(q.x8.data(), d_x8, q.x8.size(), cudaMemcpyDeviceToHost));
  DSV4_CUDA_OK(cudaMemcpy(q.scale.data(), d_s, q.scale.size() * 4, cudaMemcpyDeviceToHost));
  cudaFree(d_x);
  cudaFree(d_x8);
  cudaFree(d_s);
  return q;
}

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(MoeW4a8, ActQuantMatchesCpu) {
  if (!have_device()) GTEST_FAIL() << "no CUDA device";
  constexpr int kRows = 37, kK = 640;
  std::vector<uint16_t> x = make_activations(kRows, kK, 77);
  for (int i = 0; i < 128; ++i) x[size_t(5) * kK + 256 + i] = float_to_bf16(0.0f);           // zero block
  for (int i = 0; i < 128; ++i) x[size_t(9) * kK + 128 + i] = float_to_bf16(i == 3 ? 1e30f : 1e-20f * i);  // wide range
  for (int i = 0; i < 128; ++i) x[size_t(11) * kK + i] = float_to_bf16((i % 2 ? -1.0f : 1.0f) * 3e-5f * (i + 1));
  const Quantized want = cpu_quantize(x, kRows, kK);
  const Quantized got = gpu_quantize(x, kRows, kK);
  int64_t bad_bytes = 0, bad_scales = 0;
  std::string first;
  for (size_t i = 0; i < want.x8.size(); ++i)
    if (got.x8[i] != want.x8[i]) {
      if (bad_bytes++ == 0)
        first = "byte " + std::to_string(i) + ": gpu " + std::to_string(got.x8[i]) + " cpu " + std::to_string(want.x8[i]);
    }
  for (size_t i = 0; i < want.scale.size(); ++i)
    if (std::memcmp(&got.scale[i], &want.scale[i], 4) != 0) ++bad_scales;
  EXPECT_EQ(bad_bytes, 0) << first;
  EXPECT_EQ(bad_scales, 0);
  EXPECT_EQ(want.scale[size_t(5) * (kK / 128) + 2], 0.0f);
  std::printf("[moe_w4a8] act_quant rows=%d k=%d bad_bytes=%lld bad_scales=%lld %s\n", kRows, kK,
              static_cast<long long>(bad_bytes), static_cast<long long>(bad_scales), first.c_str());
}

// ---- GEMMs --------------------------------------------------------------------------
constexpr int kHidden = 1024, kInter = 512, kExperts = 6, kTokens = 512;
constexpr int kCounts[kExperts] = {1, 64, 97, 128, 300, 500};
constexpr float kLimit = 10.0f, kFactor = 1.0f / 64.0f;

struct Problem {
  std::vector<int32_t> tile_expert, tile_begin, tile_rows, slot_token, slot_expert;
  std::vector<float> slot_weight;
  int slots = 0;
};
// tile_rows: slots per tile-list entry (128; 256 for kPrefillWgmmaWide / kPrefillW4A8Ws).
Problem make_problem(int tile_rows = 128) {
  Problem p;
  uint64_t state = 4321;
  for (int e = 0; e < kExperts; ++e) {
    for (int r = 0; r < kCounts[e]; r += tile_rows) {
      p.tile_expert.push_back(e);
      p.tile_begin.push_back(p.slots + r);
      p.tile_rows.push_back(std::min(tile_rows, kCounts[e] - r));
    }
    for (int r = 0; r < kCounts[e]; ++r) p.slot_expert.push_back(e);
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

// The kernel's weights: A8[e][n][k] (E4M3 value of code * 2^d) and the row factor per
// (e, n, 128-block) 2^(kc_max - 254), from the packed bytes (fragment.h layout).
struct EmuWeights {
  std::vector<float> a8, wf;
};
EmuWeights emulate_weights(const std::vector<uint8_t>& w, const std::vector<uint8_t>& s, int n, int k) {
  constexpr double kCode[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  EmuWeights out;
  out.a8.resize(size_t(kExperts) * n * k);
  out.wf.resize(size_t(kExperts) * n * (k / 128));
  const int kb_count = k / 64;
  for (int e = 0; e < kExperts; ++e)
    for (int row = 0; row < n; ++row) {
      const int rr = row % 16, g = rr % 8, hr = rr / 8;
      const size_t fb_row = (size_t(e) * (n / 16) + row / 16) * kb_count;
      auto kc_of = [&](int col) {  // kernel scale code of (row, col)
        const size_t fb = fb_row + col / 64;
        const int s16 = (col % 64) / 16;
        return static_cast<int>(s[fb * 32 + cuda::moe::frag_scale_offset(ExpertFormat::kMXFP4, g, s16, hr)]);
      };
      for (int b = 0; b < k / 128; ++b) {
        int kmax = 0;
        for (int j = 0; j < 4; ++j) kmax = std::max(kmax, kc_of(b * 128 + 32 * j));
        out.wf[(size_t(e) * n + row) * (k / 128) + b] = kmax > 127 ? static_cast<float>(std::ldexp(1.0, kmax - 254)) : 0.0f;
        for (int c = b * 128; c < b * 128 + 128; ++c) {
          const size_t fb = fb_row + c / 64;
          const int cc = c % 64, sw = cc / 16, c16 = cc % 16;
          const int r = hr + 2 * (c16 / 8), t = (c16 % 8) / 2, h = c16 % 2;
          const int lane = 4 * g + t;
          uint32_t word;
          std::memcpy(&word, &w[fb * 512 + lane * 16 + sw * 4], 4);
          const uint32_t code = (word >> (4 * cuda::moe::frag_nibble(r, h))) & 0xF;
          const double mag = kCode[code & 7] * std::ldexp(1.0, kc_of(c) - (kmax - 1));
          out.a8[(size_t(e) * n + row) * k + c] = static_cast<float>(e4m3_value(e4m3_rn(code & 8 ? -mag : mag)));
        }
      }
    }
  return out;
}

// FP32 accumulator (before the epilogue) of slot `slot`, weight row `row`, as the kernel.
float emu_acc(const EmuWeights& w, const Quantized& q, int e, int row, int act_row, int n, int k) {
  const float* a = &w.a8[(size_t(e) * n + row) * k];
  const float* x = &q.value[size_t(act_row) * k];
  float acc = 0.0f;
  for (int b = 0; b < k / 128; ++b) {
    const float as = q.scale[size_t(act_row) * (k / 128) + b];
    double blk = 0;  // the tensor-core block sum (exact products, FP64 sum)
    for (int c = b * 128; c < b * 128 + 128; ++c) blk += double(a[c]) * double(x[c]);
    acc = std::fma(static_cast<float>(blk), as * w.wf[(size_t(e) * n + row) * (k / 128) + b], acc);
  }
  return acc;
}

// kPrefillW4A8Ws: the row reference row_ref = max kernel scale code over the row's whole K
// (launch_w4a8_row_ref), weights E4M3_rn(code * 2^(kc - row_ref + 6)) (exact for d >= -8,
// RN below: the kernel's table-add path for d >= -5 and its cvt table below give exactly
// this), row factor 2^(row_ref - 259) (0 when row_ref <= 132). a8 [e][n][k], rf [e][n].
struct EmuWeightsWs {
  std::vector<float> a8, rf;
  std::vector<uint8_t> row_ref;  // [e][n]
};
EmuWeightsWs emulate_weights_ws(const std::vector<uint8_t>& w, const std::vector<uint8_t>& s, int n, int k) {
  constexpr double kCode[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  EmuWeightsWs out;
  out.a8.resize(size_t(kExperts) * n * k);
  out.rf.resize(size_t(kExperts) * n);
  out.row_ref.resize(size_t(kExperts) * n);
  const int kb_count = k / 64;
  for (int e = 0; e < kExperts; ++e)
    for (int row = 0; row < n; ++row) {
      const int rr = row % 16, g = rr % 8, hr = rr / 8;
      const size_t fb_row = (size_t(e) * (n / 16) + row / 16) * kb_count;
      auto kc_of = [&](int col) {
        const size_t fb = fb_row + col / 64;
        return static_cast<int>(s[fb * 32 + cuda::moe::frag_scale_offset(ExpertFormat::kMXFP4, g, (col % 64) / 16, hr)]);
      };
      int ref = 0;
      for (int c = 0; c < k; c += 32) ref = std::max(ref, kc_of(c));
      out.row_ref[size_t(e) * n + row] = static_cast<uint8_t>(ref);
      out.rf[size_t(e) * n + row] = ref > 132 ? static_cast<float>(std::ldexp(1.0, ref - 259)) : 0.0f;
      for (int c = 0; c < k; ++c) {
        const size_t fb = fb_row + c / 64;
        const int cc = c % 64, sw = cc / 16, c16 = cc % 16;
        const int r = hr + 2 * (c16 / 8), t = (c16 % 8) / 2, h = c16 % 2;
        uint32_t word;
        std::memcpy(&word, &w[fb * 512 + (4 * g + t) * 16 + sw * 4], 4);
        const uint32_t code = (word >> (4 * cuda::moe::frag_nibble(r, h))) & 0xF;
        const double mag = kCode[code & 7] * std::ldexp(1.0, kc_of(c) - ref + 6);
        out.a8[(size_t(e) * n + row) * k + c] = static_cast<float>(e4m3_value(e4m3_rn(code & 8 ? -mag : mag)));
      }
    }
  return out;
}
float emu_acc_ws(const EmuWeightsWs& w, const Quantized& q, int e, int row, int act_row, int n, int k) {
  const float* a = &w.a8[(size_t(e) * n + row) * k];
  const float* x = &q.value[size_t(act_row) * k];
  float acc = 0.0f;
  for (int b = 0; b < k / 128; ++b) {
    double blk = 0;
    for (int c = b * 128; c < b * 128 + 128; ++c) blk += double(a[c]) * double(x[c]);
    acc = std::fma(static_cast<float>(blk), q.scale[size_t(act_row) * (k / 128) + b], acc);
  }
  return acc * w.rf[size_t(e) * n + row];
}

// Scale codes spread over 25 octaves (230..254): kPrefillW4A8Ws's cvt-table path (a 32-block
// more than 11 octaves below its row's largest) and RN-rounded weights (more than 14 below).
std::vector<uint8_t> wide_scales(size_t count, uint64_t seed) {
  std::vector<uint8_t> v(count);
  uint64_t state = seed;
  for (auto& b : v) b = static_cast<uint8_t>(230 + splitmix(state) % 25);
  return v;
}

// launch_w4a8_row_ref over `groups` groups of [n, k] scale bytes, copied back.
std::vector<uint8_t> gpu_row_ref(const uint8_t* d_scales, int groups, int n, int k, uint8_t** d_out) {
  std::vector<uint8_t> ref(size_t(groups) * n, 0xEE);
  *d_out = device_copy(ref);
  cuda::moe::W4a8RowRefParams rp;
  rp.scales = d_scales;
  rp.groups = groups;
  rp.n = n;
  rp.k = k;
  rp.row_ref = *d_out;
  DSV4_CUDA_OK(cuda::moe::launch_w4a8_row_ref(rp));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  DSV4_CUDA_OK(cudaMemcpy(ref.data(), *d_out, ref.size(), cudaMemcpyDeviceToHost));
  return ref;
}

double silu_ref(double v) { return v / (1.0 + std::exp(-v)); }

// spare: tile-list entries past *tile_count (as moe_forward sizes it: the persistent
// kPrefillW4A8Producer must stop at the first item past the count).
std::vector<uint16_t> run_gpu(TileConfig config, bool l1, int n, int k, uint8_t* d_w, uint8_t* d_s, float* d_f,
                              const uint16_t* d_act, const uint8_t* d_act8, const float* d_as, const Problem& prob,
                              int spare = 0, const uint8_t* d_row_ref = nullptr, int act_rows = 0,
                              int act_scale_stride = 0) {
  int32_t* d_st = device_copy(prob.slot_token);
  float* d_sw = device_copy(prob.slot_weight);
  const DeviceTileList tiles(prob.tile_expert, prob.tile_begin, prob.tile_rows, spare);
  const int cols = l1 ? n / 2 : n;
  std::vector<uint16_t> out(size_t(prob.slots) * cols, 0xffff);
  uint16_t* d_out = device_copy(out);
  cuda::moe::GroupedGemmParams p =
      gemm_test_params(ExpertFormat::kMXFP4, config, n, k, d_w, d_s, d_f, d_f, d_act, d_st, d_sw, tiles, kLimit, d_out);
  p.act8 = d_act8;
  p.act_scale = d_as;
  p.w4a8_row_ref = d_row_ref;
  p.act_rows = act_rows;                  // kPrefillW4A8WsTma
  p.act_scale_stride = act_scale_stride;  // kPrefillW4A8WsTma
  DSV4_CUDA_OK(l1 ? cuda::moe::launch_moe_l1(p) : cuda::moe::launch_moe_l2(p));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  DSV4_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
  for (void* ptr : {static_cast<void*>(d_st), static_cast<void*>(d_sw), static_cast<void*>(d_out)}) cudaFree(ptr);
  return out;
}

TEST(MoeW4a8, GemmL1L2MatchEmulation) {
  if (!have_device()) GTEST_FAIL() << "no CUDA device";
  const Problem prob = make_problem();
  const Problem prob256 = make_problem(256);  // kPrefillW4A8Ws: the same slots in 256-slot tiles
  const std::vector<uint16_t> x = make_activations(kTokens, kHidden, 903);
  const std::vector<uint16_t> hin = make_activations(prob.slots, kInter, 904);
  const std::vector<float> factors(kExperts, kFactor);
  // The last layer has 16 row blocks x 11 tiles = 176 work items: more than the H200's 132
  // SMs, so persistent kPrefillW4A8Producer CTAs take 2 items (ring phases across items, an
  // odd stage count: 3).
  // The last layer: scale codes over 25 octaves (wide_scales), L1 k = 512.
  struct W4a8Layer {
    GemmLayer layer;
    bool wide_scales;
  };
  for (const W4a8Layer wl : {W4a8Layer{{true, 2 * kInter, kHidden}, false}, W4a8Layer{{false, kHidden, kInter}, false},
                             W4a8Layer{{false, 256, 384}, false}, W4a8Layer{{true, 256, 128}, false},
                             W4a8Layer{{false, 2048, 384}, false}, W4a8Layer{{true, 256, 512}, true}}) {
    const GemmLayer layer = wl.layer;
    SCOPED_TRACE(std::string(layer.l1 ? "l1" : "l2") + " n=" + std::to_string(layer.n) + " k=" + std::to_string(layer.k) +
                 (wl.wide_scales ? " wide scales" : ""));
    const int n = layer.n, k = layer.k;
    const bool standard = layer.k == (layer.l1 ? kHidden : kInter);
    const std::vector<uint8_t> w = random_bytes(size_t(kExperts) * n * k / 2, layer.l1 ? 21 : 22);
    const size_t scale_count = size_t(kExperts) * (n / 16) * (k / 64) * 32;
    const std::vector<uint8_t> s = wl.wide_scales ? wide_scales(scale_count, 25)
                                                  : random_scales(ExpertFormat::kMXFP4, scale_count, layer.l1 ? 23 : 24);
    const int act_rows = layer.l1 ? kTokens : prob.slots;
    const std::vector<uint16_t> act_odd = standard ? std::vector<uint16_t>() : make_activations(act_rows, k, 905 + k);
    const std::vector<uint16_t>& act = !standard ? act_odd : layer.l1 ? x : hin;
    const Quantized q = gpu_quantize(act, act_rows, k);
    {
      const Quantized qc = cpu_quantize(act, act_rows, k);
      ASSERT_TRUE(qc.x8 == q.x8) << "quantizer differs from the CPU (see ActQuantMatchesCpu)";
    }
    const Quantized qv = cpu_quantize(act, act_rows, k);  // .value for the emulation
    uint8_t* d_w = device_copy(w);
    uint8_t* d_s = device_copy(s);
    float* d_f = device_copy(factors);
    uint16_t* d_act = device_copy(act);
    uint8_t* d_act8 = device_copy(q.x8);
    float* d_as = device_copy(q.scale);
    const std::vector<uint16_t> got_serial =
        run_gpu(TileConfig::kPrefillW4A8Serial, layer.l1, n, k, d_w, d_s, d_f, d_act, d_act8, d_as, prob);
    const std::vector<uint16_t> got_overlap =
        run_gpu(TileConfig::kPrefillW4A8, layer.l1, n, k, d_w, d_s, d_f, d_act, d_act8, d_as, prob);
    const std::vector<uint16_t> got_lut =
        run_gpu(TileConfig::kPrefillW4A8Lut, layer.l1, n, k, d_w, d_s, d_f, d_act, d_act8, d_as, prob);
    {  // the table conversion gives the same E4M3 bytes, hence the same output bits
      int64_t differ = 0;
      size_t first = 0;
      for (size_t i = 0; i < got_lut.size(); ++i)
        if (got_lut[i] != got_overlap[i] && differ++ == 0) first = i;
      EXPECT_EQ(differ, 0) << "kPrefillW4A8Lut != kPrefillW4A8 at element " << first << ": " << got_lut[first]
                           << " vs " << got_overlap[first];
    }
    const std::vector<uint16_t> got_producer =
        run_gpu(TileConfig::kPrefillW4A8Producer, layer.l1, n, k, d_w, d_s, d_f, d_act, d_act8, d_as, prob, 3);
    {  // the producer kernel: the same E4M3 bytes, the same wgmma k order and promotion order
      int64_t differ = 0;
      size_t first = 0;
      for (size_t i = 0; i < got_producer.size(); ++i)
        if (got_producer[i] != got_overlap[i] && differ++ == 0) first = i;
      EXPECT_EQ(differ, 0) << "kPrefillW4A8Producer != kPrefillW4A8 in " << differ << " elements, first " << first
                           << ": " << got_producer[first] << " vs " << got_overlap[first];
      std::printf("[moe_w4a8] producer %s n=%d k=%d: %lld of %zu elements differ from kPrefillW4A8\n",
                  layer.l1 ? "l1" : "l2", n, k, static_cast<long long>(differ), got_producer.size());
    }
    const std::vector<uint16_t> w16 = run_gpu(TileConfig::kPrefillWgmma, layer.l1, n, k, d_w, d_s, d_f, d_act, nullptr, nullptr, prob);
    // kPrefillW4A8Ws: its row reference first (bit for bit vs the CPU), then the GEMM on the
    // 256-slot tile list (3 spare entries past *tile_count).
    const EmuWeightsWs ew_ws = emulate_weights_ws(w, s, n, k);
    uint8_t* d_rr = nullptr;
    {
      const std::vector<uint8_t> rr = gpu_row_ref(d_s, kExperts, n, k, &d_rr);
      EXPECT_TRUE(rr == ew_ws.row_ref) << "launch_w4a8_row_ref differs from the CPU row maxima";
    }
    const std::vector<uint16_t> got_ws =
        run_gpu(TileConfig::kPrefillW4A8Ws, layer.l1, n, k, d_w, d_s, d_f, d_act, d_act8, d_as, prob256, 3, d_rr);
    // kPrefillW4A8WsSS: the same E4M3 weight bytes (converted by the producer into shared
    // memory), the same wgmma K order and promotion order, so the same output bits.
    const std::vector<uint16_t> got_ws_ss =
        run_gpu(TileConfig::kPrefillW4A8WsSS, layer.l1, n, k, d_w, d_s, d_f, d_act, d_act8, d_as, prob256, 3, d_rr);
    {
      int64_t differ = 0;
      size_t first = 0;
      for (size_t i = 0; i < got_ws_ss.size(); ++i)
        if (got_ws_ss[i] != got_ws[i] && differ++ == 0) first = i;
      const int cols_ss = layer.l1 ? n / 2 : n;
      EXPECT_EQ(differ, 0) << "kPrefillW4A8WsSS != kPrefillW4A8Ws in " << differ << " elements, first slot "
                           << first / cols_ss << " col " << first % cols_ss << ": " << got_ws_ss[first] << " vs "
                           << got_ws[first];
      std::printf("[moe_w4a8] ws_ss %s n=%d k=%d: %lld of %zu elements differ from kPrefillW4A8Ws\n",
                  layer.l1 ? "l1" : "l2", n, k, static_cast<long long>(differ), got_ws_ss.size());
    }
    // kPrefillW4A8WsTma reads act8 in slot order and the scales transposed: the quantizer's
    // gather (L1) / scale_stride options make both, bit for bit the slot-ordered copy of q;
    // then the same consumers and math as kPrefillW4A8Ws, so the same output bits.
    {
      const int rows = prob256.slots, stride = (rows + 3) / 4 * 4 + 4, kb = k / 128;  // + 4: padding stays untouched
      std::vector<uint8_t> want_x8(size_t(rows) * k);
      std::vector<float> want_sc(size_t(kb) * stride, -2.0f);
      for (int slot = 0; slot < rows; ++slot) {
        const int src = layer.l1 ? prob256.slot_token[slot] : slot;
        std::memcpy(&want_x8[size_t(slot) * k], &q.x8[size_t(src) * k], k);
        for (int b = 0; b < kb; ++b) want_sc[size_t(b) * stride + slot] = q.scale[size_t(src) * kb + b];
      }
      uint8_t* d_x8s = device_copy(std::vector<uint8_t>(want_x8.size(), 0xAB));
      float* d_sct = device_copy(std::vector<float>(want_sc.size(), -2.0f));
      int32_t* d_gather = device_copy(prob256.slot_token);
      cuda::moe::ActQuantParams qp;
      qp.x = d_act;
      qp.rows = rows;
      qp.k = k;
      qp.x8 = d_x8s;
      qp.scale = d_sct;
      qp.scale_stride = stride;
      if (layer.l1) {
        qp.gather = d_gather;
        qp.x_rows = act_rows;
      }
      DSV4_CUDA_OK(cuda::moe::launch_act_quant_fp8(qp));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      std::vector<uint8_t> got_x8(want_x8.size());
      std::vector<float> got_sc(want_sc.size());
      DSV4_CUDA_OK(cudaMemcpy(got_x8.data(), d_x8s, got_x8.size(), cudaMemcpyDeviceToHost));
      DSV4_CUDA_OK(cudaMemcpy(got_sc.data(), d_sct, got_sc.size() * 4, cudaMemcpyDeviceToHost));
      EXPECT_TRUE(got_x8 == want_x8) << "slot-ordered act8 differs from the gathered copy of the quantizer's rows";
      EXPECT_TRUE(std::memcmp(got_sc.data(), want_sc.data(), got_sc.size() * 4) == 0)
          << "transposed scales differ (or the padding past the rows was written)";
      const std::vector<uint16_t> got_tma = run_gpu(TileConfig::kPrefillW4A8WsTma, layer.l1, n, k, d_w, d_s, d_f, d_act,
                                                    d_x8s, d_sct, prob256, 3, d_rr, rows, stride);
      int64_t differ = 0;
      size_t first = 0;
      for (size_t i = 0; i < got_tma.size(); ++i)
        if (got_tma[i] != got_ws[i] && differ++ == 0) first = i;
      const int cols_t = layer.l1 ? n / 2 : n;
      EXPECT_EQ(differ, 0) << "kPrefillW4A8WsTma != kPrefillW4A8Ws in " << differ << " elements, first slot "
                           << first / cols_t << " col " << first % cols_t << ": " << got_tma[first] << " vs "
                           << got_ws[first];
      std::printf("[moe_w4a8] ws_tma %s n=%d k=%d: %lld of %zu elements differ from kPrefillW4A8Ws\n",
                  layer.l1 ? "l1" : "l2", n, k, static_cast<long long>(differ), got_tma.size());
      for (void* ptr : {static_cast<void*>(d_x8s), static_cast<void*>(d_sct), static_cast<void*>(d_gather)}) cudaFree(ptr);
    }
    for (void* ptr : {static_cast<void*>(d_w), static_cast<void*>(d_s), static_cast<void*>(d_f), static_cast<void*>(d_act),
                      static_cast<void*>(d_act8), static_cast<void*>(d_as), static_cast<void*>(d_rr)})
      cudaFree(ptr);

    const EmuWeights ew = emulate_weights(w, s, n, k);
    const int cols = layer.l1 ? n / 2 : n;
    std::vector<double> emu(size_t(prob.slots) * cols), emu_row_max(prob.slots, 0.0), w16_row_max(prob.slots, 0.0);
    std::vector<double> emu_ws(size_t(prob.slots) * cols), emu_ws_row_max(prob.slots, 0.0);
    double max_row_all = 0;
    for (int slot = 0; slot < prob.slots; ++slot) {
      const int e = prob.slot_expert[slot];
      const int arow = layer.l1 ? prob.slot_token[slot] : slot;
      for (int c = 0; c < cols; ++c) {
        double v, v_ws;
        if (layer.l1) {
          const int tile16 = c / 8, gate_row = 16 * tile16 + c % 8, up_row = gate_row + 8;
          auto swiglu = [&](float ga, float ua) {
            const double gate = std::min(double(ga * kFactor), double(kLimit));
            const double up = std::min(std::max(double(ua * kFactor), -double(kLimit)), double(kLimit));
            return silu_ref(gate) * up;
          };
          v = swiglu(emu_acc(ew, qv, e, gate_row, arow, n, k), emu_acc(ew, qv, e, up_row, arow, n, k));
          v_ws = swiglu(emu_acc_ws(ew_ws, qv, e, gate_row, arow, n, k), emu_acc_ws(ew_ws, qv, e, up_row, arow, n, k));
        } else {
          v = double(emu_acc(ew, qv, e, c, arow, n, k)) * double(kFactor * prob.slot_weight[slot]);
          v_ws = double(emu_acc_ws(ew_ws, qv, e, c, arow, n, k)) * double(kFactor * prob.slot_weight[slot]);
        }
        emu[size_t(slot) * cols + c] = v;
        emu_row_max[slot] = std::max(emu_row_max[slot], std::abs(v));
        emu_ws[size_t(slot) * cols + c] = v_ws;
        emu_ws_row_max[slot] = std::max(emu_ws_row_max[slot], std::abs(v_ws));
        w16_row_max[slot] =
            std::max(w16_row_max[slot], std::abs(double(bf16_to_float(w16[size_t(slot) * cols + c]))));
      }
      max_row_all = std::max(max_row_all, emu_row_max[slot]);
    }
    EXPECT_GT(max_row_all, 0.0) << "emulated output all zero";
    for (const int variant : {0, 1, 2, 3, 4, 5}) {
      const char* vname = variant == 0   ? "serial"
                          : variant == 1 ? "overlap"
                          : variant == 2 ? "lut"
                          : variant == 3 ? "producer"
                          : variant == 4 ? "ws"
                                         : "ws_ss";
      SCOPED_TRACE(vname);
      const std::vector<uint16_t>& got = variant == 0   ? got_serial
                                         : variant == 1 ? got_overlap
                                         : variant == 2 ? got_lut
                                         : variant == 3 ? got_producer
                                         : variant == 4 ? got_ws
                                                        : got_ws_ss;
      // kPrefillW4A8Ws / kPrefillW4A8WsSS have their own emulation (row reference); the others
      // share kPrefillW4A8's.
      const bool row_ref_emu = variant >= 4;
      const std::vector<double>& emu_v = row_ref_emu ? emu_ws : emu;
      const std::vector<double>& emu_v_row_max = row_ref_emu ? emu_ws_row_max : emu_row_max;
      int64_t bad_emu = 0, bad_w16 = 0, identical = 0;
      double err2 = 0, ref2 = 0;
      std::string first_emu, first_w16;
      for (int slot = 0; slot < prob.slots; ++slot)
        for (int c = 0; c < cols; ++c) {
          const size_t i = size_t(slot) * cols + c;
          const double g = bf16_to_float(got[i]), r16 = bf16_to_float(w16[i]), em = emu_v[i];
          if (got[i] == float_to_bf16(static_cast<float>(em))) ++identical;
          if (!(std::isfinite(g) && std::abs(g - em) <= 1e-2 * std::abs(em) + 4e-3 * emu_v_row_max[slot] + 1e-30)) {
            if (bad_emu++ == 0)
              first_emu = "slot " + std::to_string(slot) + " col " + std::to_string(c) + ": gpu " + std::to_string(g) +
                          " emu " + std::to_string(em);
          }
          // A gross-error bound only (FP8 activations differ from BF16 by design; the exact check
          // is the emulation above): a share of the row's largest value plus ~2.5 E4M3 half-ulps
          // of the element itself.
          if (!(std::abs(g - r16) <= 0.12 * w16_row_max[slot] + 0.15 * std::abs(r16) + 1e-30)) {
            if (bad_w16++ == 0)
              first_w16 = "slot " + std::to_string(slot) + " col " + std::to_string(c) + ": w4a8 " +
                          std::to_string(g) + " w4a16 " + std::to_string(r16);
          }
          err2 += (g - r16) * (g - r16);
          ref2 += r16 * r16;
        }
      const double rel_rms = std::sqrt(err2 / std::max(ref2, 1e-300));
      EXPECT_EQ(bad_emu, 0) << first_emu;
      // A statistical bound vs W4A16: at k = 128 one FP8 block feeds each output, and SwiGLU
      // near a zero gate can flip the sign of a tiny value (H200, 2026-12-01: 1 of 139520).
      EXPECT_LE(bad_w16, int64_t(prob.slots) * cols / 10000) << first_w16;
      EXPECT_LE(rel_rms, 0.06);
      std::printf("[moe_w4a8] %s %s n=%d k=%d slots=%d vs emulation: bad=%lld identical=%lld/%lld; vs w4a16: "
                  "bad=%lld rel_rms=%.4f max_row=%.3g %s %s\n",
                  vname, layer.l1 ? "l1" : "l2", n, k, prob.slots,
                  static_cast<long long>(bad_emu), static_cast<long long>(identical),
                  static_cast<long long>(int64_t(prob.slots) * cols), static_cast<long long>(bad_w16), rel_rms,
                  max_row_all, first_emu.c_str(), first_w16.c_str());
    }
  }
}

// Launcher contract (all three W4A8 configs), host side (the launcher returns before touching any pointer): a
// non-W4A8 config reaching launch_w4a8 is impossible through launch_moe_l1 (it dispatches
// on the config), so this checks the argument errors: NVFP4, k % 128, missing act8.
TEST(MoeW4a8, LauncherRejectsBadArguments) {
  cuda::moe::GroupedGemmParams p;
  p.format = ExpertFormat::kMXFP4;
  p.n = 128;
  p.k = 128;
  p.max_tiles = 1;
  static uint8_t dummy8[16];
  static float dummyf[4];
  p.act8 = dummy8;
  p.act_scale = dummyf;
  p.w4a8_row_ref = dummy8;  // kPrefillW4A8Ws / kPrefillW4A8WsSS only (the others ignore it)
  for (const TileConfig config : {TileConfig::kPrefillW4A8, TileConfig::kPrefillW4A8Serial, TileConfig::kPrefillW4A8Lut,
                                  TileConfig::kPrefillW4A8Producer, TileConfig::kPrefillW4A8Ws,
                                  TileConfig::kPrefillW4A8WsSS, TileConfig::kPrefillW4A8WsTma}) {
    p.config = config;
    p.act_rows = 1;          // kPrefillW4A8WsTma only
    p.act_scale_stride = 4;  // kPrefillW4A8WsTma only
    cuda::moe::GroupedGemmParams q = p;
    q.format = ExpertFormat::kNVFP4;
    EXPECT_EQ(cuda::moe::launch_moe_l1(q), cudaErrorInvalidValue);
    q = p;
    q.k = 192;
    EXPECT_EQ(cuda::moe::launch_moe_l2(q), cudaErrorInvalidValue);
    q = p;
    q.act8 = nullptr;
    EXPECT_EQ(cuda::moe::launch_moe_l1(q), cudaErrorInvalidValue);
    q = p;
    q.act_scale = nullptr;
    EXPECT_EQ(cuda::moe::launch_moe_l2(q), cudaErrorInvalidValue);
    q = p;
    q.max_tiles = 0;
    EXPECT_EQ(cuda::moe::launch_moe_l2(q), cudaSuccess);
  }
  // kPrefillW4A8Ws / kPrefillW4A8WsSS: the row reference is required; 256-slot tiles; the
  // pre-pass checks its arguments.
  for (const TileConfig config : {TileConfig::kPrefillW4A8Ws, TileConfig::kPrefillW4A8WsSS, TileConfig::kPrefillW4A8WsTma}) {
    cuda::moe::GroupedGemmParams q = p;
    q.config = config;
    q.w4a8_row_ref = nullptr;
    EXPECT_EQ(cuda::moe::launch_moe_l1(q), cudaErrorInvalidValue);
    EXPECT_EQ(cuda::moe::launch_moe_l2(q), cudaErrorInvalidValue);
    q.w4a8_row_ref = dummy8;
    q.n = 192;  // n % 128
    EXPECT_EQ(cuda::moe::launch_moe_l2(q), cudaErrorInvalidValue);
    q.n = 128;
    q.max_tiles = 65536;  // grid.y
    EXPECT_EQ(cuda::moe::launch_moe_l1(q), cudaErrorInvalidValue);
    EXPECT_EQ(cuda::moe::tile_config_rows(config), 256);
  }
  {  // kPrefillW4A8WsTma: the TMA needs the rows of act8 and a 16-byte transposed scale stride >= them
    cuda::moe::GroupedGemmParams q = p;
    q.config = TileConfig::kPrefillW4A8WsTma;
    q.act_rows = 0;
    EXPECT_EQ(cuda::moe::launch_moe_l1(q), cudaErrorInvalidValue);
    q.act_rows = 8;
    q.act_scale_stride = 4;  // < act_rows
    EXPECT_EQ(cuda::moe::launch_moe_l2(q), cudaErrorInvalidValue);
    q.act_scale_stride = 10;  // % 4
    EXPECT_EQ(cuda::moe::launch_moe_l2(q), cudaErrorInvalidValue);
  }
  {  // the quantizer's gather / transposed-scale options
    static uint16_t dummy16[128];
    cuda::moe::ActQuantParams qp;
    qp.x = dummy16;
    qp.rows = 8;
    qp.k = 128;
    qp.x8 = dummy8;
    qp.scale = dummyf;
    qp.scale_stride = 6;  // % 4
    EXPECT_EQ(cuda::moe::launch_act_quant_fp8(qp), cudaErrorInvalidValue);
    qp.scale_stride = 4;  // < rows
    EXPECT_EQ(cuda::moe::launch_act_quant_fp8(qp), cudaErrorInvalidValue);
    qp.scale_stride = 0;
    static int32_t gather[8];
    qp.gather = gather;  // without x_rows
    EXPECT_EQ(cuda::moe::launch_act_quant_fp8(qp), cudaErrorInvalidValue);
  }
  cuda::moe::W4a8RowRefParams rp;
  rp.scales = dummy8;
  rp.groups = 1;
  rp.n = 16;
  rp.k = 64;
  rp.row_ref = nullptr;
  EXPECT_EQ(cuda::moe::launch_w4a8_row_ref(rp), cudaErrorInvalidValue);
  rp.row_ref = dummy8;
  rp.k = 96;
  EXPECT_EQ(cuda::moe::launch_w4a8_row_ref(rp), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace dsv4::moe_test

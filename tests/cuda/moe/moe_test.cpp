// MoE layer on the GPU vs the CPU reference on the same 4-bit weights.
//   MoePack.*     host only: the fragment layout decodes to exactly the stored values; the
//                 wgmma activation tile reads back through the descriptor's swizzle
//   MoeSmall.*    16 experts, hidden 256: every row, all three tile configs (decode,
//                 prefill_mma, prefill_wgmma; sanitizer-sized), one FP32-x routing case
//   MoeFlash.*    V4-Flash shapes (hidden 4096, intermediate 2048, 256 experts, top-6,
//                 shared expert): tokens 1, 2, 7, 64, 333, 4096 with the default config and
//                 with prefill_wgmma forced (ragged tiles), skewed routings (six experts
//                 take everything; every token on one expert) on each config, reruns
//                 bit-identical, hash routing; kPrefillWgmmaWide (256-slot tiles, wgmma N 256)
//                 forced at 333 tokens (uniform + rerun, six experts) and 1000 (one expert:
//                 3 full 256-slot tiles + 232); rows checked on the CPU: all up to 64 tokens
//                 and for six experts, every 3rd row at 333, every 16th at 1000, every
//                 64th at 4096.
//                 Decode: kDecode (default <= 512 tokens) and kDecodeKSplit (in-CTA
//                 split-K, opt-in) with every token on one expert at 1, 2, 7, 64, reruns
//                 bit-identical, both on uniform routing; the fused top-k + dispatch kernel (default
//                 <= 64 tokens) and the combine fused into L2 bit-identical to the
//                 separate kernels (all three decode tiles, uniform and skewed).
//                 MoeSmall also runs kDecodeSplitK with S = 2 forced (L1 split, L2 not).
//   MoeFlashSplitK.*  kDecodeSplitK (split-K across CTAs, default <= 64 tokens): automatic
//                 S checked (8/4, 8/4, 2/2, 1/1 at 1, 2, 7, 64 tokens), S = 4 at 64 and
//                 S = 3 (uneven slices) at 7, uniform and every token on one expert, all
//                 rows vs the CPU, bit-identical reruns, fused combine == combine kernel,
//                 S == 1 == kDecode bitwise.
//   MoePack.StreamLayoutBytes  host only: moe_stream_layout_bytes == the fragment layout's
//                 weight + scale bytes; bad shapes refused by launch_moe_stream_repack.
//   MoeStream.*   TileConfig::kDecodeStream (decode stream layout, launch_moe_stream_repack):
//                 RepackMatches*: the re-pack == a host permutation of the packed bytes
//                 (small shapes, both formats, both chunk orders); MoeSmall also runs
//                 kDecodeStream (all rows vs the CPU, bitwise == kDecode, both orders);
//                 Flash*: V4-Flash shapes at 1, 2, 7, 64 tokens, uniform and every token on
//                 expert 42: all rows vs the CPU, reruns bit-identical, bitwise == kDecode
//                 (same kernel arithmetic), fused combine == combine kernel; the k-major
//                 order and L2 launched with PDL (overlap_l2; also CPU-checked) bitwise ==
//                 kDecode at the same points; kDecodeStreamBulk (TMA bulk copies) bitwise ==
//                 kDecode (both orders, with and without PDL; CPU-checked in MoeSmall); no
//                 stream copy -> refused.
//   MoeRouting.*  routing from FP32 x (x_f32) follows FP32 near-ties; hash-routing errors
//                 are reported, not read out of bounds.
// Bound: cosine >= 0.9999 per checked row; routing ids equal except FP32 near-ties.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "cuda/moe/wgmma_layout.h"
#include "moe/moe_fixture.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::TileConfig;

constexpr double kCosineBound = 0.9999;
constexpr float kScaling = 1.5f, kLimit = 10.0f;

// ---- host-only layout test -----------------------------------------------------------

void check_packed_matrix(const ExpertSet& set, int e, bool w13) {
  const int H = set.hidden, I = set.intermediate;
  const int64_t rows = w13 ? 2 * I : H, cols = w13 ? H : I;
  std::vector<uint8_t> data(cuda::moe::packed_data_bytes(rows, cols));
  std::vector<uint8_t> scales(cuda::moe::packed_scale_bytes(set.format, rows, cols));
  float fa = 0, fb = 0;
  cuda::moe::PackStats stats;
  if (w13)
    cuda::moe::pack_w13(set.matrix(e, 0), set.matrix(e, 1), data.data(), scales.data(), &fa, &fb, &stats);
  else
    cuda::moe::pack_w2(set.matrix(e, 2), data.data(), scales.data(), &fa, &stats);
  // Reference rows in packed order.
  std::vector<float> w1(static_cast<size_t>(I) * H), w3(static_cast<size_t>(I) * H), w2(static_cast<size_t>(H) * I);
  dequantize_rows(set.matrix(e, 0), 0, I, w1.data());
  dequantize_rows(set.matrix(e, 1), 0, I, w3.data());
  dequantize_rows(set.matrix(e, 2), 0, H, w2.data());
  const int sb = cuda::moe::frag_scale_bytes(set.format);
  const int64_t kb_count = cols / 64;
  int checked = 0, flushed_seen = 0;
  for (int64_t nb = 0; nb < rows / 16; ++nb)
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      const uint8_t* block = data.data() + (nb * kb_count + kb) * 512;
      const uint8_t* block_scales = scales.data() + (nb * kb_count + kb) * sb;
      for (int lane = 0; lane < 32; ++lane)
        for (int s = 0; s < 4; ++s) {
          uint32_t word;
          std::memcpy(&word, block + lane * 16 + s * 4, 4);
          for (int r = 0; r < 4; ++r) {
            const uint32_t bits = cuda::moe::frag_decode_bits(word, r);
            const int hr = r & 1;
            const uint8_t code = block_scales[cuda::moe::frag_scale_offset(set.format, lane / 4, s, hr)];
            const float scale = bf16_to_float(static_cast<uint16_t>(cuda::moe::kernel_scale_bits(set.format, code)));
            for (int h = 0; h < 2; ++h) {
              const float q = bf16_to_float(static_cast<uint16_t>(bits >> (16 * h)));
              const float product = q * scale;  // exact in FP32; must be exact in BF16 too
              ASSERT_EQ(bf16_to_float(float_to_bf16(product)), product) << "BF16 product not exact";
              const int64_t row = nb * 16 + cuda::moe::frag_row(lane, r);
              const int64_t col = kb * 64 + cuda::moe::frag_col(lane, s, r, h);
              float expected;
              float factor = fa;
              if (w13) {
                const int64_t src = (row / 16) * 8 + row % 8;
                expected = (row % 16) < 8 ? w1[src * H + col] : w3[src * H + col];
                if ((row % 16) >= 8) factor = fb;
              } else {
                expected = w2[row * I + col];
              }
              const float got = static_cast<float>(static_cast<double>(product) * factor);
              if (code == 0 && expected != 0) {  // MXFP4 flushed block: tiny reference
                ++flushed_seen;
                ASSERT_LT(std::abs(expected), 1e-30f);
                continue;
              }
              ASSERT_NEAR(got, expected, std::abs(expected) * 1e-6f)
                  << "matrix " << (w13 ? "w13" : "w2") << " row " << row << " col " << col << " lane " << lane
                  << " step " << s << " reg " << r << " half " << h;
              ++checked;
            }
          }
        }
    }
  EXPECT_EQ(checked + flushed_seen, rows * cols);
}

TEST(MoePack, FragmentLayoutDecodesStoredValues) {
  for (ExpertFormat f : {ExpertFormat::kNVFP4, ExpertFormat::kMXFP4}) {
    SCOPED_TRACE(f == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4");
    const ExpertSet set = make_expert_set(f, 128, 64, 2, 11);
    for (int e = 0; e < 3; ++e) {
      check_packed_matrix(set, e, true);
      check_packed_matrix(set, e, false);
    }
  }
}

// The wgmma prefill GEMM's activation tile (wgmma_layout.h) read back through the
// K-major 128-byte-swizzle addressing of a wgmma B descriptor: element (n, k) of k16 step s
// lies at start + (n / 8) * SBO + (n % 8) * 128 + 2 k, with address bits 4-6 XOR bits 7-9
// (PTX ISA, shared memory matrix layout). Must give slot row n, K column 16 s + k.
TEST(MoePack, WgmmaActivationLayout) {
  using namespace cuda::moe;
  std::vector<int> cell(kWgmmaSubBytes / 2, -1);
  for (int r = 0; r < kWgmmaSlots; ++r)
    for (int cc = 0; cc < kWgmmaSubK / 8; ++cc)
      for (int e = 0; e < 8; ++e) {
        const uint32_t byte = wgmma_act_offset(r, cc) + 2 * e;
        ASSERT_LT(byte, static_cast<uint32_t>(kWgmmaSubBytes));
        ASSERT_EQ(cell[byte / 2], -1) << "two elements on one cell";
        cell[byte / 2] = r * kWgmmaSubK + cc * 8 + e;
      }
  for (uint32_t base : {0x0u, 0x4400u, 0x2c000u}) {  // 1024-aligned sub-block addresses
    const uint64_t desc0 = wgmma_desc_sw128(base);
    EXPECT_EQ((desc0 >> 16) & 0x3FFF, 1u);             // LBO (unused)
    EXPECT_EQ((desc0 >> 49) & 0x7, 0u);                // base offset
    EXPECT_EQ(desc0 >> 62, 1u);                        // 128-byte swizzle
    for (int s = 0; s < 4; ++s) {
      const uint64_t desc = desc0 + 2 * s;             // what the kernel passes for k16 step s
      const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
      const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
      for (int n = 0; n < kWgmmaSlots; ++n)
        for (int k = 0; k < 16; ++k) {
          const uint32_t linear = start + (n / 8) * sbo + (n % 8) * 128 + 2 * k;
          const uint32_t physical = linear ^ (((linear >> 7) & 7) << 4);
          ASSERT_EQ(cell[(physical - base) / 2], n * kWgmmaSubK + 16 * s + k)
              << "base " << base << " step " << s << " row " << n << " k " << k;
        }
    }
  }
}

TEST(MoePack, StreamLayoutBytes) {
  for (ExpertFormat f : {ExpertFormat::kNVFP4, ExpertFormat::kMXFP4}) {
    struct Shape {
      int groups, n, k;
    };
    for (const Shape sh : {Shape{257, 4096, 4096}, Shape{257, 4096, 2048}, Shape{17, 256, 128}}) {
      const int64_t want = sh.groups * (cuda::moe::packed_data_bytes(sh.n, sh.k) +
                                        cuda::moe::packed_scale_bytes(f, sh.n, sh.k));
      EXPECT_EQ(static_cast<int64_t>(cuda::moe::moe_stream_layout_bytes(f, sh.groups, sh.n, sh.k)), want);
    }
    // V4-Flash, both GEMMs: 257 x 9 MiB + 257 x 4.5 MiB (NVFP4), 257 x 8.5 + 257 x 4.25 MiB (MXFP4)
    const double mib = (cuda::moe::moe_stream_layout_bytes(f, 257, 4096, 4096) +
                        cuda::moe::moe_stream_layout_bytes(f, 257, 4096, 2048)) / 1048576.0;
    EXPECT_DOUBLE_EQ(mib, f == ExpertFormat::kNVFP4 ? 257 * 13.5 : 257 * 12.75);
  }
  // Refused before any device work: shapes not multiples of 128, missing buffers.
  uint8_t dummy[16];
  cuda::moe::StreamRepackParams r;
  r.groups = 1;
  r.n = 192;  // not a multiple of 128
  r.k = 128;
  r.weights = r.scales = dummy;
  r.out = dummy;
  EXPECT_EQ(cuda::moe::launch_moe_stream_repack(r), cudaErrorInvalidValue);
  r.n = 128;
  r.k = 64;
  EXPECT_EQ(cuda::moe::launch_moe_stream_repack(r), cudaErrorInvalidValue);
  r.k = 128;
  r.out = nullptr;
  EXPECT_EQ(cuda::moe::launch_moe_stream_repack(r), cudaErrorInvalidValue);
}

TEST(MoePack, SpecialScalesAreCounted) {
  ExpertSet set = make_expert_set(ExpertFormat::kMXFP4, 128, 64, 1, 3);
  set.scales[2][1] = 200;  // matrix max 2^73
  set.scales[2][0] = 0;    // 2^-127: more than 2^125 below the max, flushed
  std::vector<uint8_t> data(cuda::moe::packed_data_bytes(128, 64)), scales(cuda::moe::packed_scale_bytes(ExpertFormat::kMXFP4, 128, 64));
  float factor = 0;
  cuda::moe::PackStats stats;
  cuda::moe::pack_w2(set.matrix(0, 2), data.data(), scales.data(), &factor, &stats);
  EXPECT_GE(stats.flushed_blocks, 1);
  set.scales[2][0] = 0xff;
  EXPECT_THROW(cuda::moe::pack_w2(set.matrix(0, 2), data.data(), scales.data(), &factor, &stats), Error);
}

// ---- GPU cases -----------------------------------------------------------------------

const char* config_name(TileConfig config) {
  if (config == TileConfig::kDecodeKSplit) return "decode_ksplit";
  if (config == TileConfig::kDecodeSplitK) return "decode_splitk";
  if (config == TileConfig::kDecodeStream) return "decode_stream";
  if (config == TileConfig::kDecodeStreamBulk) return "decode_stream_bulk";
  if (config == TileConfig::kPrefillWgmmaWide) return "prefill_wgmma_wide";
  return config == TileConfig::kDecode ? "decode" : config == TileConfig::kPrefill ? "prefill_mma" : "prefill_wgmma";
}

bool have_gpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

struct Case {
  std::string label;
  int tokens = 1;
  TileConfig config = TileConfig::kDecode;
  int row_stride = 1;                        // check every row_stride-th row
  const std::vector<int32_t>* tid2eid = nullptr;
  int64_t vocab = 0;
  const float* bias_override = nullptr;      // device bias (skewed routing)
  const std::vector<float>* host_bias = nullptr;
  uint64_t seed = 1;
  std::vector<int32_t> token_ids;            // hash routing
  bool route_f32 = false;                    // router reads FP32 x (MoeForwardParams::x_f32)
  bool fuse_route_dispatch = true;           // MoeForwardParams::fuse_route_dispatch
  bool fuse_combine = true;                  // MoeForwardParams::fuse_combine
  bool split_router_rows = true;             // MoeForwardParams::split_router_rows
  int decode_split = 0;                      // MoeForwardParams::decode_split (kDecodeSplitK; 0 auto)
  const uint8_t* w13_stream = nullptr;       // kDecodeStream: MoeLayerWeights::w13_stream / w2_stream
  const uint8_t* w2_stream = nullptr;
  bool stream_k_major = false;               // MoeLayerWeights::stream_k_major
  bool overlap_l2 = false;                   // MoeForwardParams::overlap_l2 (kDecodeStream: L2 with PDL)
};

struct CaseOutput {
  std::vector<float> out;
  int32_t error_flag = 0;
};

CaseOutput run_forward(const cuda::moe::MoeLayerWeights& weights, const std::vector<uint16_t>& x,
                       const Case& c, std::vector<int32_t>* ids, std::vector<float>* routing_weights,
                       const std::vector<float>* x_f32 = nullptr) {
  const int H = weights.hidden, T = c.tokens;
  uint16_t* d_x = device_copy(x);
  float* d_x_f32 = x_f32 ? device_copy(*x_f32) : nullptr;
  int32_t* d_token_ids = c.token_ids.empty() ? nullptr : device_copy(c.token_ids);
  const cuda::moe::MoeWorkspace size = cuda::moe::moe_workspace(weights, T, c.config, nullptr, c.decode_split);
  void* d_ws = nullptr;
  float* d_out = nullptr;
  int32_t* d_flag = nullptr;
  DSV4_CUDA_OK(cudaMalloc(&d_ws, size.bytes));
  DSV4_CUDA_OK(cudaMalloc(&d_out, static_cast<size_t>(T) * H * sizeof(float)));
  DSV4_CUDA_OK(cudaMalloc(&d_flag, sizeof(int32_t)));
  DSV4_CUDA_OK(cudaMemset(d_ws, 0xff, size.bytes));  // poison: stray reads show as NaN / -1
  DSV4_CUDA_OK(cudaMemset(d_out, 0xff, static_cast<size_t>(T) * H * sizeof(float)));
  DSV4_CUDA_OK(cudaMemset(d_flag, 0, sizeof(int32_t)));
  cuda::moe::MoeForwardParams p;
  p.weights = &weights;
  p.x = d_x;
  p.x_f32 = d_x_f32;
  p.token_ids = d_token_ids;
  p.tokens = T;
  p.config = c.config;
  p.fuse_route_dispatch = c.fuse_route_dispatch;
  p.fuse_combine = c.fuse_combine;
  p.split_router_rows = c.split_router_rows;
  p.decode_split = c.decode_split;
  p.overlap_l2 = c.overlap_l2;
  p.workspace = d_ws;
  p.out = d_out;
  p.error_flag = d_flag;
  DSV4_CUDA_OK(cuda::moe::moe_forward(p));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  const cuda::moe::MoeWorkspace ws = cuda::moe::moe_workspace(weights, T, c.config, d_ws, c.decode_split);
  CaseOutput result;
  result.out.resize(static_cast<size_t>(T) * H);
  DSV4_CUDA_OK(cudaMemcpy(result.out.data(), d_out, result.out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  DSV4_CUDA_OK(cudaMemcpy(&result.error_flag, d_flag, sizeof(int32_t), cudaMemcpyDeviceToHost));
  if (ids) {
    ids->resize(static_cast<size_t>(T) * weights.top_k);
    routing_weights->resize(ids->size());
    DSV4_CUDA_OK(cudaMemcpy(ids->data(), ws.topk_ids, ids->size() * 4, cudaMemcpyDeviceToHost));
    DSV4_CUDA_OK(cudaMemcpy(routing_weights->data(), ws.topk_weights, ids->size() * 4, cudaMemcpyDeviceToHost));
  }
  cudaFree(d_x);
  cudaFree(d_x_f32);
  cudaFree(d_token_ids);
  cudaFree(d_ws);
  cudaFree(d_out);
  cudaFree(d_flag);
  return result;
}

// Runs one case and checks routing + rows against the CPU; returns the GPU output.
std::vector<float> check_case(const ExpertSet& set, const DeviceMoe& dev, const RouterWeights& router, int top_k,
                              const Case& c) {
  SCOPED_TRACE(c.label);
  const int H = set.hidden, T = c.tokens;
  cuda::moe::MoeLayerWeights weights = dev.weights;
  if (c.w13_stream != nullptr) {
    weights.w13_stream = c.w13_stream;
    weights.w2_stream = c.w2_stream;
    weights.stream_k_major = c.stream_k_major;
  }
  RouterWeights host_router = router;
  if (c.bias_override) {
    weights.router_bias = c.bias_override;
    host_router.bias = *c.host_bias;
  }
  int32_t* d_tid2eid = nullptr;
  if (c.tid2eid) {
    d_tid2eid = device_copy(*c.tid2eid);
    weights.tid2eid = d_tid2eid;
    weights.vocab_size = c.vocab;
  }
  // route_f32: FP32 x (not BF16-exact) routes, its BF16 rounding feeds the GEMMs.
  const std::vector<float> x_f32 = c.route_f32 ? make_activations_f32(T, H, c.seed) : std::vector<float>();
  const std::vector<uint16_t> x = c.route_f32 ? to_bf16(x_f32) : make_activations(T, H, c.seed);
  std::vector<int32_t> ids;
  std::vector<float> routing_weights;
  const CaseOutput gpu = run_forward(weights, x, c, &ids, &routing_weights, c.route_f32 ? &x_f32 : nullptr);
  cudaFree(d_tid2eid);
  EXPECT_EQ(gpu.error_flag, 0);

  const std::vector<double> scores = c.route_f32 ? cpu_scores_f32(x_f32, host_router, T, H, set.experts)
                                                 : cpu_scores(x, host_router, T, H, set.experts);
  const RoutingCheck routing = check_routing(scores, host_router, T, set.experts, top_k, kScaling, ids, routing_weights,
                                             c.tid2eid, c.tid2eid ? &c.token_ids : nullptr);
  EXPECT_EQ(routing.mismatched_ids, 0) << routing.first_problem;
  EXPECT_LT(routing.max_weight_error, 1e-5);

  std::vector<int> rows;
  for (int t = 0; t < T; t += c.row_stride) rows.push_back(t);
  if (rows.back() != T - 1) rows.push_back(T - 1);
  const std::vector<double> ref = cpu_moe_rows(set, x, rows, top_k, ids, routing_weights, kLimit);
  const RowCompare cmp = compare_rows(ref, gpu.out, rows, H, kCosineBound);
  int non_finite_all = 0;
  for (float v : gpu.out) non_finite_all += !std::isfinite(v);
  EXPECT_EQ(non_finite_all, 0) << "unwritten or non-finite outputs";
  EXPECT_EQ(cmp.bad_rows, 0) << "min cosine " << cmp.min_cosine << " at row " << cmp.worst_row;
  std::printf("[moe] %s %s%s tokens=%d config=%s rows_checked=%zu min_cosine=%.7f worst_row=%d max_abs_err=%.3g "
              "near_ties=%d max_weight_err=%.2g\n",
              set.format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", c.label.c_str(), c.route_f32 ? "_route_f32" : "", T,
              config_name(c.config), rows.size(), cmp.min_cosine, cmp.worst_row,
              cmp.max_abs_error, routing.near_ties, routing.max_weight_error);
  std::fflush(stdout);
  return gpu.out;
}

// kDecodeStream's second copy of a layer's W13 / W2 in the decode stream layout.
struct StreamCopies {
  uint8_t* w13 = nullptr;
  uint8_t* w2 = nullptr;
  bool k_major = false;
  explicit StreamCopies(const cuda::moe::MoeLayerWeights& w, bool k_major_order = false) : k_major(k_major_order) {
    const int groups = w.experts + 1;
    DSV4_CUDA_OK(cudaMalloc(&w13, cuda::moe::moe_stream_layout_bytes(w.format, groups, 2 * w.intermediate, w.hidden)));
    DSV4_CUDA_OK(cudaMalloc(&w2, cuda::moe::moe_stream_layout_bytes(w.format, groups, w.hidden, w.intermediate)));
    cuda::moe::StreamRepackParams r;
    r.format = w.format;
    r.groups = groups;
    r.n = 2 * w.intermediate;
    r.k = w.hidden;
    r.weights = w.w13;
    r.scales = w.w13_scales;
    r.out = w13;
    r.k_major = k_major;
    DSV4_CUDA_OK(cuda::moe::launch_moe_stream_repack(r));
    r.n = w.hidden;
    r.k = w.intermediate;
    r.weights = w.w2;
    r.scales = w.w2_scales;
    r.out = w2;
    DSV4_CUDA_OK(cuda::moe::launch_moe_stream_repack(r));
    DSV4_CUDA_OK(cudaDeviceSynchronize());
  }
  ~StreamCopies() {
    cudaFree(w13);
    cudaFree(w2);
  }
  StreamCopies(const StreamCopies&) = delete;
  StreamCopies& operator=(const StreamCopies&) = delete;
  cuda::moe::MoeLayerWeights on(cuda::moe::MoeLayerWeights w) const {
    w.w13_stream = w13;
    w.w2_stream = w2;
    w.stream_k_major = k_major;
    return w;
  }
  void into(Case& c) const {
    c.w13_stream = w13;
    c.w2_stream = w2;
    c.stream_k_major = k_major;
  }
};

// Host oracle of the decode stream layout, written from its definition (moe.h): output
// chunk (group, row chunk R, k chunk kt) = fragment blocks (R * 8 + b, kt * 2 + j) for
// b = 0..7, j = 0..1 (b outer), 512 B each, then their scale bytes in the same order;
// chunks ordered (group, R, kt), or (group, kt, R) when k_major.
std::vector<uint8_t> host_stream_layout(const std::vector<uint8_t>& data, const std::vector<uint8_t>& scales,
                                        ExpertFormat format, int groups, int n, int k, bool k_major) {
  const int sb = cuda::moe::frag_scale_bytes(format);
  const int64_t kb_count = k / 64, group_blocks = static_cast<int64_t>(n / 16) * kb_count;
  std::vector<uint8_t> out;
  out.reserve(data.size() + scales.size());
  const int outer_count = k_major ? k / 128 : n / 128, inner_count = k_major ? n / 128 : k / 128;
  for (int g = 0; g < groups; ++g)
    for (int o = 0; o < outer_count; ++o)
      for (int i = 0; i < inner_count; ++i) {
        const int R = k_major ? i : o, kt = k_major ? o : i;
        for (int part = 0; part < 2; ++part)
          for (int b = 0; b < 8; ++b)
            for (int j = 0; j < 2; ++j) {
              const int64_t block = g * group_blocks + (R * 8 + b) * kb_count + kt * 2 + j;
              const uint8_t* src = part == 0 ? data.data() + block * 512 : scales.data() + block * sb;
              out.insert(out.end(), src, src + (part == 0 ? 512 : sb));
            }
      }
  return out;
}

void run_stream_repack(ExpertFormat format) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  std::mt19937_64 rng(91);
  struct Shape {
    int groups, n, k;
  };
  for (bool k_major : {false, true})
  for (const Shape sh : {Shape{3, 256, 128}, Shape{2, 384, 512}, Shape{17, 128, 256}}) {
    SCOPED_TRACE("groups " + std::to_string(sh.groups) + " n " + std::to_string(sh.n) + " k " + std::to_string(sh.k) +
                 (k_major ? " k_major" : ""));
    std::vector<uint8_t> data(static_cast<size_t>(sh.groups) * cuda::moe::packed_data_bytes(sh.n, sh.k));
    std::vector<uint8_t> scales(static_cast<size_t>(sh.groups) * cuda::moe::packed_scale_bytes(format, sh.n, sh.k));
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
    for (uint8_t& b : scales) b = static_cast<uint8_t>(rng());
    const size_t bytes = cuda::moe::moe_stream_layout_bytes(format, sh.groups, sh.n, sh.k);
    ASSERT_EQ(bytes, data.size() + scales.size());
    uint8_t* d_data = device_copy(data);
    uint8_t* d_scales = device_copy(scales);
    uint8_t* d_out = nullptr;
    DSV4_CUDA_OK(cudaMalloc(&d_out, bytes));
    DSV4_CUDA_OK(cudaMemset(d_out, 0xa5, bytes));
    cuda::moe::StreamRepackParams r;
    r.format = format;
    r.groups = sh.groups;
    r.n = sh.n;
    r.k = sh.k;
    r.weights = d_data;
    r.scales = d_scales;
    r.out = d_out;
    r.k_major = k_major;
    DSV4_CUDA_OK(cuda::moe::launch_moe_stream_repack(r));
    std::vector<uint8_t> got(bytes);
    DSV4_CUDA_OK(cudaMemcpy(got.data(), d_out, bytes, cudaMemcpyDeviceToHost));
    const std::vector<uint8_t> want = host_stream_layout(data, scales, format, sh.groups, sh.n, sh.k, k_major);
    ASSERT_EQ(want.size(), got.size());
    size_t first_bad = got.size();
    for (size_t i = 0; i < got.size() && first_bad == got.size(); ++i)
      if (got[i] != want[i]) first_bad = i;
    EXPECT_EQ(first_bad, got.size()) << "first differing byte " << first_bad;
    cudaFree(d_data);
    cudaFree(d_scales);
    cudaFree(d_out);
  }
}

TEST(MoeStream, RepackMatchesHostNvfp4) { run_stream_repack(ExpertFormat::kNVFP4); }
TEST(MoeStream, RepackMatchesHostMxfp4) { run_stream_repack(ExpertFormat::kMXFP4); }

void run_small(ExpertFormat format) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  constexpr int kExperts = 16, kHidden = 256, kInter = 128, kTopK = 4;
  const ExpertSet set = make_expert_set(format, kHidden, kInter, kExperts, 5);
  const RouterWeights router = make_router(kExperts, kHidden, 6);
  const DeviceMoe dev(set, router, kTopK, kScaling, kLimit);
  // kDecodeKSplit here: L1 (k = 256) on the split-K tile, L2 (k = 128) falls back to kDecode's.
  for (TileConfig config :
       {TileConfig::kDecode, TileConfig::kDecodeKSplit, TileConfig::kPrefill, TileConfig::kPrefillWgmma})
    for (int tokens : {1, 5, 37, 200}) {
      Case c;
      c.label = "small";
      c.tokens = tokens;
      c.config = config;
      c.seed = 100 + tokens;
      check_case(set, dev, router, kTopK, c);
    }
  // kDecodeSplitK with S = 2 forced: L1 (k = 256, 2 k-tiles) split across 2 CTAs; L2 (k = 128) unsplit.
  for (int tokens : {1, 5, 37, 200}) {
    Case c;
    c.label = "small_split2";
    c.tokens = tokens;
    c.config = TileConfig::kDecodeSplitK;
    c.decode_split = 2;
    c.seed = 100 + tokens;
    check_case(set, dev, router, kTopK, c);
  }
  for (bool k_major : {false, true}) {  // kDecodeStream (stream layout): CPU-checked, bitwise == kDecode
    const StreamCopies copies(dev.weights, k_major);
    const cuda::moe::MoeLayerWeights sw = copies.on(dev.weights);
    for (TileConfig config : {TileConfig::kDecodeStream, TileConfig::kDecodeStreamBulk})
    for (int tokens : {1, 5, 37, 200}) {
      Case c;
      c.label = std::string(config_name(config)) + (k_major ? "_kmajor" : "");
      c.tokens = tokens;
      c.config = config;
      c.seed = 100 + tokens;
      copies.into(c);
      const std::vector<float> got = check_case(set, dev, router, kTopK, c);
      Case decode = c;
      decode.config = TileConfig::kDecode;
      const std::vector<float> ref = run_forward(sw, make_activations(tokens, kHidden, c.seed), decode, nullptr, nullptr).out;
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_EQ(std::memcmp(got.data(), ref.data(), got.size() * sizeof(float)), 0)
          << "kDecodeStream differs from kDecode, tokens " << tokens;
    }
  }
  Case c;  // router from FP32 x
  c.label = "small";
  c.tokens = 37;
  c.route_f32 = true;
  c.seed = 137;
  check_case(set, dev, router, kTopK, c);
}

TEST(MoeSmall, Nvfp4) { run_small(ExpertFormat::kNVFP4); }
TEST(MoeSmall, Mxfp4) { run_small(ExpertFormat::kMXFP4); }

void run_flash(ExpertFormat format) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  constexpr int kExperts = 256, kHidden = 4096, kInter = 2048, kTopK = 6;
  const ExpertSet set = make_expert_set(format, kHidden, kInter, kExperts, 21);
  const RouterWeights router = make_router(kExperts, kHidden, 22);
  const DeviceMoe dev(set, router, kTopK, kScaling, kLimit);
  std::printf("[moe] packed: flushed_blocks=%lld zero_blocks=%lld\n", static_cast<long long>(dev.stats.flushed_blocks),
              static_cast<long long>(dev.stats.zero_blocks));

  for (int tokens : {1, 2, 7, 64, 333, 4096}) {
    Case c;
    c.label = "uniform";
    c.tokens = tokens;
    c.config = cuda::moe::moe_default_tile_config(tokens);
    c.row_stride = tokens <= 64 ? 1 : tokens <= 512 ? 3 : 64;
    c.seed = 1000 + tokens;
    check_case(set, dev, router, kTopK, c);
  }
  // The wgmma prefill path forced on the small token counts (4096 runs it by default).
  for (int tokens : {1, 2, 7, 64, 333}) {
    Case c;
    c.label = "uniform";
    c.tokens = tokens;
    c.config = TileConfig::kPrefillWgmma;
    c.row_stride = tokens <= 64 ? 1 : tokens <= 512 ? 3 : 64;
    c.seed = 1000 + tokens;
    check_case(set, dev, router, kTopK, c);
  }
  {  // router from FP32 x (as the engine calls it)
    Case c;
    c.label = "uniform";
    c.tokens = 64;
    c.config = cuda::moe::moe_default_tile_config(64);
    c.route_f32 = true;
    c.seed = 4064;
    check_case(set, dev, router, kTopK, c);
  }
  for (TileConfig config : {TileConfig::kPrefill, TileConfig::kPrefillWgmma, TileConfig::kPrefillWgmmaWide}) {
    // the prefill configs on the mid size, and bit-identical reruns
    Case c;
    c.label = "uniform_rerun";
    c.tokens = 333;
    c.config = config;
    c.row_stride = 3;
    c.seed = 1333;
    const std::vector<float> first = check_case(set, dev, router, kTopK, c);
    const std::vector<float> second = run_forward(dev.weights, make_activations(333, kHidden, 1333), c, nullptr, nullptr).out;
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0) << "rerun differs";
  }
  // Skewed: a bias of +100 on six experts sends every token to them; the other 250 stay empty.
  std::vector<float> skew_bias = router.bias;
  for (int e : {3, 77, 128, 200, 254, 255}) skew_bias[e] += 100.0f;
  float* d_skew_bias = device_copy(skew_bias);
  for (TileConfig config :
       {TileConfig::kDecode, TileConfig::kPrefill, TileConfig::kPrefillWgmma, TileConfig::kPrefillWgmmaWide}) {
    Case c;
    c.label = "six_experts";
    c.tokens = 333;
    c.config = config;
    c.bias_override = d_skew_bias;
    c.host_bias = &skew_bias;
    c.seed = 2333;
    check_case(set, dev, router, kTopK, c);
  }
  cudaFree(d_skew_bias);
  // Skewed: every token on expert 42 (k = 0), the rest as routed.
  std::vector<float> one_bias = router.bias;
  one_bias[42] += 100.0f;
  float* d_one_bias = device_copy(one_bias);
  for (TileConfig config : {TileConfig::kPrefill, TileConfig::kPrefillWgmma, TileConfig::kPrefillWgmmaWide}) {
    Case c;
    c.label = "one_expert";
    c.tokens = 1000;
    c.config = config;
    c.row_stride = 16;
    c.bias_override = d_one_bias;
    c.host_bias = &one_bias;
    c.seed = 2999;
    check_case(set, dev, router, kTopK, c);
  }
  cudaFree(d_one_bias);
  // Hash routing with every token on expert 7 (k = 0), the rest spread.
  {
    constexpr int kVocab = 1000;
    std::vector<int32_t> tid2eid(static_cast<size_t>(kVocab) * kTopK);
    std::mt19937 rng(9);
    for (int v = 0; v < kVocab; ++v) {
      tid2eid[v * kTopK] = 7;
      for (int k = 1; k < kTopK; ++k) tid2eid[v * kTopK + k] = 8 + static_cast<int>(rng() % 248);
    }
    Case c;
    c.label = "hash_one_expert";
    c.tokens = 64;
    c.tid2eid = &tid2eid;
    c.vocab = kVocab;
    c.seed = 3064;
    for (int t = 0; t < c.tokens; ++t) c.token_ids.push_back(static_cast<int32_t>(rng() % kVocab));
    check_case(set, dev, router, kTopK, c);
  }
  // Decode tiles: kDecode (the default <= 512 tokens, also run above) and kDecodeKSplit
  // (in-CTA split-K, opt-in) with every token on expert 42 at 1, 2, 7, 64 tokens (64: 8
  // tiles of one expert), each rerun bit-identical; both on uniform routing at 1, 7, 64.
  {
    std::vector<float> bias42 = router.bias;
    bias42[42] += 100.0f;
    float* d_bias42 = device_copy(bias42);
    cuda::moe::MoeLayerWeights weights42 = dev.weights;
    weights42.router_bias = d_bias42;
    for (TileConfig config : {TileConfig::kDecode, TileConfig::kDecodeKSplit})
    for (int tokens : {1, 2, 7, 64}) {
      Case c;
      c.label = "decode_one_expert";
      c.tokens = tokens;
      c.config = config;
      c.bias_override = d_bias42;
      c.host_bias = &bias42;
      c.seed = 5000 + tokens;
      const std::vector<float> first = check_case(set, dev, router, kTopK, c);
      const std::vector<float> second =
          run_forward(weights42, make_activations(tokens, kHidden, c.seed), c, nullptr, nullptr).out;
      ASSERT_EQ(first.size(), second.size());
      EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0)
          << config_name(config) << " rerun differs, tokens " << tokens;
    }
    cudaFree(d_bias42);
    for (TileConfig config : {TileConfig::kDecode, TileConfig::kDecodeKSplit}) {  // uniform rerun at 7 tokens
      Case c;
      c.label = "decode_uniform_rerun";
      c.tokens = 7;
      c.config = config;
      c.seed = 5107;
      const std::vector<float> first = check_case(set, dev, router, kTopK, c);
      const std::vector<float> second = run_forward(dev.weights, make_activations(7, kHidden, 5107), c, nullptr, nullptr).out;
      EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0) << "rerun differs";
    }
    for (int tokens : {1, 64}) {
      Case c;
      c.label = "uniform";
      c.tokens = tokens;
      c.config = TileConfig::kDecodeKSplit;
      c.seed = 1000 + tokens;
      check_case(set, dev, router, kTopK, c);
    }
    {  // the one-warp-per-row scores kernel at decode sizes (split_router_rows = false)
      Case c;
      c.label = "router_unsplit";
      c.tokens = 64;
      c.config = cuda::moe::moe_default_tile_config(64);
      c.split_router_rows = false;
      c.seed = 1064;
      check_case(set, dev, router, kTopK, c);
    }
  }
  // Decode fusion: the fused top-k + dispatch kernel and the combine fused into L2 (both
  // default <= 64 tokens, CPU-checked above) give the same output bit for bit as the
  // separate top-k, dispatch and combine kernels, on both decode tiles, uniform and with
  // every token on expert 42, at 1, 2, 7, 64 tokens; each fusion also alone.
  {
    std::vector<float> bias42 = router.bias;
    bias42[42] += 100.0f;
    float* d_bias42 = device_copy(bias42);
    cuda::moe::MoeLayerWeights weights42 = dev.weights;
    weights42.router_bias = d_bias42;
    for (TileConfig config : {TileConfig::kDecodeKSplit, TileConfig::kDecode, TileConfig::kDecodeSplitK})
    for (bool skew : {false, true})
      for (int tokens : {1, 2, 7, 64}) {
        SCOPED_TRACE(std::string(config_name(config)) + " tokens " + std::to_string(tokens) + (skew ? " skew" : ""));
        Case c;
        c.tokens = tokens;
        c.config = config;
        const std::vector<uint16_t> x = make_activations(tokens, kHidden, 6000 + tokens);
        const cuda::moe::MoeLayerWeights& w = skew ? weights42 : dev.weights;
        std::vector<int32_t> ids_fused, ids_plain;
        std::vector<float> rw_fused, rw_plain;
        const CaseOutput fused = run_forward(w, x, c, &ids_fused, &rw_fused);
        c.fuse_route_dispatch = false;
        c.fuse_combine = false;
        const CaseOutput plain = run_forward(w, x, c, &ids_plain, &rw_plain);
        for (bool fuse_rd : {false, true}) {  // one fusion at a time
          Case one = c;
          one.fuse_route_dispatch = fuse_rd;
          one.fuse_combine = !fuse_rd;
          const CaseOutput half = run_forward(w, x, one, nullptr, nullptr);
          EXPECT_EQ(std::memcmp(half.out.data(), plain.out.data(), plain.out.size() * sizeof(float)), 0)
              << (fuse_rd ? "fused route+dispatch alone" : "fused combine alone") << " differs";
        }
        EXPECT_EQ(fused.error_flag, 0);
        EXPECT_EQ(ids_fused, ids_plain) << "tokens " << tokens << " skew " << skew;
        EXPECT_EQ(std::memcmp(rw_fused.data(), rw_plain.data(), rw_fused.size() * sizeof(float)), 0)
            << "routing weights differ, tokens " << tokens << " skew " << skew;
        if (skew) {
          for (int t = 0; t < tokens; ++t) EXPECT_EQ(ids_fused[t * kTopK], 42) << "token " << t;
        }
        ASSERT_EQ(fused.out.size(), plain.out.size());
        EXPECT_EQ(std::memcmp(fused.out.data(), plain.out.data(), fused.out.size() * sizeof(float)), 0)
            << "fused route+dispatch differs from the separate kernels, tokens " << tokens << " skew " << skew;
        std::printf("[moe] %s decode_fusion config=%s tokens=%d skew=%d compared bitwise with the separate kernels\n",
                    format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", config_name(config), tokens, skew ? 1 : 0);
      }
    cudaFree(d_bias42);
  }
}

TEST(MoeFlash, Nvfp4) { run_flash(ExpertFormat::kNVFP4); }
TEST(MoeFlash, Mxfp4) { run_flash(ExpertFormat::kMXFP4); }

// kDecodeSplitK (K split across CTAs, partial sums reduced in slice order by the last CTA)
// on V4-Flash shapes: the automatic S at 1, 2, 7, 64 tokens (L1 / L2: 8 / 4, 8 / 4, 2 / 2,
// 1 / 1, checked), S = 4 forced at 64 and S = 3 (uneven slices) at 7, uniform and with every
// token on expert 42, all rows vs the CPU; reruns bit-identical (poisoned workspace and
// output each run); fused combine vs the combine kernel bitwise; S == 1 bitwise equal to
// kDecode.
void run_flash_splitk(ExpertFormat format) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  constexpr int kExperts = 256, kHidden = 4096, kInter = 2048, kTopK = 6;
  const ExpertSet set = make_expert_set(format, kHidden, kInter, kExperts, 21);
  const RouterWeights router = make_router(kExperts, kHidden, 22);
  const DeviceMoe dev(set, router, kTopK, kScaling, kLimit);
  const int expect_l1[] = {8, 8, 2, 1}, expect_l2[] = {4, 4, 2, 1};
  const int token_counts[] = {1, 2, 7, 64};
  for (int i = 0; i < 4; ++i) {
    const cuda::moe::MoeWorkspace ws =
        cuda::moe::moe_workspace(dev.weights, token_counts[i], TileConfig::kDecodeSplitK, nullptr);
    EXPECT_EQ(ws.split_l1, expect_l1[i]) << "L1 split at " << token_counts[i] << " tokens (DSV4_MOE_SPLITK unset?)";
    EXPECT_EQ(ws.split_l2, expect_l2[i]) << "L2 split at " << token_counts[i] << " tokens";
    // a kDecode-sized workspace (what the engine allocates) holds the kDecodeSplitK layout
    EXPECT_GE(cuda::moe::moe_workspace(dev.weights, 512, TileConfig::kDecode, nullptr).bytes, ws.bytes);
  }
  std::vector<float> bias42 = router.bias;
  bias42[42] += 100.0f;
  float* d_bias42 = device_copy(bias42);
  cuda::moe::MoeLayerWeights weights42 = dev.weights;
  weights42.router_bias = d_bias42;
  struct Run {
    int tokens, split;
  };
  for (bool skew : {false, true})
    for (const Run r : {Run{1, 0}, Run{2, 0}, Run{7, 0}, Run{64, 0}, Run{64, 4}, Run{7, 3}}) {
      SCOPED_TRACE("tokens " + std::to_string(r.tokens) + " split " + std::to_string(r.split) + (skew ? " skew" : ""));
      Case c;
      c.label = std::string(skew ? "splitk_one_expert" : "splitk_uniform") + "_s" + std::to_string(r.split);
      c.tokens = r.tokens;
      c.config = TileConfig::kDecodeSplitK;
      c.decode_split = r.split;
      c.seed = 7000 + r.tokens + 100 * r.split;
      if (skew) {
        c.bias_override = d_bias42;
        c.host_bias = &bias42;
      }
      const std::vector<float> first = check_case(set, dev, router, kTopK, c);
      const cuda::moe::MoeLayerWeights& w = skew ? weights42 : dev.weights;
      const std::vector<uint16_t> x = make_activations(r.tokens, kHidden, c.seed);
      const std::vector<float> second = run_forward(w, x, c, nullptr, nullptr).out;
      ASSERT_EQ(first.size(), second.size());
      EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0) << "rerun differs";
      Case unfused = c;  // the combine kernel instead of the fused combine
      unfused.fuse_combine = false;
      const std::vector<float> plain = run_forward(w, x, unfused, nullptr, nullptr).out;
      EXPECT_EQ(std::memcmp(first.data(), plain.data(), first.size() * sizeof(float)), 0)
          << "fused combine differs from the combine kernel";
      if (r.split == 0 && r.tokens == 64) {  // S == 1 on both GEMMs: kDecode's kernel
        Case decode = c;
        decode.config = TileConfig::kDecode;
        const std::vector<float> ref = run_forward(w, x, decode, nullptr, nullptr).out;
        EXPECT_EQ(std::memcmp(first.data(), ref.data(), first.size() * sizeof(float)), 0) << "S == 1 differs from kDecode";
      }
    }
  cudaFree(d_bias42);
}

// kDecodeStream on V4-Flash shapes: 1, 2, 7, 64 tokens, uniform and every token on expert 42;
// all rows vs the CPU, reruns bit-identical (poisoned workspace / output), bitwise == kDecode,
// fused combine == the combine kernel.
void run_flash_stream(ExpertFormat format) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  constexpr int kExperts = 256, kHidden = 4096, kInter = 2048, kTopK = 6;
  const ExpertSet set = make_expert_set(format, kHidden, kInter, kExperts, 21);
  const RouterWeights router = make_router(kExperts, kHidden, 22);
  const DeviceMoe dev(set, router, kTopK, kScaling, kLimit);
  const StreamCopies copies(dev.weights);
  std::vector<float> bias42 = router.bias;
  bias42[42] += 100.0f;
  float* d_bias42 = device_copy(bias42);
  cuda::moe::MoeLayerWeights weights42 = copies.on(dev.weights);
  weights42.router_bias = d_bias42;
  const cuda::moe::MoeLayerWeights uniform = copies.on(dev.weights);
  const StreamCopies kmajor(dev.weights, true);  // the k-major chunk order: bitwise == kDecode
  cuda::moe::MoeLayerWeights kmajor42 = kmajor.on(dev.weights);
  kmajor42.router_bias = d_bias42;
  const cuda::moe::MoeLayerWeights kmajor_uniform = kmajor.on(dev.weights);
  for (bool skew : {false, true})
    for (int tokens : {1, 2, 7, 64}) {
      SCOPED_TRACE("tokens " + std::to_string(tokens) + (skew ? " skew" : ""));
      Case c;
      c.label = skew ? "stream_one_expert" : "stream_uniform";
      c.tokens = tokens;
      c.config = TileConfig::kDecodeStream;
      c.seed = 8000 + tokens;
      copies.into(c);
      if (skew) {
        c.bias_override = d_bias42;
        c.host_bias = &bias42;
      }
      const std::vector<float> first = check_case(set, dev, router, kTopK, c);
      const cuda::moe::MoeLayerWeights& w = skew ? weights42 : uniform;
      const std::vector<uint16_t> x = make_activations(tokens, kHidden, c.seed);
      const std::vector<float> second = run_forward(w, x, c, nullptr, nullptr).out;
      ASSERT_EQ(first.size(), second.size());
      EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0) << "rerun differs";
      Case decode = c;
      decode.config = TileConfig::kDecode;
      const std::vector<float> ref = run_forward(w, x, decode, nullptr, nullptr).out;
      EXPECT_EQ(std::memcmp(first.data(), ref.data(), first.size() * sizeof(float)), 0) << "differs from kDecode";
      const std::vector<float> km = run_forward(skew ? kmajor42 : kmajor_uniform, x, c, nullptr, nullptr).out;
      EXPECT_EQ(std::memcmp(km.data(), ref.data(), km.size() * sizeof(float)), 0) << "k-major order differs from kDecode";
      Case overlap = c;  // L2 launched with PDL (prefetches weights while L1 runs): CPU-checked and == kDecode
      overlap.overlap_l2 = true;
      overlap.label += "_pdl";
      const std::vector<float> pdl = check_case(set, dev, router, kTopK, overlap);
      EXPECT_EQ(std::memcmp(pdl.data(), ref.data(), pdl.size() * sizeof(float)), 0) << "overlap_l2 differs from kDecode";
      Case overlap_unfused = overlap;  // PDL L2 without the fused combine (combine kernel after it)
      overlap_unfused.fuse_combine = false;
      const std::vector<float> pdl_plain = run_forward(w, x, overlap_unfused, nullptr, nullptr).out;
      EXPECT_EQ(std::memcmp(pdl_plain.data(), ref.data(), pdl_plain.size() * sizeof(float)), 0)
          << "overlap_l2 + combine kernel differs from kDecode";
      // kDecodeStreamBulk (one TMA bulk copy per stage): == kDecode, both chunk orders, with PDL too
      for (int variant = 0; variant < 3; ++variant) {
        Case bulk = c;
        bulk.config = TileConfig::kDecodeStreamBulk;
        bulk.overlap_l2 = variant == 2;
        const cuda::moe::MoeLayerWeights& bw = variant == 1 ? (skew ? kmajor42 : kmajor_uniform) : w;
        const std::vector<float> got = run_forward(bw, x, bulk, nullptr, nullptr).out;
        EXPECT_EQ(std::memcmp(got.data(), ref.data(), got.size() * sizeof(float)), 0)
            << "kDecodeStreamBulk differs from kDecode (" << (variant == 0 ? "per-CTA order" : variant == 1 ? "k-major" : "PDL")
            << ")";
      }
      Case unfused = c;
      unfused.fuse_combine = false;
      const std::vector<float> plain = run_forward(w, x, unfused, nullptr, nullptr).out;
      EXPECT_EQ(std::memcmp(first.data(), plain.data(), first.size() * sizeof(float)), 0)
          << "fused combine differs from the combine kernel";
    }
  {  // no stream copy: a clear refusal, not a read through a null pointer
    Case c;
    c.tokens = 1;
    c.config = TileConfig::kDecodeStream;
    const cuda::moe::MoeWorkspace size = cuda::moe::moe_workspace(dev.weights, 1, c.config, nullptr);
    void* d_ws = nullptr;
    float* d_out = nullptr;
    int32_t* d_flag = nullptr;
    uint16_t* d_x = device_copy(make_activations(1, kHidden, 8100));
    DSV4_CUDA_OK(cudaMalloc(&d_ws, size.bytes));
    DSV4_CUDA_OK(cudaMalloc(&d_out, kHidden * sizeof(float)));
    DSV4_CUDA_OK(cudaMalloc(&d_flag, sizeof(int32_t)));
    DSV4_CUDA_OK(cudaMemset(d_flag, 0, sizeof(int32_t)));
    cuda::moe::MoeForwardParams p;
    p.weights = &dev.weights;  // w13_stream / w2_stream null
    p.x = d_x;
    p.tokens = 1;
    p.config = c.config;
    p.workspace = d_ws;
    p.out = d_out;
    p.error_flag = d_flag;
    EXPECT_EQ(cuda::moe::moe_forward(p), cudaErrorInvalidValue);
    DSV4_CUDA_OK(cudaDeviceSynchronize());
    cudaFree(d_ws);
    cudaFree(d_out);
    cudaFree(d_flag);
    cudaFree(d_x);
  }
  cudaFree(d_bias42);
}

TEST(MoeStream, FlashNvfp4) { run_flash_stream(ExpertFormat::kNVFP4); }
TEST(MoeStream, FlashMxfp4) { run_flash_stream(ExpertFormat::kMXFP4); }

TEST(MoeFlashSplitK, Nvfp4) { run_flash_splitk(ExpertFormat::kNVFP4); }
TEST(MoeFlashSplitK, Mxfp4) { run_flash_splitk(ExpertFormat::kMXFP4); }

// Two experts whose scores tie on BF16(x) but not on FP32 x: with x_f32 set the router
// must pick as the CPU reference (FP32 x), without it as BF16 x (tie -> lower index).
TEST(MoeRouting, RoutesFromF32Input) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  constexpr int kExperts = 16, kHidden = 128, kTopK = 2, kTokens = 3;
  RouterWeights router;
  router.weight.assign(static_cast<size_t>(kExperts) * kHidden, 0.0f);
  router.bias.assign(kExperts, 0.0f);
  router.weight[5 * kHidden + 0] = 1.0f;  // expert 5 reads x[0]
  router.weight[9 * kHidden + 1] = 1.0f;  // expert 9 reads x[1]
  std::vector<float> x_f32(static_cast<size_t>(kTokens) * kHidden, 0.0f);
  for (int t = 0; t < kTokens; ++t) {
    x_f32[t * kHidden + 0] = 1.0f;
    x_f32[t * kHidden + 1] = 1.0f + std::ldexp(1.0f, t == 2 ? -7 : -12 + 3 * t);  // 2^-12, 2^-9, 2^-7
  }
  const std::vector<uint16_t> x = to_bf16(x_f32);
  float* d_w = device_copy(router.weight);
  float* d_b = device_copy(router.bias);
  uint16_t* d_x = device_copy(x);
  float* d_xf = device_copy(x_f32);
  float* d_scores = nullptr;
  int32_t *d_ids = nullptr, *d_flag = nullptr;
  float* d_weights = nullptr;
  DSV4_CUDA_OK(cudaMalloc(&d_scores, kTokens * kExperts * sizeof(float)));
  DSV4_CUDA_OK(cudaMalloc(&d_ids, kTokens * kTopK * sizeof(int32_t)));
  DSV4_CUDA_OK(cudaMalloc(&d_weights, kTokens * kTopK * sizeof(float)));
  DSV4_CUDA_OK(cudaMalloc(&d_flag, sizeof(int32_t)));
  DSV4_CUDA_OK(cudaMemset(d_flag, 0, sizeof(int32_t)));
  for (bool split : {true, false})
  for (bool f32 : {true, false}) {
    SCOPED_TRACE(std::string(f32 ? "x_f32" : "bf16 x") + (split ? " split rows" : " one warp per row"));
    cuda::moe::RouterParams p;
    p.x = d_x;
    p.x_f32 = f32 ? d_xf : nullptr;
    p.gate_weight = d_w;
    p.gate_bias = d_b;
    p.tokens = kTokens;
    p.hidden = kHidden;
    p.experts = kExperts;
    p.top_k = kTopK;
    p.routed_scaling_factor = kScaling;
    p.scores = d_scores;
    p.topk_ids = d_ids;
    p.topk_weights = d_weights;
    p.error_flag = d_flag;
    p.split_rows = split;
    DSV4_CUDA_OK(cuda::moe::launch_router(p));
    DSV4_CUDA_OK(cudaDeviceSynchronize());
    std::vector<int32_t> ids(kTokens * kTopK);
    std::vector<float> weights(kTokens * kTopK);
    DSV4_CUDA_OK(cudaMemcpy(ids.data(), d_ids, ids.size() * 4, cudaMemcpyDeviceToHost));
    DSV4_CUDA_OK(cudaMemcpy(weights.data(), d_weights, weights.size() * 4, cudaMemcpyDeviceToHost));
    const std::vector<double> scores =
        f32 ? cpu_scores_f32(x_f32, router, kTokens, kHidden, kExperts) : cpu_scores(x, router, kTokens, kHidden, kExperts);
    for (int t = 0; t < kTokens; ++t) {
      // x[1] in BF16: 1 + 2^-12 and 1 + 2^-9 round to 1 (tie: expert 5 first); 1 + 2^-7 is exact.
      const bool nine_first = f32 || t == 2;
      EXPECT_EQ(ids[t * kTopK + 0], nine_first ? 9 : 5) << "token " << t;
      EXPECT_EQ(ids[t * kTopK + 1], nine_first ? 5 : 9) << "token " << t;
      const double s0 = scores[t * kExperts + ids[t * kTopK]], s1 = scores[t * kExperts + ids[t * kTopK + 1]];
      EXPECT_NEAR(weights[t * kTopK], s0 / (s0 + s1) * kScaling, 1e-6) << "token " << t;
      EXPECT_NEAR(weights[t * kTopK + 1], s1 / (s0 + s1) * kScaling, 1e-6) << "token " << t;
    }
  }
  int32_t flag = -1;
  DSV4_CUDA_OK(cudaMemcpy(&flag, d_flag, sizeof(int32_t), cudaMemcpyDeviceToHost));
  EXPECT_EQ(flag, 0);
  for (void* ptr : {static_cast<void*>(d_w), static_cast<void*>(d_b), static_cast<void*>(d_x), static_cast<void*>(d_xf),
                    static_cast<void*>(d_scores), static_cast<void*>(d_ids), static_cast<void*>(d_weights),
                    static_cast<void*>(d_flag)})
    cudaFree(ptr);
}

TEST(MoeRouting, HashErrorsAreReported) {
  if (!have_gpu()) GTEST_FAIL() << "no CUDA device";
  constexpr int kExperts = 16, kHidden = 256, kInter = 128, kTopK = 4, kVocab = 50;
  const ExpertSet set = make_expert_set(ExpertFormat::kNVFP4, kHidden, kInter, kExperts, 5);
  const RouterWeights router = make_router(kExperts, kHidden, 6);
  std::vector<int32_t> tid2eid(kVocab * kTopK);
  for (int i = 0; i < kVocab * kTopK; ++i) tid2eid[i] = i % kExperts;
  tid2eid[10 * kTopK + 2] = 300;  // token id 10 maps to an expert that does not exist
  const DeviceMoe dev(set, router, kTopK, kScaling, kLimit, &tid2eid, kVocab);
  const std::vector<uint16_t> x = make_activations(4, kHidden, 1);
  for (auto [ids, expected] : {std::pair<std::vector<int32_t>, int>{{1, 2, kVocab, 3}, cuda::moe::kErrorTokenIdOutOfRange},
                               {{1, -5, 2, 3}, cuda::moe::kErrorTokenIdOutOfRange},
                               {{1, 10, 2, 3}, cuda::moe::kErrorExpertOutOfRange},
                               {{1, 2, 3, 4}, 0}}) {
    Case c;
    c.tokens = 4;
    c.token_ids = ids;
    const CaseOutput out = run_forward(dev.weights, x, c, nullptr, nullptr);
    EXPECT_EQ(out.error_flag, expected);
    for (float v : out.out) ASSERT_TRUE(std::isfinite(v));  // dropped picks give finite rows
  }
}

}  // namespace
}  // namespace dsv4::moe_test

// Engine ops benchmark at V4-Flash width (hidden 4096, hc_mult 4 -> mix 24, 64 heads x
// head_dim 512, q_lora_rank 1024, o_groups 8 x o_lora_rank 1024, vocab 129280), BF16
// dense weights, split activations as the engine runs them.
// Method (shared/docs/benchmarking.md): median of CUDA-event times after warm-up, L2
// flushed (256 MB write) before every iteration; the HBM copy bandwidth is measured in
// the same process. Per op and token count:
//   ms        the op's launches (eager)
//   bytes     compulsory HBM traffic: every input read once, every output written once
//             (mHC: streams + fn + outputs; linear: weight + x + y)
//   GB/s      bytes / time, and the fraction of the copy bandwidth
// Ops: mhc.collapse_norm (fused, engine path), mhc.collapse+rms_norm (the straightforward
// kernels, the former engine path), mhc.head_norm, mhc.expand, rms_norm (q_residual
// shape [T, 1024]), norm_rope.q (T <= 64: rms_norm_rope fused vs rms_norm + rope on [T, 64, 512]), linear.<name> (gemv: the few-token GEMV, T <= 8, the engine's default
// there; split_stacked: 3 BF16 parts in one cuBLAS GEMM + the add; split_2gemm: hi, lo),
// linear.wo_a grouped (gemv; one strided-batched GEMM; the per-group loop), linear.wq_a+wkv
// (T <= 8: gemv_fused = one linear_same_input launch; gemv_x2; split_stacked_x2 = cuBLAS).
// Usage: bench_ops [--json PATH] [--tokens 1,8,64,8192]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/bench_util.h"
#include "cuda/common/device_types.h"
#include "cuda/ops/ops.h"
#include "dsv4/error.h"
#include "dsv4/weight_format.h"

namespace dsv4::ops_bench {
using cuda::DeviceMatrix;
namespace ops = cuda::ops;
namespace {

#define BENCH_CUDA_OK(call)                                                                            \
  do {                                                                                                 \
    const cudaError_t err_ = (call);                                                                   \
    DSV4_CHECK(err_ == cudaSuccess, "{}:{}: {} -> {}", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
  } while (0)

constexpr int64_t kHidden = 4096, kStreams = 4, kMix = (2 + kStreams) * kStreams, kFlat = kStreams * kHidden;
constexpr int64_t kHeads = 64, kHeadDim = 512, kQRank = 1024, kGroups = 8, kORank = 1024, kVocab = 129280;

// Device buffer of `count` T filled with a tiled random pattern (normal * sigma, or for
// uint16 BF16 bits of it). Owned by the pool (freed at exit).
std::vector<void*> g_allocations;
template <typename T>
T* device_random(int64_t count, float sigma, uint64_t seed) {
  T* ptr = nullptr;
  BENCH_CUDA_OK(cudaMalloc(&ptr, std::max<int64_t>(1, count) * sizeof(T)));
  g_allocations.push_back(ptr);
  constexpr int64_t kTile = 1 << 20;
  std::vector<T> tile(static_cast<size_t>(std::min(count, kTile)));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma > 0.0f ? sigma : 1.0f);  // stddev must be > 0
  for (T& v : tile) {
    const float f = sigma > 0.0f ? dist(rng) : 0.0f;
    if constexpr (sizeof(T) == 2) {
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      v = static_cast<T>(bits >> 16);  // truncated BF16
    } else {
      v = f;
    }
  }
  for (int64_t done = 0; done < count; done += kTile) {
    const int64_t n = std::min(kTile, count - done);
    BENCH_CUDA_OK(cudaMemcpy(ptr + done, tile.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  return ptr;
}

DeviceMatrix bf16_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  DeviceMatrix m;
  m.format = static_cast<int>(WeightFormat::kBF16);
  m.rows = rows;
  m.cols = cols;
  m.data = reinterpret_cast<const uint8_t*>(device_random<uint16_t>(rows * cols, 0.02f, seed));
  return m;
}

struct Reporter {
  FILE* json = nullptr;
  std::string device, date;
  double copy_gbps = 0;
  void figure(const char* op, const char* variant, int tokens, double ms, double bytes) {
    const double gbps = bytes / (ms * 1e-3) / 1e9;
    std::printf("%-26s %-14s T=%-5d %9.4f ms  %8.1f MB  %7.1f GB/s  %5.1f%% of copy\n", op, variant, tokens, ms,
                bytes / 1e6, gbps, 100.0 * gbps / copy_gbps);
    if (json)
      std::fprintf(json,
                   "{\"bench\":\"ops\",\"device\":\"%s\",\"date\":\"%s\",\"op\":\"%s\",\"variant\":\"%s\",\"tokens\":%d,"
                   "\"ms\":%.5f,\"bytes\":%.0f,\"gbps\":%.1f,\"copy_gbps\":%.1f,\"fraction_of_copy\":%.4f}\n",
                   device.c_str(), date.c_str(), op, variant, tokens, ms, bytes, gbps, copy_gbps, gbps / copy_gbps);
  }
};

int run(int argc, char** argv) {
  std::string json_path;
  std::vector<int> token_counts = {1, 8, 64, 8192};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--json") json_path = value;
    else if (key == "--tokens") token_counts = bench::parse_ints(value);
    else fail("bench_ops: unknown option {} (expected --json PATH, --tokens 1,8,64,8192)", key);
  }
  if (argc % 2 == 0) fail("bench_ops: option {} has no value", argv[argc - 1]);
  const int max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
  DSV4_CHECK(max_tokens >= 1, "bench_ops: token counts must be positive");

  bench::Timer timer(/*default_warmup=*/3);
  cudaDeviceProp prop{};
  BENCH_CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  Reporter rep;
  rep.json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "a");
  rep.device = prop.name;
  rep.date = bench::utc_now();
  rep.copy_gbps = bench::hbm_copy_gbps(timer);
  std::printf("device %s, %d SMs; HBM copy %.0f GB/s (read + write)\n", prop.name, prop.multiProcessorCount,
              rep.copy_gbps);
  if (rep.json)
    std::fprintf(rep.json, "{\"bench\":\"hbm_copy\",\"device\":\"%s\",\"date\":\"%s\",\"gbps\":%.1f}\n", prop.name,
                 rep.date.c_str(), rep.copy_gbps);

  // ---- mHC -------------------------------------------------------------------------------
  ops::HyperShape shape;
  shape.n = static_cast<int>(kStreams);
  shape.hidden = static_cast<int>(kHidden);
  float* fn = device_random<float>(kMix * kFlat, 0.01f, 1);
  float* base = device_random<float>(kMix, 0.5f, 2);
  std::vector<float> scales_host = {1.0f, 1.0f, 1.0f};
  float* scale = device_random<float>(3, 0.0f, 3);
  BENCH_CUDA_OK(cudaMemcpy(scale, scales_host.data(), 12, cudaMemcpyHostToDevice));
  float* norm_w = device_random<float>(kHidden, 0.1f, 4);
  float* streams = device_random<float>(static_cast<int64_t>(max_tokens) * kFlat, 1.0f, 5);
  float* collapsed = device_random<float>(static_cast<int64_t>(max_tokens) * kHidden, 1.0f, 6);
  float* post = device_random<float>(static_cast<int64_t>(max_tokens) * kStreams, 1.0f, 7);
  float* comb = device_random<float>(static_cast<int64_t>(max_tokens) * kStreams * kStreams, 1.0f, 8);
  const int64_t ws_floats = ops::hyper_workspace_floats(shape, max_tokens);
  float* workspace = device_random<float>(ws_floats, 0.0f, 9);
  const ops::HyperWeights hw{fn, base, scale};
  const ops::HyperWeights head_w{fn, base, scale};  // the head uses the first n rows of fn
  for (int T : token_counts) {
    const int iters = T >= 4096 ? 10 : 30;
    const double stream_bytes = 4.0 * T * kFlat, out_bytes = 4.0 * T * kHidden;
    const double collapse_bytes = stream_bytes + 4.0 * kMix * kFlat + out_bytes + 4.0 * T * (kStreams + 16);
    double ms = timer.median_ms(
        [&] {
          ops::hyper_collapse_norm(hw, shape, streams, T, norm_w, 1e-6f, workspace, ws_floats, collapsed, post, comb,
                                   nullptr);
        },
        iters);
    rep.figure("mhc.collapse_norm", "fused", T, ms, collapse_bytes);
    ms = timer.median_ms(
        [&] {
          ops::hyper_collapse(hw, shape, streams, T, collapsed, post, comb, nullptr);
          ops::rms_norm(collapsed, T, kHidden, norm_w, 1e-6f, nullptr);
        },
        T >= 4096 ? 3 : iters);
    rep.figure("mhc.collapse_norm", "straightforward", T, ms, collapse_bytes);
    ms = timer.median_ms(
        [&] {
          ops::hyper_head_norm(head_w, shape, streams, T, norm_w, 1e-6f, workspace, ws_floats, collapsed, nullptr);
        },
        iters);
    rep.figure("mhc.head_norm", "fused", T, ms, stream_bytes + 4.0 * kStreams * kFlat + out_bytes);
    // post/comb from the collapse above; expand writes the streams in place (values stay
    // bounded: comb is doubly stochastic, post <= 2 times a unit-scale output).
    ms = timer.median_ms([&] { ops::hyper_expand(post, comb, shape, collapsed, T, streams, nullptr); }, iters);
    rep.figure("mhc.expand", "fast", T, ms, 2.0 * stream_bytes + out_bytes);
    float* q_res = collapsed;  // [T, 1024] view of a big enough buffer
    ms = timer.median_ms([&] { ops::rms_norm(q_res, T, kQRank, norm_w, 1e-6f, nullptr); }, iters);
    rep.figure("rms_norm", "[T,1024]", T, ms, 2.0 * 4.0 * T * kQRank);
    if (T <= 64) {  // the engine's q path: per-head norm + RoPE, fused vs the two launches
      static float* q = device_random<float>(64 * kHeads * kHeadDim, 1.0f, 17);
      static float* inv_freq = device_random<float>(32, 0.1f, 18);
      static int32_t* positions = device_random<int32_t>(64, 0.0f, 19);
      const double q_bytes = 2.0 * 4.0 * T * kHeads * kHeadDim;
      ms = timer.median_ms(
          [&] {
            ops::rms_norm_rope(q, T, kHeads, kHeadDim, nullptr, 1e-6f, 64, inv_freq, positions, nullptr);
          },
          iters);
      rep.figure("norm_rope.q", "fused", T, ms, q_bytes);
      ms = timer.median_ms(
          [&] {
            ops::rms_norm(q, T * kHeads, kHeadDim, nullptr, 1e-6f, nullptr);
            ops::rope(q, T, kHeads, kHeadDim, 64, inv_freq, positions, false, nullptr);
          },
          iters);
      rep.figure("norm_rope.q", "separate", T, ms, q_bytes);
    }
  }

  // ---- linear ----------------------------------------------------------------------------
  cudaStream_t stream = nullptr;  // the legacy default stream: the timer's events see every launch
  cublasHandle_t cublas = nullptr;
  DSV4_CHECK(cublasCreate(&cublas) == CUBLAS_STATUS_SUCCESS, "cublasCreate failed");
  void* cublas_ws = device_random<uint8_t>(32 << 20, 0.0f, 10);
  cublasSetStream(cublas, stream);
  cublasSetWorkspace(cublas, cublas_ws, 32 << 20);
  ops::LinearContext ctx;
  ctx.cublas = cublas;
  ctx.stream = stream;
  ctx.split_activations = true;
  const int64_t widest_cols = kHeads * kHeadDim;  // the grouped out-proj converts all heads
  ctx.act_capacity = 2 * static_cast<int64_t>(max_tokens) * widest_cols;
  ctx.act_bf16 = device_random<uint16_t>(ctx.act_capacity, 0.0f, 11);
  const int64_t split_rows = std::max<int64_t>(kVocab, kHeads * kHeadDim);
  // Room for 3 stacked parts (the engine's decode path: x to ~2^-26).
  const int64_t split_capacity = 3 * std::min<int64_t>(max_tokens, ops::kStackedSplitMaxTokens) * split_rows;
  float* split_out = device_random<float>(split_capacity, 0.0f, 12);
  struct Shape {
    const char* name;
    int64_t rows, cols;
  };
  const Shape shapes[] = {{"wq_a", kQRank, kHidden},          {"wq_b", kHeads * kHeadDim, kQRank},
                          {"wkv", kHeadDim, kHidden},         {"wo_b", kHidden, kGroups * kORank},
                          {"head", kVocab, kHidden}};
  const int64_t max_x = std::max<int64_t>(kHeads * kHeadDim, kGroups * kORank);
  float* x = device_random<float>(static_cast<int64_t>(max_tokens) * max_x, 1.0f, 13);
  float* y = device_random<float>(static_cast<int64_t>(max_tokens) * std::max<int64_t>(kHeads * kHeadDim, kHidden),
                                  0.0f, 14);
  float* y_head = device_random<float>(static_cast<int64_t>(std::min(max_tokens, 64)) * kVocab, 0.0f, 15);
  uint64_t seed = 100;
  for (const Shape& s : shapes) {
    const DeviceMatrix w = bf16_matrix(s.rows, s.cols, seed++);
    for (int T : token_counts) {
      if (s.rows == kVocab && T > 64) continue;  // the engine runs the head on <= 256 rows; 8192 would be ~1 s
      float* out = s.rows == kVocab ? y_head : y;
      const double bytes = 2.0 * s.rows * s.cols + 4.0 * T * (s.cols + s.rows);
      const int iters = T >= 4096 ? 5 : 20;
      if (T <= ops::kSmallGemvMaxTokens) {  // the few-token GEMV (engine default at these T)
        ctx.small_gemv = true;
        ctx.split_out = split_out;
        ctx.split_out_capacity = split_capacity;
        const double ms = timer.median_ms([&] { ops::linear(ctx, w, x, s.cols, T, out, s.rows); }, iters);
        rep.figure((std::string("linear.") + s.name).c_str(), "gemv", T, ms, bytes);
      }
      ctx.small_gemv = false;  // the cuBLAS paths (stacked: 3 parts in one GEMM + add; 2gemm: hi, lo)
      for (bool stacked : {true, false}) {
        if (stacked && T > ops::kStackedSplitMaxTokens) continue;
        ctx.split_out = stacked ? split_out : nullptr;
        ctx.split_out_capacity = stacked ? split_capacity : 0;
        const double ms = timer.median_ms(
            [&] { ops::linear(ctx, w, x, s.cols, T, out, s.rows); },
            iters);
        const std::string op = std::string("linear.") + s.name;
        rep.figure(op.c_str(), stacked ? "split_stacked" : "split_2gemm", T, ms, bytes);
      }
    }
  }
  {  // wq_a + wkv on the same x: one GEMV launch (linear_same_input) vs two linear() calls
    const DeviceMatrix wq_a = bf16_matrix(kQRank, kHidden, seed++), wkv = bf16_matrix(kHeadDim, kHidden, seed++);
    float* y_kv = device_random<float>(static_cast<int64_t>(ops::kSmallGemvMaxTokens) * kHeadDim, 0.0f, 16);
    const ops::LinearOutput outputs[] = {{&wq_a, y, kQRank}, {&wkv, y_kv, kHeadDim}};
    for (int T : token_counts) {
      if (T > ops::kSmallGemvMaxTokens) continue;
      const double bytes = 2.0 * (kQRank + kHeadDim) * kHidden + 4.0 * T * (kHidden + kQRank + kHeadDim);
      ctx.small_gemv = true;
      ctx.split_out = split_out;
      ctx.split_out_capacity = split_capacity;
      double ms = timer.median_ms([&] { ops::linear_same_input(ctx, outputs, 2, x, kHidden, T); }, 20);
      rep.figure("linear.wq_a+wkv", "gemv_fused", T, ms, bytes);
      ms = timer.median_ms(
          [&] {
            ops::linear(ctx, wq_a, x, kHidden, T, y, kQRank);
            ops::linear(ctx, wkv, x, kHidden, T, y_kv, kHeadDim);
          },
          20);
      rep.figure("linear.wq_a+wkv", "gemv_x2", T, ms, bytes);
      ctx.small_gemv = false;
      ms = timer.median_ms(
          [&] {
            ops::linear(ctx, wq_a, x, kHidden, T, y, kQRank);
            ops::linear(ctx, wkv, x, kHidden, T, y_kv, kHeadDim);
          },
          20);
      rep.figure("linear.wq_a+wkv", "split_stacked_x2", T, ms, bytes);
    }
  }
  {
    const DeviceMatrix wo_a = bf16_matrix(kGroups * kORank, kHeads * kHeadDim / kGroups, seed++);
    const int64_t gw = kHeads * kHeadDim / kGroups;
    for (int T : token_counts) {
      const double bytes = 2.0 * wo_a.rows * wo_a.cols + 4.0 * T * (kHeads * kHeadDim + kGroups * kORank);
      const int iters = T >= 4096 ? 5 : 20;
      ctx.split_out = split_out;
      ctx.split_out_capacity = split_capacity;
      if (T <= ops::kSmallGemvMaxTokens) {
        ctx.small_gemv = true;
        const double gemv_ms = timer.median_ms(
            [&] { ops::linear_grouped(ctx, wo_a, kGroups, x, kHeads * kHeadDim, T, y, kGroups * kORank); }, iters);
        rep.figure("linear.wo_a", "gemv", T, gemv_ms, bytes);
      }
      ctx.small_gemv = false;
      double ms = timer.median_ms(
          [&] {
            ops::linear_grouped(ctx, wo_a, kGroups, x, kHeads * kHeadDim, T, y, kGroups * kORank);
          },
          iters);
      rep.figure("linear.wo_a", "grouped_batched", T, ms, bytes);
      ms = timer.median_ms(
          [&] {
            for (int64_t g = 0; g < kGroups; ++g)
              ops::linear(ctx, wo_a, x + g * gw, kHeads * kHeadDim, T, y + g * kORank, kGroups * kORank, g * kORank,
                          kORank);
          },
          iters);
      rep.figure("linear.wo_a", "group_loop", T, ms, bytes);
    }
  }
  BENCH_CUDA_OK(cudaDeviceSynchronize());
  cublasDestroy(cublas);
  for (void* p : g_allocations) cudaFree(p);
  if (rep.json) std::fclose(rep.json);
  return 0;
}

}  // namespace
}  // namespace dsv4::ops_bench

int main(int argc, char** argv) {
  try {
    return dsv4::ops_bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ops: %s\n", e.what());
    return 1;
  }
}

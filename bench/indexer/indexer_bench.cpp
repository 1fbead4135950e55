// Lightning indexer + top-k benchmark, V4-Flash shape (64 heads x 128, rate 4, top-k 512).
// Method (shared/docs/benchmarking.md): median of CUDA-event times after warm-up, L2
// flushed (256 MB write) before every iteration. Limits measured in the same process:
// HBM copy bandwidth and a cuBLAS BF16 GEMM (8192^3, FP32 accumulate) as the tensor-core peak.
// Cases: context 4096 / 32768 tokens (1024 / 8192 compressed keys) for
//   prefill  one sequence, a chunk of --chunk tokens ending at the context (causal: the
//            chunk's tokens see (p + 1) / 4 keys each)
//   decode   batch 1 / 16 / 64, one token per sequence (own slot), each at the context end
// Each case runs once per tensor-core score kernel (--kernels, default mma,wgmma:
// IndexerParams::score_kernel kMma = indexer_mma.cu, kWgmma = indexer_wgmma.cu); the JSON
// line's "kernel" names it, the other fields are the same for both.
// Figures per case and kernel:
//   ms             attention::indexer_topk (scores + top-k) with that score kernel
//   scores_ms      the tensor-core score kernel alone; scores_tflops / scores_of_peak its
//                  GEMM rate, scores_key_gbps / scores_of_hbm its key stream (decode's limit)
//   picks_vs_mma   (wgmma rows) tokens whose picks differ from the mma.sync run's (near-ties
//                  only; tests/cuda/attention/indexer_test.cpp asserts that)
//   oracle_ms      the FP32 path (IndexerParams::fp32_scores: the issue-4 kernels)
//   tflops         scoring GEMM FLOPs 2 * 64 * 128 * sum(visible) / ms, and of_peak vs cuBLAS
//   key_gbps       FP32 key bytes read once per distinct sequence / ms (decode is bound by it)
//   bounded_ms     indexer_topk with the engine's bounded workspace (scores_floats =
//                  indexer_workspace_floats(tokens, keys): <= 64 MiB, >= 64 token rows; the
//                  batch runs in token chunks when the whole [tokens, keys] matrix is larger),
//                  bounded_tflops its scoring-GEMM rate, ws_bytes_bounded vs ws_bytes_whole
//   chunked_ms     forced chunks of --chunk-rows token rows (scores_floats = rows * keys), the
//                  cost of chunking where the batch has more rows (prefill), chunked_tflops
//   ws_bytes_1m_*  the workspace sizes for an engine with 1M-token caches (262144 keys per
//                  slot): arithmetic from indexer_workspace_floats, not run
// Usage: bench_indexer [--json PATH] [--contexts 4096,32768] [--chunk 2048] [--batches 1,16,64]
//                      [--chunk-rows 256] [--kernels mma,wgmma]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "common/bench_util.h"
#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/common/cuda_check.h"

namespace dsv4::indexer_bench {
namespace {

constexpr int kHeads = 64, kDim = 128, kRate = 4, kTopK = 512;

template <typename T>
T* device_alloc(size_t count) {
  T* ptr = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(1, count) * sizeof(T)));
  return ptr;
}

template <typename T>
T* device_copy(const std::vector<T>& host) {
  T* ptr = device_alloc<T>(host.size());
  DSV4_CUDA_CHECK(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return ptr;
}

// Uniform [-1, 1) floats from a splitmix64 stream, filled on the host.
std::vector<float> random_vector(size_t count, uint64_t seed) {
  std::vector<float> out(count);
  uint64_t state = seed;
  for (float& v : out) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    v = -1.0f + 2.0f * static_cast<float>((z >> 40) * 0x1.0p-24);
  }
  return out;
}

int run(int argc, char** argv) {
  std::string json_path;
  std::vector<int> contexts = {4096, 32768}, batches = {1, 16, 64};
  int chunk = 2048, chunk_rows = 256;
  using ScoreKernel = cuda::attention::IndexerParams::ScoreKernel;
  std::vector<ScoreKernel> kernels = {ScoreKernel::kMma, ScoreKernel::kWgmma};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--json") json_path = value;
    else if (key == "--contexts") contexts = bench::parse_ints(value);
    else if (key == "--chunk") chunk = std::stoi(value);
    else if (key == "--batches") batches = bench::parse_ints(value);
    else if (key == "--chunk-rows") chunk_rows = std::stoi(value);
    else if (key == "--kernels") {
      kernels.clear();
      std::stringstream ss(value);
      for (std::string item; std::getline(ss, item, ',');) {
        if (item == "mma") kernels.push_back(ScoreKernel::kMma);
        else if (item == "wgmma") kernels.push_back(ScoreKernel::kWgmma);
        else {
          std::fprintf(stderr, "bench_indexer: --kernels item '%s' (want mma and/or wgmma, comma-separated)\n",
                       item.c_str());
          return 2;
        }
      }
    } else {
      std::fprintf(stderr,
                   "bench_indexer: unknown flag %s (want --json, --contexts, --chunk, --batches, --chunk-rows, "
                   "--kernels)\n",
                   key.c_str());
      return 2;
    }
  }
  if (chunk_rows < 1) {
    std::fprintf(stderr, "bench_indexer: --chunk-rows %d must be >= 1\n", chunk_rows);
    return 2;
  }
  FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "a");
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::string date = bench::utc_now();
  bench::Timer timer(/*default_warmup=*/2);
  const double copy_gbps = bench::hbm_copy_gbps(timer);
  const double peak_tflops = bench::cublas_bf16_tflops(timer, 8192, /*iters=*/10);
  std::printf("device %s, %d SMs; HBM copy %.0f GB/s; cuBLAS BF16 GEMM 8192^3 %.0f TFLOP/s\n", prop.name,
              prop.multiProcessorCount, copy_gbps, peak_tflops);
  if (json) {
    std::fprintf(json, "{\"bench\":\"hbm_copy\",\"device\":\"%s\",\"date\":\"%s\",\"gbps\":%.1f}\n", prop.name,
                 date.c_str(), copy_gbps);
    std::fprintf(json, "{\"bench\":\"cublas_bf16_gemm\",\"device\":\"%s\",\"date\":\"%s\",\"n\":8192,\"tflops\":%.1f}\n",
                 prop.name, date.c_str(), peak_tflops);
  }

  std::printf("%-8s %-6s %7s %6s %9s %10s %10s %8s %8s %9s %8s %10s %10s %9s %9s %6s\n", "mode", "kernel", "context",
              "tokens", "ms", "scores_ms", "oracle_ms", "sc_TF/s", "of_peak", "sc_GB/s", "of_hbm", "bounded_ms",
              "chunked_ms", "ws_MiB", "whole_MiB", "picks");
  for (int context : contexts) {
    std::vector<std::pair<std::string, int>> modes = {{"prefill", chunk}};
    for (int b : batches) modes.push_back({"decode", b});
    for (const auto& [mode, count] : modes) {
      const bool prefill = mode == "prefill";
      const int tokens = count;
      const int sequences = prefill ? 1 : count;
      const int max_entries = context / kRate;
      std::vector<int32_t> positions(tokens), slots(tokens), first_rows(tokens), ids(tokens, 0);
      double visible_sum = 0;
      for (int t = 0; t < tokens; ++t) {
        positions[t] = prefill ? context - tokens + t : context - 1;
        slots[t] = prefill ? 0 : t;
        first_rows[t] = prefill ? 0 : t;
        visible_sum += std::min((positions[t] + 1) / kRate, max_entries);
      }
      const std::vector<float> entries = random_vector(static_cast<size_t>(sequences) * max_entries * kDim, 7);
      const std::vector<float> q = random_vector(static_cast<size_t>(tokens) * kHeads * kDim, 8);
      const std::vector<float> weights = random_vector(static_cast<size_t>(tokens) * kHeads, 9);
      float* d_entries = device_copy(entries);
      float* d_q = device_copy(q);
      float* d_weights = device_copy(weights);
      int32_t* d_positions = device_copy(positions);
      int32_t* d_slots = device_copy(slots);
      int32_t* d_first = device_copy(first_rows);
      int32_t* d_ids = device_copy(ids);
      float* d_scores = device_alloc<float>(static_cast<size_t>(tokens) * max_entries);
      int32_t* d_selected = device_alloc<int32_t>(static_cast<size_t>(tokens) * kTopK);

      cuda::attention::IndexerParams p;
      p.q = d_q;
      p.head_weights = d_weights;
      p.entries = d_entries;
      p.max_entries = max_entries;
      p.heads = kHeads;
      p.dim = kDim;
      p.rate = kRate;
      p.top_k = kTopK;
      p.batch.tokens = tokens;
      p.batch.token_ids = d_ids;
      p.batch.positions = d_positions;
      p.batch.slots = d_slots;
      p.batch.first_rows = d_first;
      p.scores = d_scores;
      p.selected = d_selected;
      const int iters = prefill ? 10 : 30;
      cuda::attention::IndexerParams oracle = p;
      oracle.fp32_scores = true;
      const double oracle_ms = timer.median_ms([&] { cuda::attention::indexer_topk(oracle, nullptr); }, prefill ? 3 : 10, 1);
      std::vector<int32_t> mma_picks;  // the mma.sync run's picks (for picks_vs_mma)
      for (const ScoreKernel kernel : kernels) {
        const bool wgmma = kernel == ScoreKernel::kWgmma;
        const char* kernel_name = wgmma ? "wgmma" : "mma";
        p.score_kernel = kernel;
        const double ms = timer.median_ms([&] { cuda::attention::indexer_topk(p, nullptr); }, iters);
        const double scores_ms = timer.median_ms(
            [&] {
              DSV4_CUDA_CHECK(wgmma ? cuda::attention::detail::launch_indexer_scores_wgmma(p, nullptr)
                                    : cuda::attention::detail::launch_indexer_scores_mma(p, nullptr));
            },
            iters);
        // Bounded workspace (the engine's sizing) and forced chunks, each in its own buffer of
        // exactly that size (a chunking bug writing past it shows under compute-sanitizer).
        const int64_t bounded_floats = cuda::attention::indexer_workspace_floats(tokens, max_entries);
        const int64_t chunk_floats =
            std::min<int64_t>(static_cast<int64_t>(chunk_rows), tokens) * static_cast<int64_t>(max_entries);
        float* d_bounded = device_alloc<float>(static_cast<size_t>(bounded_floats));
        float* d_chunked = device_alloc<float>(static_cast<size_t>(chunk_floats));
        cuda::attention::IndexerParams bounded = p;
        bounded.scores = d_bounded;
        bounded.scores_floats = bounded_floats;
        const double bounded_ms = timer.median_ms([&] { cuda::attention::indexer_topk(bounded, nullptr); }, iters);
        cuda::attention::IndexerParams chunked = p;
        chunked.scores = d_chunked;
        chunked.scores_floats = chunk_floats;
        const double chunked_ms = timer.median_ms([&] { cuda::attention::indexer_topk(chunked, nullptr); }, iters);
        DSV4_CUDA_CHECK(cudaDeviceSynchronize());
        // The three runs must pick the same entries (same inputs).
        int picks_vs_mma = -1;  // -1: not compared (the mma row itself, or no mma run)
        {
          std::vector<int32_t> whole_pick(static_cast<size_t>(tokens) * kTopK), other(whole_pick.size());
          cuda::attention::indexer_topk(p, nullptr);
          DSV4_CUDA_CHECK(cudaMemcpy(whole_pick.data(), d_selected, whole_pick.size() * 4, cudaMemcpyDeviceToHost));
          if (!wgmma) mma_picks = whole_pick;
          else if (!mma_picks.empty()) {
            picks_vs_mma = 0;
            for (int t = 0; t < tokens; ++t)
              picks_vs_mma += !std::equal(whole_pick.begin() + static_cast<size_t>(t) * kTopK,
                                          whole_pick.begin() + static_cast<size_t>(t + 1) * kTopK,
                                          mma_picks.begin() + static_cast<size_t>(t) * kTopK);
          }
          for (const cuda::attention::IndexerParams* run : {&bounded, &chunked}) {
            cuda::attention::indexer_topk(*run, nullptr);
            DSV4_CUDA_CHECK(cudaMemcpy(other.data(), d_selected, other.size() * 4, cudaMemcpyDeviceToHost));
            if (other != whole_pick)
              std::fprintf(stderr, "bench_indexer: %s %s context %d: %s picks differ from the whole-batch run\n",
                           mode.c_str(), kernel_name, context, run == &bounded ? "bounded-workspace" : "chunked");
          }
        }
        cudaFree(d_bounded);
        cudaFree(d_chunked);
        const double ws_whole = static_cast<double>(tokens) * max_entries * sizeof(float);
        const double ws_bounded = static_cast<double>(bounded_floats) * sizeof(float);
        const double ws_chunked = static_cast<double>(chunk_floats) * sizeof(float);
        constexpr int kEngineKeys1M = 262144;
        const double ws_1m_whole = static_cast<double>(tokens) * kEngineKeys1M * sizeof(float);
        const double ws_1m_bounded =
            static_cast<double>(cuda::attention::indexer_workspace_floats(tokens, kEngineKeys1M)) * sizeof(float);

        const double flops = 2.0 * kHeads * kDim * visible_sum;
        const double tflops = flops / (ms * 1e-3) / 1e12;
        const double scores_tflops = flops / (scores_ms * 1e-3) / 1e12;
        const double key_bytes = static_cast<double>(sequences) * max_entries * kDim * sizeof(float);
        const double key_gbps = key_bytes / (ms * 1e-3) / 1e9;
        const double scores_key_gbps = key_bytes / (scores_ms * 1e-3) / 1e9;
        const double bounded_tflops = flops / (bounded_ms * 1e-3) / 1e12;
        const double chunked_tflops = flops / (chunked_ms * 1e-3) / 1e12;
        std::printf("%-8s %-6s %7d %6d %9.4f %10.4f %10.4f %8.1f %7.1f%% %9.0f %7.1f%% %10.4f %10.4f %9.2f %9.2f %6d\n",
                    mode.c_str(), kernel_name, context, tokens, ms, scores_ms, oracle_ms, scores_tflops,
                    100.0 * scores_tflops / peak_tflops, scores_key_gbps, 100.0 * scores_key_gbps / copy_gbps,
                    bounded_ms, chunked_ms, ws_bounded / (1 << 20), ws_whole / (1 << 20), picks_vs_mma);
        if (json)
          std::fprintf(json,
                       "{\"bench\":\"indexer\",\"device\":\"%s\",\"date\":\"%s\",\"mode\":\"%s\",\"kernel\":\"%s\",\"context\":%d,"
                       "\"tokens\":%d,\"keys\":%d,\"heads\":%d,\"dim\":%d,\"top_k\":%d,\"ms\":%.5f,"
                       "\"scores_ms\":%.5f,\"oracle_ms\":%.5f,\"gemm_flops\":%.4e,\"tflops\":%.2f,"
                       "\"scores_tflops\":%.2f,\"peak_tflops\":%.1f,\"of_peak\":%.4f,\"key_bytes\":%.4e,"
                       "\"key_gbps\":%.1f,\"hbm_copy_gbps\":%.1f,\"of_hbm\":%.4f,\"speedup_vs_oracle\":%.2f,"
                       "\"bounded_ms\":%.5f,\"bounded_tflops\":%.2f,\"bounded_of_peak\":%.4f,\"chunk_rows\":%d,"
                       "\"chunked_ms\":%.5f,\"chunked_tflops\":%.2f,\"chunked_of_peak\":%.4f,"
                       "\"ws_bytes_whole\":%.0f,\"ws_bytes_bounded\":%.0f,\"ws_bytes_chunked\":%.0f,"
                       "\"ws_bytes_1m_whole\":%.0f,\"ws_bytes_1m_bounded\":%.0f,\"scores_of_peak\":%.4f,"
                       "\"scores_key_gbps\":%.1f,\"scores_of_hbm\":%.4f,\"picks_vs_mma\":%d}\n",
                       prop.name, date.c_str(), mode.c_str(), kernel_name, context, tokens, max_entries, kHeads, kDim, kTopK, ms,
                       scores_ms, oracle_ms, flops, tflops, scores_tflops, peak_tflops, tflops / peak_tflops, key_bytes,
                       key_gbps, copy_gbps, key_gbps / copy_gbps, oracle_ms / ms, bounded_ms, bounded_tflops,
                       bounded_tflops / peak_tflops, chunk_rows, chunked_ms, chunked_tflops, chunked_tflops / peak_tflops,
                       ws_whole, ws_bounded, ws_chunked, ws_1m_whole, ws_1m_bounded, scores_tflops / peak_tflops,
                       scores_key_gbps, scores_key_gbps / copy_gbps, picks_vs_mma);
      }  // kernels
      for (void* ptr : std::vector<void*>{d_entries, d_q, d_weights, d_positions, d_slots, d_first, d_ids, d_scores,
                                          d_selected})
        cudaFree(ptr);
    }
  }
  if (json) std::fclose(json);
  return 0;
}

}  // namespace
}  // namespace dsv4::indexer_bench

int main(int argc, char** argv) {
  try {
    return dsv4::indexer_bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_indexer: %s\n", e.what());
    return 1;
  }
}

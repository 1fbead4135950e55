// Sparse MQA attention benchmark (attention::sparse_attention), V4-Flash shapes:
// 64 heads, head_dim 512, sliding window 128, CSA top-k 512 at compress rate 4, HCA at
// rate 128. Method (shared/docs/benchmarking.md): median of CUDA-event times after
// warm-up, L2 flushed (256 MB write) before every iteration; the limits are measured in
// the same process: HBM copy bandwidth (1 GiB device-to-device) and the BF16 GEMM peak
// (cuBLAS 8192^3).
// Figures:
//   prefill (one sequence, positions 0..tokens-1, CSA or HCA layer): ms, attended keys
//     (window rows + valid compressed entries, summed over tokens), useful TFLOP/s =
//     4 * 64 * 512 * attended / time, and its fraction of the GEMM peak; kernels "wgmma"
//     (Kernel::kWgmma; kAuto until the 2026-12-01 run), "sharep" (Kernel::kWgmmaShareP,
//     kAuto now: S computed once, P through shared memory), "pipe"
//     (Kernel::kWgmmaPipelined: share-P with a producer warpgroup and a 3-stage ring of
//     48-key tiles), "pingpong" (Kernel::kWgmmaPingPong: the pipelined kernel's ring with
//     the two consumer warpgroups scoring alternate tiles; opt-in) and at 8k the FP32
//     kernel ("simple") for comparison.
//   decode (batch sequences of `context` tokens each, one token each, CSA or HCA):
//     ms, bytes = KV rows read (attended x 1 KiB) + q and out (FP32), GB/s and the
//     fraction of the HBM copy bandwidth, and the useful TFLOP/s (as prefill; at batch >=
//     16 decode is near the ridge: 128 FLOP per KV byte) with its fraction of the GEMM
//     peak; kWgmma with split-KV auto and off, kWgmmaShareP with split-KV auto ("sharep"),
//     kWgmmaPipelined with split-KV auto ("pipe"), the same over the FP8 KV cache
//     ("pipe_fp8": SparseAttentionParams::kv_fp8, 584-byte rows, so bytes = attended x 584
//     + q and out), kWgmmaPingPong with split-KV auto ("pingpong", and "pingpong_fp8" over
//     the FP8 cache) and the FP32 kernel ("simple"). Prefill has the two _fp8 rows too.
//   "pingpong_qbf16" / "pingpong_fp8_qbf16" (prefill and decode): kWgmmaPingPong given
//     SparseAttentionParams::q_bf16 only (q null: the producer copies the BF16 q into the
//     Q panel); decode bytes count q as BF16 there. JSON "q": "fp32" or "bf16".
//   "persist_qbf16" / "persist_fp8_qbf16" (prefill and decode; JSON kernel "persist"):
//     the same with Kernel::kWgmmaPingPongPersistent (min(items, SMs) CTAs looping over
//     the (token, head group, split) items; decode split-KV auto).
//   "localp_qbf16" / "localp_fp8_qbf16" (prefill and decode; JSON kernel: the row name in
//     prefill, "localp_qbf16" in decode, "kv_cache" telling the rows):
//     Kernel::kWgmmaLocalP (persistent, 64-key tiles in pairs, P V from the register-local
//     P), q_bf16 only; decode split-KV auto and forced 4 / 8 ("localp_qbf16_s4", "_s8").
//   "persist_qbf16_obf16" / "localp_qbf16_obf16" (prefill): those kernels writing the BF16 out
//     (SparseAttentionParams::out_bf16, half the output bytes). JSON "out": "fp32" / "bf16".
// Usage: bench_attention [--json PATH] [--quick 1] [--only REGEX]  (--quick: 8k prefill, contexts 4k/32k
// only; --only: the rows whose key "prefill csa persist_qbf16 8192" / "decode hca pingpong_qbf16_s1 64
// 4096" matches, e.g. one row under ncu)
#include <cuda_runtime.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "common/bench_util.h"
#include "cuda/attention/attention.h"
#include "cuda/attention/kv_fp8.h"
#include "cuda/common/cuda_check.h"

namespace dsv4::attention_bench {
namespace {

using cuda::attention::CompressedKeys;
using cuda::attention::SparseAttentionParams;
constexpr int kHeads = 64, kDim = 512, kWindow = 128, kTopK = 512, kCsaRate = 4, kHcaRate = 128;

template <typename T>
T* device_alloc(size_t count, int byte = 0x3c) {  // 0x3c3c: BF16 0.0115, FP32 0.0115
  T* p = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
  DSV4_CUDA_CHECK(cudaMemset(p, byte, std::max<size_t>(count, 1) * sizeof(T)));
  return p;
}
template <typename T>
T* device_copy(const std::vector<T>& host) {
  T* p = device_alloc<T>(host.size());
  DSV4_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

// One benchmark problem: its device arrays and the attended key count.
struct Problem {
  SparseAttentionParams p;
  int64_t attended = 0;
  // The same caches in the FP8 layout (kv_fp8.h): bytes 0x3c everywhere, i.e. E4M3 1.5 with
  // block scale 2^(60 - 127) and BF16 RoPE channels 0.0115 (finite; timing does not depend
  // on the values).
  const uint16_t* window_fp8 = nullptr;
  const uint16_t* entries_fp8 = nullptr;
  // q as BF16 bits (0x3c3c: 0.0115, what the FP32 q's 0x3c bytes round to) for q_bf16.
  const float* q_fp32 = nullptr;
  const uint16_t* q_bf16 = nullptr;
  // Give the kernel q_bf16 only (true) or the FP32 q only (false).
  void use_q_bf16(bool on) {
    p.q = on ? nullptr : q_fp32;
    p.q_bf16 = on ? q_bf16 : nullptr;
  }
  // Point p at the FP8 (true) or BF16 (false) caches.
  void use_fp8(bool on, const uint16_t* window_bf16, const uint16_t* entries_bf16) {
    p.kv_fp8 = on;
    p.window_kv = on ? window_fp8 : window_bf16;
    p.entries = on ? entries_fp8 : entries_bf16;
  }
  // The FP32 out or a BF16 out (out_bf16).
  float* out_fp32 = nullptr;
  uint16_t* out_bf16 = nullptr;
  void use_out_bf16(bool bf16) {
    p.out = bf16 ? nullptr : out_fp32;
    p.out_bf16 = bf16 ? out_bf16 : nullptr;
  }
  // CSA: the picks, and the same list with every pick -1 (rows zero-filled, never read:
  // "_nogather" decode rows time the kernel without the compressed rows' gathers).
  const int32_t* selected = nullptr;
  const int32_t* selected_none = nullptr;
  std::vector<void*> owned;
  ~Problem() {
    for (void* ptr : owned) cudaFree(ptr);
  }
};

// positions[t] / slots[t]: the tokens; each slot's cache sized for its last position.
void build(Problem& pr, bool csa, const std::vector<int>& positions, const std::vector<int>& slots, int ring_rows,
           std::mt19937& rng) {
  const int tokens = static_cast<int>(positions.size());
  const int n_slots = *std::max_element(slots.begin(), slots.end()) + 1;
  const int last = *std::max_element(positions.begin(), positions.end());
  const int rate = csa ? kCsaRate : kHcaRate;
  const int max_entries = std::max(1, (last + 1) / rate);
  SparseAttentionParams& p = pr.p;
  p.heads = kHeads;
  p.head_dim = kDim;
  p.ring_rows = ring_rows;
  p.window = kWindow;
  p.compressed = csa ? CompressedKeys::kSelected : CompressedKeys::kAllVisible;
  p.max_entries = max_entries;
  p.rate = rate;
  p.top_k = kTopK;
  p.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  auto keep = [&](auto* ptr) {
    pr.owned.push_back(ptr);
    return ptr;
  };
  float* q = keep(device_alloc<float>(static_cast<size_t>(tokens) * kHeads * kDim));
  p.q = q;
  pr.q_fp32 = q;
  pr.q_bf16 = keep(device_alloc<uint16_t>(static_cast<size_t>(tokens) * kHeads * kDim));
  p.out = pr.out_fp32 = keep(device_alloc<float>(static_cast<size_t>(tokens) * kHeads * kDim));
  pr.out_bf16 = keep(device_alloc<uint16_t>(static_cast<size_t>(tokens) * kHeads * kDim));
  p.window_kv = keep(device_alloc<uint16_t>(static_cast<size_t>(n_slots) * ring_rows * kDim));
  p.entries = keep(device_alloc<uint16_t>(static_cast<size_t>(n_slots) * max_entries * kDim));
  constexpr size_t kFp8Row = cuda::attention::kKvFp8RowBytes;
  pr.window_fp8 = reinterpret_cast<const uint16_t*>(
      keep(device_alloc<uint8_t>(static_cast<size_t>(n_slots) * ring_rows * kFp8Row)));
  pr.entries_fp8 = reinterpret_cast<const uint16_t*>(
      keep(device_alloc<uint8_t>(static_cast<size_t>(n_slots) * max_entries * kFp8Row)));
  p.sinks = keep(device_alloc<float>(kHeads));
  std::vector<int32_t> selected;
  pr.attended = 0;
  if (csa) selected.assign(static_cast<size_t>(tokens) * kTopK, -1);
  std::vector<int32_t> perm(max_entries);
  for (int i = 0; i < max_entries; ++i) perm[i] = i;
  for (int t = 0; t < tokens; ++t) {
    const int pos = positions[t];
    const int visible = std::min((pos + 1) / rate, max_entries);
    const int n_window = std::min(pos + 1, kWindow);
    int picks = visible;
    if (csa) {
      // Partial Fisher-Yates: min(top_k, visible) distinct entries, ascending, -1 padded.
      picks = std::min(kTopK, visible);
      int32_t* row = selected.data() + static_cast<size_t>(t) * kTopK;
      std::vector<std::pair<int, int>> swaps;
      for (int i = 0; i < picks; ++i) {
        const int j = i + static_cast<int>(rng() % static_cast<unsigned>(visible - i));
        std::swap(perm[i], perm[j]);
        swaps.emplace_back(i, j);
        row[i] = perm[i];
      }
      for (auto it = swaps.rbegin(); it != swaps.rend(); ++it) std::swap(perm[it->first], perm[it->second]);
      std::sort(row, row + picks);
    }
    pr.attended += n_window + picks;
  }
  if (csa) {
    p.selected = keep(device_copy(selected));
    pr.selected = p.selected;
    pr.selected_none = keep(device_copy(std::vector<int32_t>(selected.size(), -1)));
  }
  std::vector<int32_t> pos32(positions.begin(), positions.end()), slot32(slots.begin(), slots.end()),
      first(tokens), ids(tokens, 0);
  for (int t = 0; t < tokens; ++t) first[t] = t > 0 && slots[t] == slots[t - 1] ? first[t - 1] : t;
  p.batch.tokens = tokens;
  p.batch.positions = keep(device_copy(pos32));
  p.batch.slots = keep(device_copy(slot32));
  p.batch.first_rows = keep(device_copy(first));
  p.batch.token_ids = keep(device_copy(ids));
}

int run(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  std::regex only(".");
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--json") json_path = value;
    else if (key == "--quick") quick = value != "0";
    else if (key == "--only") only = std::regex(value);
  }
  // --only REGEX: run the rows whose key matches (std::regex_search), e.g. for ncu:
  // "prefill csa persist_qbf16 8192", "decode csa pingpong_qbf16 64 4096".
  const auto wanted = [&](const std::string& row_key) { return std::regex_search(row_key, only); };
  FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "a");
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::string date = bench::utc_now();
  bench::Timer timer(/*default_warmup=*/2);
  const double copy_gbps = bench::hbm_copy_gbps(timer);
  const double peak_tflops = bench::cublas_bf16_tflops(timer, 8192, /*iters=*/5);
  std::printf("device %s, %d SMs; HBM copy %.0f GB/s (read + write); BF16 GEMM (cuBLAS 8192^3) %.0f TFLOP/s\n",
              prop.name, prop.multiProcessorCount, copy_gbps, peak_tflops);
  if (json) {
    std::fprintf(json, "{\"bench\":\"hbm_copy\",\"device\":\"%s\",\"date\":\"%s\",\"gbps\":%.1f}\n", prop.name,
                 date.c_str(), copy_gbps);
    std::fprintf(json, "{\"bench\":\"gemm_peak\",\"device\":\"%s\",\"date\":\"%s\",\"tflops\":%.1f}\n", prop.name,
                 date.c_str(), peak_tflops);
  }
  std::mt19937 rng(7);
  const int64_t max_workspace = cuda::attention::sparse_attention_workspace_floats(64, kHeads, 16);
  float* workspace = device_alloc<float>(static_cast<size_t>(max_workspace), 0);

  // ---- prefill ----
  std::printf("%-7s %-4s %-18s %6s %7s %9s %12s %8s %7s\n", "case", "layer", "kernel", "tokens", "iters", "ms",
              "attended", "TFLOP/s", "of_peak");
  for (int tokens : {8192, 32768}) {
    if (quick && tokens > 8192) continue;
    for (bool csa : {true, false}) {
      std::vector<int> positions(tokens), slots(tokens, 0);
      for (int t = 0; t < tokens; ++t) positions[t] = t;
      Problem pr;
      build(pr, csa, positions, slots, kWindow - 1 + tokens, rng);
      const uint16_t *window_bf16 = pr.p.window_kv, *entries_bf16 = pr.p.entries;
      for (const char* kernel : {"wgmma", "sharep", "pipe", "pingpong", "pipe_fp8", "pingpong_fp8", "pingpong_qbf16",
                                 "pingpong_fp8_qbf16", "persist_qbf16", "persist_fp8_qbf16", "localp_qbf16",
                                 "localp_fp8_qbf16", "persist_qbf16_obf16", "localp_qbf16_obf16", "simple"}) {
        const std::string name = kernel;
        const bool simple = name == "simple", share_p = name == "sharep";
        const bool fp8 = name.find("_fp8") != std::string::npos, pipe = name.starts_with("pipe");
        const bool pingpong = name.starts_with("pingpong"), qbf16 = name.find("_qbf16") != std::string::npos;
        const bool persist = name.starts_with("persist"), local_p = name.starts_with("localp");
        const bool obf16 = name.ends_with("_obf16");  // the BF16 out
        pr.use_fp8(fp8, window_bf16, entries_bf16);
        pr.use_q_bf16(qbf16);
        pr.use_out_bf16(obf16);
        if (simple && tokens > 8192) continue;
        if (!wanted(std::string("prefill ") + (csa ? "csa " : "hca ") + name + " " + std::to_string(tokens))) continue;
        pr.p.kernel = simple     ? SparseAttentionParams::Kernel::kSimple
                      : share_p  ? SparseAttentionParams::Kernel::kWgmmaShareP
                      : pipe     ? SparseAttentionParams::Kernel::kWgmmaPipelined
                      : pingpong ? SparseAttentionParams::Kernel::kWgmmaPingPong
                      : persist  ? SparseAttentionParams::Kernel::kWgmmaPingPongPersistent
                      : local_p  ? SparseAttentionParams::Kernel::kWgmmaLocalP
                                 : SparseAttentionParams::Kernel::kWgmma;
        const int iters = simple ? 3 : tokens > 8192 ? 5 : 10;
        const double ms = timer.median_ms([&] { cuda::attention::sparse_attention(pr.p, nullptr); }, iters,
                                          simple ? 1 : 2);
        DSV4_CUDA_CHECK(cudaGetLastError());
        const double tflops = 4.0 * kHeads * kDim * static_cast<double>(pr.attended) / (ms * 1e-3) / 1e12;
        std::printf("%-7s %-4s %-18s %6d %7d %9.3f %12lld %8.1f %7.3f\n", "prefill", csa ? "csa" : "hca", kernel, tokens,
                    iters, ms, static_cast<long long>(pr.attended), tflops, tflops / peak_tflops);
        if (json)
          std::fprintf(json,
                       "{\"bench\":\"attention\",\"device\":\"%s\",\"date\":\"%s\",\"case\":\"prefill\",\"layer\":\"%s\","
                       "\"kernel\":\"%s\",\"tokens\":%d,\"heads\":%d,\"head_dim\":%d,\"window\":%d,\"top_k\":%d,"
                       "\"rate\":%d,\"iters\":%d,\"ms\":%.4f,\"attended_keys\":%lld,\"tflops\":%.2f,"
                       "\"gemm_peak_tflops\":%.1f,\"of_peak\":%.4f,\"kv_cache\":\"%s\",\"q\":\"%s\",\"out\":\"%s\"}\n",
                       prop.name, date.c_str(), csa ? "csa" : "hca", kernel, tokens, kHeads, kDim, kWindow, kTopK,
                       csa ? kCsaRate : kHcaRate, iters, ms, static_cast<long long>(pr.attended), tflops, peak_tflops,
                       tflops / peak_tflops, fp8 ? "fp8" : "bf16", qbf16 ? "bf16" : "fp32", obf16 ? "bf16" : "fp32");
      }
      pr.use_out_bf16(false);
    }
  }

  // ---- decode ----
  std::printf("%-7s %-4s %-18s %6s %7s %7s %9s %12s %8s %7s %8s %7s\n", "case", "layer", "splits", "batch", "context",
              "iters", "ms", "bytes", "GB/s", "of_HBM", "TFLOP/s", "of_peak");
  for (int context : {4096, 32768, 131072}) {
    if (quick && context > 32768) continue;
    for (int batch : {1, 16, 64}) {
      for (bool csa : {true, false}) {
        std::vector<int> positions(batch, context - 1), slots(batch);
        for (int b = 0; b < batch; ++b) slots[b] = b;
        Problem pr;
        build(pr, csa, positions, slots, kWindow, rng);
        const uint16_t *window_bf16 = pr.p.window_kv, *entries_bf16 = pr.p.entries;
        for (const char* splits : {"auto", "off", "sharep", "pipe", "pingpong", "pipe_fp8", "pingpong_fp8",
                                   "pingpong_qbf16", "pingpong_fp8_qbf16", "persist_qbf16", "persist_fp8_qbf16",
                                   "pingpong_qbf16_s1", "pingpong_qbf16_s2", "pingpong_qbf16_s4", "persist_qbf16_s4",
                                   "persist_qbf16_s8", "localp_qbf16", "localp_fp8_qbf16", "localp_qbf16_s4",
                                   "localp_qbf16_s8",
                                   "pingpong_qbf16_nogather", "pingpong_qbf16_s1_nogather", "simple"}) {
          // "simple": the FP32 kernel (what kAuto gives up for the wgmma one); "sharep":
          // Kernel::kWgmmaShareP with split-KV auto; "pipe": Kernel::kWgmmaPipelined,
          // split-KV auto; "pingpong": Kernel::kWgmmaPingPong, split-KV auto; "auto" /
          // "off": Kernel::kWgmma; a "_sN" suffix forces kv_splits = N instead of the auto choice.
          std::string name = splits;
          // "_nogather" (CSA): every pick -1, so only the window rows are gathered; the tiles,
          // Q copy, math and epilogue stay (the gap to the plain row prices the gathers).
          const bool nogather = name.ends_with("_nogather");
          if (nogather) {
            if (!csa) continue;
            name = name.substr(0, name.size() - 9);
          }
          int forced_splits = 0;
          std::string forced_text;
          if (const size_t at = name.rfind("_s"); at != std::string::npos && std::isdigit(name[at + 2])) {
            forced_text = name.substr(at + 2);
            forced_splits = std::stoi(forced_text);
            name = name.substr(0, at);
          }
          const bool simple = name == "simple", off = simple || name == "off";
          const bool share_p = name == "sharep", fp8 = name.find("_fp8") != std::string::npos;
          const bool pipe = name.starts_with("pipe"), pingpong = name.starts_with("pingpong");
          const bool persist = name.starts_with("persist"), qbf16 = name.ends_with("_qbf16");
          const bool local_p = name.starts_with("localp");
          if (!wanted(std::string("decode ") + (csa ? "csa " : "hca ") + splits + " " + std::to_string(batch) + " " +
                      std::to_string(context)))
            continue;
          pr.use_fp8(fp8, window_bf16, entries_bf16);
          pr.use_q_bf16(qbf16);
          pr.p.kernel = simple     ? SparseAttentionParams::Kernel::kSimple
                        : share_p  ? SparseAttentionParams::Kernel::kWgmmaShareP
                        : pipe     ? SparseAttentionParams::Kernel::kWgmmaPipelined
                        : pingpong ? SparseAttentionParams::Kernel::kWgmmaPingPong
                        : persist  ? SparseAttentionParams::Kernel::kWgmmaPingPongPersistent
                        : local_p  ? SparseAttentionParams::Kernel::kWgmmaLocalP
                                   : SparseAttentionParams::Kernel::kWgmma;
          pr.p.kv_splits = off ? 1 : forced_splits;
          if (csa) pr.p.selected = nogather ? pr.selected_none : pr.selected;
          pr.p.split_workspace = off ? nullptr : workspace;
          pr.p.split_workspace_floats = off ? 0 : max_workspace;
          const int iters = context >= 131072 ? 10 : 20;
          const double ms = timer.median_ms([&] { cuda::attention::sparse_attention(pr.p, nullptr); }, iters);
          DSV4_CUDA_CHECK(cudaGetLastError());
          const double kv_bytes = static_cast<double>(pr.attended) * (fp8 ? cuda::attention::kKvFp8RowBytes : kDim * 2);
          const double bytes = kv_bytes + (qbf16 ? 6.0 : 8.0) * batch * kHeads * kDim;  // + q (FP32 / BF16) and out (FP32)
          const double gbps = bytes / (ms * 1e-3) / 1e9;
          const double tflops = 4.0 * kHeads * kDim * static_cast<double>(pr.attended) / (ms * 1e-3) / 1e12;
          std::printf("%-7s %-4s %-18s %6d %7d %7d %9.4f %12.0f %8.0f %7.3f %8.1f %7.3f\n", "decode", csa ? "csa" : "hca",
                      splits, batch, context, iters, ms, bytes, gbps, gbps / copy_gbps, tflops, tflops / peak_tflops);
          if (json)
            std::fprintf(json,
                         "{\"bench\":\"attention\",\"device\":\"%s\",\"date\":\"%s\",\"case\":\"decode\",\"layer\":\"%s\","
                         "\"kernel\":\"%s\",\"splits\":\"%s\",\"batch\":%d,\"context\":%d,\"heads\":%d,\"head_dim\":%d,"
                         "\"iters\":%d,\"ms\":%.5f,\"attended_keys\":%lld,\"kv_bytes\":%.0f,\"bytes\":%.0f,\"gbps\":%.1f,"
                         "\"hbm_copy_gbps\":%.1f,\"of_hbm\":%.4f,\"tflops\":%.2f,\"gemm_peak_tflops\":%.1f,"
                         "\"of_peak\":%.4f,\"kv_cache\":\"%s\",\"q\":\"%s\",\"picks\":\"%s\"}\n",
                         prop.name, date.c_str(), csa ? "csa" : "hca",
                         simple ? "simple" : share_p ? "sharep" : pipe ? "pipe" : pingpong ? "pingpong"
                                           : persist ? "persist" : local_p ? "localp_qbf16" : "wgmma",
                         simple ? "off" : forced_splits > 0 ? forced_text.c_str()
                                        : share_p || pipe || pingpong || persist || local_p ? "auto" : splits,
                         batch, context, kHeads, kDim, iters, ms,
                         static_cast<long long>(pr.attended), kv_bytes, bytes, gbps, copy_gbps, gbps / copy_gbps, tflops,
                         peak_tflops, tflops / peak_tflops, fp8 ? "fp8" : "bf16", qbf16 ? "bf16" : "fp32",
                         nogather ? "none" : "real");
        }
      }
    }
  }
  cudaFree(workspace);
  if (json) std::fclose(json);
  return 0;
}

}  // namespace
}  // namespace dsv4::attention_bench

int main(int argc, char** argv) { return dsv4::attention_bench::run(argc, argv); }

// Compressor benchmark (attention::compressor_update: pool + save), V4-Flash shapes:
//   csa      attention compressor of CSA layers: dim 512, rate 4, two overlapping series
//            (width 1024, ring 8 rows), BF16 entries
//   hca      attention compressor of HCA layers: dim 512, rate 128 (width 512, ring 128 rows),
//            BF16 entries
//   indexer  the indexer's compressor (CSA layers): dim 128, rate 4, overlapping (width 256,
//            ring 8 rows), FP32 entries
// all with RoPE on the last 64 channels. Method (shared/docs/benchmarking.md): median of
// CUDA-event times after warm-up, L2 flushed (256 MB write) before every iteration; the HBM
// copy bandwidth (1 GiB device-to-device) measured in the same process.
// Cases:
//   prefill  one sequence, a chunk of --chunks tokens (2048, 8192) from position 0 ("start 0")
//            and from --mid (default 32770: mid-window for rate 4 and 128, so the first
//            windows read earlier positions from the ring)
//   decode   batch --batches (1, 16, 64), one token per sequence (own slot) at about
//            --context; even rows close a window (position context - 1), odd rows do not
//            (context - 2): half of them pool (batch 1: the one row does)
// Kernels (--kernels, default simple,wide,wide_fused): "simple" CompressorParams::Kernel::
// kSimple (kAuto), "wide" kWide, "wide_fused" kWide with single_token_chunks (decode rows
// only: one launch). Each row also checks its entries and ring against the simple run's
// (bitwise; "same_bits" 1 or 0, -1 on the simple row itself).
// Columns / JSON fields:
//   ms          compressor_update (both kernels, or the one fused launch)
//   pool_ms     the pool kernel alone (detail::launch_compressor_pool), save_ms the save kernel
//               alone (0 for wide_fused: its pool launch saves)
//   closing     batch rows that close a window (entries written)
//   bytes       the bytes the update must move, each once (the minimum, not what the two
//               kernels read: the save reads the batch rows the pool read again):
//                 proj_bytes   kv_proj + gate_proj of the batch, tokens x width x 4 x 2
//                 ring_read    ring rows the pools read (positions before the chunk start;
//                              CSA: window w-1's Ca columns and w's Cb columns), x 4 x 2
//                 ring_write   rows the save writes (per sequence min(chunk, ring rows)) x width x 4 x 2
//                 entry_bytes  closing x dim x (2 BF16 | 4 FP32)
//                 param_bytes  ape columns used + norm weight + inv_freq (when a window closes)
//                              + positions/slots/first_rows (3 x tokens x 4)
//   GB/s        bytes / ms, of_hbm its fraction of the HBM copy bandwidth
// Usage: bench_compressor [--json PATH] [--compressors csa,hca,indexer] [--chunks 2048,8192]
//                         [--mid 32770] [--batches 1,16,64] [--context 4096]
//                         [--kernels simple,wide,wide_fused]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "common/bench_util.h"
#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/common/cuda_check.h"

namespace dsv4::compressor_bench {
namespace {

using cuda::attention::CompressorParams;
constexpr int kRopeDim = 64;

struct Compressor {
  std::string name;
  int dim, rate;
  bool overlapping, bf16;
  int width() const { return (overlapping ? 2 : 1) * dim; }
  int state_rows() const { return (overlapping ? 2 : 1) * rate; }
};

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

// Uniform [lo, hi) floats from a splitmix64 stream.
std::vector<float> random_vector(size_t count, uint64_t seed, float lo, float hi) {
  std::vector<float> out(count);
  uint64_t state = seed;
  for (float& v : out) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    v = lo + (hi - lo) * static_cast<float>((z >> 40) * 0x1.0p-24);
  }
  return out;
}

// The bytes of one batch, each counted once (see the header).
struct Bytes {
  double proj = 0, ring_read = 0, ring_write = 0, entries = 0, params = 0;
  int closing = 0;
  double total() const { return proj + ring_read + ring_write + entries + params; }
};

Bytes count_bytes(const Compressor& c, const std::vector<int32_t>& positions, const std::vector<int32_t>& first_rows,
                  int max_entries) {
  Bytes b;
  const int tokens = static_cast<int>(positions.size());
  b.proj = 2.0 * tokens * c.width() * 4;
  bool any_previous = false;
  for (int t = 0; t < tokens; ++t) {
    const int p = positions[t];
    const int chunk_start = positions[first_rows[t]];
    if (first_rows[t] == t) {
      const int chunk_tokens = static_cast<int>(std::count(first_rows.begin(), first_rows.end(), t));
      b.ring_write += 2.0 * std::min(chunk_tokens, c.state_rows()) * c.width() * 4;
    }
    if ((p + 1) % c.rate != 0 || (p + 1) / c.rate - 1 >= max_entries) continue;
    const int w = (p + 1) / c.rate - 1;
    ++b.closing;
    auto from_ring = [&](int begin, int end) {  // positions [begin, end) before the chunk
      return std::max(0, std::min(end, chunk_start) - begin);
    };
    if (c.overlapping && w > 0) {
      any_previous = true;
      b.ring_read += 2.0 * from_ring((w - 1) * c.rate, w * c.rate) * c.dim * 4;  // Ca half
    }
    b.ring_read += 2.0 * from_ring(w * c.rate, (w + 1) * c.rate) * c.dim * 4;  // Cb half or all (HCA)
  }
  b.entries = static_cast<double>(b.closing) * c.dim * (c.bf16 ? 2 : 4);
  if (b.closing > 0)
    b.params = (static_cast<double>(c.rate) * c.dim * (any_previous ? 2 : 1) + c.dim + kRopeDim / 2) * 4;
  b.params += 3.0 * tokens * 4;
  return b;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

int run(int argc, char** argv) {
  std::string json_path;
  std::vector<std::string> names = {"csa", "hca", "indexer"}, kernels = {"simple", "wide", "wide_fused"};
  std::vector<int> chunks = {2048, 8192}, batches = {1, 16, 64};
  int mid = 32770, context = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--json") json_path = value;
    else if (key == "--compressors") names = split(value);
    else if (key == "--chunks") chunks = bench::parse_ints(value);
    else if (key == "--mid") mid = std::stoi(value);
    else if (key == "--batches") batches = bench::parse_ints(value);
    else if (key == "--context") context = std::stoi(value);
    else if (key == "--kernels") kernels = split(value);
    else {
      std::fprintf(stderr,
                   "bench_compressor: unknown flag %s (want --json, --compressors, --chunks, --mid, --batches, "
                   "--context, --kernels)\n",
                   key.c_str());
      return 2;
    }
  }
  const std::vector<Compressor> all = {
      {"csa", 512, 4, true, true}, {"hca", 512, 128, false, true}, {"indexer", 128, 4, true, false}};
  std::vector<Compressor> compressors;
  for (const std::string& name : names) {
    auto it = std::find_if(all.begin(), all.end(), [&](const Compressor& c) { return c.name == name; });
    if (it == all.end()) {
      std::fprintf(stderr, "bench_compressor: --compressors item '%s' (want csa, hca, indexer)\n", name.c_str());
      return 2;
    }
    compressors.push_back(*it);
  }
  for (const std::string& k : kernels)
    if (k != "simple" && k != "wide" && k != "wide_fused") {
      std::fprintf(stderr, "bench_compressor: --kernels item '%s' (want simple, wide, wide_fused)\n", k.c_str());
      return 2;
    }
  if (context < 256 || mid < 0) {
    std::fprintf(stderr, "bench_compressor: --context %d must be >= 256 and --mid %d >= 0\n", context, mid);
    return 2;
  }

  FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "a");
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::string date = bench::utc_now();
  bench::Timer timer(/*default_warmup=*/3);
  const double copy_gbps = bench::hbm_copy_gbps(timer);
  std::printf("device %s, %d SMs; HBM copy %.0f GB/s\n", prop.name, prop.multiProcessorCount, copy_gbps);
  if (json)
    std::fprintf(json, "{\"bench\":\"hbm_copy\",\"device\":\"%s\",\"date\":\"%s\",\"gbps\":%.1f}\n", prop.name,
                 date.c_str(), copy_gbps);

  std::printf("%-8s %-8s %6s %6s %7s %-10s %9s %9s %9s %9s %9s %7s %4s\n", "comp", "mode", "tokens", "start",
              "closing", "kernel", "ms", "pool_ms", "save_ms", "MB", "GB/s", "of_hbm", "same");
  struct Case {
    std::string mode;
    int tokens, start;  // prefill: chunk start; decode: context
  };
  std::vector<Case> cases;
  for (int chunk : chunks) {
    cases.push_back({"prefill", chunk, 0});
    cases.push_back({"prefill", chunk, mid});
  }
  for (int b : batches) cases.push_back({"decode", b, context});

  for (const Compressor& c : compressors) {
    for (const Case& k : cases) {
      const bool prefill = k.mode == "prefill";
      const int tokens = k.tokens, sequences = prefill ? 1 : tokens;
      std::vector<int32_t> positions(tokens), slots(tokens), first_rows(tokens), ids(tokens, 0);
      for (int t = 0; t < tokens; ++t) {
        positions[t] = prefill ? k.start + t : (t % 2 == 0 ? k.start - 1 : k.start - 2);
        slots[t] = prefill ? 0 : t;
        first_rows[t] = prefill ? 0 : t;
      }
      const int last = *std::max_element(positions.begin(), positions.end());
      const int max_entries = (last + 1) / c.rate + 1;
      const size_t ring_elems = static_cast<size_t>(sequences) * c.state_rows() * c.width();
      const size_t entry_elems = static_cast<size_t>(sequences) * max_entries * c.dim;
      const size_t entry_bytes = entry_elems * (c.bf16 ? 2 : 4);
      const std::vector<float> ring_kv = random_vector(ring_elems, 21, -1, 1);
      const std::vector<float> ring_gate = random_vector(ring_elems, 22, -2, 2);
      float* d_kv = device_copy(random_vector(static_cast<size_t>(tokens) * c.width(), 23, -1, 1));
      float* d_gate = device_copy(random_vector(static_cast<size_t>(tokens) * c.width(), 24, -2, 2));
      float* d_ape = device_copy(random_vector(static_cast<size_t>(c.rate) * c.width(), 25, -1, 1));
      float* d_norm = device_copy(random_vector(c.dim, 26, 0.8f, 1.2f));
      std::vector<float> inv_freq(kRopeDim / 2);
      for (int i = 0; i < kRopeDim / 2; ++i) inv_freq[i] = std::pow(160000.0f, -2.0f * i / kRopeDim);
      float* d_inv_freq = device_copy(inv_freq);
      float* d_ring_kv = device_copy(ring_kv);
      float* d_ring_gate = device_copy(ring_gate);
      void* d_entries = device_alloc<uint8_t>(entry_bytes);
      int32_t* d_positions = device_copy(positions);
      int32_t* d_slots = device_copy(slots);
      int32_t* d_first = device_copy(first_rows);
      int32_t* d_ids = device_copy(ids);
      int32_t* d_error = device_alloc<int32_t>(1);
      DSV4_CUDA_CHECK(cudaMemset(d_error, 0, sizeof(int32_t)));

      CompressorParams p;
      p.kv_proj = d_kv;
      p.gate_proj = d_gate;
      p.ape = d_ape;
      p.norm_weight = d_norm;
      p.inv_freq = d_inv_freq;
      p.rope_dim = kRopeDim;
      p.rate = c.rate;
      p.dim = c.dim;
      p.overlapping = c.overlapping;
      p.state_kv = d_ring_kv;
      p.state_gate = d_ring_gate;
      p.state_rows = c.state_rows();
      p.entries = d_entries;
      p.entries_bf16 = c.bf16;
      p.max_entries = max_entries;
      p.batch.tokens = tokens;
      p.batch.token_ids = d_ids;
      p.batch.positions = d_positions;
      p.batch.slots = d_slots;
      p.batch.first_rows = d_first;
      p.error_flag = d_error;
      const Bytes bytes = count_bytes(c, positions, first_rows, max_entries);

      // One update from the initial ring, then entries + ring (for the bitwise comparison).
      auto outputs = [&](const CompressorParams& q) {
        DSV4_CUDA_CHECK(cudaMemcpy(d_ring_kv, ring_kv.data(), ring_elems * 4, cudaMemcpyHostToDevice));
        DSV4_CUDA_CHECK(cudaMemcpy(d_ring_gate, ring_gate.data(), ring_elems * 4, cudaMemcpyHostToDevice));
        DSV4_CUDA_CHECK(cudaMemset(d_entries, 0xff, entry_bytes));
        cuda::attention::compressor_update(q, nullptr);
        std::vector<uint8_t> out(entry_bytes + 2 * ring_elems * 4);
        DSV4_CUDA_CHECK(cudaMemcpy(out.data(), d_entries, entry_bytes, cudaMemcpyDeviceToHost));
        DSV4_CUDA_CHECK(cudaMemcpy(out.data() + entry_bytes, d_ring_kv, ring_elems * 4, cudaMemcpyDeviceToHost));
        DSV4_CUDA_CHECK(
            cudaMemcpy(out.data() + entry_bytes + ring_elems * 4, d_ring_gate, ring_elems * 4, cudaMemcpyDeviceToHost));
        return out;
      };
      std::vector<uint8_t> simple_out;
      for (const std::string& kernel : kernels) {
        if (kernel == "wide_fused" && prefill) continue;  // single_token_chunks is a decode promise
        CompressorParams q = p;
        q.kernel = kernel == "simple" ? CompressorParams::Kernel::kSimple : CompressorParams::Kernel::kWide;
        q.single_token_chunks = kernel == "wide_fused";
        const int iters = prefill ? 20 : 50;
        // Timed runs repeat the same batch: the save rewrites the ring rows the next run's
        // pool reads (mid-sequence), same addresses and amounts.
        const double ms = timer.median_ms([&] { cuda::attention::compressor_update(q, nullptr); }, iters);
        const double pool_ms = timer.median_ms(
            [&] { DSV4_CUDA_CHECK(cuda::attention::detail::launch_compressor_pool(q, nullptr)); }, iters);
        const double save_ms =
            q.single_token_chunks
                ? 0.0
                : timer.median_ms([&] { DSV4_CUDA_CHECK(cuda::attention::detail::launch_compressor_save(q, nullptr)); },
                                  iters);
        DSV4_CUDA_CHECK(cudaDeviceSynchronize());
        int32_t error = 0;
        DSV4_CUDA_CHECK(cudaMemcpy(&error, d_error, sizeof(int32_t), cudaMemcpyDeviceToHost));
        if (error != 0) std::fprintf(stderr, "bench_compressor: %s %s: error flag %d\n", c.name.c_str(), kernel.c_str(), error);
        int same_bits = -1;
        const std::vector<uint8_t> out = outputs(q);
        if (kernel == "simple") simple_out = out;
        else if (!simple_out.empty()) same_bits = out == simple_out ? 1 : 0;
        if (same_bits == 0)
          std::fprintf(stderr, "bench_compressor: %s %s %d tokens: %s entries/ring differ from simple's\n",
                       c.name.c_str(), k.mode.c_str(), tokens, kernel.c_str());
        const double gbps = bytes.total() / (ms * 1e-3) / 1e9;
        std::printf("%-8s %-8s %6d %6d %7d %-10s %9.4f %9.4f %9.4f %9.3f %9.0f %6.1f%% %4d\n", c.name.c_str(),
                    k.mode.c_str(), tokens, k.start, bytes.closing, kernel.c_str(), ms, pool_ms, save_ms,
                    bytes.total() / 1e6, gbps, 100.0 * gbps / copy_gbps, same_bits);
        if (json)
          std::fprintf(json,
                       "{\"bench\":\"compressor\",\"device\":\"%s\",\"date\":\"%s\",\"compressor\":\"%s\",\"mode\":\"%s\","
                       "\"kernel\":\"%s\",\"tokens\":%d,\"start\":%d,\"dim\":%d,\"rate\":%d,\"overlapping\":%d,"
                       "\"entries\":\"%s\",\"closing\":%d,\"ms\":%.5f,\"pool_ms\":%.5f,\"save_ms\":%.5f,"
                       "\"bytes\":%.0f,\"proj_bytes\":%.0f,\"ring_read_bytes\":%.0f,\"ring_write_bytes\":%.0f,"
                       "\"entry_bytes\":%.0f,\"param_bytes\":%.0f,\"gbps\":%.1f,\"hbm_copy_gbps\":%.1f,"
                       "\"of_hbm\":%.4f,\"same_bits\":%d,\"error_flag\":%d}\n",
                       prop.name, date.c_str(), c.name.c_str(), k.mode.c_str(), kernel.c_str(), tokens, k.start, c.dim,
                       c.rate, c.overlapping ? 1 : 0, c.bf16 ? "bf16" : "fp32", bytes.closing, ms, pool_ms, save_ms,
                       bytes.total(), bytes.proj, bytes.ring_read, bytes.ring_write, bytes.entries, bytes.params, gbps,
                       copy_gbps, gbps / copy_gbps, same_bits, error);
      }
      for (void* ptr : std::vector<void*>{d_kv, d_gate, d_ape, d_norm, d_inv_freq, d_ring_kv, d_ring_gate, d_entries,
                                          d_positions, d_slots, d_first, d_ids, d_error})
        cudaFree(ptr);
    }
  }
  if (json) std::fclose(json);
  return 0;
}

}  // namespace
}  // namespace dsv4::compressor_bench

int main(int argc, char** argv) {
  try {
    return dsv4::compressor_bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_compressor: %s\n", e.what());
    return 1;
  }
}

// bench_sampler (CPU): milliseconds per sampled token of dsv4::Sampler at V4's vocabulary
// (129280), the first implementation (a stable sort of all V logits, tests/cpu/
// sampler_reference.h) against the current one, on a few logit shapes and sampling
// settings; both give the same token on every draw (checked here too). The limit is one
// read of the V logits (scan_ms: every exact method reads each logit at least once). The server samples one
// token per running sequence per decode step, so batch64_ms = 64 x new_ms.
//   bench_sampler [--vocab 129280] [--iters 30] [--json PATH]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "dsv4/engine.h"
#include "engine/sampler.h"
#include "sampler_reference.h"

namespace {

using dsv4::SamplingParams;

double median_ms(const std::function<void()>& fn, int iters) {
  fn();  // warm-up (first allocations)
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

// "llm": a few logits at ~12 over a N(-5, 3^2) bulk (most mass on few ids); "wide":
// N(0, 2^2), a nucleus of thousands of ids.
std::vector<float> make_logits(const std::string& shape, size_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(vocab);
  if (shape == "llm") {
    for (float& v : logits) v = -5.0f + 3.0f * normal(rng);
    for (int i = 0; i < 5; ++i) logits[rng() % vocab] = 12.0f + 4.0f * normal(rng);
  } else {
    for (float& v : logits) v = 2.0f * normal(rng);
  }
  return logits;
}

}  // namespace

int main(int argc, char** argv) {
  size_t vocab = 129280;
  int iters = 30;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--vocab" && i + 1 < argc) {
      vocab = std::stoul(argv[++i]);
    } else if (arg == "--iters" && i + 1 < argc) {
      iters = std::stoi(argv[++i]);
    } else if (arg == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else {
      std::fprintf(stderr, "bench_sampler: unknown argument '%s' (expected --vocab N, --iters N, --json PATH)\n",
                   arg.c_str());
      return 2;
    }
  }
  if (vocab == 0 || iters <= 0) {
    std::fprintf(stderr, "bench_sampler: --vocab and --iters must be positive\n");
    return 2;
  }
  const std::string device = cpu_name(), date = utc_now();
  struct Setting {
    float temperature, top_p;
    int top_k;
  };
  const Setting settings[] = {{1.0f, 1.0f, 0}, {0.6f, 0.95f, 0}, {1.0f, 0.9f, 50}, {0.3f, 1.0f, 0}};
  std::FILE* out = json.empty() ? nullptr : std::fopen(json.c_str(), "a");
  if (!json.empty() && !out) {
    std::fprintf(stderr, "bench_sampler: cannot open --json %s for appending\n", json.c_str());
    return 2;
  }
  std::printf("bench_sampler on %s, V=%zu, median of %d\n", device.c_str(), vocab, iters);
  std::printf("%-5s %5s %5s %5s | %10s %10s %8s | %8s %6s | %10s\n", "logit", "T", "top_p", "top_k", "old_ms",
              "new_ms", "speedup", "scan_ms", "limit", "batch64_ms");
  int mismatches = 0;
  for (const std::string shape : {"llm", "wide"}) {
    const std::vector<float> logits = make_logits(shape, vocab, 1234);
    float sink = 0;
    uint32_t bits_sink = 0;
    const double scan_ms = median_ms(
        [&] {  // one read of the logits (an OR of their bits: vectorised, no float semantics)
          uint32_t acc = 0;
          for (const float v : logits) {
            uint32_t b;
            std::memcpy(&b, &v, 4);
            acc |= b;
          }
          bits_sink += acc;
        },
        iters);
    for (const Setting& s : settings) {
      const SamplingParams params{s.temperature, s.top_p, s.top_k, 77};
      dsv4::ReferenceSampler reference(params);
      dsv4::Sampler fast(params);
      const double old_ms = median_ms([&] { sink += static_cast<float>(reference.sample(logits)); }, iters);
      const double new_ms = median_ms([&] { sink += static_cast<float>(fast.sample(logits)); }, iters);
      // Same tokens: fresh samplers of one seed, 20 draws.
      dsv4::ReferenceSampler check_reference(params);
      dsv4::Sampler check_fast(params);
      for (int d = 0; d < 20; ++d) mismatches += check_reference.sample(logits) != check_fast.sample(logits);
      std::printf("%-5s %5.2f %5.2f %5d | %10.3f %10.3f %7.1fx | %8.3f %5.0f%% | %10.1f\n", shape.c_str(),
                  s.temperature, s.top_p, s.top_k, old_ms, new_ms, old_ms / new_ms, scan_ms,
                  100.0 * scan_ms / new_ms, 64.0 * new_ms);
      if (out)
        std::fprintf(out,
                     "{\"bench\":\"sampler\",\"device\":\"%s\",\"date\":\"%s\",\"vocab\":%zu,\"logits\":\"%s\","
                     "\"temperature\":%g,\"top_p\":%g,\"top_k\":%d,\"iters\":%d,\"old_ms\":%.4f,\"new_ms\":%.4f,"
                     "\"speedup\":%.2f,\"scan_ms\":%.4f,\"achieved_over_limit\":%.4f,\"batch64_ms\":%.3f}\n",
                     device.c_str(), date.c_str(), vocab, shape.c_str(), s.temperature, s.top_p, s.top_k, iters,
                     old_ms, new_ms, old_ms / new_ms, scan_ms, scan_ms / new_ms, 64.0 * new_ms);
    }
    if (sink == 12345.0f && bits_sink == 7) std::printf(" ");
  }
  if (out) std::fclose(out);
  if (mismatches) {
    std::fprintf(stderr, "bench_sampler: %d draws differ between the old and the new sampler\n", mismatches);
    return 1;
  }
  return 0;
}

// The first dsv4::Sampler::sample (a stable sort of all V logits), kept verbatim as the
// definition that the fast one (src/engine/sampler.cpp) must reproduce bit for bit: the
// oracle of tests/cpu/sampler_test.cpp and the "old" column of bench_sampler.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "dsv4/engine.h"
#include "engine/sampler.h"

namespace dsv4 {

// Undefined for NaN logits.
class ReferenceSampler {
 public:
  explicit ReferenceSampler(const SamplingParams& params) : params_(params), state_(params.seed) {}

  int32_t sample(std::span<const float> logits) {
    if (params_.temperature == 0.0f) {  // greedy: first maximum
      return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    size_t keep = order.size();
    if (params_.top_k > 0) keep = std::min(keep, static_cast<size_t>(params_.top_k));
    std::vector<double> probs(keep);
    const double max_logit = logits[order[0]];
    double total = 0;
    for (size_t i = 0; i < keep; ++i)
      total += probs[i] = std::exp((logits[order[i]] - max_logit) / params_.temperature);
    // Nucleus: smallest prefix whose mass reaches top_p.
    double mass = 0;
    size_t nucleus = keep;
    for (size_t i = 0; i < keep; ++i) {
      mass += probs[i] / total;
      if (mass >= params_.top_p) {
        nucleus = i + 1;
        break;
      }
    }
    double nucleus_total = 0;
    for (size_t i = 0; i < nucleus; ++i) nucleus_total += probs[i];
    trace_ = {total, nucleus_total};  // (not in the original: what the test compares)
    const double u = static_cast<double>(next_random() >> 11) * (1.0 / 9007199254740992.0) * nucleus_total;
    double acc = 0;
    for (size_t i = 0; i < nucleus; ++i) {
      acc += probs[i];
      if (u < acc) return order[i];
    }
    return order[nucleus - 1];
  }

  sampler_detail::SampleTrace trace_;  // the sums of the last sampled token

 private:
  uint64_t next_random() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  SamplingParams params_;
  uint64_t state_;
};

}  // namespace dsv4

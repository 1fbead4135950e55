#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "dsv4/engine.h"
#include "dsv4/error.h"

namespace dsv4 {

namespace {
// splitmix64: small, seedable, identical on every platform.
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), state_(params.seed) {
  DSV4_CHECK(params.temperature >= 0.0f && std::isfinite(params.temperature),
             "temperature must be a finite number >= 0, got {}", params.temperature);
  DSV4_CHECK(params.top_p > 0.0f && params.top_p <= 1.0f, "top_p must be in (0, 1], got {}", params.top_p);
  DSV4_CHECK(params.top_k >= 0, "top_k must be >= 0, got {}", params.top_k);
}

int32_t Sampler::sample(std::span<const float> logits) {
  DSV4_CHECK(!logits.empty(), "sample: empty logits");
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
  for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp((logits[order[i]] - max_logit) / params_.temperature);
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
  const double u = static_cast<double>(next_random(state_) >> 11) * (1.0 / 9007199254740992.0) * nucleus_total;
  double acc = 0;
  for (size_t i = 0; i < nucleus; ++i) {
    acc += probs[i];
    if (u < acc) return order[i];
  }
  return order[nucleus - 1];
}

}  // namespace dsv4

// Sampler internals shared with its test and benchmark: the sampling step with the
// random state passed in, reporting the sums it used, so that a test can compare them
// bit for bit with the definition (tests/cpu/sampler_test.cpp) and not only the token.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#include "dsv4/engine.h"

namespace dsv4::sampler_detail {

// The sums behind one sampled token (temperature > 0; all zero for greedy).
struct SampleTrace {
  double total = 0;          // sum of the kept probs exp((logit - max) / T), in sorted order
  double nucleus_total = 0;  // sum of the nucleus's probs, the scale of the uniform draw
};

// Sampler::sample: `state` is the splitmix64 state (advanced once per sampled token);
// `trace`, when given, receives the sums.
int32_t sample(std::span<const float> logits, const SamplingParams& params, uint64_t& state,
               SampleTrace* trace = nullptr);

}  // namespace dsv4::sampler_detail

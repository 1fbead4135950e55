// dsv4::Sampler: temperature / top-k / top-p sampling of one token from FP32 logits.
//
// The definition (what the first implementation computed, kept verbatim as the oracle in
// tests/cpu/sampler_test.cpp): order = all V ids stable-sorted by logit, descending
// (ties: lower id first); keep = V, or top_k when set; probs[i] = exp((logit - max) / T)
// over the first `keep`; total = their double sum in that order; nucleus = the shortest
// prefix whose running sum of probs[i] / total reaches top_p; u = uniform [0, 1) (one
// splitmix64 draw per call) times the nucleus's double sum; the token is the first i of
// the nucleus whose running sum exceeds u.
//
// This implementation returns the same token for every input, bit for bit, without
// sorting all V logits. Why the result cannot change:
//  1. The first sorted element is the maximum: probs[0] = exp(0 / T) = 1 exactly, so the
//     running sum (total, and the draw's running sum) is >= 1 after the first addition.
//  2. A double p < 2^-53 added to a double s >= 1 gives s back: ulp(s) >= 2^-52, so s + p
//     lies strictly within half an ulp of s and rounds to s. So every element with
//     p < 2^-53 leaves every running sum unchanged, wherever it stands in the order.
//  3. Candidates: d = double(logit) - max > c with c = -40 T (exact in double: T is a
//     float, 40 T needs 27 mantissa bits). A non-candidate has d <= -40 T, so d / T <= -40
//     after rounding (rounding is monotone, -40 is a double) and its prob is at most
//     exp(-40) (1 + 2^-52) ~ 4.2e-18 < 2^-53 = 1.1e-16: by 2, it changes no sum. d is
//     monotone in the logit, so the candidates are a prefix of the sorted order; only they
//     are sorted (the same order: (logit desc, id asc) is a total order, any exact sort of
//     it equals the stable sort).
//  4. kept = min(keep, candidates) = the first `kept` sorted elements. total over them
//     equals the old total (the rest of the first `keep` add nothing, by 2). The nucleus
//     loop runs on identical values up to kept; if it stops there, the nucleus is the
//     same. If not, the old nucleus ends further on (or at keep) with a sum equal to the
//     sum over all kept (by 2), which is what is used here. The old draw then stops inside
//     the first kept elements: u = r * S with r <= 1 - 2^-53 and S >= 1 rounds to less
//     than S (S = m 2^e: the exact product lies at least half an ulp below S, or is
//     representable when m = 1), and the running sum reaches S at the last kept element
//     and changes no more after it; the first index whose running sum exceeds u is
//     where the sum stepped over u, so a kept one.
//  5. The same double expressions as the definition, evaluated in the same order:
//     (double(logit) - max) / double(T), std::exp, running sums from 0, probs[i] / total,
//     r * 2^-53 * S. Equal logits give equal probs (one std::exp per distinct value). The
//     draw's first "u < running sum" is the first prefix sum > u (a binary search: the
//     prefix sums stored while summing total are the draw's running sums; they never
//     decrease).
// Logits: NaN is an error naming its index (the sort order was undefined), also for
// greedy; with T > 0, +inf is an error (exp(inf - inf) made every prob NaN) and so is a
// vector of only -inf; a -inf logit is a token of probability 0 (as before). Greedy
// (T = 0) takes the first maximum (+inf included), as before.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>

#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "engine/sampler.h"

namespace dsv4 {

namespace {
// splitmix64: small, seedable, identical on every platform.
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A 32-bit key whose ascending order is the descending order of non-NaN floats, with
// -0 and +0 equal (as `>` has them).
uint32_t descending_key(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (bits == 0x80000000u) bits = 0;  // -0 -> +0
  return (bits & 0x80000000u) ? bits : (~bits & 0x7fffffffu);
}

// Stable LSD radix sort of keys[n] by their high 32 bits (3 passes of 11/11/10 bits;
// a pass whose digit is the same in every key is skipped). Returns keys or scratch,
// whichever holds the result.
uint64_t* sort_by_high_word(uint64_t* keys, uint64_t* scratch, size_t n) {
  constexpr int kShift[3] = {32, 43, 54};
  constexpr uint32_t kMask[3] = {0x7ff, 0x7ff, 0x3ff};
  std::array<std::array<uint32_t, 2048>, 3> counts{};
  for (size_t i = 0; i < n; ++i) {
    const uint64_t k = keys[i];
    ++counts[0][(k >> 32) & 0x7ff];
    ++counts[1][(k >> 43) & 0x7ff];
    ++counts[2][k >> 54];
  }
  uint64_t* src = keys;
  uint64_t* dst = scratch;
  for (int pass = 0; pass < 3; ++pass) {
    auto& offsets = counts[pass];
    if (offsets[(src[0] >> kShift[pass]) & kMask[pass]] == n) continue;  // one digit: order kept
    uint32_t sum = 0;
    for (auto& c : offsets) {
      const uint32_t count = c;
      c = sum;
      sum += count;
    }
    for (size_t i = 0; i < n; ++i) {
      const uint64_t k = src[i];
      dst[offsets[(k >> kShift[pass]) & kMask[pass]]++] = k;
    }
    std::swap(src, dst);
  }
  return src;
}

[[noreturn]] void fail_on_nan(std::span<const float> logits) {
  const size_t index = std::find_if(logits.begin(), logits.end(), [](float v) { return std::isnan(v); }) -
                       logits.begin();
  fail("sample: logit {} of {} is NaN (expected numbers; the model's output is broken)", index, logits.size());
}
}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), state_(params.seed) {
  DSV4_CHECK(params.temperature >= 0.0f && std::isfinite(params.temperature),
             "temperature must be a finite number >= 0, got {}", params.temperature);
  DSV4_CHECK(params.top_p > 0.0f && params.top_p <= 1.0f, "top_p must be in (0, 1], got {}", params.top_p);
  DSV4_CHECK(params.top_k >= 0, "top_k must be >= 0, got {}", params.top_k);
}

int32_t Sampler::sample(std::span<const float> logits) { return sampler_detail::sample(logits, params_, state_); }

namespace sampler_detail {

int32_t sample(std::span<const float> logits, const SamplingParams& params, uint64_t& state, SampleTrace* trace) {
  DSV4_CHECK(!logits.empty(), "sample: empty logits");
  const size_t vocab = logits.size();
  DSV4_CHECK(vocab <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
             "sample: {} logits, expected at most {} (token ids are int32)", vocab,
             std::numeric_limits<int32_t>::max());
  // The maximum and whether any logit is NaN (a NaN never wins a `<`); then its first id.
  float max_value = -std::numeric_limits<float>::infinity();
  bool any_nan = false;
  for (const float v : logits) {
    any_nan |= (v != v);
    max_value = max_value < v ? v : max_value;
  }
  if (any_nan) fail_on_nan(logits);
  const size_t argmax = std::find(logits.begin(), logits.end(), max_value) - logits.begin();
  if (params.temperature == 0.0f) return static_cast<int32_t>(argmax);  // greedy: first maximum
  DSV4_CHECK(max_value != std::numeric_limits<float>::infinity(),
             "sample: logit {} of {} is +inf (expected finite logits when sampling at temperature {})", argmax,
             vocab, params.temperature);
  DSV4_CHECK(max_value != -std::numeric_limits<float>::infinity(),
             "sample: all {} logits are -inf (expected at least one finite logit)", vocab);

  // Candidates (comment at the top, point 3), in id order: (descending_key << 32) | id.
  const double temperature = params.temperature;
  const double max_logit = max_value;
  const double cutoff = -40.0 * temperature;
  auto keys = std::make_unique_for_overwrite<uint64_t[]>(vocab);
  size_t candidates = 0;
  for (size_t i = 0; i < vocab; ++i) {
    const float v = logits[i];
    keys[candidates] = (static_cast<uint64_t>(descending_key(v)) << 32) | i;
    candidates += (static_cast<double>(v) - max_logit > cutoff);
  }
  size_t kept = candidates;
  if (params.top_k > 0) kept = std::min(kept, static_cast<size_t>(params.top_k));
  const uint64_t* sorted = keys.get();
  std::unique_ptr<uint64_t[]> scratch;
  if (kept < candidates && kept <= candidates / 8) {
    std::nth_element(keys.get(), keys.get() + kept, keys.get() + candidates);
    std::sort(keys.get(), keys.get() + kept);
  } else {
    scratch = std::make_unique_for_overwrite<uint64_t[]>(candidates);
    sorted = sort_by_high_word(keys.get(), scratch.get(), candidates);
  }

  // probs[i] and their running sums, in sorted order.
  auto probs = std::make_unique_for_overwrite<double[]>(2 * kept);
  double* prefix = probs.get() + kept;  // [kept] the sum of probs[0..i]
  double total = 0;
  float previous = std::numeric_limits<float>::quiet_NaN();
  double p = 0;
  for (size_t i = 0; i < kept; ++i) {
    const float v = logits[static_cast<uint32_t>(sorted[i])];
    if (!(v == previous)) p = std::exp((static_cast<double>(v) - max_logit) / temperature);
    previous = v;
    probs[i] = p;
    prefix[i] = total += p;
  }
  // Nucleus: smallest prefix whose mass reaches top_p.
  double mass = 0;
  size_t nucleus = kept;
  for (size_t i = 0; i < kept; ++i) {
    mass += probs[i] / total;
    if (mass >= params.top_p) {
      nucleus = i + 1;
      break;
    }
  }
  const double nucleus_total = prefix[nucleus - 1];
  const double u = static_cast<double>(next_random(state) >> 11) * (1.0 / 9007199254740992.0) * nucleus_total;
  size_t drawn = std::upper_bound(prefix, prefix + nucleus, u) - prefix;
  if (drawn == nucleus) drawn = nucleus - 1;  // unreachable for finite sums (point 4); the definition's fallback
  if (trace) *trace = SampleTrace{total, nucleus_total};
  return static_cast<int32_t>(static_cast<uint32_t>(sorted[drawn]));
}

}  // namespace sampler_detail

}  // namespace dsv4

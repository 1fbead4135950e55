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
//  3. Candidates: every id with d = double(logit) - max > c, c = -40 T (exact in double: T
//     is a float, 40 T needs 27 mantissa bits), and maybe more. A non-candidate has
//     d <= -40 T, so d / T <= -40 after rounding (rounding is monotone, -40 is a double)
//     and its prob is at most exp(-40) (1 + 2^-52) ~ 4.2e-18 < 2^-53 = 1.1e-16: by 2, it
//     changes no sum. The test is `logit >= threshold` on the float, threshold = max + c
//     rounded down and one float step lower (below the double rounding of max + c): it
//     keeps every id with d > c, and any extra one has a prob < 2^-53 too. It is monotone
//     in the logit, so the candidates are a prefix of the sorted order. Only they are
//     sorted (the same order: (logit desc, id asc) is a total order, any exact sort of it
//     equals the stable sort): LSD radix of the 32-bit keys alone (equal keys are equal
//     logits, whose ids stand in id order: the drawn position's id is found afterwards),
//     or with a small top_k a heap of the best (key << 32 | id).
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
// Logits at T > 0: NaN is an error naming its index (the sort order was undefined); +inf
// is an error (exp(inf - inf) made every prob NaN) and so is a vector of only -inf; a
// -inf logit is a token of probability 0 (as before). Greedy (T = 0) is greedy_token
// (engine.h, the rule of every engine path): the first largest non-NaN logit, +inf
// included; the same as before for every input without NaN.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
  const float canonical = value + 0.0f;  // -0 -> +0 (round to nearest); every other non-NaN unchanged
  uint32_t bits;
  std::memcpy(&bits, &canonical, sizeof(bits));
  const uint32_t negative = static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31);  // all ones if negative
  return bits ^ (~negative & 0x7fffffffu);  // negative: bits; positive: ~bits without the sign
}

// The float of a descending_key (the map is its own inverse; -0 comes back as +0).
float key_value(uint32_t key) {
  const uint32_t negative = static_cast<uint32_t>(static_cast<int32_t>(key) >> 31);
  const uint32_t bits = key ^ (~negative & 0x7fffffffu);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// LSD radix sort of keys[n]: 3 passes of 11/11/10 bits (counts: each pass's digit counts
// over the n keys); a pass whose digit is the same in every key is skipped. Returns keys
// or scratch, whichever holds the result.
using DigitCounts = std::array<std::array<uint32_t, 2048>, 3>;
uint32_t* sort_keys(uint32_t* keys, uint32_t* scratch, size_t n, DigitCounts& counts) {
  constexpr int kShift[3] = {0, 11, 22};
  constexpr uint32_t kMask[3] = {0x7ff, 0x7ff, 0x3ff};
  uint32_t* src = keys;
  uint32_t* dst = scratch;
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
      const uint32_t k = src[i];
      dst[offsets[(k >> kShift[pass]) & kMask[pass]]++] = k;
    }
    std::swap(src, dst);
  }
  return src;
}

// The largest logit and whether any is NaN: one read of the logits (SSE2: maxps(v, m)
// is `m < v ? v : m`, so a NaN never becomes the maximum; the NaN test is separate).
struct LogitScan {
  float max_value;
  bool any_nan;
};
LogitScan scan_logits(std::span<const float> logits) {
  const float* x = logits.data();
  const size_t n = logits.size();
  float max_value = -std::numeric_limits<float>::infinity();
  bool any_nan = false;
  size_t i = 0;
#if defined(__SSE2__)
  __m128 m[4] = {_mm_set1_ps(max_value), _mm_set1_ps(max_value), _mm_set1_ps(max_value), _mm_set1_ps(max_value)};
  __m128 nan = _mm_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 4; ++j) {
      const __m128 v = _mm_loadu_ps(x + i + 4 * j);
      m[j] = _mm_max_ps(v, m[j]);
      nan = _mm_or_ps(nan, _mm_cmpunord_ps(v, v));
    }
  }
  any_nan = _mm_movemask_ps(nan) != 0;
  float lanes[16];
  for (int j = 0; j < 4; ++j) _mm_storeu_ps(lanes + 4 * j, m[j]);
  for (const float v : lanes) max_value = max_value < v ? v : max_value;
#endif
  for (; i < n; ++i) {
    const float v = x[i];
    any_nan |= (v != v);
    max_value = max_value < v ? v : max_value;
  }
  return {max_value, any_nan};
}

// A float at most x and below every real value within double rounding of it: x rounded
// toward -inf, then one float step further down (a float step exceeds x's double
// rounding error, max + cutoff).
float float_at_most(double x) {
  if (x < -static_cast<double>(std::numeric_limits<float>::max())) return -std::numeric_limits<float>::infinity();
  float f = static_cast<float>(x);
  if (static_cast<double>(f) > x) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  return std::nextafter(f, -std::numeric_limits<float>::infinity());
}

uint64_t composite_key(float value, size_t id) { return (static_cast<uint64_t>(descending_key(value)) << 32) | id; }

constexpr size_t kMaxHeapTopK = 1024;  // larger top_k: selection on the compacted keys

// The k (< V) first ids of the sorted order, as composite keys, sorted: a max-heap of the
// k best so far; a later id enters only with a strictly larger logit (on a tie the
// earlier id stays first).
void select_top_k(std::span<const float> logits, size_t k, uint64_t* out) {
  for (size_t i = 0; i < k; ++i) out[i] = composite_key(logits[i], i);
  std::make_heap(out, out + k);  // out[0]: the last of the k in the sorted order
  float worst = logits[static_cast<uint32_t>(out[0])];
  for (size_t i = k; i < logits.size(); ++i) {
    const float v = logits[i];
    if (v > worst) {
      std::pop_heap(out, out + k);
      out[k - 1] = composite_key(v, i);
      std::push_heap(out, out + k);
      worst = logits[static_cast<uint32_t>(out[0])];
    }
  }
  std::sort_heap(out, out + k);
}

// Scratch of sample(), 24 bytes per logit (keys, the radix sort's second buffer, probs
// and their running sums), kept per thread so that a call touches no fresh pages (fresh
// buffers cost ~20% of a V4 call in page faults). It belongs in Sampler once the class
// can take a member.
struct Workspace {
  std::vector<uint32_t> keys, scratch;
  std::vector<double> sums;
};
thread_local Workspace workspace;

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
  if (params.temperature == 0.0f) return greedy_token(logits);  // the one greedy rule (engine.h)
  const auto [max_value, any_nan] = scan_logits(logits);
  if (any_nan) fail_on_nan(logits);
  const size_t argmax = std::find(logits.begin(), logits.end(), max_value) - logits.begin();  // the first
  DSV4_CHECK(max_value != std::numeric_limits<float>::infinity(),
             "sample: logit {} of {} is +inf (expected finite logits when sampling at temperature {})", argmax,
             vocab, params.temperature);
  DSV4_CHECK(max_value != -std::numeric_limits<float>::infinity(),
             "sample: all {} logits are -inf (expected at least one finite logit)", vocab);

  const double temperature = params.temperature;
  const double max_logit = logits[argmax];
  const double cutoff = -40.0 * temperature;  // candidates: logit - max > cutoff (top comment, point 3)
  Workspace& ws = workspace;
  if (ws.keys.size() < vocab) ws.keys.resize(vocab);
  uint32_t* keys = ws.keys.data();  // [vocab] descending_key of the candidates
  const uint32_t* sorted = keys;    // [kept] the keys of the first kept of the sorted order
  std::array<uint64_t, kMaxHeapTopK> top;  // the heap path's (key << 32 | id), sorted
  bool have_ids = false;                   // top holds the ids of sorted
  size_t kept = 0;
  const size_t top_k = static_cast<size_t>(params.top_k);
  if (top_k > 0 && top_k < vocab && top_k <= kMaxHeapTopK) {
    select_top_k(logits, top_k, top.data());
    have_ids = true;
    while (kept < top_k && static_cast<double>(logits[static_cast<uint32_t>(top[kept])]) - max_logit > cutoff) {
      keys[kept] = static_cast<uint32_t>(top[kept] >> 32);
      ++kept;  // the candidates are a prefix
    }
  } else {
    // Compaction of the candidates' keys in id order, with the radix sort's digit counts.
    // The test is on the float: v >= threshold keeps every v with v - max > cutoff (and
    // maybe a few more: any elements below the cutoff are harmless, point 2, and
    // v >= threshold still selects a prefix of the sorted order).
    const float threshold = float_at_most(max_logit + cutoff);
    DigitCounts counts{};
    std::array<std::array<uint32_t, 1024>, 4> top_counts{};  // 4 tables: top digits repeat, chains would form
    size_t candidates = 0;
    for (size_t i = 0; i < vocab; ++i) {
      const float v = logits[i];
      const uint32_t key = descending_key(v);
      const uint32_t is_candidate = v >= threshold;
      keys[candidates] = key;
      candidates += is_candidate;
      counts[0][key & 0x7ff] += is_candidate;
      counts[1][(key >> 11) & 0x7ff] += is_candidate;
      top_counts[i & 3][key >> 22] += is_candidate;
    }
    for (size_t d = 0; d < 1024; ++d)
      counts[2][d] = top_counts[0][d] + top_counts[1][d] + top_counts[2][d] + top_counts[3][d];
    kept = top_k > 0 ? std::min(candidates, top_k) : candidates;
    if (kept < candidates && kept <= candidates / 8) {
      std::nth_element(keys, keys + kept, keys + candidates);
      std::sort(keys, keys + kept);
    } else {
      if (ws.scratch.size() < candidates) ws.scratch.resize(candidates);
      sorted = sort_keys(keys, ws.scratch.data(), candidates, counts);
    }
  }

  // probs[i] and their running sums, in sorted order.
  if (ws.sums.size() < 2 * kept) ws.sums.resize(2 * kept);
  double* probs = ws.sums.data();  // [kept]
  double* prefix = probs + kept;   // [kept] the sum of probs[0..i]
  double total = 0;
  float previous = std::numeric_limits<float>::quiet_NaN();
  double p = 0;
  for (size_t i = 0; i < kept; ++i) {
    const float v = key_value(sorted[i]);
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
  if (have_ids) return static_cast<int32_t>(static_cast<uint32_t>(top[drawn]));
  // The id at sorted position `drawn`: equal logits stand in id order, so it is the
  // rank-th id (in id order) with that logit, rank = its equal predecessors in sorted.
  const uint32_t drawn_key = sorted[drawn];
  size_t rank = drawn - static_cast<size_t>(std::lower_bound(sorted, sorted + drawn, drawn_key) - sorted);
  const float drawn_value = key_value(drawn_key);
  for (size_t i = 0; i < vocab; ++i) {
    if (logits[i] == drawn_value) {
      if (rank == 0) return static_cast<int32_t>(i);
      --rank;
    }
  }
  fail("sample: internal error: no id for sorted position {} (logit {})", drawn, drawn_value);
}

}  // namespace sampler_detail

}  // namespace dsv4

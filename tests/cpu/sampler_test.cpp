// dsv4::Sampler against the first implementation (ReferenceSampler below, kept verbatim:
// a stable sort of all V logits): the same tokens for the same seed on every input,
// over many logit vectors (V4's 129280 and small ragged V; ties; -0/+0; -inf; wide and
// narrow logit ranges), temperatures 1e-30 .. 1e30, top_k 0 / 1 / 50 / large, top_p
// 0.1 .. 1 and sequences of draws. Plus the defined errors (NaN, +inf, all -inf).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "dsv4/engine.h"
#include "engine/sampler.h"
#include "sampler_reference.h"

namespace dsv4 {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr size_t kV4Vocab = 129280;

// Logit vectors that hunt the fast path's assumptions (which elements are candidates,
// tie order, the sums' order).
enum class Shape {
  kNormal,         // N(0, scale^2)
  kLlm,            // a few large logits over a N(-5, 3^2) bulk: most mass on few ids
  kTies,           // few distinct values (integers in [-4, 4]), many ties, -0 and +0
  kBf16,           // N(0, 4^2) rounded to BF16 (repeats, as a BF16 lm_head output has)
  kFlat,           // all equal but a few: the whole vocabulary is in the nucleus
  kCutoffEdge,     // logits at max - 40 T (+- a few ulps): the candidate boundary
  kWithNegInf,     // N(0, 2^2) with a third of the ids at -inf
  kTinyTail,       // one logit at 0, the rest near -36.7 T: probs around 2^-53
};
const char* shape_name(Shape s) {
  switch (s) {
    case Shape::kNormal: return "normal";
    case Shape::kLlm: return "llm";
    case Shape::kTies: return "ties";
    case Shape::kBf16: return "bf16";
    case Shape::kFlat: return "flat";
    case Shape::kCutoffEdge: return "cutoff_edge";
    case Shape::kWithNegInf: return "with_neg_inf";
    case Shape::kTinyTail: return "tiny_tail";
  }
  return "?";
}
constexpr Shape kShapes[] = {Shape::kNormal, Shape::kLlm,        Shape::kTies,       Shape::kBf16,
                             Shape::kFlat,   Shape::kCutoffEdge, Shape::kWithNegInf, Shape::kTinyTail};

float round_to_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = (bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff0000u;
  std::memcpy(&v, &bits, 4);
  return v;
}

std::vector<float> make_logits(Shape shape, size_t vocab, float temperature, float scale, std::mt19937_64& rng) {
  std::vector<float> logits(vocab);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<size_t> pick(0, vocab - 1);
  switch (shape) {
    case Shape::kNormal:
      for (float& v : logits) v = scale * normal(rng);
      break;
    case Shape::kLlm:
      for (float& v : logits) v = -5.0f + 3.0f * normal(rng);
      for (int i = 0; i < 5; ++i) logits[pick(rng)] = 12.0f + 4.0f * normal(rng);
      break;
    case Shape::kTies:
      for (float& v : logits) {
        v = static_cast<float>(static_cast<int>(rng() % 9) - 4);
        if (v == 0.0f && (rng() & 1)) v = -0.0f;
      }
      break;
    case Shape::kBf16:
      for (float& v : logits) v = round_to_bf16(4.0f * normal(rng));
      break;
    case Shape::kFlat:
      for (float& v : logits) v = 1.5f;
      for (int i = 0; i < 3; ++i) logits[pick(rng)] = 1.5f + scale * normal(rng);
      break;
    case Shape::kCutoffEdge: {
      const float top = 3.0f;
      const float edge = static_cast<float>(top - 40.0 * static_cast<double>(temperature));
      for (float& v : logits) {
        const int ulps = static_cast<int>(rng() % 9) - 4;
        v = edge;
        for (int u = 0; u < std::abs(ulps); ++u) v = std::nextafter(v, ulps > 0 ? kInf : -kInf);
        if (rng() % 4 == 0) v = top - static_cast<float>(rng() % 1000) * 0.001f * 40.0f * temperature;
      }
      logits[pick(rng)] = top;
      break;
    }
    case Shape::kWithNegInf:
      for (float& v : logits) v = (rng() % 3 == 0) ? -kInf : 2.0f * normal(rng);
      logits[pick(rng)] = 0.5f;  // at least one finite
      break;
    case Shape::kTinyTail: {
      const double ln2_53 = 53.0 * std::log(2.0);
      for (float& v : logits) {
        const double spread = (static_cast<double>(rng() % 2001) - 1000.0) * 1e-4;  // +-0.1
        v = static_cast<float>(-(ln2_53 + spread) * temperature);
      }
      logits[pick(rng)] = 0.0f;
      break;
    }
  }
  return logits;
}

struct Case {
  Shape shape;
  size_t vocab;
  SamplingParams params;
  float scale;
};

std::string describe(const Case& c, int draw) {
  return std::string("shape=") + shape_name(c.shape) + " V=" + std::to_string(c.vocab) +
         " T=" + std::to_string(c.params.temperature) + " top_p=" + std::to_string(c.params.top_p) +
         " top_k=" + std::to_string(c.params.top_k) + " seed=" + std::to_string(c.params.seed) +
         " scale=" + std::to_string(c.scale) + " draw=" + std::to_string(draw);
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

// Draws `draws` tokens from both samplers, each draw from fresh logits of the case's
// shape (the samplers' states advance together), twice per logit vector; compares the
// tokens and, bit for bit, the two sums that decide them. Returns the mismatches.
int compare(const Case& c, int draws, std::mt19937_64& rng) {
  uint64_t state = c.params.seed;
  ReferenceSampler reference(c.params);
  int mismatches = 0;
  for (int d = 0; d < draws; ++d) {
    const std::vector<float> logits = make_logits(c.shape, c.vocab, c.params.temperature, c.scale, rng);
    for (int repeat = 0; repeat < 2; ++repeat) {  // the second draw uses the advanced state
      const int32_t want = reference.sample(logits);
      sampler_detail::SampleTrace trace;
      const int32_t got = sampler_detail::sample(logits, c.params, state, &trace);
      if (got != want || !same_bits(trace.total, reference.trace_.total) ||
          !same_bits(trace.nucleus_total, reference.trace_.nucleus_total)) {
        ADD_FAILURE() << describe(c, d) << (repeat ? " (repeat)" : "") << ": token " << got << " (logit "
                      << logits[got] << "), reference " << want << " (logit " << logits[want] << "); total "
                      << std::hexfloat << trace.total << " vs " << reference.trace_.total << ", nucleus_total "
                      << trace.nucleus_total << " vs " << reference.trace_.nucleus_total << std::defaultfloat;
        ++mismatches;
      }
    }
  }
  return mismatches;
}

TEST(Sampler, MatchesReferenceOnSmallVocabularies) {
  std::mt19937_64 rng(20261202);
  const size_t vocabs[] = {1, 2, 7, 83, 769, 5003};
  const float temperatures[] = {0.1f, 0.5f, 1.0f, 1.3f, 2.0f};
  const int top_ks[] = {0, 1, 50, 700};
  const float top_ps[] = {0.1f, 0.5f, 0.9f, 0.95f, 1.0f};
  int cases = 0, mismatches = 0;
  for (const size_t vocab : vocabs)
    for (const Shape shape : kShapes)
      for (const float t : temperatures)
        for (const int k : top_ks)
          for (const float p : top_ps) {
            const Case c{shape, vocab, SamplingParams{t, p, k, rng()}, (cases % 3 == 0) ? 10.0f : 1.0f};
            mismatches += compare(c, vocab > 1000 ? 1 : 3, rng);
            ++cases;
          }
  EXPECT_EQ(mismatches, 0) << "of " << cases << " cases";
}

TEST(Sampler, MatchesReferenceOnV4Vocabulary) {
  std::mt19937_64 rng(7);
  const float temperatures[] = {0.1f, 0.6f, 1.0f, 2.0f};
  const std::pair<int, float> cuts[] = {{0, 1.0f}, {0, 0.95f}, {0, 0.1f}, {50, 0.9f}, {1, 1.0f}, {2000, 1.0f}, {20000, 0.99f}};
  int cases = 0, mismatches = 0;
  for (const Shape shape : kShapes)
    for (const float t : temperatures)
      for (const auto& [k, p] : cuts) {
        if ((cases++ % 2) == 1 && shape != Shape::kLlm && shape != Shape::kNormal) continue;  // keep it ~seconds
        const Case c{shape, kV4Vocab, SamplingParams{t, p, k, rng()}, 3.0f};
        mismatches += compare(c, 1, rng);
      }
  EXPECT_EQ(mismatches, 0) << "of " << cases << " cases";
}

TEST(Sampler, MatchesReferenceOnLongSequencesOfDraws) {
  // One logit vector, 2000 draws per sampler: every draw's u differs, so the drawn
  // positions cover the whole nucleus, including its last (smallest) elements.
  std::mt19937_64 rng(99);
  for (const Shape shape : {Shape::kLlm, Shape::kTies, Shape::kTinyTail, Shape::kFlat}) {
    const SamplingParams params{1.0f, 1.0f, 0, 42};
    const std::vector<float> logits = make_logits(shape, 3001, params.temperature, 2.0f, rng);
    Sampler fast(params);
    ReferenceSampler reference(params);
    for (int d = 0; d < 2000; ++d) {
      const int32_t want = reference.sample(logits);
      ASSERT_EQ(fast.sample(logits), want) << shape_name(shape) << " draw " << d;
    }
  }
}

TEST(Sampler, MatchesReferenceAtExtremeTemperatures) {
  std::mt19937_64 rng(5);
  int mismatches = 0;
  for (const float t : {1e-30f, 1e-6f, 1e-3f, 30.0f, 1e6f, 1e30f})
    for (const Shape shape : kShapes)
      for (const int k : {0, 3})
        for (const float p : {0.3f, 1.0f}) mismatches += compare(Case{shape, 1031, SamplingParams{t, p, k, rng()}, 5.0f}, 2, rng);
  EXPECT_EQ(mismatches, 0);
}

TEST(Sampler, MatchesReferenceAtHugeLogits) {
  // Logits near +-FLT_MAX: max + cutoff below -FLT_MAX (every logit a candidate, -inf too)
  // and differences beyond the float range.
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  int mismatches = 0;
  for (const float t : {1.0f, 1e30f, 3e38f})
    for (const float center : {-3.0e38f, 0.0f})
      for (const int k : {0, 4}) {
        const SamplingParams params{t, 0.9f, k, rng()};
        uint64_t state = params.seed;
        ReferenceSampler reference(params);
        std::vector<float> logits(997);
        for (float& v : logits) v = std::clamp(center + 3.0e38f * unit(rng), -3.4e38f, 3.4e38f);
        logits[5] = -kInf;
        for (int d = 0; d < 4; ++d) {
          sampler_detail::SampleTrace trace;
          const int32_t want = reference.sample(logits), got = sampler_detail::sample(logits, params, state, &trace);
          if (got != want || !same_bits(trace.total, reference.trace_.total)) {
            ADD_FAILURE() << "T=" << t << " center=" << center << " top_k=" << k << " draw " << d << ": token " << got
                          << ", reference " << want;
            ++mismatches;
          }
        }
      }
  EXPECT_EQ(mismatches, 0);
}

TEST(Sampler, TieOrderIsLowerIdFirstWithSignedZeros) {
  // -0 and +0 are the same logit: with top_k = 2 only the two lowest ids of the tie are
  // kept, whatever their zero's sign.
  const std::vector<float> logits = {-1.0f, -0.0f, 0.0f, -0.0f, 0.0f, -2.0f};
  SamplingParams params{1.0f, 1.0f, 2, 11};
  Sampler sampler(params);
  ReferenceSampler reference(params);
  bool seen[2] = {false, false};
  for (int i = 0; i < 200; ++i) {
    const int32_t t = sampler.sample(logits);
    ASSERT_EQ(t, reference.sample(logits));
    ASSERT_TRUE(t == 1 || t == 2) << "top_k=2 over a tie of ids 1..4 keeps ids 1 and 2, got " << t;
    seen[t - 1] = true;
  }
  EXPECT_TRUE(seen[0] && seen[1]);
}

TEST(Sampler, GreedyMatchesReferenceIncludingInfinities) {
  Sampler greedy(SamplingParams{});
  ReferenceSampler reference(SamplingParams{});
  std::mt19937_64 rng(3);
  for (const Shape shape : kShapes) {
    const std::vector<float> logits = make_logits(shape, 4099, 1.0f, 2.0f, rng);
    EXPECT_EQ(greedy.sample(logits), reference.sample(logits)) << shape_name(shape);
  }
  EXPECT_EQ(greedy.sample(std::vector<float>{1.0f, kInf, 3.0f, kInf}), 1);
  EXPECT_EQ(greedy.sample(std::vector<float>{-kInf, -kInf}), 0);
  EXPECT_EQ(greedy.sample(std::vector<float>{-0.0f, 0.0f}), 0);
}

// The message of the dsv4::Error that fn throws ("" if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Sampler, NanLogitIsAnErrorNamingItsIndexWhenSampling) {
  std::vector<float> logits(300, 0.25f);
  logits[17] = std::numeric_limits<float>::quiet_NaN();
  logits[200] = std::numeric_limits<float>::quiet_NaN();
  for (const int top_k : {0, 5}) {
    Sampler sampler(SamplingParams{1.0f, 0.9f, top_k, 1});
    const std::string message = error_of([&] { sampler.sample(logits); });
    EXPECT_NE(message.find("logit 17 of 300 is NaN"), std::string::npos) << "top_k=" << top_k << ": '" << message << "'";
  }
  // Greedy is greedy_token: NaN is skipped (the rule of the device argmax too).
  Sampler greedy(SamplingParams{});
  logits[250] = 0.5f;
  EXPECT_EQ(greedy.sample(logits), 250);
  EXPECT_EQ(greedy.sample(logits), greedy_token(logits));
}

TEST(Sampler, InfinitiesWhenSampling) {
  Sampler sampler(SamplingParams{0.8f, 1.0f, 0, 1});
  const std::string plus = error_of([&] { sampler.sample(std::vector<float>{1.0f, 2.0f, kInf, kInf}); });
  EXPECT_NE(plus.find("logit 2 of 4 is +inf"), std::string::npos) << "'" << plus << "'";
  const std::string minus = error_of([&] { sampler.sample(std::vector<float>{-kInf, -kInf, -kInf}); });
  EXPECT_NE(minus.find("all 3 logits are -inf"), std::string::npos) << "'" << minus << "'";
  // -inf elsewhere: probability 0, never drawn.
  const std::vector<float> logits = {-kInf, 0.0f, -kInf, 0.0f, -kInf};
  for (int i = 0; i < 100; ++i) {
    const int32_t t = sampler.sample(logits);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  EXPECT_THROW(sampler.sample(std::vector<float>{}), std::exception);
}

}  // namespace
}  // namespace dsv4

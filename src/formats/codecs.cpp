// Element codecs (E2M1, E4M3fn, E8M0) and the error statistics. The encoders follow
// the integer algorithms of the references so that they agree bit for bit, including
// ties and the subnormal range (tests/formats/torch_fixture_test.cpp):
//   E4M3: c10 fp8e4m3fn_from_fp32_value (normal: add 0x7FFFF + lsb, shift by 20;
//         subnormal: float add of 2^14 whose ulp is E4M3's 2^-9 quantum).
//   E8M0: c10 fp8e8m0fnu_from_fp32_value (guard/round/sticky on the FP32 exponent).
//   E2M1: ModelOpt _cast_fp4 (searchsorted on the midpoints, ties to the even code).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "dsv4/formats.h"

namespace dsv4 {

namespace {

constexpr float kE2M1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

constexpr uint32_t kE4M3OverflowBits = 1087u << 20;  // 480.0f: rounds past 448 into the NaN code
constexpr uint32_t kE4M3MinNormalBits = 121u << 23;  // 2^-6
constexpr uint32_t kDenormMagicBits = 141u << 23;    // 2^14: its ulp is 2^-9, E4M3's subnormal step

// |value|'s E4M3 code by torch's algorithm; 0x7F (NaN) for |value| >= 480, for values
// in (464, 480) that round up into it, and for NaN/inf.
uint8_t e4m3_magnitude_code(uint32_t abs_bits) {
  if (abs_bits >= kE4M3OverflowBits) return 0x7f;
  if (abs_bits < kE4M3MinNormalBits) {
    // The FP32 add rounds to a multiple of 2^-9 (round to nearest even: the default
    // floating-point environment, which the library never changes).
    const float shifted = std::bit_cast<float>(abs_bits) + std::bit_cast<float>(kDenormMagicBits);
    return static_cast<uint8_t>(std::bit_cast<uint32_t>(shifted) - kDenormMagicBits);
  }
  const uint32_t mantissa_odd = (abs_bits >> 20) & 1u;
  const uint32_t rounded = abs_bits + 0x7ffffu + mantissa_odd - (120u << 23);  // rebias 127 -> 7
  return static_cast<uint8_t>(rounded >> 20);
}

}  // namespace

float e2m1_to_float(uint8_t code) { return kE2M1Values[code & 0xf]; }

uint8_t float_to_e2m1(float value) {
  const float m = std::fabs(value);
  // Midpoints between neighbours; `>` where the lower neighbour has the even code,
  // `>=` where the upper one has. NaN compares false everywhere -> 0.
  const int code = (m > 0.25f) + (m >= 0.75f) + (m > 1.25f) + (m >= 1.75f) + (m > 2.5f) + (m >= 3.5f) + (m > 5.0f);
  return static_cast<uint8_t>((value < 0.0f ? 8 : 0) | code);
}

float e4m3_to_float(uint8_t code) {
  const int sign = code >> 7, exponent = (code >> 3) & 0xf, mantissa = code & 7;
  if (exponent == 15 && mantissa == 7) return NAN;
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                        : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  return sign ? -magnitude : magnitude;
}

uint8_t float_to_e4m3_nonsaturating(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  return static_cast<uint8_t>(((bits >> 24) & 0x80u) | e4m3_magnitude_code(bits & 0x7fffffffu));
}

uint8_t float_to_e4m3(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7f;  // NaN stays NaN
  const uint8_t code = e4m3_magnitude_code(abs_bits);
  return sign | (code == 0x7f ? uint8_t{0x7e} : code);  // saturate instead of NaN
}

float e8m0_to_float(uint8_t code) {
  if (code == 0xff) return NAN;
  // 2^-127 is an FP32 subnormal: build it by ldexp (exact) rather than by exponent bits.
  return std::ldexp(1.0f, static_cast<int>(code) - 127);
}

uint8_t e8m0_from_exponent(int exponent) { return static_cast<uint8_t>(std::clamp(exponent, -127, 127) + 127); }

uint8_t float_to_e8m0(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  uint32_t exponent = (bits >> 23) & 0xffu;
  if (exponent == 0xffu) return 0xff;
  const bool guard = bits & 0x400000u, round = bits & 0x200000u, sticky = bits & 0x1fffffu;
  const bool lsb = exponent > 0;  // the implicit mantissa bit
  if (guard && (round || sticky || lsb)) ++exponent;
  return static_cast<uint8_t>(exponent);
}

void ErrorStats::add(const float* reference, const float* approx, int64_t n) {
  double ref_sq = 0, approx_sq = 0, diff_sq = 0, dot_sum = 0, max_diff = max_abs_diff;
  for (int64_t i = 0; i < n; ++i) {
    const double r = reference[i], a = approx[i], d = a - r;
    ref_sq += r * r;
    approx_sq += a * a;
    diff_sq += d * d;
    dot_sum += r * a;
    max_diff = std::max(max_diff, std::fabs(d));
  }
  sum_ref_sq += ref_sq;
  sum_approx_sq += approx_sq;
  sum_diff_sq += diff_sq;
  dot += dot_sum;
  max_abs_diff = max_diff;
  count += n;
}

double ErrorStats::relative_frobenius() const {
  if (sum_ref_sq == 0) return sum_diff_sq == 0 ? 0.0 : INFINITY;
  return std::sqrt(sum_diff_sq / sum_ref_sq);
}

double ErrorStats::cosine() const {
  if (sum_ref_sq == 0 && sum_approx_sq == 0) return 1.0;
  if (sum_ref_sq == 0 || sum_approx_sq == 0) return 0.0;
  return dot / (std::sqrt(sum_ref_sq) * std::sqrt(sum_approx_sq));
}

}  // namespace dsv4

#include <cmath>

#include "dsv4/formats.h"

namespace dsv4 {

namespace {
constexpr float kE2M1Values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
}

float e2m1_to_float(uint8_t code) {
  const float magnitude = kE2M1Values[code & 7];
  return (code & 8) ? -magnitude : magnitude;
}

uint8_t float_to_e2m1(float value) {
  if (std::isnan(value)) return 0;
  const uint8_t sign = std::signbit(value) ? 8 : 0;
  const float magnitude = std::fabs(value);
  // Midpoints between neighbours; at a tie pick the even code.
  uint8_t code = 7;
  for (uint8_t c = 0; c < 7; ++c) {
    const float mid = 0.5f * (kE2M1Values[c] + kE2M1Values[c + 1]);
    if (magnitude < mid) { code = c; break; }
    if (magnitude == mid) { code = (c % 2 == 0) ? c : c + 1; break; }
  }
  return sign | code;
}

float e4m3_to_float(uint8_t code) {
  const int sign = code >> 7, exponent = (code >> 3) & 0xf, mantissa = code & 7;
  if (exponent == 15 && mantissa == 7) return NAN;
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                        : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  return sign ? -magnitude : magnitude;
}

uint8_t float_to_e4m3(float value) {
  if (std::isnan(value)) return 0x7f;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  float magnitude = std::fabs(value);
  if (magnitude >= 448.0f) return sign | 0x7e;
  // Quantum: 2^-9 for subnormals (exponent < -6), else 2^(e-3).
  int exponent;
  std::frexp(magnitude, &exponent);  // magnitude = f * 2^exponent, f in [0.5, 1)
  const int unbiased = exponent - 1;
  const int quantum_exp = unbiased < -6 ? -9 : unbiased - 3;
  const float scaled = std::ldexp(magnitude, -quantum_exp);
  const float rounded = std::nearbyint(scaled);  // default FE_TONEAREST: ties to even
  const float result = std::ldexp(rounded, quantum_exp);
  if (result >= 448.0f) return sign | 0x7e;
  // Encode result exactly.
  if (result == 0.0f) return sign;
  int e2;
  std::frexp(result, &e2);
  const int unb = e2 - 1;
  if (unb < -6) return sign | static_cast<uint8_t>(std::ldexp(result, 9));
  const int mantissa = static_cast<int>(std::ldexp(result, 3 - unb)) - 8;
  return sign | static_cast<uint8_t>(((unb + 7) << 3) | mantissa);
}

float e8m0_to_float(uint8_t code) {
  if (code == 0xff) return NAN;
  return std::ldexp(1.0f, static_cast<int>(code) - 127);
}

}  // namespace dsv4

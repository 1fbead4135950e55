// Element codecs, exhaustively: every E2M1 / E4M3 / E8M0 code, RNE ties, saturation,
// subnormals, signed zeros and NaN. Independent of torch (the fixture comparison is in
// torch_fixture_test.cpp): expected values come from the format definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "dsv4/formats.h"

namespace dsv4 {
namespace {

float next_up(float x) { return std::nextafter(x, std::numeric_limits<float>::infinity()); }
float next_down(float x) { return std::nextafter(x, -std::numeric_limits<float>::infinity()); }

TEST(E2M1, AllSixteenCodes) {
  const float expected[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int code = 0; code < 16; ++code) {
    EXPECT_EQ(e2m1_to_float(static_cast<uint8_t>(code)), expected[code]) << code;
    EXPECT_EQ(std::signbit(e2m1_to_float(static_cast<uint8_t>(code))), code >= 8) << code;
    if (code != 8) {
      EXPECT_EQ(float_to_e2m1(expected[code]), code) << "encode(decode(code)) must round-trip";
    }
  }
  // -0.0 is not < 0: the sign bit is `value < 0`, as ModelOpt's _cast_fp4.
  EXPECT_EQ(float_to_e2m1(-0.0f), 0);
}

TEST(E2M1, TiesToEvenCodeAndNeighbours) {
  // midpoint, lower neighbour code, upper neighbour code, code of the tie (even one).
  struct Tie { float mid; int lower, upper, tie; };
  const Tie ties[] = {{0.25f, 0, 1, 0}, {0.75f, 1, 2, 2}, {1.25f, 2, 3, 2}, {1.75f, 3, 4, 4},
                      {2.5f, 4, 5, 4},  {3.5f, 5, 6, 6},  {5.0f, 6, 7, 6}};
  for (const Tie& t : ties) {
    EXPECT_EQ(float_to_e2m1(t.mid), t.tie) << t.mid;
    EXPECT_EQ(float_to_e2m1(next_down(t.mid)), t.lower) << t.mid;
    EXPECT_EQ(float_to_e2m1(next_up(t.mid)), t.upper) << t.mid;
    EXPECT_EQ(float_to_e2m1(-t.mid), 8 | t.tie) << -t.mid;
  }
}

TEST(E2M1, SaturationSignedZeroAndNaN) {
  EXPECT_EQ(float_to_e2m1(6.0f), 7);
  EXPECT_EQ(float_to_e2m1(7.99f), 7);
  EXPECT_EQ(float_to_e2m1(1e30f), 7);
  EXPECT_EQ(float_to_e2m1(INFINITY), 7);
  EXPECT_EQ(float_to_e2m1(-INFINITY), 15);
  EXPECT_EQ(float_to_e2m1(-100.0f), 15);
  EXPECT_EQ(float_to_e2m1(-0.1f), 8);     // rounds to zero, keeps the sign: -0
  EXPECT_EQ(float_to_e2m1(1e-40f), 0);    // FP32 denormal
  EXPECT_EQ(float_to_e2m1(-1e-40f), 8);
  EXPECT_EQ(float_to_e2m1(NAN), 0);       // no NaN code; quantizers reject NaN first
}

TEST(NibblePacking, EvenColumnInLowNibble) {
  EXPECT_EQ(pack_e2m1_pair(0x1, 0x2), 0x21);
  EXPECT_EQ(pack_e2m1_pair(0xf, 0x8), 0x8f);
  const uint8_t packed[2] = {0x21, 0x8f};
  EXPECT_EQ(e2m1_code_at(packed, 0), 0x1);
  EXPECT_EQ(e2m1_code_at(packed, 1), 0x2);
  EXPECT_EQ(e2m1_code_at(packed, 2), 0xf);
  EXPECT_EQ(e2m1_code_at(packed, 3), 0x8);
}

// E4M3 reference decode from the definition, independent of the codec's formula.
double e4m3_definition(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  const double magnitude = e == 0 ? m / 8.0 * std::pow(2.0, -6) : (1 + m / 8.0) * std::pow(2.0, e - 7);
  return s ? -magnitude : magnitude;
}

TEST(E4M3, AllCodesDecodeAndRoundTrip) {
  int nan_codes = 0;
  for (int code = 0; code < 256; ++code) {
    const float value = e4m3_to_float(static_cast<uint8_t>(code));
    if ((code & 0x7f) == 0x7f) {
      ++nan_codes;
      EXPECT_TRUE(std::isnan(value)) << code;
      continue;
    }
    EXPECT_EQ(static_cast<double>(value), e4m3_definition(code)) << code;
    EXPECT_EQ(float_to_e4m3(value), code) << "round trip of code " << code;
    EXPECT_EQ(float_to_e4m3_nonsaturating(value), code) << code;
  }
  EXPECT_EQ(nan_codes, 2);
  EXPECT_EQ(e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_float(0x08), std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::signbit(e4m3_to_float(0x80)));
}

TEST(E4M3, EveryTieRoundsToEvenAndNeighboursRoundAway) {
  // Every midpoint between consecutive positive finite codes, subnormals included.
  for (int code = 0; code < 0x7e; ++code) {
    const float low = e4m3_to_float(static_cast<uint8_t>(code)), high = e4m3_to_float(static_cast<uint8_t>(code + 1));
    const float mid = 0.5f * (low + high);  // exact: both have few significant bits
    const int even = (code % 2 == 0) ? code : code + 1;
    EXPECT_EQ(float_to_e4m3(mid), even) << "tie between codes " << code << " and " << code + 1;
    EXPECT_EQ(float_to_e4m3(next_down(mid)), code) << mid;
    EXPECT_EQ(float_to_e4m3(next_up(mid)), code + 1) << mid;
    EXPECT_EQ(float_to_e4m3(-mid), 0x80 | even) << -mid;
  }
}

TEST(E4M3, SaturationAndTorchOverflow) {
  // Saturating (reference quantizers clamp to +-448 before the cast).
  for (float v : {448.0f, 448.5f, 463.9f, 464.0f, 464.1f, 479.9f, 480.0f, 1e4f, 3e38f, INFINITY}) {
    EXPECT_EQ(float_to_e4m3(v), 0x7e) << v;
    EXPECT_EQ(float_to_e4m3(-v), 0xfe) << -v;
  }
  // torch's own cast: 464 is a tie that goes to the even code 448; above it NaN.
  EXPECT_EQ(float_to_e4m3_nonsaturating(463.9f), 0x7e);
  EXPECT_EQ(float_to_e4m3_nonsaturating(464.0f), 0x7e);
  EXPECT_EQ(float_to_e4m3_nonsaturating(next_up(464.0f)), 0x7f);
  EXPECT_EQ(float_to_e4m3_nonsaturating(1e4f), 0x7f);
  EXPECT_EQ(float_to_e4m3_nonsaturating(-1e4f), 0xff);
  EXPECT_EQ(float_to_e4m3_nonsaturating(INFINITY), 0x7f);
  EXPECT_EQ(float_to_e4m3(NAN), 0x7f);
  EXPECT_EQ(float_to_e4m3(-NAN), 0xff);
}

TEST(E4M3, SubnormalsAndZeros) {
  EXPECT_EQ(float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -10)), 0x00);        // half the smallest subnormal: tie to 0
  EXPECT_EQ(float_to_e4m3(next_up(std::ldexp(1.0f, -10))), 0x01);
  EXPECT_EQ(float_to_e4m3(3 * std::ldexp(1.0f, -10)), 0x02);    // 1.5 quanta: tie to even 2
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -6) - std::ldexp(1.0f, -10)), 0x08);  // rounds up into normals
  EXPECT_EQ(float_to_e4m3(1e-40f), 0x00);
  EXPECT_EQ(float_to_e4m3(-1e-40f), 0x80);
}

TEST(E8M0, AllCodesAndExponents) {
  for (int code = 0; code < 255; ++code) {
    EXPECT_EQ(e8m0_to_float(static_cast<uint8_t>(code)), std::ldexp(1.0f, code - 127)) << code;
    EXPECT_EQ(float_to_e8m0(e8m0_to_float(static_cast<uint8_t>(code))), code) << code;
    EXPECT_EQ(e8m0_from_exponent(code - 127), code);
  }
  EXPECT_TRUE(std::isnan(e8m0_to_float(0xff)));
  EXPECT_EQ(e8m0_from_exponent(-500), 0);
  EXPECT_EQ(e8m0_from_exponent(500), 254);
  EXPECT_EQ(e8m0_to_float(0), std::ldexp(1.0f, -127));  // an FP32 subnormal, exact
}

TEST(E8M0, TorchRounding) {
  EXPECT_EQ(float_to_e8m0(1.4f), 127);
  EXPECT_EQ(float_to_e8m0(1.5f), 128);   // tie goes up
  EXPECT_EQ(float_to_e8m0(3.0f), 129);
  EXPECT_EQ(float_to_e8m0(0.75f), 127);
  EXPECT_EQ(float_to_e8m0(-2.0f), 128);  // sign dropped
  EXPECT_EQ(float_to_e8m0(0.0f), 0);
  EXPECT_EQ(float_to_e8m0(3e38f), 255);  // rounds past 2^127
  EXPECT_EQ(float_to_e8m0(INFINITY), 255);
  EXPECT_EQ(float_to_e8m0(NAN), 255);
}

TEST(ErrorStats, CosineAndRelativeError) {
  const float ref[4] = {1, 2, 3, 4}, same[4] = {1, 2, 3, 4}, off[4] = {1, 2, 3, 5}, zero[4] = {0, 0, 0, 0};
  ErrorStats s;
  s.add(ref, same, 4);
  EXPECT_EQ(s.relative_frobenius(), 0.0);
  EXPECT_NEAR(s.cosine(), 1.0, 1e-15);
  ErrorStats t;
  t.add(ref, off, 4);
  EXPECT_NEAR(t.relative_frobenius(), 1.0 / std::sqrt(30.0), 1e-15);
  EXPECT_EQ(t.max_abs_diff, 1.0);
  ErrorStats z;
  z.add(zero, zero, 4);
  EXPECT_EQ(z.relative_frobenius(), 0.0);
  EXPECT_EQ(z.cosine(), 1.0);
}

}  // namespace
}  // namespace dsv4

// FP8 KV cache row codec (src/cpu/kv_fp8.h) on the CPU: every E4M3 byte decodes and
// re-encodes to itself, the encoder is RNE with ties to even and saturates, the block
// scale is the smallest power of two >= amax / 448 within its clamp, the row layout
// (scales, pad, BF16 RoPE tail) is as documented, and the round trip stays within
// max(|x| / 16, 2^(k - 10)) of each finite input, never NaN.
#include "cpu/kv_fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "dsv4/dtype.h"

namespace dsv4 {
namespace {

using namespace dsv4::cpu;

TEST(KvFp8Codec, LayoutConstants) {
  EXPECT_EQ(kKvFp8Blocks, 7);
  EXPECT_EQ(kKvFp8RopeOffset, 456);
  EXPECT_EQ(kKvFp8RowBytes, 584);
  EXPECT_EQ(kKvFp8NopeDim + kKvFp8RopeDim, kKvFp8HeadDim);
}

TEST(KvFp8Codec, EveryByteRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;  // NaN code points, never written
    const float v = e4m3_to_float(static_cast<uint8_t>(b));
    EXPECT_EQ(float_to_e4m3(v), b) << "byte " << b << " value " << v;
    // Scaled at both clamp ends: exact FP32 normals (or zero), exact in BF16, finite.
    for (int k : {kKvFp8MinScaleExponent, 0, kKvFp8MaxScaleExponent}) {
      const float scaled = e4m3_to_float(static_cast<uint8_t>(b), k);
      EXPECT_TRUE(std::isfinite(scaled));
      EXPECT_EQ(bf16_to_float(float_to_bf16(scaled)), scaled) << "byte " << b << " k " << k;
      if ((b & 0x7f) != 0) {
        EXPECT_GE(std::fabs(scaled), 0x1p-126f) << "byte " << b << " k " << k;
      }
    }
  }
  EXPECT_EQ(e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), 0x1p-9f);
  EXPECT_EQ(e4m3_to_float(0x08), 0x1p-6f);
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_float(0xb8), -1.0f);
}

TEST(KvFp8Codec, RoundsToNearestEvenAndSaturates) {
  // Every midpoint between adjacent positive code points goes to the even byte; just
  // above / below goes up / down.
  for (int b = 0; b < 0x7e; ++b) {
    const double lo = e4m3_to_float(static_cast<uint8_t>(b)), hi = e4m3_to_float(static_cast<uint8_t>(b + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    EXPECT_EQ(float_to_e4m3(mid), (b % 2 == 0) ? b : b + 1) << "midpoint of " << b;
    EXPECT_EQ(float_to_e4m3(std::nextafter(mid, 1000.0f)), b + 1) << "above midpoint of " << b;
    EXPECT_EQ(float_to_e4m3(std::nextafter(mid, 0.0f)), b) << "below midpoint of " << b;
    EXPECT_EQ(float_to_e4m3(-mid), 0x80 | ((b % 2 == 0) ? b : b + 1));
  }
  EXPECT_EQ(float_to_e4m3(464.0f), 0x7e);  // would be 480 unsaturated
  EXPECT_EQ(float_to_e4m3(1e30f), 0x7e);
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(float_to_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::quiet_NaN()), 0x00);
  EXPECT_EQ(float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(float_to_e4m3(-0x1p-11f), 0x80);
  EXPECT_EQ(float_to_e4m3(0x1p-10f), 0x00);       // tie to even (0)
  EXPECT_EQ(float_to_e4m3(0x1.8p-10f), 0x01);
}

TEST(KvFp8Codec, ScaleIsSmallestPowerOfTwo) {
  EXPECT_EQ(kv_fp8_scale_exponent(448.0f), 0);
  EXPECT_EQ(kv_fp8_scale_exponent(std::nextafter(448.0f, 1e9f)), 1);
  EXPECT_EQ(kv_fp8_scale_exponent(1.0f), -8);  // 448 / 256 = 1.75 >= 1 > 0.875
  EXPECT_EQ(kv_fp8_scale_exponent(0.0f), kKvFp8MinScaleExponent);
  EXPECT_EQ(kv_fp8_scale_exponent(1e-40f), kKvFp8MinScaleExponent);
  EXPECT_EQ(kv_fp8_scale_exponent(std::numeric_limits<float>::max()), kKvFp8MaxScaleExponent);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> log2_amax(-100.0f, 100.0f);
  for (int i = 0; i < 20000; ++i) {
    const float amax = std::exp2(log2_amax(rng));
    const int k = kv_fp8_scale_exponent(amax);
    if (k == kKvFp8MinScaleExponent || k == kKvFp8MaxScaleExponent) continue;
    EXPECT_GE(std::ldexp(448.0, k), static_cast<double>(amax)) << amax;
    EXPECT_LT(std::ldexp(448.0, k - 1), static_cast<double>(amax)) << amax;
  }
}

// Ragged rows: random magnitudes per block from 2^-140 to 2^126, zeros, negative zeros,
// infinities and NaNs in the no-RoPE part; a zero block; a block of one huge value.
std::vector<float> hard_rows(int rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-140, 126), pick(0, 63);
  std::vector<float> out(static_cast<size_t>(rows) * kKvFp8HeadDim);
  for (int r = 0; r < rows; ++r) {
    float* row = out.data() + static_cast<size_t>(r) * kKvFp8HeadDim;
    for (int b = 0; b < 8; ++b) {
      const int e = b == 7 ? 0 : exponent(rng);  // RoPE tail: ordinary magnitudes
      for (int c = 0; c < 64; ++c) row[b * 64 + c] = std::ldexp(unit(rng), e);
    }
    switch (r % 6) {
      case 0: for (int c = 0; c < 64; ++c) row[64 + c] = 0.0f; break;
      case 1: row[pick(rng)] = -0.0f; row[128 + pick(rng)] = std::numeric_limits<float>::infinity(); break;
      case 2: row[192 + pick(rng)] = std::numeric_limits<float>::quiet_NaN(); row[pick(rng)] = -1e38f; break;
      case 3: for (int c = 0; c < 64; ++c) row[256 + c] = c == 5 ? 3e38f : 1e-3f; break;
      default: break;
    }
  }
  return out;
}

TEST(KvFp8Codec, RowLayoutAndRoundTripBound) {
  const int rows = 60;
  const std::vector<float> input = hard_rows(rows, 3);
  std::vector<float> decoded(input.size());
  std::vector<uint8_t> bytes(kKvFp8RowBytes);
  for (int r = 0; r < rows; ++r) {
    const float* x = input.data() + static_cast<size_t>(r) * kKvFp8HeadDim;
    float* y = decoded.data() + static_cast<size_t>(r) * kKvFp8HeadDim;
    kv_fp8_encode_row(x, bytes.data());
    kv_fp8_decode_row(bytes.data(), y);
    EXPECT_EQ(bytes[kKvFp8ScaleOffset + kKvFp8Blocks], 0) << "pad byte, row " << r;
    for (int b = 0; b < kKvFp8Blocks; ++b) {
      float amax = 0.0f;
      for (int c = 0; c < 64; ++c)
        if (std::isfinite(x[b * 64 + c])) amax = std::max(amax, std::fabs(x[b * 64 + c]));
      const int k = kv_fp8_scale_exponent(amax);
      ASSERT_EQ(bytes[kKvFp8ScaleOffset + b], k + 127) << "row " << r << " block " << b;
      for (int c = b * 64; c < b * 64 + 64; ++c) {
        ASSERT_FALSE(std::isnan(y[c])) << "row " << r << " channel " << c;
        EXPECT_EQ(bf16_to_float(float_to_bf16(y[c])), y[c]);
        if (std::isnan(x[c])) {
          EXPECT_EQ(bytes[c], 0x00);
        } else if (std::isinf(x[c])) {
          EXPECT_EQ(y[c], std::copysign(std::ldexp(448.0f, k), x[c]));
        } else if (std::fabs(x[c]) > std::ldexp(448.0f, kKvFp8MaxScaleExponent)) {
          EXPECT_EQ(y[c], std::copysign(std::ldexp(448.0f, kKvFp8MaxScaleExponent), x[c]));  // saturated
        } else {
          const double bound = std::max(std::fabs(static_cast<double>(x[c])) / 16, std::ldexp(1.0, k - 10));
          EXPECT_LE(std::fabs(static_cast<double>(y[c]) - x[c]), bound) << "row " << r << " channel " << c;
          if (x[c] == 0.0f || std::fabs(x[c]) < std::ldexp(1.0f, k - 10)) {
            EXPECT_EQ(y[c], 0.0f);
          }
          EXPECT_EQ(std::signbit(y[c]), std::signbit(x[c])) << "row " << r << " channel " << c;
        }
      }
    }
    for (int c = kKvFp8NopeDim; c < kKvFp8HeadDim; ++c) {
      const uint16_t bits = float_to_bf16(x[c]);
      EXPECT_EQ(bytes[kKvFp8RopeOffset + 2 * (c - kKvFp8NopeDim)], bits & 0xff);
      EXPECT_EQ(bytes[kKvFp8RopeOffset + 2 * (c - kKvFp8NopeDim) + 1], bits >> 8);
      EXPECT_EQ(y[c], bf16_to_float(bits));
    }
    // Decoding is a fixed point (values; the scale byte may drop when amax rounded down
    // to 448 2^(k-1)).
    std::vector<uint8_t> again(kKvFp8RowBytes);
    std::vector<float> twice(kKvFp8HeadDim);
    kv_fp8_encode_row(y, again.data());
    kv_fp8_decode_row(again.data(), twice.data());
    for (int c = 0; c < kKvFp8HeadDim; ++c) EXPECT_EQ(twice[c], y[c]) << "row " << r << " channel " << c;
  }
  std::vector<float> in_place = input;
  kv_fp8_round_trip(in_place.data(), rows);
  EXPECT_EQ(std::memcmp(in_place.data(), decoded.data(), decoded.size() * sizeof(float)), 0);
}

}  // namespace
}  // namespace dsv4

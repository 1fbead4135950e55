// dtype names, parsing, storage sizes; f16 and bf16 conversions checked exhaustively
// against the compiler's own IEEE binary16 type (_Float16, round to nearest even).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "dsv4/dtype.h"

namespace dsv4 {
namespace {

uint16_t reference_f16(float value) {
  const _Float16 half = static_cast<_Float16>(value);
  uint16_t bits;
  std::memcpy(&bits, &half, 2);
  return bits;
}

TEST(DType, NamesRoundTrip) {
  const DType all[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF8_E4M3, DType::kF8_E8M0,
                       DType::kU8,  DType::kI8,  DType::kI32,  DType::kI64,     DType::kF4};
  const char* names[] = {"F32", "F16", "BF16", "F8_E4M3", "F8_E8M0", "U8", "I8", "I32", "I64", "F4"};
  for (size_t i = 0; i < std::size(all); ++i) {
    EXPECT_EQ(dtype_name(all[i]), names[i]);
    DType parsed = DType::kF32;
    EXPECT_TRUE(parse_dtype(names[i], &parsed)) << names[i];
    EXPECT_EQ(parsed, all[i]) << names[i];
  }
  DType untouched = DType::kI8;
  for (const char* unknown : {"f32", "F64", "BOOL", "F8_E5M2", "", "F32 "}) {
    EXPECT_FALSE(parse_dtype(unknown, &untouched)) << unknown;
    EXPECT_EQ(untouched, DType::kI8);
  }
}

TEST(DType, StorageBytes) {
  EXPECT_EQ(dtype_storage_bytes(DType::kF32, 6), 24);
  EXPECT_EQ(dtype_storage_bytes(DType::kBF16, 6), 12);
  EXPECT_EQ(dtype_storage_bytes(DType::kF16, 0), 0);
  EXPECT_EQ(dtype_storage_bytes(DType::kF8_E4M3, 7), 7);
  EXPECT_EQ(dtype_storage_bytes(DType::kF8_E8M0, 3), 3);
  EXPECT_EQ(dtype_storage_bytes(DType::kI64, 3), 24);
  EXPECT_EQ(dtype_storage_bytes(DType::kI32, 3), 12);
  EXPECT_EQ(dtype_storage_bytes(DType::kF4, 8), 4);
  EXPECT_EQ(dtype_storage_bytes(DType::kF4, 7), 4);  // two per byte, rounding up
  EXPECT_EQ(dtype_storage_bytes(DType::kF4, 1), 1);
  EXPECT_EQ(dtype_storage_bytes(DType::kF32, int64_t{1} << 60), int64_t{1} << 62);  // no wrap-around
}

TEST(DType, F16ToFloatExhaustive) {
  for (uint32_t code = 0; code < 65536; ++code) {
    const uint16_t half_bits = static_cast<uint16_t>(code);
    _Float16 half;
    std::memcpy(&half, &half_bits, 2);
    const float expected = static_cast<float>(half);
    const float got = f16_to_float(half_bits);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << code;
      EXPECT_EQ(std::signbit(got), std::signbit(expected)) << std::hex << code;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected)) << std::hex << code;
    }
    if (!std::isnan(expected)) {
      EXPECT_EQ(float_to_f16(got), half_bits) << std::hex << code;  // round trip
    }
  }
}

TEST(DType, FloatToF16RoundsToNearestEven) {
  // Every float whose top 20 bits vary (all exponents, both signs, the mantissa bits
  // around f16's rounding point), plus random words: identical to _Float16's RNE.
  int mismatches = 0;
  auto check = [&](uint32_t word) {
    const float value = std::bit_cast<float>(word);
    const uint16_t got = float_to_f16(value), want = reference_f16(value);
    if (std::isnan(value)) {
      EXPECT_EQ(got & 0x7c00, 0x7c00);
      EXPECT_NE(got & 0x3ff, 0);
      return;
    }
    if (got != want && ++mismatches < 10)
      ADD_FAILURE() << "float " << value << " (0x" << std::hex << word << "): got 0x" << got << " want 0x" << want;
  };
  for (uint32_t high = 0; high < (1u << 20); ++high) {
    check(high << 12);
    check((high << 12) | 0x1000);  // exact ties at f16's last bit for normal halves
    check((high << 12) | 0xfff);
  }
  std::mt19937 random(7);
  for (int i = 0; i < 1000000; ++i) check(static_cast<uint32_t>(random()));
  EXPECT_EQ(mismatches, 0);
  // Landmarks.
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65519.996f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);  // ties to even: rounds to infinity
  EXPECT_EQ(float_to_f16(-INFINITY), 0xfc00);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (zero)
  EXPECT_EQ(float_to_f16(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
}

TEST(DType, Bf16) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3f808000)), 0x3f80);  // tie -> even
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3f818000)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3f808001)), 0x3f81);
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x7f7fffff)), 0x7f80);  // overflow to infinity
  const uint16_t nan = float_to_bf16(NAN);
  EXPECT_TRUE(std::isnan(bf16_to_float(nan)));
  for (uint32_t code = 0; code < 65536; ++code) {
    const float value = bf16_to_float(static_cast<uint16_t>(code));
    if (!std::isnan(value)) {
      EXPECT_EQ(float_to_bf16(value), code) << std::hex << code;
    }
  }
}

}  // namespace
}  // namespace dsv4

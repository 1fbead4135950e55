// Element types as they appear in safetensors headers, and scalar conversions.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace dsv4 {

enum class DType : uint8_t {
  kF32, kF16, kBF16, kF8_E4M3, kF8_E8M0, kU8, kI8, kI32, kI64,
  kF4,  // packed E2M1, two per byte; the header shape counts FP4 elements
};

// "F32", "BF16", ... as written in safetensors headers.
std::string_view dtype_name(DType dtype);
// Parses a safetensors dtype string; returns false for unknown names.
bool parse_dtype(std::string_view name, DType* out);
// Bytes of storage for `elements` elements (F4 packs two per byte, rounding up).
int64_t dtype_storage_bytes(DType dtype, int64_t elements);

inline float bf16_to_float(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, 4);
  return value;
}

// Round-to-nearest-even, NaN stays NaN (quiet).
inline uint16_t float_to_bf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, 4);
  if ((word & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((word >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((word >> 16) & 1u);
  return static_cast<uint16_t>((word + rounding) >> 16);
}

float f16_to_float(uint16_t bits);
uint16_t float_to_f16(float value);

}  // namespace dsv4

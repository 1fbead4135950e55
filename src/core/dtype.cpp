// dtype names as safetensors writes them, storage sizes, and exact f16 <-> f32.
#include "dsv4/dtype.h"

#include <cmath>

namespace dsv4 {

namespace {
struct DTypeInfo {
  DType dtype;
  std::string_view name;
  int bits;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, "F32", 32},     {DType::kF16, "F16", 16},         {DType::kBF16, "BF16", 16},
    {DType::kF8_E4M3, "F8_E4M3", 8}, {DType::kF8_E8M0, "F8_E8M0", 8}, {DType::kU8, "U8", 8},
    {DType::kI8, "I8", 8},        {DType::kI32, "I32", 32},         {DType::kI64, "I64", 64},
    {DType::kF4, "F4", 4},
};
}  // namespace

std::string_view dtype_name(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info.name;
  return "?";
}

bool parse_dtype(std::string_view name, DType* out) {
  for (const auto& info : kDTypes) {
    if (info.name == name) {
      *out = info.dtype;
      return true;
    }
  }
  return false;
}

int64_t dtype_storage_bytes(DType dtype, int64_t elements) {
  for (const auto& info : kDTypes) {
    if (info.dtype != dtype) continue;
    // Divide before multiplying: element counts of real checkpoints times 32 bits
    // stay far from overflow, but a hostile header's shape should not wrap around.
    return info.bits >= 8 ? elements * (info.bits / 8) : elements / 2 + elements % 2;
  }
  return -1;
}

float f16_to_float(uint16_t bits) {
  const uint32_t sign = (bits >> 15) & 1, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa ? NAN : INFINITY;
  } else {
    value = std::ldexp(static_cast<float>(mantissa | 0x400), static_cast<int>(exponent) - 25);
  }
  return sign ? -value : value;
}

uint16_t float_to_f16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((word >> 16) & 0x8000);
  const float magnitude = std::fabs(value);
  if (std::isnan(value)) return sign | 0x7e00;
  if (magnitude >= 65520.0f) return sign | 0x7c00;  // rounds to infinity
  if (magnitude < std::ldexp(1.0f, -14)) {          // subnormal: multiples of 2^-24, RNE
    return sign | static_cast<uint16_t>(std::nearbyint(magnitude * 16777216.0f));
  }
  // Normal: round the 23-bit mantissa to 10 bits, ties to even.
  uint32_t bits = word & 0x7fffffff;
  const uint32_t rounding = 0xfff + ((bits >> 13) & 1);
  bits += rounding;
  const int exponent = static_cast<int>(bits >> 23) - 127 + 15;
  return sign | static_cast<uint16_t>((exponent << 10) | ((bits >> 13) & 0x3ff));
}

}  // namespace dsv4

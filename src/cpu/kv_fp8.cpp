// FP8 KV cache row codec (see kv_fp8.h for the layout and the rounding).
#include "cpu/kv_fp8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dsv4/dtype.h"

namespace dsv4::cpu {

int kv_fp8_scale_exponent(float amax) {
  uint32_t bits;
  std::memcpy(&bits, &amax, 4);
  bits &= 0x7fffffffu;
  const int biased = static_cast<int>(bits >> 23);
  if (biased == 0 || biased == 255) return kKvFp8MinScaleExponent;  // 0 / subnormal (inf, NaN are not passed)
  // amax = (1 + f) 2^(biased - 127), 448 = 1.75 2^8: 448 2^k >= amax iff k >= biased - 135
  // (when 1 + f <= 1.75, mantissa bits <= 0x600000) else k >= biased - 134.
  const int k = biased - 135 + ((bits & 0x7fffffu) > 0x600000u ? 1 : 0);
  return std::clamp(k, kKvFp8MinScaleExponent, kKvFp8MaxScaleExponent);
}

uint8_t float_to_e4m3(float value) {
  if (std::isnan(value)) return 0x00;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(value));
  if (a >= 448.0) return sign | 0x7e;
  // Code points are uniformly spaced within a binade and the byte (e << 3 | m) counts
  // them: subnormals (a < 2^-6) step 2^-9 from byte 0; binade [2^(x-1), 2^x) (x >= -5)
  // steps 2^(x-4) from byte (x + 6) << 3. A round-up to the next binade carries into e.
  int base_byte = 0;
  double step = std::ldexp(1.0, -9);
  if (a >= std::ldexp(1.0, -6)) {
    int x;
    std::frexp(a, &x);  // a in [2^(x-1), 2^x)
    base_byte = (x + 6) << 3;
    step = std::ldexp(1.0, x - 4);
    const double units = a / step - 8.0;  // in [0, 8), exact
    const double whole = std::floor(units);
    double n = whole;
    const double frac = units - whole;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(whole, 2.0) != 0.0)) n += 1.0;
    return sign | static_cast<uint8_t>(std::min(base_byte + static_cast<int>(n), 0x7e));
  }
  const double units = a / step;  // in [0, 8), exact
  const double whole = std::floor(units);
  double n = whole;
  const double frac = units - whole;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(whole, 2.0) != 0.0)) n += 1.0;
  return sign | static_cast<uint8_t>(base_byte + static_cast<int>(n));
}

float e4m3_to_float(uint8_t byte, int k) {
  const int e = (byte >> 3) & 15, m = byte & 7;
  const float magnitude = std::ldexp(static_cast<float>(e != 0 ? 8 + m : m), std::max(e, 1) - 10 + k);
  return (byte & 0x80) ? -magnitude : magnitude;
}

void kv_fp8_encode_row(const float* row, uint8_t* out) {
  for (int b = 0; b < kKvFp8Blocks; ++b) {
    const float* block = row + b * kKvFp8BlockChannels;
    float amax = 0.0f;
    for (int c = 0; c < kKvFp8BlockChannels; ++c)
      if (std::isfinite(block[c])) amax = std::max(amax, std::fabs(block[c]));
    const int k = kv_fp8_scale_exponent(amax);
    const float inverse_scale = std::ldexp(1.0f, -k);  // a normal float: |k| <= 117
    for (int c = 0; c < kKvFp8BlockChannels; ++c)
      out[b * kKvFp8BlockChannels + c] = float_to_e4m3(block[c] * inverse_scale);
    out[kKvFp8ScaleOffset + b] = static_cast<uint8_t>(k + 127);
  }
  out[kKvFp8ScaleOffset + kKvFp8Blocks] = 0;  // pad
  for (int c = 0; c < kKvFp8RopeDim; ++c) {
    const uint16_t bits = float_to_bf16(row[kKvFp8NopeDim + c]);
    out[kKvFp8RopeOffset + 2 * c] = static_cast<uint8_t>(bits & 0xff);
    out[kKvFp8RopeOffset + 2 * c + 1] = static_cast<uint8_t>(bits >> 8);
  }
}

void kv_fp8_decode_row(const uint8_t* row, float* out) {
  for (int c = 0; c < kKvFp8NopeDim; ++c) {
    const int k = static_cast<int>(row[kKvFp8ScaleOffset + c / kKvFp8BlockChannels]) - 127;
    out[c] = e4m3_to_float(row[c], k);
  }
  for (int c = 0; c < kKvFp8RopeDim; ++c) {
    const uint16_t bits = static_cast<uint16_t>(row[kKvFp8RopeOffset + 2 * c] |
                                                (row[kKvFp8RopeOffset + 2 * c + 1] << 8));
    out[kKvFp8NopeDim + c] = bf16_to_float(bits);
  }
}

void kv_fp8_round_trip(float* rows, int64_t count) {
  uint8_t encoded[kKvFp8RowBytes];
  for (int64_t r = 0; r < count; ++r) {
    kv_fp8_encode_row(rows + r * kKvFp8HeadDim, encoded);
    kv_fp8_decode_row(encoded, rows + r * kKvFp8HeadDim);
  }
}

}  // namespace dsv4::cpu

// Device twins of the CPU element codecs (src/formats/codecs.cpp) and scale rules
// (src/formats/quantize.cpp): the same integer algorithms and the same FP32
// operations, written with explicit _rn intrinsics so that nvcc cannot contract or
// approximate them. Bit-exactness against the CPU is tested in
// tests/cuda/formats/quantize_test.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::codecs {

// ---------------------------------------------------------------------------------
// Host NaN results. The CPU codecs run on x86-64 SSE, where an arithmetic result
// that is NaN keeps the NaN operand (sign included), and an invalid operation
// (inf/inf, 0/0, 0*inf) gives the "default NaN" 0xFFC00000 (sign bit SET). CUDA
// returns the canonical 0x7FFFFFFF in both cases. E4M3 stores a NaN's sign
// (0x7F / 0xFF), so every product or quotient that reaches float_to_e4m3 goes
// through these; E2M1 maps every NaN to 0 and needs nothing.
// ---------------------------------------------------------------------------------
#if defined(__aarch64__)
constexpr uint32_t kHostDefaultNaNBits = 0x7fc00000u;  // AArch64: default NaN is positive
#else
constexpr uint32_t kHostDefaultNaNBits = 0xffc00000u;  // x86-64: "QNaN floating-point indefinite"
#endif

__device__ inline float host_nan_result(float a, float b, float result) {
  if (isnan(a)) return a;
  if (isnan(b)) return b;
  return isnan(result) ? __uint_as_float(kHostDefaultNaNBits) : result;
}
__device__ inline float host_mul(float a, float b) { return host_nan_result(a, b, __fmul_rn(a, b)); }
__device__ inline float host_div(float a, float b) { return host_nan_result(a, b, __fdiv_rn(a, b)); }

// 2^e exactly: normal for e >= -126, subnormal down to 2^-149, +inf above 127 (as
// std::ldexp(1.0f, e) on the host).
__device__ inline float exact_pow2(int e) {
  if (e > 127) return __uint_as_float(0x7f800000u);
  if (e >= -126) return __uint_as_float(static_cast<uint32_t>(e + 127) << 23);
  return __uint_as_float(1u << (e + 149));
}

// ---------------------------------------------------------------------------------
// Element codecs
// ---------------------------------------------------------------------------------

// ModelOpt _cast_fp4 as the CPU compare chain: RNE on the code, saturation at 6,
// sign bit = value < 0, NaN -> 0.
__device__ inline uint8_t float_to_e2m1(float value) {
  const float m = fabsf(value);
  const int code = (m > 0.25f) + (m >= 0.75f) + (m > 1.25f) + (m >= 1.75f) + (m > 2.5f) + (m >= 3.5f) + (m > 5.0f);
  return static_cast<uint8_t>((value < 0.0f ? 8 : 0) | code);
}

// torch's c10 fp8e4m3fn_from_fp32_value on |x| (0x7F for |x| past 464 and inf/NaN).
__device__ inline uint8_t e4m3_magnitude_code(uint32_t abs_bits) {
  constexpr uint32_t kOverflowBits = 1087u << 20;   // 480.0f
  constexpr uint32_t kMinNormalBits = 121u << 23;   // 2^-6
  constexpr uint32_t kDenormMagicBits = 141u << 23; // 2^14: its ulp is E4M3's 2^-9 step
  if (abs_bits >= kOverflowBits) return 0x7f;
  if (abs_bits < kMinNormalBits) {
    const float shifted = __fadd_rn(__uint_as_float(abs_bits), __uint_as_float(kDenormMagicBits));
    return static_cast<uint8_t>(__float_as_uint(shifted) - kDenormMagicBits);
  }
  const uint32_t mantissa_odd = (abs_bits >> 20) & 1u;
  return static_cast<uint8_t>((abs_bits + 0x7ffffu + mantissa_odd - (120u << 23)) >> 20);
}

// Saturating E4M3 (dsv4::float_to_e4m3): +-448 for finite overflow and inf, NaN keeps
// its sign (0x7F / 0xFF).
__device__ inline uint8_t float_to_e4m3(float value) {
  const uint32_t bits = __float_as_uint(value);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7f;
  const uint8_t code = e4m3_magnitude_code(abs_bits);
  return sign | (code == 0x7f ? uint8_t{0x7e} : code);
}

__device__ inline float e4m3_to_float(uint8_t code) {
  const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
  if (exponent == 15 && mantissa == 7) return __uint_as_float(0x7fc00000u);
  const float magnitude = exponent == 0 ? static_cast<float>(mantissa) * exact_pow2(-9)
                                        : static_cast<float>(8 + mantissa) * exact_pow2(exponent - 10);
  return (code & 0x80) ? -magnitude : magnitude;
}

__device__ inline uint8_t e8m0_from_exponent(int exponent) {
  return static_cast<uint8_t>(min(max(exponent, -127), 127) + 127);
}

// ---------------------------------------------------------------------------------
// Scale rules (dsv4::mxfp4_shared_exponent, dsv4::fp8_scale_exponent)
// ---------------------------------------------------------------------------------

// floor(log2(x)) of a positive finite float, subnormals included (std::ilogb).
__device__ inline int floor_log2(float x) {
  const uint32_t bits = __float_as_uint(x);
  const int biased = static_cast<int>((bits >> 23) & 0xffu);
  if (biased != 0) return biased - 127;
  return (31 - __clz(static_cast<int>(bits & 0x7fffffu))) - 149;  // m * 2^-149
}

// OCP MX: floor(log2(amax)) - 2, clamped to [-127, 127]; -127 for amax 0; 127 for inf.
__device__ inline int mxfp4_shared_exponent(float amax) {
  if (!(amax > 0.0f)) return -127;
  if (isinf(amax)) return 127;
  return min(max(floor_log2(amax) - 2, -127), 127);
}

// DeepSeek fast_round_scale: ceil(log2(max(amax, 1e-4) * fl(1/448))) from the FP32 bits
// (128 for amax = inf, as on the host).
__device__ inline int fp8_scale_exponent(float amax) {
  constexpr float kInverse448 = 1.0f / 448.0f;
  const float ratio = __fmul_rn(fmaxf(amax, 1e-4f), kInverse448);
  const uint32_t bits = __float_as_uint(ratio);
  const int exponent = static_cast<int>((bits >> 23) & 0xffu) - 127;
  return exponent + ((bits & 0x7fffffu) != 0 ? 1 : 0);
}

}  // namespace dsv4::cuda::codecs

// Scalar port of SLEEF 3.x xpowf (src/libm/sleefsimdsp.c, the ENABLE_FMA_SP build
// used for AVX2 and AVX-512) and of torch's vector/tail split. Compiled with
// -ffp-contract=off (see CMakeLists.txt): every product and sum below must round
// exactly where SLEEF's intrinsics round, and every std::fma must stay fused.
#include "io/torch_powf.h"

#include <cfloat>
#include <bit>
#include <cmath>
#include <cstring>

namespace dsv4 {

namespace {

// Double-float value hi + lo (|lo| <= ulp(hi)/2 after normalization).
struct Float2 {
  float hi, lo;
};

// df.h helpers (FMA variants where SLEEF has two).
Float2 df_add2(float x, float y) {
  const float s = x + y, v = s - x;
  return {s, (x - (s - v)) + (y - v)};
}
Float2 df_add2(Float2 x, float y) {
  const float s = x.hi + y, v = s - x.hi;
  const float t = (x.hi - (s - v)) + (y - v);
  return {s, t + x.lo};
}
Float2 df_add2(Float2 x, Float2 y) {
  const float s = x.hi + y.hi, v = s - x.hi;
  const float t = (x.hi - (s - v)) + (y.hi - v);
  return {s, t + (x.lo + y.lo)};
}
Float2 df_add(Float2 x, Float2 y) {  // |x| >= |y|
  const float s = x.hi + y.hi;
  return {s, (((x.hi - s) + y.hi) + x.lo) + y.lo};
}
Float2 df_add(float x, Float2 y) {
  const float s = x + y.hi;
  return {s, ((x - s) + y.hi) + y.lo};
}
Float2 df_scale(Float2 d, float s) { return {d.hi * s, d.lo * s}; }
Float2 df_normalize(Float2 t) {
  const float s = t.hi + t.lo;
  return {s, (t.hi - s) + t.lo};
}
Float2 df_mul(Float2 x, float y) {
  const float s = x.hi * y;
  return {s, std::fma(x.lo, y, std::fma(x.hi, y, -s))};
}
Float2 df_mul(Float2 x, Float2 y) {
  const float s = x.hi * y.hi;
  return {s, std::fma(x.hi, y.lo, std::fma(x.lo, y.hi, std::fma(x.hi, y.hi, -s)))};
}
Float2 df_square(Float2 x) {
  const float s = x.hi * x.hi;
  return {s, std::fma(x.hi + x.hi, x.lo, std::fma(x.hi, x.hi, -s))};
}
Float2 df_div(Float2 n, Float2 d) {
  const float t = 1.0f / d.hi;
  const float s = n.hi * t;
  const float u = std::fma(t, n.hi, -s);
  const float v = std::fma(-d.lo, t, std::fma(-d.hi, t, 1.0f));
  return {s, std::fma(s, v, std::fma(n.lo, t, u))};
}

// vldexp_vf_vf_vi2: x * 2^q in four steps so that huge |q| neither overflows nor
// loses the subnormal range.
float sleef_ldexp(float x, int32_t q) {
  int32_t m = q >> 31;
  m = (((m + q) >> 6) - m) << 4;
  q = q - (m << 2);
  m += 0x7f;
  m = m > 0 ? m : 0;
  m = m > 0xff ? 0xff : m;
  float u = std::bit_cast<float>(m << 23);
  x = x * u * u * u * u;
  u = std::bit_cast<float>((q + 0x7f) << 23);
  return x * u;
}

// logkf: log(d) as a double-float, d > 0 finite.
Float2 sleef_logk(float d, bool avx512) {
  float m;
  float e;
  if (avx512 && d >= FLT_MIN) {
    // vgetexp(d / 0.75) and vgetmant(d, [0.75, 1.5)).
    e = static_cast<float>(std::ilogb(d * (1.0f / 0.75f)));
    const int exponent = std::ilogb(d);
    m = std::ldexp(d, -exponent);  // [1, 2)
    if (m >= 1.5f) m *= 0.5f;
  } else {
    const bool tiny = d < FLT_MIN;
    if (tiny) d = d * (static_cast<float>(INT64_C(1) << 32) * static_cast<float>(INT64_C(1) << 32));
    int32_t exponent = ((std::bit_cast<int32_t>(d * (1.0f / 0.75f)) >> 23) & 0xff) - 0x7f;  // vilogb2k
    m = std::bit_cast<float>(std::bit_cast<int32_t>(d) + ((-exponent) << 23));                         // vldexp3
    if (tiny) exponent -= 64;
    e = static_cast<float>(exponent);
  }
  const Float2 x = df_div(df_add2(-1.0f, m), df_add2(1.0f, m));
  const Float2 x2 = df_square(x);
  float t = 0.240320354700088500976562f;
  t = std::fma(t, x2.hi, 0.285112679004669189453125f);
  t = std::fma(t, x2.hi, 0.400007992982864379882812f);
  const Float2 c = {0.66666662693023681640625f, 3.69183861259614332084311e-09f};
  Float2 s = df_mul(Float2{0.69314718246459960938f, -1.904654323148236017e-09f}, e);
  s = df_add(s, df_scale(x, 2.0f));
  s = df_add(s, df_mul(df_mul(x2, x), df_add2(df_mul(x2, t), c)));
  return s;
}

// expkf: exp(d) for a double-float argument.
float sleef_expk(Float2 d) {
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187045e-06f;
  constexpr float kInvLn2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;
  float u = (d.hi + d.lo) * kInvLn2;
  const int32_t q = static_cast<int32_t>(std::nearbyint(u));  // cvtps_epi32: round half to even
  Float2 s = df_add2(d, static_cast<float>(q) * -kLn2Hi);
  s = df_add2(s, static_cast<float>(q) * -kLn2Lo);
  s = df_normalize(s);
  u = 0.00136324646882712841033936f;
  u = std::fma(u, s.hi, 0.00836596917361021041870117f);
  u = std::fma(u, s.hi, 0.0416710823774337768554688f);
  u = std::fma(u, s.hi, 0.166665524244308471679688f);
  u = std::fma(u, s.hi, 0.499999850988388061523438f);
  Float2 t = df_add(s, df_mul(df_square(s), u));
  t = df_add(1.0f, t);
  u = sleef_ldexp(t.hi + t.lo, q);
  return d.hi < -104.0f ? 0.0f : u;
}

}  // namespace

TorchCpuKernel detect_torch_cpu_kernel() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  if (fma && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq"))
    return TorchCpuKernel::kAvx512;
  if (fma && __builtin_cpu_supports("avx2")) return TorchCpuKernel::kAvx2;
#endif
  return TorchCpuKernel::kScalar;
}

float sleef_powf_u10(float x, float y, bool avx512_log) {
  if (!(x > 0.0f) || !std::isfinite(x) || !std::isfinite(y)) return std::pow(x, y);
  if (y == 0.0f || x == 1.0f) return 1.0f;
  const float result = sleef_expk(df_mul(sleef_logk(x, avx512_log), y));
  return std::isnan(result) ? INFINITY : result;
}

void torch_pow_scalar_base(float base, const float* exponents, int64_t count, TorchCpuKernel kernel, float* out) {
  // cpu_kernel_vec's vectorized_loop runs whole chunks of 2 x Vectorized<float>::size()
  // through the vector op and the remainder through the scalar op.
  const int64_t chunk = kernel == TorchCpuKernel::kAvx512 ? 32 : (kernel == TorchCpuKernel::kAvx2 ? 16 : 0);
  const int64_t vectorized = chunk ? count / chunk * chunk : 0;
  for (int64_t i = 0; i < count; ++i) {
    out[i] = i < vectorized ? sleef_powf_u10(base, exponents[i], kernel == TorchCpuKernel::kAvx512)
                            : std::pow(base, exponents[i]);
  }
}

}  // namespace dsv4

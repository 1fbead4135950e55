// The rotation of one RoPE pair (ops::rope and rms_norm_rope). transformers: angle =
// inv_freq (FP32) x float(position), cos / sin in FP32. The products and sums are explicit
// round-to-nearest operations (no FMA contraction), so any kernel that calls these gets the
// same bits for the same pair, whatever the surrounding code.
#pragma once
#include <cuda_runtime.h>

namespace dsv4::cuda {

// sin / cos of angle = inv_freq * position (inverse: of -angle).
struct RopeSinCos {
  float sine, cosine;
};
__device__ __forceinline__ RopeSinCos rope_sincos(float inv_freq, float position, bool inverse) {
  RopeSinCos r;
  sincosf(inv_freq * position, &r.sine, &r.cosine);
  if (inverse) r.sine = -r.sine;
  return r;
}

// (even, odd) rotated by the angle of r.
__device__ __forceinline__ float2 rope_apply(float even, float odd, RopeSinCos r) {
  return make_float2(__fsub_rn(__fmul_rn(even, r.cosine), __fmul_rn(odd, r.sine)),
                     __fadd_rn(__fmul_rn(odd, r.cosine), __fmul_rn(even, r.sine)));
}

// (even, odd) rotated by +angle (inverse: by -angle), angle = inv_freq * position.
__device__ __forceinline__ float2 rope_rotate_pair(float even, float odd, float inv_freq, float position,
                                                   bool inverse) {
  return rope_apply(even, odd, rope_sincos(inv_freq, position, inverse));
}

}  // namespace dsv4::cuda

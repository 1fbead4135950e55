// BF16x2 arithmetic on packed 32-bit words, shared by the kernel families that build BF16
// operands bit by bit (the 4-bit MoE dequant, the FP8 KV cache decode), and the
// round-to-nearest packing of two floats the attention and indexer kernels use.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace dsv4::cuda {

// Round-to-nearest product of two BF16x2 words (subnormal inputs are kept, not flushed:
// the dequantizers rely on it to scale codes that land on BF16 subnormals).
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// (bf16_rn(lo), bf16_rn(hi)) as one word, lo in the low half (the MMA operand order).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace dsv4::cuda

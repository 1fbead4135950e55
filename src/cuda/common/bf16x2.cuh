// BF16x2 arithmetic on packed 32-bit words, shared by the kernel families that build BF16
// operands bit by bit (the 4-bit MoE dequant, the FP8 KV cache decode).
#pragma once
#include <cstdint>

namespace dsv4::cuda {

// Round-to-nearest product of two BF16x2 words (subnormal inputs are kept, not flushed:
// the dequantizers rely on it to scale codes that land on BF16 subnormals).
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

}  // namespace dsv4::cuda

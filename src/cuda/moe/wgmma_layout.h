// Shared-memory layout of the wgmma prefill GEMM's B operand (activations) and its
// matrix descriptor, __host__ __device__ so that the host-side layout test
// (MoePack.WgmmaActivationLayout) checks the kernel's own functions against the
// wgmma addressing rules (docs/kernels/moe.md, "wgmma prefill GEMM").
#pragma once
#include <cstdint>

#include "cuda/moe/fragment.h"

namespace dsv4::cuda::moe {

inline constexpr int kWgmmaSubK = 64;                        // BF16 per 128-byte swizzle row
inline constexpr int kWgmmaSlots = 128;                      // wgmma N (slots per CTA)
inline constexpr int kWgmmaSubBytes = kWgmmaSlots * kWgmmaSubK * 2;  // one K sub-block, 16 KB
inline constexpr int kWgmmaSbo = 1024;                       // bytes between 8-row groups

// Byte offset inside a 1024-aligned sub-block of 16-byte chunk cc (K elements 8 cc ..
// 8 cc + 7) of slot row r: rows 128 bytes apart, chunk index XOR (r % 8) (128-byte swizzle).
DSV4_HD uint32_t wgmma_act_offset(int r, int cc) { return static_cast<uint32_t>(r * 128 + ((cc ^ (r & 7)) * 16)); }

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 B apart.
DSV4_HD uint64_t wgmma_desc_sw128(uint32_t smem_addr) {
  uint64_t desc = (smem_addr >> 4) & 0x3FFFu;          // bits 0-13: start address / 16
  desc |= static_cast<uint64_t>(1) << 16;               // bits 16-29: leading byte offset / 16 (unused: K-major, swizzled)
  desc |= static_cast<uint64_t>(kWgmmaSbo >> 4) << 32;  // bits 32-45: stride byte offset / 16
  desc |= static_cast<uint64_t>(1) << 62;               // bits 62-63: 1 = 128-byte swizzle
  return desc;                                          // bits 49-51 base offset 0: sub-blocks are 1024-aligned
}

}  // namespace dsv4::cuda::moe

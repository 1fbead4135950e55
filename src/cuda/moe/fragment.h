// The 4-bit expert weight fragment layout read by the MoE grouped GEMMs, and its
// decode. Shared by the host packer (moe_pack.cpp), the kernels and the host-side
// layout test, so every function here is __host__ __device__ and bit-exact on both.
//
// Layout (docs/kernels/moe.md has the full picture): a weight matrix W[N, K]
// (K contiguous, y = x W^T) is cut into fragment blocks of 16 rows x 64 columns.
// One block is 512 bytes: 32 lanes x 16 bytes, lane l holding exactly the A
// operand of mma.m16n8k16 (row-major A, the weight rows as M) for the 4 k16 steps
// of the block, one 32-bit word per step. Within word s of lane (g = l/4, t = l%4):
//   A register r (r = 0..3) = (row g + 8*(r&1), cols 16s + 2t + 8*(r>>1) + {0,1})
//   low  value (even col) = nibble 3 - r  (bits 12-4r .. 15-4r)
//   high value (odd col)  = nibble 7 - r  (bits 28-4r .. 31-4r)
// Each nibble is a plain E2M1 code (s e e m). Decode shifts the word left by 4r and
// moves the code into a BF16's sign / exponent-low / mantissa-top bits, giving
// code_value * 2^-126 (code 1, 0.5, lands on a BF16 subnormal); one BF16 multiply by
// the block scale brings it to a normal number (see kernel_scale below).
//
// Scales: per fragment block, SB bytes (64 for NVFP4: 16 rows x 4 blocks of 16;
// 32 for MXFP4: 16 rows x 2 blocks of 32), ordered [g][block][row half] so lane
// (g, t) reads its 8 (NVFP4) or 4 (MXFP4) bytes at offset g * SB / 8.
// Codes are rewritten at load time (moe_pack.cpp) into "kernel codes":
//   MXFP4: k = e + 254 - e_max(matrix)         -> BF16 bits k << 7,   scale' = 2^(k-127)
//   NVFP4: k = UE5M3 of the E4M3 scale (value 2^(E-10) * (1 + m/8), 0 = zero block)
//          -> BF16 bits (k << 4) + (236 << 7), scale' = s * 2^119
// so that code_value * 2^-126 * scale' = w * 2^c with one per-matrix constant c,
// which the epilogue removes together with the NVFP4 tensor scale
// (epilogue factor: MXFP4 2^(e_max - 128); NVFP4 tensor_scale * 2^7).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define DSV4_HD __host__ __device__ __forceinline__
#else
#define DSV4_HD inline
#endif

namespace dsv4::cuda::moe {

enum class ExpertFormat : int { kMXFP4 = 0, kNVFP4 = 1 };

inline constexpr int kFragRows = 16;              // rows of one fragment block
inline constexpr int kFragCols = 64;              // columns (K) of one fragment block
inline constexpr int kFragBytes = 512;            // 16 x 64 E2M1 values
inline constexpr int kNvfp4ScaleBias = 236;       // BF16 exponent added to UE5M3 codes
inline constexpr float kNvfp4EpilogueShift = 128.0f;  // 2^7, see above

// Scale bytes per fragment block.
DSV4_HD constexpr int frag_scale_bytes(ExpertFormat format) { return format == ExpertFormat::kNVFP4 ? 64 : 32; }

// Word s of a lane: which (row, col) inside the 16 x 64 block does register r,
// half h (0 = low 16 bits) hold?
DSV4_HD int frag_row(int lane, int r) { return lane / 4 + 8 * (r & 1); }
DSV4_HD int frag_col(int lane, int s, int r, int h) { return 16 * s + 2 * (lane % 4) + 8 * (r >> 1) + h; }
DSV4_HD int frag_nibble(int r, int h) { return (3 - r) + 4 * h; }

// BF16x2 bits of register r of a word: (code_lo * 2^-126, code_hi * 2^-126).
DSV4_HD uint32_t frag_decode_bits(uint32_t word, int r) {
  const uint32_t t = word << (4 * r);
  return (t & 0x80008000u) | ((t >> 6) & 0x01C001C0u);
}

// Scale byte offset inside a fragment block's scale bytes.
//   NVFP4: step s (block of 16 = one k16 step), row half hr (0: rows g, 1: rows g + 8)
//   MXFP4: j = s / 2 (block of 32)
DSV4_HD int frag_scale_offset(ExpertFormat format, int g, int s, int hr) {
  return format == ExpertFormat::kNVFP4 ? g * 8 + s * 2 + hr : g * 4 + (s / 2) * 2 + hr;
}

// BF16 bits of the multiplier for a kernel scale code.
DSV4_HD uint32_t kernel_scale_bits(ExpertFormat format, uint32_t code) {
  return format == ExpertFormat::kNVFP4 ? (code << 4) + (static_cast<uint32_t>(kNvfp4ScaleBias) << 7) : code << 7;
}

}  // namespace dsv4::cuda::moe

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

// The same 4 registers of a word at once, d[r] == frag_decode_bits(word, r) bit for bit, in
// fewer logic operations (the decode tile's inner loop; host test MoePack.DecodeWordBits):
// frag_decode_bits needs two masks per register (sign 0x80008000 and magnitude 0x01C001C0
// applied to two differently shifted words, 2 LOP3). Here the signs are masked once for the
// two registers that share a nibble parity: s_odd = word & 0x80808080 holds the signs of
// nibbles 1, 3, 5, 7 (registers 2, 0), s_even = word & 0x08080808 those of nibbles 0, 2, 4, 6
// (registers 3, 1). Shifted by 4r (0 / 8 for s_odd, 4 / 12 for s_even), such a word has bits
// only at 15 and 31 (the wanted signs) and at 7 / 23, which are magnitude positions: so one
// bit select per register, magnitude bits (0x01C001C0) from the shifted word, every other bit
// from the shifted sign word, is the whole decode: 2 + 4 selects, 7 shifts, no other masks.
// BF16 bits 6..8 (mantissa top, exponent low 2) of each half: where a decoded magnitude goes.
inline constexpr uint32_t kFragMagnitudeBits = 0x01C001C0u;
// (magnitude & kFragMagnitudeBits) | (other & ~kFragMagnitudeBits). On the device one
// lop3.b32 (LUT 0xE2 = (a & b) | (c & ~b)) written as such: from the C++ form ptxas narrows
// ~mask by the known zero bits of `other` and then needs two LOP3 (two different immediates).
DSV4_HD uint32_t frag_select_magnitude(uint32_t magnitude, uint32_t other) {
#if defined(__CUDA_ARCH__)
  uint32_t d;
  asm("lop3.b32 %0, %1, 0x01C001C0, %2, 0xE2;\n" : "=r"(d) : "r"(magnitude), "r"(other));
  return d;
#else
  return (magnitude & kFragMagnitudeBits) | (other & ~kFragMagnitudeBits);
#endif
}
inline constexpr uint32_t kFragSignsOdd = 0x80808080u;   // sign bits of nibbles 1, 3, 5, 7
inline constexpr uint32_t kFragSignsEven = 0x08080808u;  // sign bits of nibbles 0, 2, 4, 6
// s_odd = word & kFragSignsOdd, s_even = word & kFragSignsEven (the kernel computes them with
// masks ptxas cannot see, so that it keeps the two shared masks instead of re-deriving one
// 2-instruction mask per register from the known bits).
DSV4_HD void frag_decode_word_bits(uint32_t word, uint32_t s_odd, uint32_t s_even, uint32_t (&d)[4]) {
  d[0] = frag_select_magnitude(word >> 6, s_odd);          // nibbles 3, 7
  d[1] = frag_select_magnitude(word >> 2, s_even << 4);    // nibbles 2, 6
  d[2] = frag_select_magnitude(word << 2, s_odd << 8);     // nibbles 1, 5
  d[3] = frag_select_magnitude(word << 6, s_even << 12);   // nibbles 0, 4
}
DSV4_HD void frag_decode_word_bits(uint32_t word, uint32_t (&d)[4]) {
  frag_decode_word_bits(word, word & kFragSignsOdd, word & kFragSignsEven, d);
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

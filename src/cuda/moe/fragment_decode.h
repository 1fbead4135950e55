// A cheaper decode of one packed fragment word (fragment.h) into its four BF16x2 A
// registers, and the BF16x2 scale pair of one k16 step for both row halves, bit-identical
// to frag_decode_bits / kernel_scale_bits (the kPrefillWgmmaPipe main loop uses them;
// fragment.h stays the reference, tests/cuda/moe/moe_fragment_decode_test.cpp checks the
// two against each other on the host).
//
// frag_decode_bits(word, r) = (t & 0x80008000) | ((t >> 6) & 0x01C001C0), t = word << 4r:
// register r takes nibble 3 - r (low half) and 7 - r (high half): sign -> bit 15 / 31,
// the three e e m bits -> bits 6..8 / 22..24. Written out that is two shifts and two LOP3
// per register. Here, per word:
//   w6 = rotl(word, 6)                 sign of nibble j (bit 4j + 3) now at bit 4j + 9
//   qa = select(0x22002200, w6, word)  nibbles 0, 1, 4, 5: e e m at 4j .. 4j + 2 (from
//                                      word), sign at 4j + 9 (bits 9, 13, 25, 29, from w6)
//   qb = select(0x00220022, w6, word)  nibbles 2, 3, 6, 7: e e m in place, sign at
//                                      (4j + 9) mod 32 (bits 17, 21, 1, 5)
// so in qa / qb every nibble of its set has the register layout (sign 9 bits above the
// e e m base, e e m 3 bits wide) at base 4j, and register r is one rotation that puts
// base 4 (3 - r) at bit 6 (and 4 (7 - r) at 22, 16 further on) plus one AND:
//   r = 0: rotl(qb, 26), 1: rotl(qb, 30), 2: rotl(qa, 2), 3: rotl(qa, 6); & 0x81C081C0.
// The masked bits of each rotation read exactly the bits listed above (nothing from the
// other set), so the result equals frag_decode_bits bit for bit: 3 + 4 x 2 = 11 integer
// instructions per word instead of 15 (SHF.L.W for the rotations, LOP3 for select / AND).
//
// Scale pair of k16 step s (BF16x2: low half = row g, high half = row g + 8): bytes
// (lo, lo + 1) of the lane's scale word moved into the two 16-bit halves with one PRMT,
// then the kernel-scale transform on both halves at once (NVFP4 (code << 4) + (236 << 7),
// MXFP4 code << 7: no carry between halves, codes are bytes). The A registers then take
// the low or the high half with a half-broadcast operand of the BF16x2 multiply
// (HMUL2 ... R.H0_H0 / R.H1_H1 in SASS), so a step's two scales cost 2 instructions, not 4.
#pragma once
#include <cstdint>

#include "cuda/moe/fragment.h"

namespace dsv4::cuda::moe {

DSV4_HD uint32_t frag_rotl(uint32_t x, int n) {
#if defined(__CUDA_ARCH__)
  return __funnelshift_l(x, x, n);  // SHF.L.W: one instruction
#else
  return n == 0 ? x : (x << n) | (x >> (32 - n));
#endif
}

inline constexpr uint32_t kFragRegMask = 0x81C081C0u;      // sign + e e m bits of both halves
inline constexpr uint32_t kFragSignsAt9Lo = 0x22002200u;   // qa: signs of nibbles 0, 1, 4, 5
inline constexpr uint32_t kFragSignsAt9Hi = 0x00220022u;   // qb: signs of nibbles 2, 3, 6, 7

// (a & kMask) | (b & ~kMask): one LOP3 (ptxas splits the C++ form into an AND and a
// merge, so the device path names the LUT: 0xE2 = a ? b-mask selects, over (a, mask, b)).
template <uint32_t kMask>
DSV4_HD uint32_t frag_select(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xE2;\n" : "=r"(d) : "r"(a), "n"(kMask), "r"(b));
  return d;
#else
  return (a & kMask) | (b & ~kMask);
#endif
}

// d[r] == frag_decode_bits(word, r), r = 0..3.
DSV4_HD void frag_decode_word(uint32_t word, uint32_t (&d)[4]) {
  const uint32_t w6 = frag_rotl(word, 6);
  const uint32_t qa = frag_select<kFragSignsAt9Lo>(w6, word);
  const uint32_t qb = frag_select<kFragSignsAt9Hi>(w6, word);
  d[0] = frag_rotl(qb, 26) & kFragRegMask;
  d[1] = frag_rotl(qb, 30) & kFragRegMask;
  d[2] = frag_rotl(qa, 2) & kFragRegMask;
  d[3] = frag_rotl(qa, 6) & kFragRegMask;
}

// Bytes lo and lo + 1 (lo = 0 or 2) of word in the low bytes of the two 16-bit halves.
DSV4_HD uint32_t frag_byte_pair(uint32_t word, int lo) {
#if defined(__CUDA_ARCH__)
  // PRMT selector: result bytes = (lo, 4, lo + 1, 4); byte 4 is the zero second operand.
  return __byte_perm(word, 0u, static_cast<uint32_t>(lo | (4 << 4) | ((lo + 1) << 8) | (4 << 12)));
#else
  return ((word >> (8 * lo)) & 0xFFu) | (((word >> (8 * (lo + 1))) & 0xFFu) << 16);
#endif
}

// The scale byte (within the lane's scale words, fragment.h frag_scale_offset) of row half
// 0 for k16 step s; row half 1 is the next byte. NVFP4: word s / 2, byte 2 (s % 2);
// MXFP4: word 0, byte 2 (s / 2).
DSV4_HD constexpr int frag_scale_word(ExpertFormat format, int s) { return format == ExpertFormat::kNVFP4 ? s / 2 : 0; }
DSV4_HD constexpr int frag_scale_lo_byte(ExpertFormat format, int s) {
  return format == ExpertFormat::kNVFP4 ? 2 * (s % 2) : 2 * (s / 2);
}

// kernel_scale_bits of the two codes of a byte pair (frag_byte_pair) at once.
template <ExpertFormat F>
DSV4_HD uint32_t frag_scale_transform(uint32_t byte_pair) {
  if constexpr (F == ExpertFormat::kNVFP4) {
    return (byte_pair << 4) + ((static_cast<uint32_t>(kNvfp4ScaleBias) << 7) * 0x10001u);
  } else {
    return byte_pair << 7;
  }
}

// BF16x2 (kernel_scale_bits(row g code), kernel_scale_bits(row g + 8 code)) of k16 step s.
template <ExpertFormat F>
DSV4_HD uint32_t frag_scale_pair_bits(const uint32_t (&scale_words)[2], int s) {
  return frag_scale_transform<F>(frag_byte_pair(scale_words[frag_scale_word(F, s)], frag_scale_lo_byte(F, s)));
}

}  // namespace dsv4::cuda::moe

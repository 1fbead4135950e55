// fragment_decode.h (the kPrefillWgmmaPipe decode) against fragment.h (the reference every
// other kernel and the packer use), on the host: the two must agree bit for bit.
//   MoeFragmentDecode.WordMatchesFragDecodeBits   frag_decode_word == frag_decode_bits(., r)
//     for r = 0..3 on 0, ~0, every single-bit word (both decodes are pure bit moves and
//     masks, so every output bit is one input bit or 0: the single-bit words pin the whole
//     map) and 2^20 random words.
//   MoeFragmentDecode.ScalePairMatchesKernelScaleBits   frag_scale_pair_bits<F>(words, s) ==
//     (kernel_scale_bits(F, row g code), kernel_scale_bits(F, row g + 8 code)) with the codes
//     at frag_scale_offset (relative to the lane's group), both formats, every k16 step, every
//     byte value in every position and random words.
// Host only (no GPU needed).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>

#include "cuda/moe/fragment_decode.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::ExpertFormat;

void expect_word(uint32_t word) {
  uint32_t d[4];
  cuda::moe::frag_decode_word(word, d);
  for (int r = 0; r < 4; ++r)
    ASSERT_EQ(d[r], cuda::moe::frag_decode_bits(word, r)) << std::hex << "word 0x" << word << " register " << r;
}

TEST(MoeFragmentDecode, WordMatchesFragDecodeBits) {
  expect_word(0u);
  expect_word(~0u);
  for (int b = 0; b < 32; ++b) expect_word(1u << b);
  std::mt19937 rng(17);
  for (int i = 0; i < (1 << 20); ++i) expect_word(static_cast<uint32_t>(rng()));
}

template <ExpertFormat F>
void expect_scale_pair(const uint32_t (&words)[2]) {
  uint8_t bytes[8];
  std::memcpy(bytes, words, 8);
  for (int s = 0; s < 4; ++s) {
    const uint32_t pair = cuda::moe::frag_scale_pair_bits<F>(words, s);
    // The lane's scale words start at its group's bytes (g * SB / 8): offsets relative to g = 0.
    const uint32_t lo = cuda::moe::kernel_scale_bits(F, bytes[cuda::moe::frag_scale_offset(F, 0, s, 0)]);
    const uint32_t hi = cuda::moe::kernel_scale_bits(F, bytes[cuda::moe::frag_scale_offset(F, 0, s, 1)]);
    ASSERT_EQ(pair & 0xFFFFu, lo) << std::hex << "words 0x" << words[0] << " 0x" << words[1] << " step " << s;
    ASSERT_EQ(pair >> 16, hi) << std::hex << "words 0x" << words[0] << " 0x" << words[1] << " step " << s;
  }
}

template <ExpertFormat F>
void check_scale_pairs() {
  constexpr int kBytes = F == ExpertFormat::kNVFP4 ? 8 : 4;  // the lane's scale bytes (word 1 unused for MXFP4)
  for (int pos = 0; pos < kBytes; ++pos)
    for (uint32_t v = 0; v < 256; ++v) {
      uint8_t bytes[8] = {0x5A, 0x33, 0xC1, 0x07, 0xFE, 0x80, 0x01, 0x7F};
      bytes[pos] = static_cast<uint8_t>(v);
      uint32_t words[2];
      std::memcpy(words, bytes, 8);
      expect_scale_pair<F>(words);
    }
  std::mt19937 rng(23);
  for (int i = 0; i < (1 << 16); ++i) {
    const uint32_t words[2] = {static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng())};
    expect_scale_pair<F>(words);
  }
}

TEST(MoeFragmentDecode, ScalePairMatchesKernelScaleBits) {
  check_scale_pairs<ExpertFormat::kNVFP4>();
  check_scale_pairs<ExpertFormat::kMXFP4>();
}

}  // namespace
}  // namespace dsv4::moe_test

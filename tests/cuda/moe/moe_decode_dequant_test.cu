// The decode tile's dequant rework (grouped_gemm.cuh, docs/kernels/moe.md "Decode path") must
// not change a bit of any output:
//   MoeDecodeDequant.WordBitsEqualPerRegisterDecode (host, no GPU): frag_decode_word_bits ==
//     frag_decode_bits(word, r) for r = 0..3 on the 33 words 0 / 1 << b, all ones and 2^20
//     random words (each output bit of both is one input bit or 0, so the unit words alone
//     already pin it down; the random ones check the combination).
//   MoeDecodeDequant.DeviceOperandsEqualReference{Nvfp4,Mxfp4}: on the GPU, the 4 BF16x2 A
//     operands of every k16 step s from (weight word, scale word) through the new path
//     (frag_decode_word_bits with the constant-memory masks, scale_halves, bf16x2_mul_by_half)
//     and through the previous one (frag_decode_bits, scale_pair, bf16x2_mul): every E2M1 code
//     x every scale byte at every position (words n * 0x11111111, scale words b * 0x01010101)
//     plus 2^18 random pairs; all bits equal.
//   MoeDecodeDequant.GemmEqualsReferenceLoop{Nvfp4,Mxfp4}: the whole decode GEMMs at the V4-Flash
//     shapes (L1 W13 [4096, 4096], L2 W2 [4096, 2048]: 32 / 16 k-tiles, the 6-stage ring wraps),
//     5 experts with 1, 3, 8, 13, 40 slots (8-slot tiles), random packed weights and kernel
//     scale codes, against the same kernels instantiated with kReferenceLoop = true (the
//     previous main loop: per-register decode + scale_pair, the c = tid + i * threads copy walk,
//     kt % STAGES): kDecode (launch_moe_l1 / l2), kDecodeKSplit, and kDecodeSplitK with
//     split_k 3 (uneven k-tile slices: the copy pointers start at kt0 != 0). Every output
//     element bitwise equal, poison outside the tiles included.
// No moe_fixture.h (its fmt-based checks do not compile under nvcc, and this file must be
// CUDA to instantiate the kernels): its random inputs come from moe_random.h, which the
// fixture shares.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/moe/grouped_gemm.cuh"
#include "moe/moe_random.h"

namespace dsv4::moe_test {
namespace {

using cuda::moe::ExpertFormat;
using cuda::moe::TileConfig;
namespace detail = cuda::moe::detail;

#define DEQUANT_CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call


// Device copy of a host vector (freed by the caller); nullptr on failure (the test then fails
// at its first use).
template <class T>
T* device_copy(const std::vector<T>& host) {
  T* ptr = nullptr;
  if (cudaMalloc(&ptr, std::max<size_t>(1, host.size() * sizeof(T))) != cudaSuccess) return nullptr;
  if (!host.empty() && cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess)
    return nullptr;
  return ptr;
}

TEST(MoeDecodeDequant, WordBitsEqualPerRegisterDecode) {
  std::vector<uint32_t> words = {0u, 0xFFFFFFFFu};
  for (int b = 0; b < 32; ++b) words.push_back(1u << b);
  uint64_t state = 42;
  for (int i = 0; i < (1 << 20); ++i) words.push_back(static_cast<uint32_t>(splitmix(state)));
  for (const uint32_t word : words) {
    uint32_t d[4];
    cuda::moe::frag_decode_word_bits(word, d);
    for (int r = 0; r < 4; ++r)
      ASSERT_EQ(d[r], cuda::moe::frag_decode_bits(word, r)) << "word 0x" << std::hex << word << " register " << r;
  }
}

// out[(case * 4 + s) * 4 + r]: A register r of k16 step s for (words[case], scale_words[case]).
// NVFP4: the scale word is scale word s / 2 of the lane; MXFP4: the lane's only scale word.
template <ExpertFormat F, bool kReference>
__global__ void operands_kernel(const uint32_t* words, const uint32_t* scale_words, int cases, uint32_t* out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cases) return;
  const uint32_t word = words[c], sw = scale_words[c];
  uint32_t g_pair, g8_pair;
  detail::scale_halves<F>(sw, g_pair, g8_pair);
  uint32_t d[4];
  cuda::moe::frag_decode_word_bits(word, word & detail::kDequantMasks[0], word & detail::kDequantMasks[1], d);
  for (int s = 0; s < 4; ++s) {
    uint32_t a[4];
    if constexpr (kReference) {
      const int byte = F == ExpertFormat::kNVFP4 ? (s % 2) * 2 : (s / 2) * 2;
      const uint32_t lo = detail::scale_pair<F>(sw, byte), hi = detail::scale_pair<F>(sw, byte + 1);
      for (int r = 0; r < 4; ++r) a[r] = cuda::bf16x2_mul(cuda::moe::frag_decode_bits(word, r), r % 2 ? hi : lo);
    } else {
      const bool high = F == ExpertFormat::kNVFP4 ? (s % 2) != 0 : (s / 2) != 0;
      for (int r = 0; r < 4; ++r) a[r] = detail::bf16x2_mul_by_half(d[r], r % 2 ? g8_pair : g_pair, high);
    }
    for (int r = 0; r < 4; ++r) out[(static_cast<size_t>(c) * 4 + s) * 4 + r] = a[r];
  }
}

template <ExpertFormat F>
void run_operands() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  std::vector<uint32_t> words, scale_words;
  for (uint32_t code = 0; code < 16; ++code)
    for (uint32_t b = 0; b < 256; ++b) {
      words.push_back(code * 0x11111111u);
      scale_words.push_back(b * 0x01010101u);
    }
  uint64_t state = 7;
  for (int i = 0; i < (1 << 18); ++i) {
    words.push_back(static_cast<uint32_t>(splitmix(state)));
    scale_words.push_back(static_cast<uint32_t>(splitmix(state)));
  }
  const int cases = static_cast<int>(words.size());
  uint32_t* d_words = device_copy(words);
  uint32_t* d_scales = device_copy(scale_words);
  std::vector<uint32_t> got(static_cast<size_t>(cases) * 16), want(got.size());
  uint32_t* d_got = device_copy(got);
  uint32_t* d_want = device_copy(want);
  const int blocks = (cases + 255) / 256;
  operands_kernel<F, false><<<blocks, 256>>>(d_words, d_scales, cases, d_got);
  operands_kernel<F, true><<<blocks, 256>>>(d_words, d_scales, cases, d_want);
  DEQUANT_CUDA_OK(cudaDeviceSynchronize());
  DEQUANT_CUDA_OK(cudaMemcpy(got.data(), d_got, got.size() * 4, cudaMemcpyDeviceToHost));
  DEQUANT_CUDA_OK(cudaMemcpy(want.data(), d_want, want.size() * 4, cudaMemcpyDeviceToHost));
  for (void* ptr : {static_cast<void*>(d_words), static_cast<void*>(d_scales), static_cast<void*>(d_got),
                    static_cast<void*>(d_want)})
    cudaFree(ptr);
  size_t diff = 0, first = got.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      if (first == got.size()) first = i;
      ++diff;
    }
  std::printf("[moe_decode_dequant] operands %s: %zu of %zu registers differ\n",
              F == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", diff, got.size());
  ASSERT_EQ(diff, 0u) << "case " << first / 16 << " (word 0x" << std::hex << words[first / 16] << ", scales 0x"
                      << scale_words[first / 16] << std::dec << ") step " << first / 4 % 4 << " register " << first % 4
                      << ": 0x" << std::hex << got[first] << " vs reference 0x" << want[first];
}

TEST(MoeDecodeDequant, DeviceOperandsEqualReferenceNvfp4) { run_operands<ExpertFormat::kNVFP4>(); }
TEST(MoeDecodeDequant, DeviceOperandsEqualReferenceMxfp4) { run_operands<ExpertFormat::kMXFP4>(); }

// ---- whole GEMMs against the kReferenceLoop instantiations ---------------------------------

constexpr int kHidden = 4096, kInter = 2048, kExperts = 5, kTokens = 64;
constexpr int kCounts[kExperts] = {1, 3, 8, 13, 40};  // slots per expert (8-slot decode tiles)
constexpr float kLimit = 10.0f, kFactor = 1.0f / 64.0f;
constexpr uint16_t kPoison = 0xffff;
constexpr int kSplit = 3;  // kDecodeSplitK slices: 32 (L1) / 16 (L2) k-tiles split unevenly

enum class Variant { kDecode, kKSplit, kSplitK };
const char* variant_name(Variant v) {
  return v == Variant::kDecode ? "decode" : v == Variant::kKSplit ? "decode_ksplit" : "decode_splitk";
}

// The kReferenceLoop instantiation of the kernel that `variant` launches through launch_moe_l1 / l2.
template <ExpertFormat F>
cudaError_t launch_reference(Variant variant, bool l1, const cuda::moe::GroupedGemmParams& p) {
  using detail::DecodeKSplitTile;
  using detail::DecodeTile;
  using detail::launch_grouped_gemm;
  switch (variant) {
    case Variant::kDecode:
      return l1 ? launch_grouped_gemm<DecodeTile, F, true, false, 0, true>(p)
                : launch_grouped_gemm<DecodeTile, F, false, false, 0, true>(p);
    case Variant::kKSplit:
      return l1 ? launch_grouped_gemm<DecodeKSplitTile, F, true, false, 0, true>(p)
                : launch_grouped_gemm<DecodeKSplitTile, F, false, false, 0, true>(p);
    case Variant::kSplitK:
      return l1 ? launch_grouped_gemm<DecodeTile, F, true, true, 0, true>(p)
                : launch_grouped_gemm<DecodeTile, F, false, true, 0, true>(p);
  }
  return cudaErrorInvalidValue;
}

// BF16 activations in (-2, 2) (float bits truncated to BF16).
std::vector<uint16_t> random_bf16(size_t n, uint64_t seed) {
  std::vector<uint16_t> v(n);
  uint64_t state = seed;
  for (auto& x : v) {
    const float f = static_cast<float>(static_cast<double>(splitmix(state) >> 11) * 0x1.0p-53 * 4.0 - 2.0);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    x = static_cast<uint16_t>(bits >> 16);
  }
  return v;
}

struct Buffers {  // device allocations of one run, freed together
  std::vector<void*> ptrs;
  template <class T>
  T* copy(const std::vector<T>& host) {
    T* p = device_copy(host);
    ptrs.push_back(p);
    return p;
  }
  ~Buffers() {
    for (void* p : ptrs) cudaFree(p);
  }
};

template <ExpertFormat F>
void run_gemms() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_FAIL() << "no CUDA device";
  std::vector<int32_t> tile_expert, tile_begin, tile_rows;
  int slots = 0;
  for (int e = 0; e < kExperts; ++e) {
    for (int r = 0; r < kCounts[e]; r += 8) {
      tile_expert.push_back(e);
      tile_begin.push_back(slots + r);
      tile_rows.push_back(std::min(8, kCounts[e] - r));
    }
    slots += kCounts[e];
  }
  const int tile_count = static_cast<int>(tile_expert.size());
  constexpr int kSpareTiles = 3;  // max_tiles > *tile_count: CTAs past it must stop before the padding (-1)
  for (auto* v : {&tile_expert, &tile_begin, &tile_rows}) v->resize(tile_count + kSpareTiles, -1);
  std::vector<int32_t> slot_token(slots);
  std::vector<float> slot_weight(slots);
  uint64_t state = 99;
  for (int s = 0; s < slots; ++s) {
    slot_token[s] = static_cast<int32_t>(splitmix(state) % kTokens);
    slot_weight[s] = 0.1f + 0.05f * static_cast<float>(s % 7);
  }
  const std::vector<float> factors(kExperts, kFactor);
  struct Layer {
    bool l1;
    int n, k;
  };
  for (const Layer layer : {Layer{true, 2 * kInter, kHidden}, Layer{false, kHidden, kInter}}) {
    Buffers buf;
    const size_t wbytes = size_t(kExperts) * layer.n * layer.k / 2;
    const size_t sbytes = size_t(kExperts) * (layer.n / 16) * (layer.k / 64) * cuda::moe::frag_scale_bytes(F);
    const uint8_t* d_w = buf.copy(random_bytes(wbytes, layer.l1 ? 21 : 22));
    const uint8_t* d_s = buf.copy(random_scales(F, sbytes, layer.l1 ? 23 : 24));
    const float* d_factor = buf.copy(factors);
    const uint16_t* d_act = buf.copy(random_bf16(size_t(layer.l1 ? kTokens : slots) * layer.k, layer.l1 ? 25 : 26));
    const int32_t* d_slot_token = buf.copy(slot_token);
    const float* d_slot_weight = buf.copy(slot_weight);
    const int32_t* d_tile_expert = buf.copy(tile_expert);
    const int32_t* d_tile_begin = buf.copy(tile_begin);
    const int32_t* d_tile_rows = buf.copy(tile_rows);
    const int32_t* d_tile_count = buf.copy(std::vector<int32_t>{tile_count});
    float* d_partials = buf.copy(std::vector<float>(size_t(kSplit) * slots * layer.n));
    int32_t* d_done = buf.copy(std::vector<int32_t>(size_t(tile_count + kSpareTiles) * (layer.n / 128), 0));
    const int cols = layer.l1 ? layer.n / 2 : layer.n;
    for (const Variant variant : {Variant::kDecode, Variant::kKSplit, Variant::kSplitK}) {
      SCOPED_TRACE(std::string(layer.l1 ? "l1 " : "l2 ") + variant_name(variant));
      std::vector<uint16_t> outs[2];
      for (int reference = 0; reference < 2; ++reference) {
        std::vector<uint16_t> out(size_t(slots) * cols, kPoison);
        uint16_t* d_out = device_copy(out);
        cuda::moe::GroupedGemmParams p;
        p.format = F;
        p.config = variant == Variant::kDecode   ? TileConfig::kDecode
                   : variant == Variant::kKSplit ? TileConfig::kDecodeKSplit
                                                 : TileConfig::kDecodeSplitK;
        p.weights = d_w;
        p.scales = d_s;
        p.factor_a = d_factor;
        p.factor_b = d_factor;
        p.act = d_act;
        p.slot_token = d_slot_token;
        p.slot_weight = d_slot_weight;
        p.tile_expert = d_tile_expert;
        p.tile_slot_begin = d_tile_begin;
        p.tile_row_count = d_tile_rows;
        p.tile_count = d_tile_count;
        p.max_tiles = tile_count + kSpareTiles;
        p.n = layer.n;
        p.k = layer.k;
        p.swiglu_limit = kLimit;
        p.out = d_out;
        if (variant == Variant::kSplitK) {
          p.split_k = kSplit;
          p.split_partials = d_partials;
          p.split_done = d_done;
          p.split_slots = slots;
        }
        const cudaError_t launched = reference ? launch_reference<F>(variant, layer.l1, p)
                                               : (layer.l1 ? cuda::moe::launch_moe_l1(p) : cuda::moe::launch_moe_l2(p));
        ASSERT_EQ(launched, cudaSuccess);
        DEQUANT_CUDA_OK(cudaDeviceSynchronize());
        DEQUANT_CUDA_OK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
        cudaFree(d_out);
        outs[reference] = std::move(out);
      }
      size_t diff = 0, first = outs[0].size(), written = 0;
      for (size_t i = 0; i < outs[0].size(); ++i) {
        written += outs[1][i] != kPoison;
        if (outs[0][i] != outs[1][i]) {
          if (first == outs[0].size()) first = i;
          ++diff;
        }
      }
      std::printf("[moe_decode_dequant] %s %s %s n=%d k=%d slots=%d: %zu of %zu elements differ (%zu written)\n",
                  F == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4", layer.l1 ? "l1" : "l2", variant_name(variant),
                  layer.n, layer.k, slots, diff, outs[0].size(), written);
      EXPECT_EQ(written, outs[0].size()) << "reference left poison inside the tiles";
      EXPECT_EQ(diff, 0u) << "first at slot " << first / cols << " col " << first % cols;
    }
  }
}

TEST(MoeDecodeDequant, GemmEqualsReferenceLoopNvfp4) { run_gemms<ExpertFormat::kNVFP4>(); }
TEST(MoeDecodeDequant, GemmEqualsReferenceLoopMxfp4) { run_gemms<ExpertFormat::kMXFP4>(); }

}  // namespace
}  // namespace dsv4::moe_test

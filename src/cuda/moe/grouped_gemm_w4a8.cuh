// Grouped W4A8 GEMM for MoE experts on Hopper (sm_90a, FP8 wgmma), MXFP4 weights only:
// TileConfig::kPrefillW4A8, opt-in (never a default). Same contract as the W4A16 wgmma
// kernel (grouped_gemm_wgmma.cuh): swap-AB (weight rows = M, slots = N), the same packed
// weights and tile list, the same epilogues (L1 clamped SwiGLU -> h, L2 * factor * routing
// weight -> slot_out), but the activations come pre-quantized by launch_act_quant_fp8
// (E4M3 [rows, k] in the fragment K order + one FP32 scale per 1 x 128 block).
//
// CTA = 2 consumer warpgroups (256 threads) = BW 128 weight rows x BT 128 slots; warp w owns
// m16 tile w (warpgroup w / 4 the m64 slab). A stage is one 128-K promotion block:
//   A (weights) from registers, per k32 step j (= MXFP4 32-block j of the 128): the FP8 A
//     fragment (as mma.m16n8k32's A: reg 0/1 rows g / g + 8, logical k 4t..4t+3; reg 2/3 the
//     same at 16 + 4t) is built from packed words 2j and 2j+1 of the lane: fragment.h
//     register r of word s holds rows g + 8 (r & 1), physical cols 16 s + 2t + 8 (r >> 1) +
//     {0, 1}, so reg 0 = bytes of (r = 0, r = 2) of word 2j = physical cols {2t, 2t+1, 8+2t,
//     9+2t}: the activation quantizer writes x8 in that order (act_quant_fp8.cu).
//     Per nibble: E2M1 -> f16 bits (code * 2^-14), one f16x2 multiply by 2^(14 + d), cvt
//     to E4M3 (RN, satfinite). d = kc - (kc_max - 1) per (row, 32-block) with kc the
//     kernel scale code and kc_max the max over the row's four 32-blocks of the 128: exact
//     for -8 <= d <= 1 (d is clamped to >= -24, where every value rounds to 0 anyway).
//   B (activations) from shared memory: [BT][128] E4M3 per stage, one 128-byte swizzle row
//     per slot (the BF16 kernel's sub-block geometry and descriptor), k32 step j = +32 bytes.
//   Promotion: the 4 wgmma of a stage go into blk (scale-d 0 on the first), then
//     acc += blk * (act_scale[slot] * 2^(kc_max - 254)[row]) in FP32.
// Pipeline: cp.async from all threads (x8 rows gathered through slot_token for L1,
// contiguous for L2; weights / scales as stored; one FP32 activation scale per slot row),
// STAGES slots, one __syncthreads per stage, each warpgroup waits for its own wgmma group
// before the promotion (the other warpgroup keeps the tensor cores busy).
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "cuda/moe/grouped_gemm_wgmma.cuh"

namespace dsv4::cuda::moe::detail {

struct W4a8Tile {
  static constexpr int kWarpgroups = 2;
  static constexpr int BW = 64 * kWarpgroups;  // weight rows per CTA
  static constexpr int BT = 128;               // slots per CTA (wgmma N)
  static constexpr int BK = 128;               // K per stage = one promotion block = 128 E4M3 bytes per slot row
  static constexpr int STAGES = 5;
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kM16 = BW / kFragRows;
  static_assert(kM16 == kThreads / 32, "one m16 tile per warp");
};

struct W4a8Smem {
  using T = W4a8Tile;
  static constexpr int SB = frag_scale_bytes(ExpertFormat::kMXFP4);  // 32
  static constexpr int kActBytes = T::BT * T::BK;                    // [BT][128] E4M3, swizzled, 16 KB
  static constexpr int kWeightBytes = 2 * T::kM16 * kFragBytes;      // [sub][m16][512]
  static constexpr int kSubWeightBytes = T::kM16 * kFragBytes;
  static constexpr int kScaleBytes = 2 * T::kM16 * SB;               // [sub][m16][32]
  static constexpr int kSubScaleBytes = T::kM16 * SB;
  static constexpr int kActScaleBytes = T::BT * 4;                   // [BT] FP32
  static constexpr int kWeightOffset = T::STAGES * kActBytes;
  static constexpr int kScaleOffset = kWeightOffset + T::STAGES * kWeightBytes;
  static constexpr int kActScaleOffset = kScaleOffset + T::STAGES * kScaleBytes;
  static constexpr int kPipeBytes = kActScaleOffset + T::STAGES * kActScaleBytes;
  static constexpr int kOutStride = T::BW + 8;  // BF16 per slot row
  static constexpr int kOutBytes = T::BT * kOutStride * 2;
  static constexpr int kAlign = 1024;
  static constexpr int kBytes = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kAlign;
  static_assert(kActBytes == kWgmmaSubBytes, "one 128-byte swizzle row per slot, as wgmma_layout.h");
  static_assert(kBytes <= 227 * 1024, "fits one SM");
};

__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_size = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(src_size));
}

// f16x2 bits of register r of a packed word: (code_lo * 2^-14, code_hi * 2^-14).
__device__ __forceinline__ uint32_t frag_decode_f16(uint32_t word, int r) {
  const uint32_t t = word << (4 * r);
  return (t & 0x80008000u) | ((t >> 3) & 0x0E000E00u);
}
__device__ __forceinline__ uint32_t f16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
// Two f16 (low, high) -> E4M3 bytes (low byte = low half), RN, satfinite.
// (PTX: the upper half of the f16x2 source goes to the upper byte; inline asm rather than
// __nv_cvt_halfraw2_to_fp8x2, which repacks its two halves with extra PRMTs.)
__device__ __forceinline__ uint32_t f16x2_to_e4m3x2(uint32_t h) {
  unsigned short d;
  asm("cvt.rn.satfinite.e4m3x2.f16x2 %0, %1;\n" : "=h"(d) : "r"(h));
  return static_cast<uint32_t>(d);
}
// FP8 A register: rows of register pair (r, r + 2) of `word`, times factor f (f16x2).
__device__ __forceinline__ uint32_t fp8_a_reg(uint32_t word, int r, uint32_t f) {
  const uint32_t lo = f16x2_to_e4m3x2(f16x2_mul(frag_decode_f16(word, r), f));
  const uint32_t hi = f16x2_to_e4m3x2(f16x2_mul(frag_decode_f16(word, r + 2), f));
  return lo | (hi << 16);
}
// f16x2 factor 2^(14 + d), d = kc - (kc_max - 1) clamped to >= -24.
__device__ __forceinline__ uint32_t w4a8_factor(uint32_t kc, uint32_t kc_max) {
  int d = static_cast<int>(kc) - static_cast<int>(kc_max) + 1;
  d = d < -24 ? -24 : d;
  const uint32_t bits = static_cast<uint32_t>(29 + d) << 10;
  return bits | (bits << 16);
}

// kPrefillW4A8Lut: per (row, 32-block) an 8-byte table of the E4M3 codes of the E2M1
// magnitudes 0..7 times 2^d (lo = magnitudes 0..3, hi = 4..7), indexed by PRMT with 3-bit
// nibble selectors; the sign bits are OR-ed from the word. The table is the same function
// as the per-nibble path (cvt(mul(code * 2^-14, 2^(14 + d)))), so the bytes are identical:
//   -5 <= d <= 1: the products are exact normal E4M3, code = base + 8 d (bytes never
//     borrow / carry: nonzero bases 0x30..0x4C, so 0x08..0x54), two IMADs;
//   else (d < -5): w4a8_lut_cvt, the cvt of the 8 magnitudes (4 HMUL2 + 4 cvt).
__device__ __forceinline__ void w4a8_lut_fast(int d, uint32_t& lo, uint32_t& hi) {
  const uint32_t d8 = static_cast<uint32_t>(d * 8);
  lo = 0x3C383000u + d8 * 0x01010100u;
  hi = 0x4C484440u + d8 * 0x01010101u;
}
__device__ __forceinline__ void w4a8_lut_cvt(uint32_t f, uint32_t& lo, uint32_t& hi) {
  // f16 bits of magnitude m * 2^-14 in pairs (m, m + 1): m << 9 per half.
  lo = f16x2_to_e4m3x2(f16x2_mul(0x02000000u, f)) | (f16x2_to_e4m3x2(f16x2_mul(0x06000400u, f)) << 16);
  hi = f16x2_to_e4m3x2(f16x2_mul(0x0A000800u, f)) | (f16x2_to_e4m3x2(f16x2_mul(0x0E000C00u, f)) << 16);
}
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}
// The two FP8 A registers of packed word w (byte order of fp8_a_reg: row g (r = 0) bytes
// = nibbles [3, 7, 1, 5], row g + 8 (r = 1) = [2, 6, 0, 4]; w bytes B0..B3 = nibble pairs
// (0, 1) .. (6, 7)). x = bytes [B1, B0, B3, B2] with the signs cleared: the selector of
// row g + 8 = low nibbles of x.b0, x.b2, x.b1, x.b3 (x | x >> 12 in nibbles 0..3), of row
// g = the high nibbles (x >> 4 | x >> 16); the signs of both = the high / low nibble sign
// bits of bytes [B1, B3, B0, B2].
__device__ __forceinline__ void fp8_a_regs_lut(uint32_t w, uint32_t lo_g, uint32_t hi_g, uint32_t lo_g8, uint32_t hi_g8,
                                               uint32_t& a_g, uint32_t& a_g8) {
  const uint32_t x = prmt(w, 0u, 0x2301u) & 0x77777777u;
  const uint32_t sel_g8 = (x & 0x0F0Fu) | ((x >> 12) & ~0x0F0Fu);  // PRMT reads bits 0..15 only
  const uint32_t sel_g = ((x >> 4) & 0x0F0Fu) | ((x >> 16) & ~0x0F0Fu);
  const uint32_t sg = prmt(w, 0u, 0x2031u);
  a_g = prmt(lo_g, hi_g, sel_g) | (sg & 0x80808080u);
  a_g8 = prmt(lo_g8, hi_g8, sel_g8) | ((sg << 4) & 0x80808080u);
}

// D[64 x 128] (+)= A[64 x 32] E4M3 (registers) * B[32 x 128] E4M3 (smem descriptor, K-major).
__device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b,
                                                      int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

// wgmma.wait_group 0, then a read of the 16 A registers of the waited wgmma group (four
// st.shared.v4 predicated on `never`, false at run time): PTX says a wgmma's A registers
// must not be modified before its wait, but ptxas ends their live range at the issuing
// instruction unless something reads them after the wait (an empty asm "+r" fence emits no
// PTX instruction, so it does not extend the range). The stores are never executed.
__device__ __forceinline__ void wgmma_wait0_keep_a(const uint32_t (&a)[4][4], bool never, uint32_t saddr) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %16, 0;\n"
      "wgmma.wait_group.sync.aligned 0;\n"
      "@p st.shared.v4.b32 [%17], {%0, %1, %2, %3};\n"
      "@p st.shared.v4.b32 [%17+16], {%4, %5, %6, %7};\n"
      "@p st.shared.v4.b32 [%17+32], {%8, %9, %10, %11};\n"
      "@p st.shared.v4.b32 [%17+48], {%12, %13, %14, %15};\n"
      "}\n" ::"r"(a[0][0]),
      "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(a[1][0]), "r"(a[1][1]), "r"(a[1][2]), "r"(a[1][3]), "r"(a[2][0]),
      "r"(a[2][1]), "r"(a[2][2]), "r"(a[2][3]), "r"(a[3][0]), "r"(a[3][1]), "r"(a[3][2]), "r"(a[3][3]),
      "r"(static_cast<uint32_t>(never)), "r"(saddr)
      : "memory");
}

template <bool kL1, bool kOverlap, bool kLut = false>
__global__ void __launch_bounds__(W4a8Tile::kThreads, 1) moe_grouped_gemm_w4a8_kernel(const GroupedGemmParams p) {
  using Tile = W4a8Tile;
  using Smem = W4a8Smem;
  constexpr int BW = Tile::BW, BT = Tile::BT, BK = Tile::BK, STAGES = Tile::STAGES, kThreads = Tile::kThreads;
  constexpr int SB = Smem::SB;
  extern __shared__ uint8_t smem_raw[];
  uint32_t smem_addr;
  uint8_t* smem = align_dynamic_smem<Smem::kAlign>(smem_raw, smem_addr);

  const int tile = blockIdx.y;
  if (tile >= *p.tile_count) return;
  const int expert = p.tile_expert[tile];
  const int slot0 = p.tile_slot_begin[tile];
  const int rows = p.tile_row_count[tile];
  const int n0 = blockIdx.x * BW;
  const int K = p.k;
  const int kb_count = K / kFragCols;
  const int k_tiles = K / BK;
  const int kscale = K / BK;  // activation scales per row

  const uint8_t* g_weights = p.weights + static_cast<int64_t>(expert) * p.n * K / 2;
  const uint8_t* g_scales = p.scales + static_cast<int64_t>(expert) * (p.n / kFragRows) * kb_count * SB;
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;

  // Activation chunks: c = tid + i * kThreads of [BT][8] 16-byte chunks.
  constexpr int kActIters = BT * 8 / kThreads;
  int64_t act_row[kActIters];  // byte offset of the chunk in act8 (k tile 0), -1: zero-fill
  uint32_t act_dst[kActIters];
#pragma unroll
  for (int i = 0; i < kActIters; ++i) {
    const int c = tid + i * kThreads;
    const int r = c / 8, cc = c % 8;
    act_row[i] = -1;
    if (r < rows) act_row[i] = static_cast<int64_t>(kL1 ? p.slot_token[slot0 + r] : slot0 + r) * K + cc * 16;
    act_dst[i] = wgmma_act_offset(r, cc);
  }
  int64_t scale_row = -1;  // tid < BT: the activation scale row of slot tid
  if (tid < BT && tid < rows) scale_row = static_cast<int64_t>(kL1 ? p.slot_token[slot0 + tid] : slot0 + tid) * kscale;
  const uint8_t* g_weight_row = g_weights + static_cast<int64_t>(n0 / kFragRows + warp) * kb_count * kFragBytes + lane * 16;
  constexpr int kScaleChunksPerSub = Tile::kM16 * SB / 16;  // 16

  auto load_stage = [&](int slot, int kt) {
    uint8_t* s_act = smem + slot * Smem::kActBytes;
#pragma unroll
    for (int i = 0; i < kActIters; ++i) {
      const bool valid = act_row[i] >= 0;
      cp_async16(s_act + act_dst[i], p.act8 + (valid ? act_row[i] + static_cast<int64_t>(kt) * BK : 0), valid);
    }
#pragma unroll
    for (int sub = 0; sub < 2; ++sub) {
      const int kb = kt * 2 + sub;
      cp_async16(smem + Smem::kWeightOffset + slot * Smem::kWeightBytes + sub * Smem::kSubWeightBytes + tid * 16,
                 g_weight_row + static_cast<int64_t>(kb) * kFragBytes, true);
      if (tid < kScaleChunksPerSub) {
        const int m16 = tid / (SB / 16), part = tid % (SB / 16);
        const int64_t gfb = static_cast<int64_t>(n0 / kFragRows + m16) * kb_count + kb;
        cp_async16(smem + Smem::kScaleOffset + slot * Smem::kScaleBytes + sub * Smem::kSubScaleBytes + tid * 16,
                   g_scales + gfb * SB + part * 16, true);
      }
    }
    if (tid < BT) {
      const bool valid = scale_row >= 0;
      cp_async4(smem + Smem::kActScaleOffset + slot * Smem::kActScaleBytes + tid * 4,
                p.act_scale + (valid ? scale_row + kt : 0), valid);
    }
  };

  float acc[64], blk[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
#pragma unroll
  for (int i = 0; i < 64; ++i) blk[i] = 0.0f;

  cp_async_pipeline_prologue<STAGES - 1>(k_tiles, load_stage);
  // The A registers (E4M3) and row factors of the stage in smem slot `slot`.
  auto convert = [&](int slot, uint32_t (&a)[4][4], float (&wfac)[2]) {
    const uint8_t* s_w = smem + Smem::kWeightOffset + slot * Smem::kWeightBytes + warp * kFragBytes + lane * 16;
    const uint8_t* s_s = smem + Smem::kScaleOffset + slot * Smem::kScaleBytes + warp * SB + g * 4;
    const uint4 w0 = *reinterpret_cast<const uint4*>(s_w);
    const uint4 w1 = *reinterpret_cast<const uint4*>(s_w + Smem::kSubWeightBytes);
    const uint32_t words[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
    // Scale bytes [32-block j of the sub-block][row half]: sub 0 -> 32-blocks 0, 1; sub 1 -> 2, 3.
    const uint32_t sc0 = *reinterpret_cast<const uint32_t*>(s_s);
    const uint32_t sc1 = *reinterpret_cast<const uint32_t*>(s_s + Smem::kSubScaleBytes);
    uint32_t kc[2][4];  // [row half][32-block]
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      kc[hr][0] = (sc0 >> (8 * hr)) & 0xFFu;
      kc[hr][1] = (sc0 >> (8 * (2 + hr))) & 0xFFu;
      kc[hr][2] = (sc1 >> (8 * hr)) & 0xFFu;
      kc[hr][3] = (sc1 >> (8 * (2 + hr))) & 0xFFu;
    }
    uint32_t kmax[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {  // row factor 2^(kc_max - 254) (0 when kc_max <= 127)
      kmax[hr] = max(max(kc[hr][0], kc[hr][1]), max(kc[hr][2], kc[hr][3]));
      wfac[hr] = kmax[hr] > 127u ? __uint_as_float((kmax[hr] - 127u) << 23) : 0.0f;
    }
    if constexpr (kLut) {
      uint32_t lut[2][4][2];  // [row half][32-block][lo, hi]
      int dmin = 1;
#pragma unroll
      for (int hr = 0; hr < 2; ++hr)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int d = static_cast<int>(kc[hr][j]) - static_cast<int>(kmax[hr]) + 1;
          dmin = min(dmin, d);
          w4a8_lut_fast(d, lut[hr][j][0], lut[hr][j][1]);
        }
      if (dmin < -5) {  // a 32-block more than 5 octaves below its 128-block's maximum (rare)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr)
#pragma unroll
          for (int j = 0; j < 4; ++j) w4a8_lut_cvt(w4a8_factor(kc[hr][j], kmax[hr]), lut[hr][j][0], lut[hr][j][1]);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int sw = 0; sw < 2; ++sw)
          fp8_a_regs_lut(words[2 * j + sw], lut[0][j][0], lut[0][j][1], lut[1][j][0], lut[1][j][1], a[j][2 * sw],
                         a[j][2 * sw + 1]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t f_lo = w4a8_factor(kc[0][j], kmax[0]), f_hi = w4a8_factor(kc[1][j], kmax[1]);
        a[j][0] = fp8_a_reg(words[2 * j], 0, f_lo);
        a[j][1] = fp8_a_reg(words[2 * j], 1, f_hi);
        a[j][2] = fp8_a_reg(words[2 * j + 1], 0, f_lo);
        a[j][3] = fp8_a_reg(words[2 * j + 1], 1, f_hi);
      }
    }
  };
  // Promotion: acc[4 j + v] = row g + 8 (v >> 1), slot 8 j + 2 t + (v & 1).
  auto promote = [&](int slot, const float (&wfac)[2]) {
    const float* s_as = reinterpret_cast<const float*>(smem + Smem::kActScaleOffset + slot * Smem::kActScaleBytes);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float2 as = *reinterpret_cast<const float2*>(s_as + 8 * j + 2 * t);
      acc[4 * j + 0] = fmaf(blk[4 * j + 0], as.x * wfac[0], acc[4 * j + 0]);
      acc[4 * j + 1] = fmaf(blk[4 * j + 1], as.y * wfac[0], acc[4 * j + 1]);
      acc[4 * j + 2] = fmaf(blk[4 * j + 2], as.x * wfac[1], acc[4 * j + 2]);
      acc[4 * j + 3] = fmaf(blk[4 * j + 3], as.y * wfac[1], acc[4 * j + 3]);
    }
  };
  auto issue = [&](int slot, const uint32_t (&a)[4][4]) {
    const uint64_t desc = wgmma_desc_sw128(smem_addr + slot * Smem::kActBytes);
    fence_acc(blk);
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j) wgmma_m64n128k32_e4m3(blk, a[j], desc + 2 * j, j == 0 ? 0 : 1);
    wgmma_commit();
  };

  if constexpr (!kOverlap) {
    // kPrefillW4A8Serial: per stage convert -> wgmma -> wait -> promote.
    for (int kt = 0; kt < k_tiles; ++kt) {
      const int slot = kt % STAGES;
      // Stage kt landed everywhere; every wgmma of kt - 1 done (waited below): refill its slot.
      cp_async_pipeline_advance<STAGES, STAGES - 1>(kt, k_tiles, load_stage);
      uint32_t a[4][4];
      float wfac[2];
      convert(slot, a, wfac);
      issue(slot, a);
      wgmma_wait<0>();
      fence_acc(blk);
      promote(slot, wfac);
    }
  } else {
    // kPrefillW4A8: the conversion of stage kt + 1 overlaps this warpgroup's wgmma of
    // stage kt, so the barrier of iteration kt waits for stage kt + 1 (prefetch distance
    // STAGES - 2 landed stages ahead of the wgmma). Two explicit A register sets, the K loop
    // unrolled by 2 (no copies): stage kt reads set kt & 1 while set (kt + 1) & 1 is
    // written. ptxas treats a wgmma's A registers as dead right after the issuing
    // instruction (SASS of the first version: the next stage's conversion was allocated
    // onto R88..R103 between the QGMMA and its WARPGROUP.DEPBAR, garbage on the H200), so
    // wgmma_wait0_keep_a reads the set again after the wait (predicated-off stores).
    uint32_t a0[4][4], a1[4][4];
    float wf0[2], wf1[2];
    const bool never = rows < 0;  // false for every valid tile list; opaque to the compiler
    cp_async_wait<STAGES - 2>();  // stage 0 (this thread's copies)
    __syncthreads();
    convert(0, a0, wf0);
    auto step = [&](int kt, const uint32_t(&a_use)[4][4], const float(&wf_use)[2], uint32_t(&a_fill)[4][4],
                    float(&wf_fill)[2]) {
      const int slot = kt % STAGES;
      cp_async_wait<STAGES - 3>();  // this thread's copies of stage kt + 1 landed
      fence_proxy_async_smem();
      // Everyone's copies of stages kt, kt + 1 landed; every wgmma of kt - 1 done and the
      // conversion of stage kt (read in iteration kt - 1) too, so slot kt - 1 is free.
      __syncthreads();
      {
        const int next = kt + STAGES - 1;
        if (next < k_tiles) load_stage(next % STAGES, next);
        cp_async_commit();
      }
      issue(slot, a_use);
      if (kt + 1 < k_tiles) convert((kt + 1) % STAGES, a_fill, wf_fill);
      wgmma_wait0_keep_a(a_use, never, smem_addr);
      fence_acc(blk);
      promote(slot, wf_use);
    };
    for (int kt = 0; kt < k_tiles; kt += 2) {
      step(kt, a0, wf0, a1, wf1);
      if (kt + 1 < k_tiles) step(kt + 1, a1, wf1, a0, wf0);
    }
  }
  wgmma_tile_store<kL1, 128, BT, kL1 ? BW / 2 : BW, Smem::kOutStride>(p, acc, smem, expert, rows, slot0, n0, warp, g, t,
                                                                      tid, kThreads);
}

}  // namespace dsv4::cuda::moe::detail

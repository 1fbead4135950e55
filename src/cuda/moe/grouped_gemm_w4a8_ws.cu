// TileConfig::kPrefillW4A8Ws (opt-in, MXFP4 only): a warp-specialised W4A8 grouped GEMM
// (MXFP4 weights x E4M3 activations, FP8 wgmma, FP32 promotion per 128-K block), reached
// through launch_moe_l1 / launch_moe_l2 with the inputs of kPrefillW4A8Lut (act8 /
// act_scale from launch_act_quant_fp8, the same packed weights) plus the per-row weight
// exponent reference GroupedGemmParams::w4a8_row_ref (launch_w4a8_row_ref, once per weight
// set). docs/kernels/moe.md, "Warp-specialised W4A8 kernel".
//   - CTA = 3 warpgroups (384 threads): WG 0 / 1 consumers (m64 slab each of a 128-row
//     block; warp w = m16 tile w), WG 2 the producer, which only moves bytes (cp.async into
//     a kStages ring, one cp.async.mbarrier.arrive.noinc per thread and stage on the full
//     barrier); setmaxnreg gives the consumers kConsumerRegs, the producer kProducerRegs.
//     No __syncthreads in the K loop, no consumer-issued copies.
//   - Tile = 128 weight rows x 256 slots (tile_config_rows = 256, the dispatch cuts each
//     expert's slots into runs of 256): each consumer converts its A fragment (E2M1 -> E4M3
//     in registers, kPrefillW4A8Lut's PRMT table) once per stage and feeds it to TWO
//     m64n128k32 halves (slots 0..127, 128..255); a tile of <= 128 slots runs one half.
//   - Weight exponent reference per ROW over the whole K (row_ref = max kernel scale code of
//     the row): the E4M3 weight byte of 32-block code kc is code * 2^d, d = kc - row_ref + 6
//     (the row's largest block at the top of E4M3: 6 * 2^6 = 384), exact for d >= -8, RN
//     below. So a stage's promotion is one FFMA per accumulator: acc = fma(blk, act_scale
//     [slot], acc); the row factor 2^(row_ref - 259) multiplies in the epilogue.
//   - Per stage and half: 4 wgmma into blk (scale-d 0 first), wait, promote (one blk: the
//     other warpgroup's wgmma keep the tensor core busy meanwhile).
//     (A quarter-pipelined body, two m64n64k32 quarters per half into 2 x 32 block registers
//     with one quarter promoted while the next runs, measured the same on the H200, 585.6 vs
//     585.2 TFLOP/s, and was removed again: commit f3fd4cb, docs/kernels/moe.md.)
// Shared memory (from the 1024-aligned base, WsSmem; per ring stage s):
//   B          [kStages][256 slots][128 E4M3]  K-major, row r at r * 128, 16-byte chunk c at
//              c ^ (r % 8) (wgmma_act_offset); slots 128..255 = the second half's B operand
//              (+16 KB); rows past the tile zero-filled (cp.async src-size 0).
//   weights    [kStages][m16 8][sub 2][lane 32][16 B]  the fragment blocks (2 kt, 2 kt + 1) of
//              each m16 tile as stored (one contiguous 1 KB per m16 tile in global memory).
//   scales     [kStages][m16 8][sub 2][32 B]  their MXFP4 scale bytes, as stored.
//   act scales [kStages][half 2][t 4][36] FP32: slot 128 half + 8 j + 2 t + v at
//              (4 half + t) * 36 + 2 j + v (lane t: 8 conflict-free 16-byte loads per half).
//   row table  [256] uint32: byte offset row * K in act8 of slot r's activation row (L1 token,
//              L2 slot; row 0 past the tile) at (r % 16) * 16 + r / 16, written once by the producer.
//   barriers   full[kStages] (128 producer arrivals, noinc), empty[kStages] (256 consumers).
//   out        [256 slots][136] BF16 over the B ring after the K loop (epilogue).
#include <cuda_bf16.h>

#include "cuda/common/mbarrier.cuh"
#include "cuda/common/tensor_map.h"
#include "cuda/common/tma.cuh"
#include "cuda/moe/grouped_gemm_w4a8.cuh"
#include "cuda/moe/grouped_gemm_w4a8_ws.cuh"
#include "cuda/moe/grouped_gemm_w4a8_ws_common.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe {
namespace detail {
namespace {

struct WsTile {
  static constexpr int BW = 128;  // weight rows per CTA (2 consumer warpgroups x m64)
  static constexpr int BT = 256;  // slots per CTA (2 halves of wgmma N = 128)
  static constexpr int BK = 128;  // K per stage = one promotion block = one 128-byte swizzle row of E4M3
  static constexpr int kHalfSlots = 128;
  static constexpr int kStages = 5;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kProducerThreads = 128;
  static constexpr int kThreads = kConsumerThreads + kProducerThreads;
  static constexpr int kM16 = BW / kFragRows;  // 8
  // 384 threads x 168 registers (__launch_bounds__(384, 1)) = 64512, re-dealt by setmaxnreg.
  static constexpr int kConsumerRegs = 232;
  static constexpr int kProducerRegs = 40;
  static_assert(kConsumerThreads * kConsumerRegs + kProducerThreads * kProducerRegs <= kThreads * 168,
                "setmaxnreg budget: the launch's registers");
  static_assert(kM16 == kConsumerThreads / 32, "one m16 tile per consumer warp");
  static_assert(BT == 2 * kHalfSlots && BT * 8 == 16 * kProducerThreads, "B: 16 chunks per producer thread");
};

struct WsSmem {
  using T = WsTile;
  static constexpr int SB = 32;                                   // MXFP4 scale bytes per fragment block
  static constexpr int kBBytes = T::BT * T::BK;                   // 32 KB
  static constexpr int kBHalfBytes = T::kHalfSlots * T::BK;       // 16 KB
  static constexpr int kWeightBytes = T::kM16 * 2 * kFragBytes;   // 8 KB
  static constexpr int kScaleBytes = T::kM16 * 2 * SB;            // 512 B
  static constexpr int kActScaleStride = 36;                      // floats per (half, t)
  static constexpr int kActScaleHalfBytes = 4 * kActScaleStride * 4;
  static constexpr int kActScaleBytes = 2 * kActScaleHalfBytes;   // 1152 B
  static constexpr int kBOffset = 0;
  static constexpr int kWeightOffset = kBOffset + T::kStages * kBBytes;
  static constexpr int kScaleOffset = kWeightOffset + T::kStages * kWeightBytes;
  static constexpr int kActScaleOffset = kScaleOffset + T::kStages * kScaleBytes;
  static constexpr int kRowTableOffset = kActScaleOffset + T::kStages * kActScaleBytes;
  static constexpr int kBarOffset = kRowTableOffset + T::BT * 4;
  static constexpr int kOutStride = T::BW + 8;                    // BF16 per slot row (L1 uses BW / 2)
  static constexpr int kOutBytes = T::BT * kOutStride * 2;
  static constexpr int kAlign = 1024;
  static constexpr int kBytes = kBarOffset + 2 * T::kStages * 8 + kAlign;
  // kPrefillW4A8WsTma: bytes per full phase (B box, activation scales [256], weights, scales).
  static constexpr int kStageTx = kBBytes + T::BT * 4 + kWeightBytes + kScaleBytes;
  static_assert(T::BT * 4 <= kActScaleBytes && kActScaleBytes % 16 == 0 && kActScaleOffset % 128 == 0,
                "the TMA activation-scale box fits its stage and stays 16-byte aligned");
  static_assert(kBHalfBytes == kWgmmaSubBytes, "one 128-byte swizzle row per slot, as wgmma_layout.h");
  static_assert(kBBytes % kAlign == 0, "swizzle atoms 1024-aligned");
  static_assert(kOutBytes <= kWeightOffset, "the output tile lies in the B ring");
  static_assert(kActScaleOffset % 16 == 0 && kRowTableOffset % 16 == 0 && kBarOffset % 8 == 0, "alignment");
  static_assert(kBytes <= 227 * 1024, "fits one SM");
};

constexpr int kFullArrivals = WsTile::kProducerThreads;   // one cp.async.mbarrier.arrive.noinc each
constexpr int kEmptyArrivals = WsTile::kConsumerThreads;  // every consumer thread, after its reads

// D[64 x 128] (+)= A[64 x 32] E4M3 (registers) * B[32 x 128] E4M3 (descriptor, K-major).
// kFirst: D = A B (scale-d false; D write-only, so the previous block's values are not
// inputs and need not stay live into the stage); else D += A B.
template <bool kFirst>
__device__ __forceinline__ void ws_wgmma(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
#define DSV4_WS_IN(x) "+f"(x)
#define DSV4_WS_OUT(x) "=f"(x)
  if constexpr (kFirst) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " DSV4_WS_REGS64 ", {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
        : DSV4_WS_ACC64(DSV4_WS_OUT)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
  } else {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " DSV4_WS_REGS64 ", {%64, %65, %66, %67}, %68, 1, 1, 1;\n"
        : DSV4_WS_ACC64(DSV4_WS_IN)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
  }
#undef DSV4_WS_IN
#undef DSV4_WS_OUT
}

// Row constants of one lane (rows g, g + 8 of its m16 tile): the table bases of
// w4a8_lut_fast folded with the reference (lo = kc * 0x08080800 + base_lo = 0x3C383000 + 8 d
// per nonzero byte, d = kc - row_ref + 6; hi likewise), and the slow-path threshold
// (kc < row_ref - 11 <=> d < -5: the table-add bytes would borrow).
#ifndef DSV4_WS_ABLATE
#define DSV4_WS_ABLATE 0
#endif
constexpr bool kAblNoConvert = (DSV4_WS_ABLATE & 1) != 0, kAblNoPromote = (DSV4_WS_ABLATE & 2) != 0,
               kAblOneWait = (DSV4_WS_ABLATE & 4) != 0, kAblNoMma = (DSV4_WS_ABLATE & 8) != 0,
               kAblNoFeed = (DSV4_WS_ABLATE & 16) != 0;
struct WsRowConsts {
  uint32_t base_lo[2], base_hi[2];
  int ref[2];
};

// One stage's A fragment of this warp (16 E4M3 registers: a[j] = k32 step j = 32-block j),
// from the stage's weights and scale bytes in shared memory.
__device__ __forceinline__ void ws_convert(uint32_t w_addr, uint32_t s_addr, const WsRowConsts& rc,
                                           uint32_t (&a)[4][4]) {
  const uint4 w0 = ws_lds128(w_addr), w1 = ws_lds128(w_addr + kFragBytes);
  const uint32_t sc0 = ws_lds32(s_addr), sc1 = ws_lds32(s_addr + WsSmem::SB);
  const uint32_t words[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
  uint32_t kc[2][4];  // [row half][32-block]: MXFP4 scale word = bytes [block 2][row half 2]
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    kc[hr][0] = (sc0 >> (8 * hr)) & 0xFFu;
    kc[hr][1] = (sc0 >> (8 * (2 + hr))) & 0xFFu;
    kc[hr][2] = (sc1 >> (8 * hr)) & 0xFFu;
    kc[hr][3] = (sc1 >> (8 * (2 + hr))) & 0xFFu;
  }
  uint32_t lut[2][4][2];  // [row half][32-block][lo, hi]
  bool slow = false;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      lut[hr][j][0] = kc[hr][j] * 0x08080800u + rc.base_lo[hr];
      lut[hr][j][1] = kc[hr][j] * 0x08080808u + rc.base_hi[hr];
      slow |= static_cast<int>(kc[hr][j]) < rc.ref[hr] - 11;
    }
  if (slow) {  // a 32-block more than 11 octaves below its row's largest (rare in real weights)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int d = static_cast<int>(kc[hr][j]) - rc.ref[hr] + kWsRefBias;
        if (d < -5) w4a8_lut_cvt(ws_cvt_factor(d), lut[hr][j][0], lut[hr][j][1]);
      }
  }
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int sw = 0; sw < 2; ++sw)
      fp8_a_regs_lut(words[2 * j + sw], lut[0][j][0], lut[0][j][1], lut[1][j][0], lut[1][j][1], a[j][2 * sw],
                     a[j][2 * sw + 1]);
}

// acc[64 h + 4 j + v] (+ 2: row g + 8) = slot 128 h + 8 j + 2 t + v: acc = fma(blk, act_scale[slot], acc).
// scale_addr: the lane's first scale of half h (cp.async layout [t][36]: (4 h + t) * 36 floats;
// kTma, plain [256] slots: 128 h + 2 t).
template <bool kTma, int kAcc>
__device__ __forceinline__ void ws_promote(float (&acc)[kAcc], int h, const float (&blk)[64], uint32_t scale_addr) {
#pragma unroll
  for (int jj = 0; jj < 8; ++jj) {
    uint4 s4;  // slots 16 jj + 2t + {0, 1}, 16 jj + 8 + 2t + {0, 1}
    if constexpr (kTma) {
      const uint2 lo = ws_lds64(scale_addr + 64 * jj), hi = ws_lds64(scale_addr + 64 * jj + 32);
      s4 = make_uint4(lo.x, lo.y, hi.x, hi.y);
    } else {
      s4 = ws_lds128(scale_addr + 16 * jj);
    }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int j = 2 * jj + hh, o = 64 * h + 4 * j;
      const float asx = __uint_as_float(hh ? s4.z : s4.x), asy = __uint_as_float(hh ? s4.w : s4.y);
      acc[o + 0] = fmaf(blk[4 * j + 0], asx, acc[o + 0]);
      acc[o + 1] = fmaf(blk[4 * j + 1], asy, acc[o + 1]);
      acc[o + 2] = fmaf(blk[4 * j + 2], asx, acc[o + 2]);
      acc[o + 3] = fmaf(blk[4 * j + 3], asy, acc[o + 3]);
    }
  }
}

// ---- producer warpgroup ------------------------------------------------------------------
// Thread pt (0..127) per stage: B chunk pt % 8 of slot rows pt / 8 + 16 i (i < 16: 16
// cp.async of 16 B, destinations 2 KB apart, same swizzle phase); weights: 4 x 16 B of m16
// tile pt / 16 (chunks pt % 16 + 16 i of its 1 KB); scales: pt < 32, 16 B; activation scales
// of slots pt and pt + 128 (4 B each); then one noinc arrival on full[stage].
template <bool kL1>
__device__ __forceinline__ void ws_produce(const GroupedGemmParams& p, uint32_t smem_addr, int expert, int slot0,
                                           int rows, int n0) {
  using T = WsTile;
  using S = WsSmem;
  const int pt = static_cast<int>(threadIdx.x) - T::kConsumerThreads;
  const int K = p.k, k_tiles = K / T::BK, kb_count = K / kFragCols;
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  const uint32_t row_table = smem_addr + S::kRowTableOffset;
  ws_write_row_table<kL1, T::BT, T::kProducerThreads>(p, row_table, pt, slot0, rows);
  ws_producer_bar();  // the row table complete before any thread reads it

  const int b_cc = pt & 7, b_r0 = pt >> 3;
  const uint32_t b_dst0 = smem_addr + S::kBOffset + wgmma_act_offset(b_r0, b_cc);
  const uint8_t* b_src0 = p.act8 + b_cc * 16;
  const int b_valid = rows > b_r0 ? (rows - b_r0 + 15) / 16 : 0;  // rows b_r0 + 16 i < rows <=> i < b_valid
  const int as_index = ((pt >> 1) & 3) * S::kActScaleStride + 2 * (pt >> 3) + (pt & 1);
  const uint32_t as_dst0 = smem_addr + S::kActScaleOffset + as_index * 4;  // slot pt; + kActScaleHalfBytes: pt + 128
  const int as_size0 = pt < rows ? 4 : 0, as_size1 = pt + T::kHalfSlots < rows ? 4 : 0;
  // Row byte offsets row * K (32-bit: act8 < 4 GiB, checked by the launcher's caller contract) / 128 =
  // row * (K / 128), the row's first activation scale.
  const float* as_src0 = p.act_scale + (ws_lds32(row_table + ws_row_table_index(pt) * 4) >> 7);
  const float* as_src1 = p.act_scale + (ws_lds32(row_table + ws_row_table_index(pt + T::kHalfSlots) * 4) >> 7);
  const int64_t fb_row = static_cast<int64_t>(expert) * (p.n / kFragRows) + n0 / kFragRows;  // first m16 tile
  const uint8_t* w_src = p.weights + ((fb_row + (pt >> 4)) * kb_count) * kFragBytes + (pt & 15) * 16;
  const uint32_t w_dst = smem_addr + S::kWeightOffset + (pt >> 4) * 1024 + (pt & 15) * 16;
  const uint8_t* s_src = p.scales + ((fb_row + (pt >> 2)) * kb_count) * S::SB + (pt & 3) * 16;
  const uint32_t s_dst = smem_addr + S::kScaleOffset + pt * 16;

  for (int kt = 0; kt < k_tiles; ++kt) {
    const uint32_t slot = static_cast<uint32_t>(kt % T::kStages);
    mbar_wait(empty0 + slot * 8, ((kt / T::kStages) & 1) ^ 1);  // a fresh barrier passes parity 1
    if constexpr (kAblNoFeed) { cp_async_mbar_arrive(full0 + slot * 8); continue; }
    ws_copy_b_stage(row_table, b_r0, b_dst0 + slot * S::kBBytes, b_src0 + static_cast<int64_t>(kt) * T::BK, b_valid);
    const uint32_t wd = w_dst + slot * S::kWeightBytes;
    const uint8_t* ws = w_src + static_cast<int64_t>(kt) * 2 * kFragBytes;
#pragma unroll
    for (int i = 0; i < 4; ++i) ws_cp16(wd + i * 256, ws + i * 256, 16);
    if (pt < 32) ws_cp16(s_dst + slot * S::kScaleBytes, s_src + static_cast<int64_t>(kt) * 2 * S::SB, 16);
    const uint32_t ad = as_dst0 + slot * S::kActScaleBytes;
    ws_cp4(ad, as_src0 + kt, as_size0);
    ws_cp4(ad + S::kActScaleHalfBytes, as_src1 + kt, as_size1);
    cp_async_mbar_arrive(full0 + slot * 8);
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");  // nothing of this thread in flight at exit
}

// ---- TMA producer (kPrefillW4A8WsTma): one warp, one copy per lane and stage ------------
// Per stage: lane 0 announces kStageTx bytes on full[stage]; lanes 0..7 bulk-copy m16 tile
// m = lane's two fragment blocks (1 KB, contiguous in global memory), lanes 8..15 their scale
// bytes (64 B), lane 16 the B box [256 slots][128 K] (act8 rows slot0.., the map's 128-byte
// swizzle = wgmma_act_offset; rows past act_rows zero-filled), lane 17 the activation-scale box
// [256 slots] of K block kt (transposed act_scale).
__device__ __forceinline__ void ws_produce_tma(const GroupedGemmParams& p, uint32_t smem_addr,
                                               const CUtensorMap* act_map, const CUtensorMap* scale_map, int expert,
                                               int slot0, int n0) {
  using T = WsTile;
  using S = WsSmem;
  const int lane = static_cast<int>(threadIdx.x) & 31, m = lane & 7;
  const int K = p.k, k_tiles = K / T::BK, kb_count = K / kFragCols;
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  const int64_t fb_row = static_cast<int64_t>(expert) * (p.n / kFragRows) + n0 / kFragRows;  // first m16 tile
  const uint8_t* w_src = p.weights + (fb_row + m) * kb_count * kFragBytes;
  const uint8_t* s_src = p.scales + (fb_row + m) * kb_count * S::SB;
  for (int kt = 0; kt < k_tiles; ++kt) {
    const uint32_t slot = static_cast<uint32_t>(kt % T::kStages), full = full0 + slot * 8;
    mbar_wait(empty0 + slot * 8, ((kt / T::kStages) & 1) ^ 1);  // a fresh barrier passes parity 1
    if (lane == 0) mbar_arrive_expect_tx(full, S::kStageTx);
    __syncwarp();
    if (lane < 8)
      bulk_g2s(smem_addr + S::kWeightOffset + slot * S::kWeightBytes + m * 2 * kFragBytes,
               w_src + static_cast<int64_t>(kt) * 2 * kFragBytes, 2 * kFragBytes, full);
    else if (lane < 16)
      bulk_g2s(smem_addr + S::kScaleOffset + slot * S::kScaleBytes + m * 2 * S::SB,
               s_src + static_cast<int64_t>(kt) * 2 * S::SB, 2 * S::SB, full);
    else if (lane == 16)
      tma_load_2d(smem_addr + S::kBOffset + slot * S::kBBytes, act_map, kt * T::BK, slot0, full);
    else if (lane == 17)
      tma_load_2d(smem_addr + S::kActScaleOffset + slot * S::kActScaleBytes, scale_map, slot0, kt, full);
  }
}

// ---- consumer warpgroups -----------------------------------------------------------------
template <bool kL1, int kHalves, bool kTma>
__device__ __forceinline__ void ws_consume(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr, int expert,
                                           int slot0, int rows, int n0) {
  using T = WsTile;
  using S = WsSmem;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int k_tiles = p.k / T::BK;
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  WsRowConsts rc;
  {
    const uint8_t* ref = p.w4a8_row_ref + static_cast<int64_t>(expert) * p.n + n0 + 16 * warp + g;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      rc.ref[hr] = ref[8 * hr];
      ws_table_bases(rc.ref[hr], rc.base_lo[hr], rc.base_hi[hr]);
    }
  }
  const uint32_t w_addr0 = smem_addr + S::kWeightOffset + warp * 2 * kFragBytes + lane * 16;
  const uint32_t s_addr0 = smem_addr + S::kScaleOffset + warp * 2 * S::SB + g * 4;
  const uint32_t as_addr0 = smem_addr + S::kActScaleOffset + (kTma ? 2 * t : t * S::kActScaleStride) * 4;
  const uint32_t as_half_bytes = kTma ? T::kHalfSlots * 4 : S::kActScaleHalfBytes;
  // B descriptor of stage 0, half 0; stage s adds 32 KB, half h 16 KB, k32 step j 32 bytes
  // (>> 4 in the start field; no carry: the window is < 256 KB).
  const uint64_t desc_b0 = wgmma_desc_sw128(smem_addr + S::kBOffset);
  constexpr int kAcc = 64 * kHalves;
  float acc[kAcc], blk[64];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;
  const bool never = rows < 0;  // false for every valid tile list; opaque to the compiler

  for (int kt = 0; kt < k_tiles; ++kt) {
    const uint32_t slot = static_cast<uint32_t>(kt % T::kStages);
    mbar_wait_no_trap(full0 + slot * 8, (kt / T::kStages) & 1);
    if (!kTma) fence_proxy_async_smem();  // the producer's cp.async writes (generic proxy) -> wgmma reads
    uint32_t a[4][4];
    if constexpr (kAblNoConvert) {
      const uint4 w0 = ws_lds128(w_addr0 + slot * S::kWeightBytes), w1 = ws_lds128(w_addr0 + slot * S::kWeightBytes + kFragBytes);
      const uint32_t words[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) a[j][0] = words[2 * j], a[j][1] = words[2 * j + 1], a[j][2] = words[j] ^ 1u, a[j][3] = words[j + 4] ^ 2u;
    } else {
      ws_convert(w_addr0 + slot * S::kWeightBytes, s_addr0 + slot * S::kScaleBytes, rc, a);
    }
    const uint64_t db = desc_b0 + ((slot * S::kBBytes) >> 4);
    if constexpr (kAblNoMma) {
      wgmma_wait0_keep_a(a, never, smem_addr);
    } else {
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
      const uint64_t dh = db + ((h * S::kBHalfBytes) >> 4);
      wgmma_fence();
      ws_wgmma<true>(blk, a[0], dh);
#pragma unroll
      for (int j = 1; j < 4; ++j) ws_wgmma<false>(blk, a[j], dh + 2 * j);
      wgmma_commit();
      // The last half: wait, then read A again (predicated-off stores), so ptxas keeps the A
      // registers until the wait (grouped_gemm_w4a8.cuh, wgmma_wait0_keep_a).
      if (h + 1 < kHalves) {
        if (!kAblOneWait) wgmma_wait<0>();
      } else {
        wgmma_wait0_keep_a(a, never, smem_addr);
      }
      fence_acc(blk);
      if (!kAblNoPromote || kt + 1 == k_tiles)
        ws_promote<kTma>(acc, h, blk, as_addr0 + slot * S::kActScaleBytes + h * as_half_bytes);
    }
    }
    mbar_arrive(empty0 + slot * 8);  // this thread's reads of the stage are done (wgmma waited)
  }

  // Epilogue over the B ring: every consumer past its last wgmma; the producer's last
  // copies landed (every full phase completed before its stage was read).
  ws_consumer_bar();
  const float rf[2] = {ws_row_factor(rc.ref[0]), ws_row_factor(rc.ref[1])};  // 2^(row_ref - 259)
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] *= rf[(i >> 1) & 1];
  __nv_bfloat16* s_out = reinterpret_cast<__nv_bfloat16*>(smem);  // [128 kHalves][kOutStride]
  wgmma_epilogue_to_smem<kL1, 128 * kHalves, S::kOutStride>(p, acc, s_out, expert, rows, slot0, warp, g, t);
  ws_consumer_bar();
  store_out_tile<kL1, 128 * kHalves, kL1 ? T::BW / 2 : T::BW, S::kOutStride>(p, s_out, rows, slot0, n0, tid,
                                                                              T::kConsumerThreads);
}

// The CTA of both kernels: kTma = false (kPrefillW4A8Ws) moves bytes with the whole producer
// warpgroup's cp.async, kTma = true (kPrefillW4A8WsTma) with its first warp's TMA / bulk copies.
template <bool kL1, bool kTma>
__device__ __forceinline__ void ws_cta(const GroupedGemmParams& p, const CUtensorMap* act_map,
                                       const CUtensorMap* scale_map) {
  using T = WsTile;
  using S = WsSmem;
  const int tile = blockIdx.y;
  if (tile >= *p.tile_count) return;
  const int expert = p.tile_expert[tile];
  const int slot0 = p.tile_slot_begin[tile];
  const int rows = p.tile_row_count[tile];
  const int n0 = blockIdx.x * T::BW;
  if (rows > T::BT) __trap();  // a tile list cut for more than 256 slots per tile (not a silent wrong result)
  extern __shared__ uint8_t smem_raw[];
  uint32_t smem_addr;
  uint8_t* smem = align_dynamic_smem<S::kAlign>(smem_raw, smem_addr);
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  mbar_init_ring(full0, empty0, T::kStages, kTma ? 1 : kFullArrivals, kEmptyArrivals);
  __syncthreads();  // the only CTA-wide barrier
  if (threadIdx.x >= T::kConsumerThreads) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(T::kProducerRegs));
    if constexpr (kTma) {
      if (threadIdx.x < T::kConsumerThreads + 32) ws_produce_tma(p, smem_addr, act_map, scale_map, expert, slot0, n0);
    } else {
      ws_produce<kL1>(p, smem_addr, expert, slot0, rows, n0);
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(T::kConsumerRegs));
  if (rows > T::kHalfSlots) ws_consume<kL1, 2, kTma>(p, smem, smem_addr, expert, slot0, rows, n0);
  else ws_consume<kL1, 1, kTma>(p, smem, smem_addr, expert, slot0, rows, n0);
}

template <bool kL1>
__global__ void __launch_bounds__(WsTile::kThreads, 1)
    moe_grouped_gemm_w4a8_ws_kernel(const __grid_constant__ GroupedGemmParams p) {
  ws_cta<kL1, false>(p, nullptr, nullptr);
}

template <bool kL1>
__global__ void __launch_bounds__(WsTile::kThreads, 1)
    moe_grouped_gemm_w4a8_ws_tma_kernel(const __grid_constant__ GroupedGemmParams p,
                                        const __grid_constant__ CUtensorMap act_map,
                                        const __grid_constant__ CUtensorMap scale_map) {
  ws_cta<kL1, true>(p, &act_map, &scale_map);
}

template <bool kL1>
cudaError_t launch_ws_impl(const GroupedGemmParams& p) {
  auto kernel = moe_grouped_gemm_w4a8_ws_kernel<kL1>;
  static bool configured = false;  // attribute set once per instantiation (idempotent)
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, WsSmem::kBytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(p.n / WsTile::BW), static_cast<unsigned>(p.max_tiles));
  kernel<<<grid, WsTile::kThreads, WsSmem::kBytes, p.stream>>>(p);
  return cudaGetLastError();
}

template <bool kL1>
cudaError_t launch_ws_tma_impl(const GroupedGemmParams& p) {
  auto kernel = moe_grouped_gemm_w4a8_ws_tma_kernel<kL1>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, WsSmem::kBytes);  // once
  if (attr != cudaSuccess) return attr;
  CUtensorMap act_map, scale_map;
  // act8 [act_rows][k] E4M3 in boxes [256 slots][128 B], 128-byte swizzle (the B stage layout).
  cudaError_t err = encode_tensor_map_2d(&act_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.act8, static_cast<uint64_t>(p.k),
                                         static_cast<uint64_t>(p.act_rows), static_cast<uint64_t>(p.k), WsTile::BK,
                                         WsTile::BT, CU_TENSOR_MAP_SWIZZLE_128B);
  if (err != cudaSuccess) return err;
  // act_scale [k / 128][act_scale_stride] FP32 (first act_rows used) in boxes [1][256 slots].
  err = encode_tensor_map_2d(&scale_map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, p.act_scale,
                             static_cast<uint64_t>(p.act_rows), static_cast<uint64_t>(p.k / WsTile::BK),
                             static_cast<uint64_t>(p.act_scale_stride) * 4, WsTile::BT, 1, CU_TENSOR_MAP_SWIZZLE_NONE);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(p.n / WsTile::BW), static_cast<unsigned>(p.max_tiles));
  kernel<<<grid, WsTile::kThreads, WsSmem::kBytes, p.stream>>>(p, act_map, scale_map);
  return cudaGetLastError();
}

// One thread per (group, row): the largest of the row's scale bytes over K.
__global__ void w4a8_row_ref_kernel(const W4a8RowRefParams p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.groups) * p.n) return;
  const int64_t group = idx / p.n;
  const int row = static_cast<int>(idx % p.n);
  const int kb_count = p.k / kFragCols, g = row % 8, hr = (row % 16) / 8;
  const uint8_t* s = p.scales + (group * (p.n / kFragRows) + row / kFragRows) * kb_count * WsSmem::SB;
  const int o0 = frag_scale_offset(ExpertFormat::kMXFP4, g, 0, hr), o1 = frag_scale_offset(ExpertFormat::kMXFP4, g, 2, hr);
  uint32_t m = 0;
  for (int kb = 0; kb < kb_count; ++kb) m = max(m, max(static_cast<uint32_t>(s[kb * WsSmem::SB + o0]),
                                                       static_cast<uint32_t>(s[kb * WsSmem::SB + o1])));
  p.row_ref[idx] = static_cast<uint8_t>(m);
}

}  // namespace

cudaError_t launch_w4a8_ws(const GroupedGemmParams& p, bool l1) {
  // MXFP4 only; act8 / act_scale from launch_act_quant_fp8, w4a8_row_ref from
  // launch_w4a8_row_ref; n % 128, k % 128; act8 [rows, k] under 4 GiB (32-bit row offsets).
  bool launch = false;
  const cudaError_t err = w4a8_ws_check(p, WsTile::BW, WsTile::BK, &launch);
  if (err != cudaSuccess || !launch) return err;
  return l1 ? launch_ws_impl<true>(p) : launch_ws_impl<false>(p);
}

cudaError_t launch_w4a8_ws_tma(const GroupedGemmParams& p, bool l1) {
  // launch_w4a8_ws's contract, plus: act8 [act_rows, k] in slot order (L1 too), act_scale
  // transposed [k / 128][act_scale_stride], act_scale_stride >= act_rows, % 4 (16-byte rows).
  bool launch = false;
  const cudaError_t err = w4a8_ws_check(p, WsTile::BW, WsTile::BK, &launch);
  if (err != cudaSuccess || !launch) return err;
  if (p.act_rows <= 0 || p.act_scale_stride < p.act_rows || p.act_scale_stride % 4 != 0) return cudaErrorInvalidValue;
  return l1 ? launch_ws_tma_impl<true>(p) : launch_ws_tma_impl<false>(p);
}

}  // namespace detail

cudaError_t launch_w4a8_row_ref(const W4a8RowRefParams& p) {
  if (p.scales == nullptr || p.row_ref == nullptr || p.groups <= 0 || p.n <= 0 || p.k <= 0 || p.n % kFragRows != 0 ||
      p.k % kFragCols != 0)
    return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(p.groups) * p.n;
  const int threads = 256;
  detail::w4a8_row_ref_kernel<<<static_cast<unsigned>((rows + threads - 1) / threads), threads, 0, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe

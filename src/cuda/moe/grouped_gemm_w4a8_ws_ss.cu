// TileConfig::kPrefillW4A8WsSS (opt-in, MXFP4 only): kPrefillW4A8Ws (grouped_gemm_w4a8_ws.cu)
// with the E2M1 -> E4M3 weight conversion moved from the consumers into the producer
// warpgroup: converted ONCE per stage into shared memory, and the consumers issue SS wgmma
// (A and B from descriptors) + the one-FFMA promotion only. Same inputs (act8 / act_scale
// from launch_act_quant_fp8, the packed MXFP4 weights, w4a8_row_ref from launch_w4a8_row_ref),
// same tiles (128 weight rows x 256 slots, tile_config_rows 256), the same E4M3 weight bytes
// (d = kc - row_ref + 6, kPrefillW4A8Ws's table rule), the same wgmma K order, promotion
// order, row factor and epilogues: its output is expected to equal kPrefillW4A8Ws's bit for
// bit (tested). docs/kernels/moe.md, "W4A8 with the conversion in the producer".
//   - CTA = 3 warpgroups (384 threads): WG 0 / 1 consumers (m64 slab each of the 128-row
//     block; warp w = m16 tile w), WG 2 the producer: per stage it gathers B (E4M3 activation
//     rows) and the activation scales by cp.async (kPrefillW4A8Ws's copies), converts the
//     stage's weights from its private raw ring into the A tile (st.shared) and arrives on
//     full[stage] twice per thread (cp.async noinc + an ordinary arrive after
//     fence.proxy.async). setmaxnreg: kConsumerRegs / kProducerRegs.
//   - Grid (n / 128, max_tiles), row blocks fastest, one tile per CTA (as kPrefillW4A8Ws); a
//     tile of > 128 slots runs two halves (m64n128k32 x 4 per half), else one.
// Shared memory (from the 1024-aligned base, WsSsSmem; per ring stage s of kStages):
//   A          [kStages][128 weight rows][128 E4M3]  K-major, row r at r * 128, 16-byte chunk c
//              (logical k 16 c .. 16 c + 15 of the stage = k16 step c) at c ^ (r % 8)
//              (wgmma_act_offset); warpgroup wg's descriptor starts at row 64 wg (+ 8 KB).
//              Byte 4 t + i of chunk c of row 16 m16 + g (+ 8) = fp8_a_regs_lut's output byte i
//              for packed word c % 4 of lane 4 g + t of fragment block (m16, 2 kt + c / 4): the
//              register A fragment of kPrefillW4A8Ws written out, so the K order (the activation
//              quantizer's) is unchanged.
//   B          [kStages][256 slots][128 E4M3]  the same layout (kPrefillW4A8Ws's B); slots 128..255
//              = the second half (+16 KB); rows past the tile zero-filled (cp.async src-size 0).
//   act scales [kStages][half 2][t 4][36] FP32 (kPrefillW4A8Ws's: slot 128 h + 8 j + 2 t + v at
//              (4 h + t) * 36 + 2 j + v).
//   raw        [kRawStages][q 4][thread 128][16 B] packed weights + [kRawStages][thread 128][4 B]
//              scale words, producer-private: producer thread pt = 64 sub + 8 m16 + g copies by
//              cp.async exactly what it reads (q = t: the 16 bytes of lane 4 g + t of fragment
//              block (m16, 2 kt + sub); scale word g of that block), so no barrier guards it.
//   row table  [256] uint32 (kPrefillW4A8Ws's: byte offset row * K of slot r's act8 row at
//              (r % 16) * 16 + r / 16), written once by the producer.
//   barriers   full[kStages] (256 arrivals: 128 cp.async noinc + 128 after the A stores),
//              empty[kStages] (256 consumer arrivals).
//   out        [256 slots][136] BF16 (68 KB) over the A ring + the start of the B ring after the K
//              loop (epilogue): every stage's A / B was written before its full phase completed.
#include <cuda_bf16.h>

#include "cuda/common/mbarrier.cuh"
#include "cuda/moe/grouped_gemm_w4a8.cuh"
#include "cuda/moe/grouped_gemm_w4a8_ws_common.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe {
namespace detail {
namespace {

struct WsSsTile {
  static constexpr int BW = 128;  // weight rows per CTA (2 consumer warpgroups x m64)
  static constexpr int BT = 256;  // slots per CTA (2 halves of wgmma N = 128)
  static constexpr int BK = 128;  // K per stage = one promotion block = one 128-byte swizzle row of E4M3
  static constexpr int kHalfSlots = 128;
  static constexpr int kStages = 4;     // shared ring (A, B, activation scales)
  static constexpr int kRawStages = 3;  // producer-private ring of packed weights + scale words
  static constexpr int kConsumerThreads = 256;
  static constexpr int kProducerThreads = 128;
  static constexpr int kThreads = kConsumerThreads + kProducerThreads;
  static constexpr int kM16 = BW / kFragRows;  // 8
  // 384 threads x 168 registers (__launch_bounds__(384, 1)) = 64512, re-dealt by setmaxnreg.
  static constexpr int kConsumerRegs = 216;
  static constexpr int kProducerRegs = 72;
  static_assert(kConsumerThreads * kConsumerRegs + kProducerThreads * kProducerRegs <= kThreads * 168,
                "setmaxnreg budget: the launch's registers");
  static_assert(kConsumerRegs % 8 == 0 && kProducerRegs % 8 == 0, "setmaxnreg counts are multiples of 8");
  static_assert(kM16 == kConsumerThreads / 32, "one m16 tile per consumer warp");
  static_assert(kProducerThreads == 2 * kM16 * 8, "producer thread = (fragment block of the stage, m16 tile, g)");
  static_assert(BT * 8 == 16 * kProducerThreads, "B: 16 chunks per producer thread");
};

struct WsSsSmem {
  using T = WsSsTile;
  static constexpr int SB = 32;                                  // MXFP4 scale bytes per fragment block
  static constexpr int kABytes = T::BW * T::BK;                  // 16 KB
  static constexpr int kBBytes = T::BT * T::BK;                  // 32 KB
  static constexpr int kBHalfBytes = T::kHalfSlots * T::BK;      // 16 KB
  static constexpr int kActScaleStride = 36;                     // floats per (half, t)
  static constexpr int kActScaleHalfBytes = 4 * kActScaleStride * 4;
  static constexpr int kActScaleBytes = 2 * kActScaleHalfBytes;  // 1152 B
  static constexpr int kRawWeightBytes = 4 * T::kProducerThreads * 16;  // [q 4][thread][16 B] = 8 KB
  static constexpr int kRawScaleBytes = T::kProducerThreads * 4;        // [thread][4 B]
  static constexpr int kAOffset = 0;
  static constexpr int kBOffset = kAOffset + T::kStages * kABytes;
  static constexpr int kActScaleOffset = kBOffset + T::kStages * kBBytes;
  static constexpr int kRawWeightOffset = kActScaleOffset + T::kStages * kActScaleBytes;
  static constexpr int kRawScaleOffset = kRawWeightOffset + T::kRawStages * kRawWeightBytes;
  static constexpr int kRowTableOffset = kRawScaleOffset + T::kRawStages * kRawScaleBytes;
  static constexpr int kBarOffset = kRowTableOffset + T::BT * 4;
  static constexpr int kOutStride = T::BW + 8;  // BF16 per slot row (L1 uses BW / 2)
  static constexpr int kOutBytes = T::BT * kOutStride * 2;
  static constexpr int kAlign = 1024;
  static constexpr int kBytes = kBarOffset + 2 * T::kStages * 8 + kAlign;
  static_assert(kABytes == kWgmmaSubBytes && kBHalfBytes == kWgmmaSubBytes, "one 128-byte swizzle row per row / slot");
  static_assert(kBOffset % kAlign == 0 && kBBytes % kAlign == 0 && kABytes % kAlign == 0, "swizzle atoms 1024-aligned");
  static_assert(kOutBytes <= kActScaleOffset, "the output tile lies in the A + B rings");
  static_assert(kActScaleOffset % 16 == 0 && kRawWeightOffset % 16 == 0 && kRawScaleOffset % 16 == 0 &&
                    kRowTableOffset % 16 == 0 && kBarOffset % 8 == 0,
                "alignment");
  static_assert(kBytes <= 227 * 1024, "fits one SM");
};

constexpr int kFullArrivals = 2 * WsSsTile::kProducerThreads;  // per producer thread: cp.async noinc + A stores
constexpr int kEmptyArrivals = WsSsTile::kConsumerThreads;     // every consumer thread, after its reads

// D[64 x 128] (+)= A[64 x 32] E4M3 * B[32 x 128] E4M3, both from shared memory (K-major,
// 128-byte swizzle descriptors). kFirst: D = A B (scale-d false, D write-only).
template <bool kFirst>
__device__ __forceinline__ void wss_wgmma(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
#define DSV4_WSS_IN(x) "+f"(x)
#define DSV4_WSS_OUT(x) "=f"(x)
  if constexpr (kFirst) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " DSV4_WS_REGS64 ", %64, %65, p, 1, 1;\n}\n"
        : DSV4_WS_ACC64(DSV4_WSS_OUT)
        : "l"(desc_a), "l"(desc_b));
  } else {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " DSV4_WS_REGS64 ", %64, %65, 1, 1, 1;\n"
        : DSV4_WS_ACC64(DSV4_WSS_IN)
        : "l"(desc_a), "l"(desc_b));
  }
#undef DSV4_WSS_IN
#undef DSV4_WSS_OUT
}

// acc[64 h + 4 j + v] (+ 2: row g + 8) = slot 128 h + 8 j + 2 t + v: acc = fma(blk, act_scale[slot], acc)
// (kPrefillW4A8Ws's expression and order). 8-byte scale loads (kPrefillW4A8Ws: 16-byte): with 16-byte
// ones ptxas hoisted all 8 loads (32 registers) and the L1 two-half loop spilled at 216 registers.
template <int kAcc>
__device__ __forceinline__ void wss_promote(float (&acc)[kAcc], int h, const float (&blk)[64], uint32_t scale_addr) {
#pragma unroll
  for (int jj = 0; jj < 8; ++jj) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const uint2 s2 = ws_lds64(scale_addr + 16 * jj + 8 * hh);  // slots 16 jj + 8 hh + 2t + {0, 1}
      const int j = 2 * jj + hh, o = 64 * h + 4 * j;
      const float asx = __uint_as_float(s2.x), asy = __uint_as_float(s2.y);
      acc[o + 0] = fmaf(blk[4 * j + 0], asx, acc[o + 0]);
      acc[o + 1] = fmaf(blk[4 * j + 1], asy, acc[o + 1]);
      acc[o + 2] = fmaf(blk[4 * j + 2], asx, acc[o + 2]);
      acc[o + 3] = fmaf(blk[4 * j + 3], asy, acc[o + 3]);
    }
  }
}

// ---- producer warpgroup ------------------------------------------------------------------
// Thread pt = 64 sub + 8 m16 + g. Per stage kt (slot kt % kStages):
//   wait empty; B: chunk pt % 8 of slot rows pt / 8 + 16 i (16 x cp.async 16 B) + the activation
//   scales of slots pt, pt + 128 (kPrefillW4A8Ws's copies); cp.async.mbarrier.arrive.noinc
//   full; commit (the B group);
//   wait for its raw stage kt (cp.async.wait_group 2 kRawStages - 1), convert rows 16 m16 + g
//   (+ 8), k16 steps 4 sub .. 4 sub + 3 (16 packed words -> 32 E4M3 words -> 8 st.shared.v4),
//   fence.proxy.async, arrive full;
//   refill its raw slot with stage kt + kRawStages (empty group past the end), commit.
// Groups: the prologue commits (empty, raw r) for r < kRawStages and every iteration (B, raw),
// so exactly 2 kRawStages - 1 groups are newer than raw stage kt at its conversion.
template <bool kL1>
__device__ __forceinline__ void wss_produce(const GroupedGemmParams& p, uint32_t smem_addr, int expert, int slot0,
                                            int rows, int n0) {
  using T = WsSsTile;
  using S = WsSsSmem;
  const int pt = static_cast<int>(threadIdx.x) - T::kConsumerThreads;
  const int g = pt & 7, m16 = (pt >> 3) & 7, sub = pt >> 6;
  const int K = p.k, k_tiles = K / T::BK, kb_count = K / kFragCols;
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  const uint32_t row_table = smem_addr + S::kRowTableOffset;
  ws_write_row_table<kL1, T::BT, T::kProducerThreads>(p, row_table, pt, slot0, rows);

  // Raw ring: this thread's 64 bytes (lanes 4 g .. 4 g + 3) of fragment block (m16, 2 kt + sub)
  // and its scale word g. Fragment blocks of one m16 tile are contiguous over K (512 B each).
  const int64_t fb0 = (static_cast<int64_t>(expert) * (p.n / kFragRows) + n0 / kFragRows + m16) * kb_count + sub;
  const uint32_t raw_w_dst = smem_addr + S::kRawWeightOffset + pt * 16;  // + q * 2048 + rslot * kRawWeightBytes
  const uint32_t raw_s_dst = smem_addr + S::kRawScaleOffset + pt * 4;    // + rslot * kRawScaleBytes
  auto issue_raw = [&](int rslot, int kt) {
    if (kt < k_tiles) {
      // Addresses rebuilt from fb0 per copy (registers are what the producer is short of).
      const int64_t fb = fb0 + 2 * kt;
      const uint8_t* w = p.weights + fb * kFragBytes + g * 64;
      const uint32_t dw = raw_w_dst + rslot * S::kRawWeightBytes;
#pragma unroll
      for (int q = 0; q < 4; ++q) ws_cp16_ca(dw + q * (T::kProducerThreads * 16), w + 16 * q);
      ws_cp4(raw_s_dst + rslot * S::kRawScaleBytes, p.scales + fb * S::SB + g * 4, 4);
    }
    ws_commit();
  };
#pragma unroll
  for (int r = 0; r < T::kRawStages; ++r) {
    ws_commit();  // the empty group in place of a B group (the wait count below)
    issue_raw(r, r);
  }

  // Row constants of rows 16 m16 + g (+ 8): kPrefillW4A8Ws's table bases folded with the row
  // reference, and the slow-path threshold (kc < ref - 11 <=> d < -5).
  uint32_t base_lo[2], base_hi[2];
  int ref[2];
  {
    const uint8_t* rr = p.w4a8_row_ref + static_cast<int64_t>(expert) * p.n + n0 + 16 * m16 + g;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      ref[hr] = rr[8 * hr];
      ws_table_bases(ref[hr], base_lo[hr], base_hi[hr]);
    }
  }
  const int a_row = 16 * m16 + g;  // and a_row + 8
  const uint32_t a_dst0 = smem_addr + S::kAOffset;
  ws_producer_bar();  // the row table complete before any thread reads it

  const int b_cc = pt & 7, b_r0 = pt >> 3;
  const uint32_t b_dst0 = smem_addr + S::kBOffset + wgmma_act_offset(b_r0, b_cc);
  const uint8_t* b_src0 = p.act8 + b_cc * 16;
  const int b_valid = rows > b_r0 ? (rows - b_r0 + 15) / 16 : 0;  // rows b_r0 + 16 i < rows <=> i < b_valid
  const int as_index = ((pt >> 1) & 3) * S::kActScaleStride + 2 * (pt >> 3) + (pt & 1);
  const uint32_t as_dst0 = smem_addr + S::kActScaleOffset + as_index * 4;  // slot pt; + kActScaleHalfBytes: pt + 128
  const int as_size0 = pt < rows ? 4 : 0, as_size1 = pt + T::kHalfSlots < rows ? 4 : 0;
  // Element offsets (row * K / 128: the rows' first activation scales), 32-bit (act8 < 4 GiB).
  const uint32_t as_off0 = ws_lds32(row_table + ws_row_table_index(pt) * 4) >> 7;
  const uint32_t as_off1 = ws_lds32(row_table + ws_row_table_index(pt + T::kHalfSlots) * 4) >> 7;

  int rslot = 0;  // kt % kRawStages
  for (int kt = 0; kt < k_tiles; ++kt) {
    const uint32_t slot = static_cast<uint32_t>(kt % T::kStages);
    mbar_wait(empty0 + slot * 8, ((kt / T::kStages) & 1) ^ 1);  // a fresh barrier passes parity 1
    {  // B + activation scales (cp.async, tracked by the noinc arrival)
      ws_copy_b_stage(row_table, b_r0, b_dst0 + slot * S::kBBytes, b_src0 + static_cast<int64_t>(kt) * T::BK,
                      b_valid);
      const uint32_t ad = as_dst0 + slot * S::kActScaleBytes;
      ws_cp4(ad, p.act_scale + (as_off0 + kt), as_size0);
      ws_cp4(ad + S::kActScaleHalfBytes, p.act_scale + (as_off1 + kt), as_size1);
      cp_async_mbar_arrive(full0 + slot * 8);
      ws_commit();
    }
    ws_wait_group<2 * T::kRawStages - 1>();  // this thread's raw stage kt landed
    {  // A: convert and store
      const uint32_t rw = raw_w_dst + rslot * S::kRawWeightBytes;
      const uint32_t sc = ws_lds32(raw_s_dst + rslot * S::kRawScaleBytes);
      // Kernel scale codes kc[row half][32-block jb of the sub] (scale word: bytes [jb 2][row half 2]).
      uint32_t lut[2][2][2];  // [row half][jb][lo, hi]
      bool slow = false;
#pragma unroll
      for (int hr = 0; hr < 2; ++hr)
#pragma unroll
        for (int jb = 0; jb < 2; ++jb) {
          const uint32_t kc = (sc >> (8 * (2 * jb + hr))) & 0xFFu;
          lut[hr][jb][0] = kc * 0x08080800u + base_lo[hr];
          lut[hr][jb][1] = kc * 0x08080808u + base_hi[hr];
          slow |= static_cast<int>(kc) < ref[hr] - 11;
        }
      if (slow) {  // a 32-block more than 11 octaves below its row's largest (rare in real weights)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr)
#pragma unroll
          for (int jb = 0; jb < 2; ++jb) {
            const int kc = static_cast<int>((sc >> (8 * (2 * jb + hr))) & 0xFFu);
            const int d = kc - ref[hr] + kWsRefBias;
            if (d < -5) w4a8_lut_cvt(ws_cvt_factor(d), lut[hr][jb][0], lut[hr][jb][1]);
          }
      }
      const uint32_t a_stage = a_dst0 + slot * S::kABytes;
      uint4 wq[4];  // wq[t] = the 4 packed words (k16 steps 0..3 of the block) of lane 4 g + t
#pragma unroll
      for (int t = 0; t < 4; ++t) wq[t] = ws_lds128(rw + t * (T::kProducerThreads * 16));  // conflict-free
#pragma unroll
      for (int jb = 0; jb < 2; ++jb) {  // 32-block jb of the sub: k16 steps 2 jb, 2 jb + 1 of the block
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // k16 step c = 2 jb + h of the block = chunk 4 sub + c of the stage
          uint32_t ag[4], ag8[4];
#pragma unroll
          for (int t = 0; t < 4; ++t) {
            const uint32_t w = jb == 0 ? (h ? wq[t].y : wq[t].x) : (h ? wq[t].w : wq[t].z);
            fp8_a_regs_lut(w, lut[0][jb][0], lut[0][jb][1], lut[1][jb][0], lut[1][jb][1], ag[t], ag8[t]);
          }
          const int cc = 4 * sub + 2 * jb + h;
          ws_sts128(a_stage + wgmma_act_offset(a_row, cc), ag[0], ag[1], ag[2], ag[3]);
          ws_sts128(a_stage + wgmma_act_offset(a_row + 8, cc), ag8[0], ag8[1], ag8[2], ag8[3]);
        }
      }
      fence_proxy_async_smem();  // the st.shared above (generic proxy) -> the consumers' wgmma (async proxy)
      mbar_arrive(full0 + slot * 8);
    }
    issue_raw(rslot, kt + T::kRawStages);  // the slot just read; only this thread reads it
    rslot = rslot + 1 == T::kRawStages ? 0 : rslot + 1;
  }
  ws_wait_group<0>();  // nothing of this thread in flight at exit
}

// ---- consumer warpgroups -----------------------------------------------------------------
// The tile's (expert, slot0, rows, n0) are re-read after the K loop rather than held through
// it (4 registers the loop needs at kConsumerRegs).
// kWg (the consumer warpgroup) is a template argument so that the A descriptor is warp-uniform
// by construction (ptxas keeps the descriptor chain in uniform registers, no per-QGMMA R2UR).
template <bool kL1, int kHalves, int kWg>
__device__ __forceinline__ void wss_consume(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr) {
  using T = WsSsTile;
  using S = WsSsSmem;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int k_tiles = p.k / T::BK;
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  const uint32_t as_addr0 = smem_addr + S::kActScaleOffset + t * S::kActScaleStride * 4;
  // Descriptors of stage 0 (A: this warpgroup's 64 rows, + 8 KB wg; B: half 0); stage s adds
  // s x 16 KB (A) / 32 KB (B), half h 16 KB, k32 step j 32 bytes (>> 4 in the start field; no
  // carry: the window is < 256 KB).
  const uint64_t desc_a0 = wgmma_desc_sw128(smem_addr + S::kAOffset + kWg * (64 * T::BK));
  const uint64_t desc_b0 = wgmma_desc_sw128(smem_addr + S::kBOffset);
  constexpr int kAcc = 64 * kHalves;
  float acc[kAcc], blk[64];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;

  for (int kt = 0; kt < k_tiles; ++kt) {
    const uint32_t slot = static_cast<uint32_t>(kt % T::kStages);
    mbar_wait_no_trap(full0 + slot * 8, (kt / T::kStages) & 1);
    fence_proxy_async_smem();  // the producer's cp.async B writes (generic proxy) -> wgmma reads
    const uint64_t da = desc_a0 + ((slot * S::kABytes) >> 4);
    const uint64_t db = desc_b0 + ((slot * S::kBBytes) >> 4);
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
      const uint64_t dh = db + ((h * S::kBHalfBytes) >> 4);
      wgmma_fence();
      wss_wgmma<true>(blk, da, dh);
#pragma unroll
      for (int j = 1; j < 4; ++j) wss_wgmma<false>(blk, da + 2 * j, dh + 2 * j);
      wgmma_commit();
      wgmma_wait<0>();
      fence_acc(blk);
      wss_promote(acc, h, blk, as_addr0 + slot * S::kActScaleBytes + h * S::kActScaleHalfBytes);
    }
    mbar_arrive(empty0 + slot * 8);  // this thread's reads of the stage are done (wgmma waited)
  }

  // Epilogue over the A + B rings: every consumer past its last wgmma; the producer's last
  // A stores and copies landed (every full phase completed before its stage was read), and it
  // writes neither ring after its last stage.
  ws_consumer_bar();
  const int tile = blockIdx.y;
  const int expert = p.tile_expert[tile], slot0 = p.tile_slot_begin[tile], rows = p.tile_row_count[tile];
  const int n0 = blockIdx.x * T::BW;
  float rf[2];  // row factor 2^(row_ref - 259) of rows g, g + 8 (0 below FP32's normal range)
  {
    const uint8_t* rr = p.w4a8_row_ref + static_cast<int64_t>(expert) * p.n + n0 + 16 * warp + g;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) rf[hr] = ws_row_factor(rr[8 * hr]);
  }
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] *= rf[(i >> 1) & 1];
  __nv_bfloat16* s_out = reinterpret_cast<__nv_bfloat16*>(smem + S::kAOffset);  // [128 kHalves][kOutStride]
  wgmma_epilogue_to_smem<kL1, 128 * kHalves, S::kOutStride>(p, acc, s_out, expert, rows, slot0, warp, g, t);
  ws_consumer_bar();
  store_out_tile<kL1, 128 * kHalves, kL1 ? T::BW / 2 : T::BW, S::kOutStride>(p, s_out, rows, slot0, n0, tid,
                                                                              T::kConsumerThreads);
}

template <bool kL1>
__global__ void __launch_bounds__(WsSsTile::kThreads, 1)
    moe_grouped_gemm_w4a8_ws_ss_kernel(const __grid_constant__ GroupedGemmParams p) {
  using T = WsSsTile;
  using S = WsSsSmem;
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
  mbar_init_ring(full0, empty0, T::kStages, kFullArrivals, kEmptyArrivals);
  __syncthreads();  // the only CTA-wide barrier
  if (threadIdx.x >= T::kConsumerThreads) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(T::kProducerRegs));
    wss_produce<kL1>(p, smem_addr, expert, slot0, rows, n0);
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(T::kConsumerRegs));
  const bool wg1 = threadIdx.x >= 128;
  if (rows > T::kHalfSlots) {
    if (wg1) wss_consume<kL1, 2, 1>(p, smem, smem_addr);
    else wss_consume<kL1, 2, 0>(p, smem, smem_addr);
  } else {
    if (wg1) wss_consume<kL1, 1, 1>(p, smem, smem_addr);
    else wss_consume<kL1, 1, 0>(p, smem, smem_addr);
  }
}

template <bool kL1>
cudaError_t launch_ws_ss_impl(const GroupedGemmParams& p) {
  auto kernel = moe_grouped_gemm_w4a8_ws_ss_kernel<kL1>;
  static bool configured = false;  // attribute set once per instantiation (idempotent)
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, WsSsSmem::kBytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(p.n / WsSsTile::BW), static_cast<unsigned>(p.max_tiles));
  kernel<<<grid, WsSsTile::kThreads, WsSsSmem::kBytes, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_w4a8_ws_ss(const GroupedGemmParams& p, bool l1) {
  // kPrefillW4A8Ws's contract: MXFP4 only; act8 / act_scale from launch_act_quant_fp8,
  // w4a8_row_ref from launch_w4a8_row_ref; n % 128, k % 128; act8 [rows, k] under 4 GiB.
  bool launch = false;
  const cudaError_t err = w4a8_ws_check(p, WsSsTile::BW, WsSsTile::BK, &launch);
  if (err != cudaSuccess || !launch) return err;
  return l1 ? launch_ws_ss_impl<true>(p) : launch_ws_ss_impl<false>(p);
}

}  // namespace detail
}  // namespace dsv4::cuda::moe

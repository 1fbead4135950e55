// TileConfig::kPrefillW4A8Producer (opt-in, MXFP4 only): the W4A8 grouped GEMM of
// grouped_gemm_w4a8.cuh (MXFP4 weights x E4M3 activations, FP8 wgmma, FP32 promotion per
// 128-K block) with the weight conversion moved out of the consumers:
//   - CTA = 3 warpgroups (384 threads): WG 0 / 1 consumers (m64 slab each of a 128-row
//     block), WG 2 the producer; setmaxnreg gives the consumers kConsumerRegs and the
//     producer kProducerRegs.
//   - The producer converts each stage's weights ONCE per CTA into shared memory (the
//     kPrefillW4A8Lut table conversion: the same E4M3 bytes as kPrefillW4A8), in the
//     K-major 128-byte-swizzle layout a wgmma A descriptor reads, and gathers the stage's
//     E4M3 activation rows (B) and activation scales by cp.async. So the consumers run SS
//     wgmma (both operands from descriptors) and only promote: acc += blk * act_scale[slot]
//     * row_factor[row], in kPrefillW4A8's order, so the outputs are expected to be bitwise
//     equal to kPrefillW4A8's (tested).
//   - full / empty mbarriers per stage of the shared ring (kStages), a producer-private raw
//     ring (kRawStages) for the packed weights + scale bytes, persistent CTAs over the work
//     items (tile, 128-row block), row blocks fastest; the output tile has its own buffer so
//     the producer prefetches the next item during the consumers' epilogue.
// Shared-memory layout (per stage; all offsets from the 1024-aligned base, W4a8ProducerSmem):
//   A   [128 weight rows][128 E4M3]  K-major, row r at r * 128 bytes, its 16-byte chunk c
//       (logical k 16c .. 16c + 15) at chunk c ^ (r % 8) (wgmma_act_offset): the A operand;
//       consumer warpgroup wg reads rows 64 wg .. 64 wg + 63 (descriptor base + 8 KB wg).
//       Logical k order = the activation quantizer's (act_quant_fp8.cu): inside 32-block j,
//       logical 16 h + 4 t + i holds physical column 32 j + 16 h + {2t, 2t+1, 8+2t, 9+2t}[i].
//   B   [128 slots][128 E4M3]  the same layout (kPrefillW4A8's B), rows past the tile zero.
//   row factor [m16 8][g 8][row half 2] FP32: 2^(kc_max - 254) of rows 16 m16 + g (+ 8).
//   act scale [t 4][36] FP32: slot 8 j + 2 t + v at t * 36 + 2 j + v (consumer lane t reads
//       its 32 scales with 8 conflict-free 16-byte loads; 4 floats of padding per t).
//   raw (producer-private ring) [q 4][thread 128][16 B] packed weights, then [thread][2][4 B]
//       scale bytes: producer thread p = (sub, m16, g) copies and reads exactly its own data.
//   row table [128] int32: the activation row (L1 token, L2 slot; -1 past the tile) of slot
//       r at (r % 16) * 8 + r / 16, written by the producer once per item, so a
//       thread's 8 B rows r0 + 16 i are two 16-byte loads (not 8 live 64-bit pointers).
//   out [128 slots][136] BF16: the epilogue tile (its own buffer: the ring keeps running).
#include <cuda_bf16.h>

#include "cuda/common/mbarrier.cuh"
#include "cuda/moe/grouped_gemm_w4a8.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {
namespace {

struct W4a8ProducerTile {
  static constexpr int BW = 128;  // weight rows per item (2 consumer warpgroups x m64)
  static constexpr int BT = 128;  // slots per item (wgmma N)
  static constexpr int BK = 128;  // K per stage = one promotion block
  static constexpr int kStages = 4;     // shared ring (A, B, factors)
  static constexpr int kRawStages = 4;  // producer-private ring of packed weights
  static constexpr int kConsumerThreads = 256;
  static constexpr int kProducerThreads = 128;
  static constexpr int kThreads = kConsumerThreads + kProducerThreads;
  static constexpr int kM16 = BW / kFragRows;  // 8
  // Launch: 384 threads x 168 registers (the most __launch_bounds__(384, 1) allows) =
  // 64512; setmaxnreg re-deals them as 256 x kConsumerRegs + 128 x kProducerRegs.
  static constexpr int kConsumerRegs = 232;
  static constexpr int kProducerRegs = 40;
  static_assert(kConsumerThreads * kConsumerRegs + kProducerThreads * kProducerRegs <= kThreads * 168,
                "setmaxnreg budget: the launch's registers");
  static_assert(kProducerThreads == kM16 * 2 * 8, "producer thread = (fragment block of the stage, m16 tile, g)");
};

struct W4a8ProducerSmem {
  using T = W4a8ProducerTile;
  static constexpr int kABytes = T::BW * T::BK;            // 16 KB
  static constexpr int kBBytes = T::BT * T::BK;            // 16 KB
  static constexpr int kRowFactorBytes = T::BW * 4;        // [m16][g][2] FP32
  static constexpr int kActScaleStride = 36;               // floats per consumer lane t
  static constexpr int kActScaleBytes = 4 * kActScaleStride * 4;
  static constexpr int kRawWeightBytes = 4 * T::kProducerThreads * 16;  // [q][thread][16 B]
  static constexpr int kRawScaleBytes = T::kProducerThreads * 8;        // [thread][2][4 B]
  static constexpr int kRawBytes = kRawWeightBytes + kRawScaleBytes;
  static constexpr int kAOffset = 0;
  static constexpr int kBOffset = kAOffset + T::kStages * kABytes;
  static constexpr int kRowFactorOffset = kBOffset + T::kStages * kBBytes;
  static constexpr int kActScaleOffset = kRowFactorOffset + T::kStages * kRowFactorBytes;
  static constexpr int kRawOffset = kActScaleOffset + T::kStages * kActScaleBytes;
  static constexpr int kRowTableBytes = T::BT * 4;  // [slot r: (r % 16) * 8 + r / 16] int32
  static constexpr int kRowTableOffset = kRawOffset + T::kRawStages * kRawBytes;
  static constexpr int kOutOffset = kRowTableOffset + kRowTableBytes;
  static constexpr int kOutStride = T::BW + 8;  // BF16 per slot row (L1 uses BW / 2 of them)
  static constexpr int kOutBytes = T::BT * kOutStride * 2;
  static constexpr int kBarOffset = kOutOffset + kOutBytes;  // full[kStages], empty[kStages]
  static constexpr int kAlign = 1024;
  static constexpr int kBytes = kBarOffset + 2 * T::kStages * 8 + kAlign;
  static_assert(kABytes % kAlign == 0 && kBBytes % kAlign == 0 && kBOffset % kAlign == 0, "swizzle atoms 1024-aligned");
  static_assert(kABytes == kWgmmaSubBytes, "one 128-byte swizzle row per weight row / slot, as wgmma_layout.h");
  static_assert(kActScaleBytes % 16 == 0 && kRawOffset % 16 == 0 && kOutOffset % 16 == 0 && kBarOffset % 8 == 0,
                "alignment");
  static_assert(kBytes <= 227 * 1024, "fits one SM");
};

constexpr int kFullArrivals = 2 * W4a8ProducerTile::kProducerThreads;  // cp.async (noinc) + conversion, per thread
constexpr int kEmptyArrivals = W4a8ProducerTile::kConsumerThreads;

template <int N>
__device__ __forceinline__ void cp_async_wait_mem() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all_mem() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async4_u32(uint32_t smem, const void* gmem, int src_size) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_size) : "memory");
}
__device__ __forceinline__ void cp_async16_u32m(uint32_t smem, const void* gmem, int src_size) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_size) : "memory");
}
__device__ __forceinline__ uint4 lds128(uint32_t a) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t lds32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ uint2 lds64(uint32_t a) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ void sts128(uint32_t a, uint32_t x, uint32_t y, uint32_t z, uint32_t w) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
}
__device__ __forceinline__ void sts64f(uint32_t a, float x, float y) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(x), "f"(y) : "memory");
}
// Named barrier 1 over the 256 consumer threads, 2 over the 128 producer threads.
__device__ __forceinline__ void consumer_bar() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }
__device__ __forceinline__ void producer_bar() { asm volatile("bar.sync 2, 128;\n" ::: "memory"); }
__device__ __forceinline__ void sts32i(uint32_t a, int v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory");
}

// D[64 x 128] (+)= A[64 x 32] E4M3 * B[32 x 128] E4M3, both from shared memory (K-major
// descriptors). kFirst: D = A B (scale-d false, D write-only: the previous block's values
// are not inputs, so they need not stay live into this stage); else D += A B.
template <bool kFirst>
__device__ __forceinline__ void wgmma_m64n128k32_e4m3_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (kFirst) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, 0, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
        "%64, %65, p, 1, 1;\n"
        "}\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]), "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]), "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]), "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]), "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63])
        : "l"(desc_a), "l"(desc_b));
  } else {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
        "%64, %65, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b));
  }
}

// Work item `item` = (tile item / n_blocks, 128-row block item % n_blocks); valid while the
// tile exists (items are tile-major, so the first invalid one ends a CTA's list).
struct Item {
  int expert, slot0, rows, n0;
};
__device__ __forceinline__ bool load_item(const GroupedGemmParams& p, int item, int items, int n_blocks, int tile_count,
                                          Item& it) {
  if (item >= items) return false;
  const int tile = item / n_blocks;
  if (tile >= tile_count) return false;
  it.expert = p.tile_expert[tile];
  it.slot0 = p.tile_slot_begin[tile];
  it.rows = p.tile_row_count[tile];
  it.n0 = (item % n_blocks) * W4a8ProducerTile::BW;
  return true;
}

// ---- producer warpgroup ----------------------------------------------------------------
// Thread p = 64 sub + 8 m16 + g (sub = fragment block of the stage, 0 / 1): converts rows
// 16 m16 + g and + 8, k16 steps 4 sub .. 4 sub + 3 of the stage, i.e. lanes 4g .. 4g + 3
// (64 contiguous bytes) of fragment block (n0 / 16 + m16, 2 kt + sub); gathers B chunk
// p % 8 of slot rows p / 8 + 16 i (i < 8) and the activation scale of slot p.
template <bool kL1>
__device__ __forceinline__ void produce(const GroupedGemmParams& p, uint32_t smem_addr, int items, int n_blocks,
                                        int tile_count) {
  using T = W4a8ProducerTile;
  using S = W4a8ProducerSmem;
  constexpr int SB = W4a8Smem::SB;  // 32 scale bytes per MXFP4 fragment block
  const int pt = threadIdx.x - T::kConsumerThreads;
  const int g = pt & 7, m16 = (pt >> 3) & 7, sub = pt >> 6;
  const int K = p.k, k_tiles = K / T::BK, kb_count = K / kFragCols, kscale = K / 128;
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;

  // Raw ring cursor: runs kRawStages stages ahead of the conversion, across items. Its
  // state is three integers (the fragment block row of the item, -1 past the last item; the
  // item; the k tile), the addresses are rebuilt per copy from the kernel parameters
  // (registers are what the producer is short of at kProducerRegs).
  int raw_item = blockIdx.x, raw_kt = 0;
  auto raw_block_row = [&](int item) -> int {  // first fragment block of this thread's m16 row block
    Item it;
    if (!load_item(p, item, items, n_blocks, tile_count, it)) return -1;
    return (it.expert * (p.n / kFragRows) + it.n0 / kFragRows + m16) * kb_count;
  };
  int raw_fb = raw_block_row(raw_item);
  const uint32_t raw_dst_w = smem_addr + S::kRawOffset + pt * 16;  // + q * 2048 + slot * kRawBytes
  const uint32_t raw_dst_s = smem_addr + S::kRawOffset + S::kRawWeightBytes + pt * 8;
  auto issue_raw = [&](int rslot) {
    if (raw_fb >= 0) {
      const int64_t fb = raw_fb + 2 * raw_kt;  // fragment block (n block, 2 kt)
      const uint8_t* w = p.weights + (fb + sub) * kFragBytes + g * 64;
      const uint8_t* s = p.scales + fb * SB + g * 4;
      const uint32_t dw = raw_dst_w + rslot * S::kRawBytes, ds = raw_dst_s + rslot * S::kRawBytes;
#pragma unroll
      for (int q = 0; q < 4; ++q) cp_async16_u32m(dw + q * (T::kProducerThreads * 16), w + 16 * q, 16);
      cp_async4_u32(ds, s, 4);
      cp_async4_u32(ds + 4, s + SB, 4);
      if (++raw_kt == k_tiles) {
        raw_kt = 0;
        raw_item += gridDim.x;
        raw_fb = raw_block_row(raw_item);
      }
    }
    cp_async_commit();  // one group per raw stage, empty past the end (the wait counts hold)
  };
  // Each raw group is preceded by one other group (an empty one here, a B group in the
  // loop), so that at every conversion exactly 2 kRawStages - 1 groups are newer than the
  // raw stage it reads (the cp.async.wait_group count below).
#pragma unroll
  for (int r = 0; r < T::kRawStages; ++r) {
    cp_async_commit();
    issue_raw(r);
  }

  // Fixed parts of this thread's B / A / factor addresses.
  const int b_cc = pt & 7, b_r0 = pt >> 3;                                         // rows b_r0 + 16 i
  const uint32_t b_dst0 = smem_addr + S::kBOffset + wgmma_act_offset(b_r0, b_cc);  // + 2048 i (same swizzle phase)
  const int as_index = ((pt & 7) >> 1) * S::kActScaleStride + 2 * (pt >> 3) + (pt & 1);
  const uint32_t as_dst0 = smem_addr + S::kActScaleOffset + as_index * 4;
  const int a_row = 16 * m16 + g;  // and a_row + 8
  const uint32_t a_base = smem_addr + S::kAOffset;
  const uint32_t raw_src_w = smem_addr + S::kRawOffset + pt * 16, raw_src_s = raw_dst_s;
  const uint32_t as_table_offset = ((pt & 15) * 8 + (pt >> 4)) * 4;  // slot pt in the row table

  uint32_t q = 0;  // the CTA's running stage (the consumers count the same)
  const uint32_t row_table = smem_addr + S::kRowTableOffset;
  for (int item = blockIdx.x;; item += gridDim.x) {
    Item it;
    if (!load_item(p, item, items, n_blocks, tile_count, it)) break;
    // Activation row of slot pt (-1: past the tile, zero-filled) -> the row table, between
    // two producer barriers: every producer thread finished the previous item's reads, and
    // every entry is written before the first read.
    const int as_row = pt < it.rows ? (kL1 ? p.slot_token[it.slot0 + pt] : it.slot0 + pt) : -1;
    producer_bar();
    sts32i(row_table + as_table_offset, as_row);
    producer_bar();
    for (int kt = 0; kt < k_tiles; ++kt, ++q) {
      const uint32_t slot = q % T::kStages, rslot = q % T::kRawStages;
      mbar_wait(empty0 + slot * 8, ((q / T::kStages) & 1u) ^ 1u);  // a fresh barrier passes parity 1
      // B: 8 x 16 bytes of E4M3 rows + one activation scale, tracked by the full barrier.
      const uint4 rows_lo = lds128(row_table + b_r0 * 32), rows_hi = lds128(row_table + b_r0 * 32 + 16);
      const int b_row[8] = {static_cast<int>(rows_lo.x), static_cast<int>(rows_lo.y), static_cast<int>(rows_lo.z),
                            static_cast<int>(rows_lo.w), static_cast<int>(rows_hi.x), static_cast<int>(rows_hi.y),
                            static_cast<int>(rows_hi.z), static_cast<int>(rows_hi.w)};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint8_t* src = p.act8 + (b_row[i] >= 0 ? static_cast<int64_t>(b_row[i]) * K + kt * T::BK + b_cc * 16 : 0);
        cp_async16_u32m(b_dst0 + slot * S::kBBytes + i * 2048, src, b_row[i] >= 0 ? 16 : 0);
      }
      const int as_row = static_cast<int>(lds32(row_table + as_table_offset));
      cp_async4_u32(as_dst0 + slot * S::kActScaleBytes,
                    p.act_scale + (as_row >= 0 ? static_cast<int64_t>(as_row) * kscale + kt : 0), as_row >= 0 ? 4 : 0);
      cp_async_mbar_arrive(full0 + slot * 8);
      cp_async_commit();
      // This thread's raw stage landed: the groups newer than it are (B, raw) of the last
      // kRawStages - 1 iterations (or the prologue's (empty, raw)) and this B.
      cp_async_wait_mem<2 * T::kRawStages - 1>();
      const uint32_t rw = raw_src_w + rslot * S::kRawBytes;
      const uint2 sc = lds64(raw_src_s + rslot * S::kRawBytes);  // scale words of fragment blocks 0, 1
      // Kernel scale codes kc[row half][32-block of the stage] (MXFP4 word: [block 2][row half 2]).
      uint32_t kc[2][4];
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        kc[hr][0] = (sc.x >> (8 * hr)) & 0xFFu;
        kc[hr][1] = (sc.x >> (8 * (2 + hr))) & 0xFFu;
        kc[hr][2] = (sc.y >> (8 * hr)) & 0xFFu;
        kc[hr][3] = (sc.y >> (8 * (2 + hr))) & 0xFFu;
      }
      uint32_t kmax[2];
      float wfac[2];
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        kmax[hr] = max(max(kc[hr][0], kc[hr][1]), max(kc[hr][2], kc[hr][3]));
        wfac[hr] = kmax[hr] > 127u ? __uint_as_float((kmax[hr] - 127u) << 23) : 0.0f;
      }
      const uint32_t a_stage = a_base + slot * S::kABytes;
      if (sub == 0)  // row factors 2^(kc_max - 254) of rows a_row, a_row + 8 (released with A below)
        sts64f(smem_addr + S::kRowFactorOffset + slot * S::kRowFactorBytes + (m16 * 8 + g) * 8, wfac[0], wfac[1]);
      // Tables of this thread's two 32-blocks (2 sub, 2 sub + 1), kPrefillW4A8Lut's rule.
      uint32_t lut[2][2][2];  // [row half][32-block of the sub][lo, hi]
      int dmin = 1;
#pragma unroll
      for (int hr = 0; hr < 2; ++hr)
#pragma unroll
        for (int jb = 0; jb < 2; ++jb) {
          const uint32_t c = sub ? kc[hr][2 + jb] : kc[hr][jb];
          const int d = static_cast<int>(c) - static_cast<int>(kmax[hr]) + 1;
          dmin = min(dmin, d);
          w4a8_lut_fast(d, lut[hr][jb][0], lut[hr][jb][1]);
        }
      if (dmin < -5) {  // a 32-block more than 5 octaves below its 128-block's maximum
#pragma unroll
        for (int hr = 0; hr < 2; ++hr)
#pragma unroll
          for (int jb = 0; jb < 2; ++jb) {
            const uint32_t c = sub ? kc[hr][2 + jb] : kc[hr][jb];
            w4a8_lut_cvt(w4a8_factor(c, kmax[hr]), lut[hr][jb][0], lut[hr][jb][1]);
          }
      }
      // A: per 32-block jb of the sub (k16 steps 2 jb, 2 jb + 1 = chunks 4 sub + 2 jb + {0, 1})
      // the words of lanes 4g + t (8-byte loads: 8 fewer live registers than 16-byte ones),
      // converted, then the 16-byte chunks of rows a_row and a_row + 8.
#pragma unroll
      for (int jb = 0; jb < 2; ++jb) {
        uint2 wh[4];  // wh[t] = lane 4g + t's words 2 jb, 2 jb + 1
#pragma unroll
        for (int t = 0; t < 4; ++t) wh[t] = lds64(rw + t * (T::kProducerThreads * 16) + 8 * jb);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          uint32_t ag[4], ag8[4];
#pragma unroll
          for (int t = 0; t < 4; ++t)
            fp8_a_regs_lut(h ? wh[t].y : wh[t].x, lut[0][jb][0], lut[0][jb][1], lut[1][jb][0], lut[1][jb][1], ag[t],
                           ag8[t]);
          const int c = 4 * sub + 2 * jb + h;
          sts128(a_stage + wgmma_act_offset(a_row, c), ag[0], ag[1], ag[2], ag[3]);
          sts128(a_stage + wgmma_act_offset(a_row + 8, c), ag8[0], ag8[1], ag8[2], ag8[3]);
        }
      }
      fence_proxy_async_smem();  // the st.shared above -> the consumers' wgmma (async proxy)
      mbar_arrive(full0 + slot * 8);
      // The raw slot just read is refilled (stage q + kRawStages); only this thread reads it.
      issue_raw(static_cast<int>(rslot));
    }
  }
  cp_async_wait_all_mem();  // nothing of this thread in flight at exit
}

// ---- consumer warpgroups ---------------------------------------------------------------
// Promotion of one stage's block accumulator: acc[4 j + v] (+ 2: row g + 8) = row g of m16
// tile `warp`, slot 8 j + 2 t + v: acc = fma(blk, act_scale[slot] * row_factor[row], acc),
// kPrefillW4A8's expression and order.
__device__ __forceinline__ void promote(float (&acc)[64], const float (&blk)[64], uint32_t factor_addr,
                                        uint32_t scale_addr) {
  const uint2 wf2 = lds64(factor_addr);
  const float wf0 = __uint_as_float(wf2.x), wf1 = __uint_as_float(wf2.y);
#pragma unroll
  for (int jj = 0; jj < 8; ++jj) {
    const uint4 s4 = lds128(scale_addr + 16 * jj);  // slots 16 jj + 2t + {0, 1}, 16 jj + 8 + 2t + {0, 1}
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = 2 * jj + h;
      const float asx = __uint_as_float(h ? s4.z : s4.x), asy = __uint_as_float(h ? s4.w : s4.y);
      acc[4 * j + 0] = fmaf(blk[4 * j + 0], asx * wf0, acc[4 * j + 0]);
      acc[4 * j + 1] = fmaf(blk[4 * j + 1], asy * wf0, acc[4 * j + 1]);
      acc[4 * j + 2] = fmaf(blk[4 * j + 2], asx * wf1, acc[4 * j + 2]);
      acc[4 * j + 3] = fmaf(blk[4 * j + 3], asy * wf1, acc[4 * j + 3]);
    }
  }
}

template <bool kL1>
__device__ __forceinline__ void consume(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr, int items,
                                        int n_blocks, int tile_count) {
  using T = W4a8ProducerTile;
  using S = W4a8ProducerSmem;
  const int tid = threadIdx.x;
  const int wg = tid >> 7, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int k_tiles = p.k / T::BK;
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  const uint32_t factor0 = smem_addr + S::kRowFactorOffset + (warp * 8 + g) * 8;
  const uint32_t scale0 = smem_addr + S::kActScaleOffset + t * S::kActScaleStride * 4;
  // Descriptors of stage 0 (A: this warpgroup's 64 rows); stage s adds s x 16 KB (>> 4 =
  // 1024 in the start field, no carry: the window is < 256 KB), k32 step j adds 32 j bytes.
  const uint64_t desc_a0 = wgmma_desc_sw128(smem_addr + S::kAOffset + wg * (64 * 128));
  const uint64_t desc_b0 = wgmma_desc_sw128(smem_addr + S::kBOffset);
  __nv_bfloat16* s_out = reinterpret_cast<__nv_bfloat16*>(smem + S::kOutOffset);

  uint32_t q0 = 0;
  for (int item = blockIdx.x;; item += gridDim.x) {
    {
      Item it;
      if (!load_item(p, item, items, n_blocks, tile_count, it)) break;
    }
    float acc[64], blk0[64], blk1[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    // Stage kt's 4 wgmma into blk (one commit group).
    auto issue = [&](int kt, float (&blk)[64]) {
      const uint32_t q = q0 + kt, slot = q % T::kStages;
      mbar_wait_no_trap(full0 + slot * 8, (q / T::kStages) & 1u);
      fence_proxy_async_smem();  // the producer's cp.async B writes -> this thread's wgmma reads
      const uint64_t da = desc_a0 + (slot * S::kABytes >> 4), db = desc_b0 + (slot * S::kBBytes >> 4);
      wgmma_fence();
      wgmma_m64n128k32_e4m3_ss<true>(blk, da, db);
#pragma unroll
      for (int j = 1; j < 4; ++j) wgmma_m64n128k32_e4m3_ss<false>(blk, da + 2 * j, db + 2 * j);
      wgmma_commit();
    };
    // Promotion of stage kt (in blk, its group retired), then its slot released.
    auto retire = [&](int kt, float (&blk)[64]) {
      fence_acc(blk);
      const uint32_t slot = (q0 + kt) % T::kStages;
      promote(acc, blk, factor0 + slot * S::kRowFactorBytes, scale0 + slot * S::kActScaleBytes);
      mbar_arrive(empty0 + slot * 8);  // its A / B read (wgmma done), its factors loaded
    };
    // Stage kt into b_issue, then stage kt - 1 (in b_prom) promoted while it runs. Every
    // path into a step has exactly one group in flight (stage kt - 1's), so the wait_group 1
    // retires it; the first stage is peeled so that no branch skips the wait (ptxas cannot
    // prove a `kt > 0` test and serialises every wgmma: C7514).
    auto step = [&](int kt, float (&b_issue)[64], float (&b_prom)[64]) {
      issue(kt, b_issue);
      wgmma_wait<1>();
      retire(kt - 1, b_prom);
    };
    issue(0, blk0);
    int kt = 1;
    for (; kt + 1 < k_tiles; kt += 2) {
      step(kt, blk1, blk0);
      step(kt + 1, blk0, blk1);
    }
    if (kt < k_tiles) {  // even stage count: the last stage goes to blk1
      step(kt, blk1, blk0);
      wgmma_wait<0>();
      retire(kt, blk1);
    } else {
      wgmma_wait<0>();
      retire(kt - 1, blk0);
    }
    q0 += static_cast<uint32_t>(k_tiles);

    // Epilogue (kPrefillW4A8's arithmetic) through the dedicated output buffer. The item is
    // re-read here rather than held through the k loop (4 registers the loop needs).
    Item it;
    load_item(p, item, items, n_blocks, tile_count, it);
    consumer_bar();  // every consumer finished reading s_out for the previous item
    wgmma_epilogue_to_smem<kL1, 128, S::kOutStride>(p, acc, s_out, it.expert, it.rows, it.slot0, warp, g, t);
    consumer_bar();
    store_out_tile<kL1, T::BT, kL1 ? T::BW / 2 : T::BW, S::kOutStride>(p, s_out, it.rows, it.slot0, it.n0, tid,
                                                                         T::kConsumerThreads);
  }
}

template <bool kL1>
__global__ void __launch_bounds__(W4a8ProducerTile::kThreads, 1)
    moe_grouped_gemm_w4a8_producer_kernel(const __grid_constant__ GroupedGemmParams p) {
  using T = W4a8ProducerTile;
  using S = W4a8ProducerSmem;
  extern __shared__ uint8_t smem_raw[];
  uint32_t smem_addr;
  uint8_t* smem = align_dynamic_smem<S::kAlign>(smem_raw, smem_addr);
  const uint32_t full0 = smem_addr + S::kBarOffset, empty0 = full0 + T::kStages * 8;
  mbar_init_ring(full0, empty0, T::kStages, kFullArrivals, kEmptyArrivals);
  __syncthreads();  // the only CTA-wide barrier
  const int n_blocks = p.n / T::BW;
  const int items = p.max_tiles * n_blocks;
  const int tile_count = *p.tile_count;
  if (threadIdx.x >= T::kConsumerThreads) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(T::kProducerRegs));
    produce<kL1>(p, smem_addr, items, n_blocks, tile_count);
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(T::kConsumerRegs));
  consume<kL1>(p, smem, smem_addr, items, n_blocks, tile_count);
}

template <bool kL1>
cudaError_t launch_impl(const GroupedGemmParams& p) {
  using S = W4a8ProducerSmem;
  auto kernel = moe_grouped_gemm_w4a8_producer_kernel<kL1>;
  static bool configured = false;  // attribute set once per instantiation (idempotent)
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kBytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) return err;
  const int64_t items = static_cast<int64_t>(p.max_tiles) * (p.n / W4a8ProducerTile::BW);
  const int grid = static_cast<int>(items < sms ? items : sms);
  kernel<<<grid, W4a8ProducerTile::kThreads, S::kBytes, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_w4a8_producer(const GroupedGemmParams& p, bool l1) {
  // MXFP4 only; act8 / act_scale from launch_act_quant_fp8; n % 128, k % 128.
  if (p.format != ExpertFormat::kMXFP4 || p.act8 == nullptr || p.act_scale == nullptr) return cudaErrorInvalidValue;
  if (p.n % W4a8ProducerTile::BW != 0 || p.k % W4a8ProducerTile::BK != 0 || p.n <= 0 || p.k <= 0)
    return cudaErrorInvalidValue;
  if (p.max_tiles <= 0) return cudaSuccess;
  if (static_cast<int64_t>(p.max_tiles) * (p.n / W4a8ProducerTile::BW) > INT32_MAX) return cudaErrorInvalidValue;
  return l1 ? launch_impl<true>(p) : launch_impl<false>(p);
}

}  // namespace dsv4::cuda::moe::detail

// The tile of TileConfig::kPrefillWgmmaPipe (grouped_gemm_wgmma.cuh, kPipe = true), written
// for fewer instructions per k stage (the kernel is issue-bound: dequant, copy and address
// instructions compete with the wgmma issue). Same work, same bytes in the same shared-memory
// places, same BF16 A values in the same wgmma k order and the same overlap rule and prefetch
// distance as the design in grouped_gemm_wgmma.cuh / docs/kernels/moe.md ("Overlapped
// variant"), so the output equals the earlier version (and kPrefillWgmma) bit for bit.
// What differs:
//   - one wgmma group per 64-K fragment block (4 k16 steps) with the A registers
//     double-buffered by sub-block, instead of two groups of 2 steps: half the
//     WARPGROUP.ARRIVE / DEPBAR, and up to 8 wgmma in flight per warpgroup instead of 4;
//   - decode: frag_decode_word (fragment_decode.h), 11 integer instructions per packed
//     word instead of 15;
//   - scales: one BF16x2 pair per k16 step for both row halves (frag_scale_pair_bits), the
//     A registers take its halves through the multiply's half-broadcast operand; the pairs
//     of a stage are computed once per warp (each lane a share) and exchanged through a
//     per-warp shared scratch, since the 4 lanes of a group need the same ones;
//   - the k loop unrolled by STAGES (4), so the ring slot of every stage is a constant:
//     shared-memory reads, cp.async destinations and wgmma descriptors are one base plus
//     an immediate; the global source pointers move once per 4 stages (immediates between);
//   - scales copied by each warp for its own m16 tile, 4 bytes per lane, unpredicated.
// Layouts: WgmmaSmem<F> (act [slot][sub][128 slots][64 BF16] swizzled, weights
// [slot][sub][m16][lane][16 B], scales [slot][sub][m16][SB]); per-thread copy plan as in
// wgmma_tile for activations (chunk tid % 8 of slot rows tid / 8 and tid / 8 + 64) and
// weights (lane tid % 32 of m16 tile tid / 32), scales below.
#pragma once
#include <type_traits>

#include "cuda/moe/fragment_decode.h"
#include "cuda/moe/grouped_gemm_wgmma.cuh"

namespace dsv4::cuda::moe::detail {

// a * (low half of pair, twice) / a * (high half of pair, twice), BF16x2 round-to-nearest:
// ptxas folds the half broadcast into the multiply (HMUL2.BF16_V2 ... R.H0_H0 / R.H1_H1).
__device__ __forceinline__ uint32_t bf16x2_mul_lo_half(uint32_t a, uint32_t pair) {
  uint32_t d;
  asm("{\n.reg .b16 l, h;\n.reg .b32 ll;\nmov.b32 {l, h}, %2;\nmov.b32 ll, {l, l};\nmul.rn.bf16x2 %0, %1, ll;\n}\n"
      : "=r"(d)
      : "r"(a), "r"(pair));
  return d;
}
__device__ __forceinline__ uint32_t bf16x2_mul_hi_half(uint32_t a, uint32_t pair) {
  uint32_t d;
  asm("{\n.reg .b16 l, h;\n.reg .b32 hh;\nmov.b32 {l, h}, %2;\nmov.b32 hh, {h, h};\nmul.rn.bf16x2 %0, %1, hh;\n}\n"
      : "=r"(d)
      : "r"(a), "r"(pair));
  return d;
}

// 4-byte cp.async (through L1: .cg takes 16 bytes only); src_size 0 zero-fills, reads nothing.
__device__ __forceinline__ void cp_async4_shared(uint32_t smem_addr, const void* gmem, int src_size) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr), "l"(gmem), "r"(src_size));
}
// 16 / 8 / 4 bytes from a shared-window address (the cp.async destinations' form, so a
// thread's weight copy and read share one address register). volatile + memory: ordered
// after the stage barrier like the C++ loads.
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}
__device__ __forceinline__ uint2 ld_shared_v2(uint32_t addr) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t ld_shared_u32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}

// k16 step s of a fragment block -> its 4 A registers, given the step's scale pair
// (frag_scale_pair_bits: row g low half, row g + 8 high half); equal to dequant_frag_step<F>.
__device__ __forceinline__ void dequant_frag_step_fast(const uint32_t (&words)[4], int s, uint32_t pair,
                                                       uint32_t (&a)[4]) {
  uint32_t d[4];
  frag_decode_word(words[s], d);
  a[0] = bf16x2_mul_lo_half(d[0], pair);
  a[1] = bf16x2_mul_hi_half(d[1], pair);
  a[2] = bf16x2_mul_lo_half(d[2], pair);
  a[3] = bf16x2_mul_hi_half(d[3], pair);
}

// 8 / 4 bytes to a shared-window address (volatile + memory: ordered like C++ stores).
__device__ __forceinline__ void st_shared_v2(uint32_t addr, uint32_t x, uint32_t y) {
  asm volatile("st.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(addr), "r"(x), "r"(y) : "memory");
}
__device__ __forceinline__ void st_shared_u32(uint32_t addr, uint32_t x) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(x) : "memory");
}

// B descriptors. wgmma_desc_sw128(a + off) == wgmma_desc_sw128(a) + (off >> 4) for the
// offsets used here: only the start-address field (bits 0-13, address >> 4) changes, and
// shared addresses stay below 2^18, so it never carries into bit 14. The same values are
// spelled three ways because ptxas (CUDA 13.0) allocates the uniform registers of the three
// wgmma widths differently (and the choice for one width moves the others' counts): the
// mapping below is the combination with the fewest instructions per 128-K stage of the 9
// tried (sass_wgmma_loops.py, 4-stage loop / 4, MXFP4 L2: N 128 181.75 with a 64-bit add
// (one UIADD3.64 per wgmma), N 96 189.25 with 32-bit adds of the low word under the
// constant high word, N 64 190.5 with the sub-block descriptor rebuilt from its address;
// the other combinations cost N 64 / 96 up to 22 more per stage). Re-check after a
// compiler update.
enum class DescSpelling { kAdd64, kRebuild, kLowWord };
template <int kN>
inline constexpr DescSpelling kDescSpelling = kN == 128  ? DescSpelling::kAdd64
                                              : kN == 96 ? DescSpelling::kLowWord
                                                         : DescSpelling::kRebuild;
template <int kN>
__device__ __forceinline__ uint64_t wgmma_desc_plus(uint64_t desc, uint32_t off16) {
  if constexpr (kDescSpelling<kN> == DescSpelling::kLowWord) {
    constexpr uint32_t kHi = (kWgmmaSbo >> 4) | (1u << 30);  // bits 32-45 SBO / 16, bits 62-63 = 1 (128-byte swizzle)
    return (static_cast<uint64_t>(kHi) << 32) | (static_cast<uint32_t>(desc) + off16);
  } else {
    return desc + off16;
  }
}
// Descriptor of the sub-block at byte offset `offset` from the 1024-aligned base smem_addr
// (desc0 = wgmma_desc_sw128(smem_addr)).
template <int kN>
__device__ __forceinline__ uint64_t wgmma_desc_at(uint64_t desc0, uint32_t smem_addr, uint32_t offset) {
  if constexpr (kDescSpelling<kN> == DescSpelling::kRebuild) {
    return wgmma_desc_sw128(smem_addr + offset);
  } else {
    return wgmma_desc_plus<kN>(desc0, offset >> 4);
  }
}

// One 64-K fragment block as one wgmma group of its 4 k16 steps, with dequant / wgmma
// overlap through A registers double-buffered by sub-block (a_sub[sub], sub = the block's
// sub-block in the stage, so the two sets alternate): wait_group 1 (the group that last
// read a_sub[sub], the previous stage's same sub-block, is done; the most recent group, the
// other sub-block's, may still run) -> dequant the 4 steps -> fence -> 4 wgmma -> commit.
// The same wgmma in the same order as wgmma_frag_block_overlapped's two groups of 2; one
// WARPGROUP.ARRIVE / DEPBAR per block instead of two. desc: the block's B descriptor; k16
// step s is + 32 s bytes (+ 2 s); pairs[s]: the scale pair of k16 step s.
template <int kN>
__device__ __forceinline__ void wgmma_frag_block_pipe(float (&acc)[kN / 2], uint32_t (&a)[4][4],
                                                      const uint32_t (&words)[4], const uint32_t (&pairs)[4],
                                                      uint64_t desc) {
  wgmma_wait<1>();
#pragma unroll
  for (int s = 0; s < 4; ++s) dequant_frag_step_fast(words, s, pairs[s], a[s]);
  fence_acc(acc);
  wgmma_fence();
#pragma unroll
  for (int s = 0; s < 4; ++s) wgmma_m64nNk16_rs<kN>(acc, a[s], wgmma_desc_plus<kN>(desc, 2 * s));
  wgmma_commit();
  fence_acc(acc);
}

// One CTA's tile (tile-list entry `tile`: expert, slot0, rows) with wgmma N = kN >= rows.
template <ExpertFormat F, bool kL1, int kN>
__device__ __forceinline__ void wgmma_tile_pipe(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr,
                                                int tile, int expert, int slot0, int rows, int n0) {
  using Tile = WgmmaTile;
  using Smem = WgmmaSmem<F>;
  constexpr int BW = Tile::BW, BT = Tile::BT, BK = Tile::BK, SUBK = Tile::kSubK, SUBS = Tile::kSubs;
  constexpr int STAGES = Tile::STAGES;
  constexpr int kPrefetch = STAGES - 2;  // see wgmma_tile (kPipe): groups of stage kt - 1 in flight at kt's barrier
  constexpr int kThreads = Tile::kThreads;
  constexpr int SB = frag_scale_bytes(F);
  static_assert(kPrefetch >= 1, "at least one stage ahead");
  const int K = p.k;
  const int kb_count = K / kFragCols;
  const int k_tiles = K / BK;

  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;  // warp = m16 tile of the CTA (warpgroup warp / 4)
  const int g = lane >> 2, t = lane & 3;

  // Copy plan, fixed for the k loop; the same bytes to the same places as wgmma_tile's.
  // Activations: chunk cc = tid % 8 of slot rows r0 + 64 pass (pass < 2), both sub-blocks;
  // the swizzle phase r % 8 is the same for both passes, so the destinations are
  // smem_act + slot x 32 KB + sub x 16 KB + pass x 8 KB. Rows >= rows are zero-filled.
  constexpr int kChunksPerRow = SUBK / 8;
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // 64
  constexpr int kPasses = BT / kRowsPerPass;              // 2
  static_assert(BT % kRowsPerPass == 0 && kRowsPerPass % 8 == 0, "whole passes, swizzle phase constant over passes");
  const int cc = tid % kChunksPerRow, r0 = tid / kChunksPerRow;
  const char* act_src[kPasses];  // the chunk of the current stage group (stage kt0, below)
  int act_size[kPasses];         // 16, or 0: zero-fill
  wgmma_act_rows<kL1, kPasses, kRowsPerPass>(p, slot0, rows, K, cc, r0, act_src, act_size);
  const uint32_t smem_act = smem_addr + wgmma_act_offset(r0, cc);
  // Weights: lane tid % 32 of m16 tile tid / 32 in both sub-blocks (fragment blocks kb, kb + 1
  // are 512 bytes apart in global memory), exactly the 16 bytes per sub-block the thread reads.
  const char* w_src = reinterpret_cast<const char*>(p.weights) + static_cast<int64_t>(expert) * p.n * K / 2 +
                      static_cast<int64_t>(n0 / kFragRows + warp) * kb_count * kFragBytes + lane * 16;
  const uint32_t smem_w = smem_addr + Smem::kWeightOffset + tid * 16;
  // The weight source pointer is kept kWeightBias bytes past the group's stage kt0, the
  // middle of the refills' offsets (stages kt0 + 2 .. kt0 + 5, both sub-blocks: 2048 .. 5632
  // bytes), so they become -1792 .. 1792: immediates ptxas takes into LDGSTS without an
  // extra 64-bit add per stage (it did add at 2048 and up).
  constexpr int kWeightOffMin = kPrefetch * SUBS * kFragBytes;
  constexpr int kWeightOffMax = ((kPrefetch + STAGES) * SUBS - 1) * kFragBytes;
  constexpr int kWeightBias = (kWeightOffMin + kWeightOffMax) / 2;  // 3840
  w_src += kWeightBias;
  // Scales: each warp copies the stage's scales of its own m16 tile, 2 x SB bytes that are
  // contiguous in global memory (fragment blocks kb = 2 kt, 2 kt + 1 of tile n0 / 16 + warp),
  // 4 bytes per lane: lane l < kScaleLanes copies bytes 4 l .. 4 l + 3 to sub-block
  // 4 l / SB, offset 4 l % SB of [sub][m16][SB]: the same bytes in the same places as
  // wgmma_tile's 16-byte copies by threads < kScaleChunksPerSub, but one unpredicated copy
  // per thread and stage (no branch). MXFP4 (2 x SB = 64 bytes): lanes >= 16 zero-fill 4
  // bytes (src-size 0, nothing read) at a dummy address no one reads: the 16 bytes after
  // the pipeline buffers (WgmmaSmem::kDummyOffset; the pipe kernel's allocation is
  // kPipeKernelBytes).
  constexpr int kScaleLaneBytes = 4;
  constexpr int kScaleLanes = SUBS * SB / kScaleLaneBytes;  // NVFP4 32, MXFP4 16
  static_assert(kScaleLanes <= 32 && SB % kScaleLaneBytes == 0, "one scale copy per lane at most");
  const int scale_lane = lane % kScaleLanes;
  const int scale_size = lane < kScaleLanes ? kScaleLaneBytes : 0;
  const char* s_src = reinterpret_cast<const char*>(p.scales) +
                      (static_cast<int64_t>(expert) * (p.n / kFragRows) + n0 / kFragRows + warp) * kb_count * SB +
                      scale_lane * kScaleLaneBytes;
  const int scale_byte = scale_lane * kScaleLaneBytes;
  // Destination in slot 0 (slot s: + s x kScaleBytes); the dummy is one fixed address for
  // every slot (load_stage picks one or the other), the slack holds no slot offsets.
  const uint32_t smem_s = smem_addr + Smem::kScaleOffset + (scale_byte / SB) * Smem::kSubScaleBytes + warp * SB +
                          scale_byte % SB;
  const uint32_t smem_dummy = smem_addr + Smem::kDummyOffset;

  // Stage kt0 + kAhead (kAhead a constant; the source pointers stand at stage kt0 and move
  // by STAGES stages per unrolled loop iteration) into ring slot kSlot (a constant): every
  // address is a base register plus an immediate.
  auto load_stage = [&](auto slot_tag, auto ahead_tag) {
    constexpr int kSlot = decltype(slot_tag)::value, kAhead = decltype(ahead_tag)::value;
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass)
#pragma unroll
      for (int sub = 0; sub < SUBS; ++sub)
        cp_async16_shared(smem_act + kSlot * Smem::kActBytes + sub * Smem::kSubActBytes + pass * (kRowsPerPass * 128),
                          act_src[pass] + kAhead * (BK * 2) + sub * (SUBK * 2), act_size[pass]);
#pragma unroll
    for (int sub = 0; sub < SUBS; ++sub)
      cp_async16_shared(smem_w + kSlot * Smem::kWeightBytes + sub * Smem::kSubWeightBytes,
                        w_src + ((kAhead * SUBS + sub) * kFragBytes - kWeightBias));
    cp_async4_shared(scale_size != 0 ? smem_s + kSlot * Smem::kScaleBytes : smem_dummy, s_src + kAhead * (SUBS * SB),
                     scale_size);
  };
  auto advance_sources = [&]() {  // stage kt0 -> kt0 + STAGES
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) act_src[pass] += STAGES * (BK * 2);
    w_src += STAGES * SUBS * kFragBytes;
    s_src += STAGES * SUBS * SB;
  };

  static_assert(kN % 32 == 0 && kN <= BT, "wgmma N");
  float acc[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) acc[i] = 0.0f;
  uint32_t a_sub[SUBS][4][4];  // A registers of the two in-flight groups [sub-block][k16 step][4]

  using I0 = std::integral_constant<int, 0>;
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I3 = std::integral_constant<int, 3>;
  static_assert(kPrefetch == 2, "the prologue below loads 2 stages");
  if (k_tiles > 0) load_stage(I0{}, I0{});
  cp_async_commit();
  if (k_tiles > 1) load_stage(I1{}, I1{});
  cp_async_commit();

  // Scale pairs. A lane (g, t) needs the BF16x2 pairs (frag_scale_pair_bits) of its group
  // g for both sub-blocks: 8 (NVFP4: 4 k16 steps) or 4 (MXFP4: 2 blocks of 32) per stage, the
  // same for the 4 lanes of a group. So per stage each lane i computes kPairsPerLane of the
  // warp's 64 / 32 distinct pairs, (g = i / 4, sub = (i / 2) % 2, NVFP4: scale word i % 2 =
  // steps 2 (i % 2) and + 1; MXFP4: block i % 2), stores them to the warp's scratch
  // [g][sub][pair] (lane i at 4 kPairsPerLane i), __syncwarp, and every lane reads its
  // group's row back (2 / 1 LDS.128). Scratch [stage parity][m16][...]: the next writes to a
  // buffer come two stages later, after a __syncthreads.
  constexpr int kPairsPerLane = F == ExpertFormat::kNVFP4 ? 2 : 1;
  constexpr int kPairsPerStep = 4;                                    // words a block reads
  constexpr int kPairRowBytes = SUBS * 2 * kPairsPerLane * 4;          // one group's pairs: 32 / 16
  static_assert(Smem::kPairScratchWarpBytes == 8 * kPairRowBytes, "scratch geometry");
  const int pair_g = lane / 4, pair_sub = (lane / 2) % 2, pair_word = lane % 2;
  const uint32_t pair_raw = smem_addr + Smem::kScaleOffset + pair_sub * Smem::kSubScaleBytes + warp * SB +
                            pair_g * (SB / 8) + (F == ExpertFormat::kNVFP4 ? pair_word * 4 : 0);
  const uint32_t pair_scratch = smem_addr + Smem::kPairScratchOffset + warp * Smem::kPairScratchWarpBytes;
  constexpr uint32_t kPairParityBytes = Tile::kM16 * Smem::kPairScratchWarpBytes;
  const int mx_lo_byte = 2 * pair_word;  // MXFP4: block pair_word's bytes (2 j, 2 j + 1)
  const uint64_t desc0 = wgmma_desc_sw128(smem_addr);  // slot 0, sub-block 0

  // Stage kt in ring slot kSlot = kt % STAGES: wait for its copies, barrier (every
  // warpgroup's groups of kt - 2 are done), refill slot (kt + kPrefetch) % STAGES, then
  // the two sub-blocks.
  // rem = k_tiles - kt0 (stages left from the group's first): comparisons with immediates.
  auto compute_stage = [&](auto slot_tag, int rem) {
    constexpr int kSlot = decltype(slot_tag)::value;  // = kt - kt0
    cp_async_wait<kPrefetch - 1>();
    fence_proxy_async_smem();
    __syncthreads();
    if (rem > kSlot + kPrefetch)  // stage kt + kPrefetch < k_tiles
      load_stage(std::integral_constant<int, (kSlot + kPrefetch) % STAGES>{}, std::integral_constant<int, kSlot + kPrefetch>{});
    cp_async_commit();
    // Sub-block 0's weight words first: the scratch stores below order later shared loads.
    const uint4 w0 = ld_shared_v4(smem_w + kSlot * Smem::kWeightBytes);
    // The stage's scale pairs (above): compute this lane's share, exchange through the scratch.
    const uint32_t raw = ld_shared_u32(pair_raw + kSlot * Smem::kScaleBytes);
    const uint32_t scratch = pair_scratch + (kSlot % 2) * kPairParityBytes;
    if constexpr (F == ExpertFormat::kNVFP4) {
      st_shared_v2(scratch + 8 * lane, frag_scale_transform<F>(frag_byte_pair(raw, 0)),
                   frag_scale_transform<F>(frag_byte_pair(raw, 2)));
    } else {
      st_shared_u32(scratch + 4 * lane, frag_scale_transform<F>(frag_byte_pair(raw, mx_lo_byte)));
    }
    __syncwarp();
    uint32_t pairs[SUBS][kPairsPerStep];  // [sub][k16 step]
    if constexpr (F == ExpertFormat::kNVFP4) {  // row g: [sub 0: steps 0-3][sub 1: steps 0-3]
      const uint4 p0 = ld_shared_v4(scratch + pair_g * kPairRowBytes), p1 = ld_shared_v4(scratch + pair_g * kPairRowBytes + 16);
      pairs[0][0] = p0.x, pairs[0][1] = p0.y, pairs[0][2] = p0.z, pairs[0][3] = p0.w;
      pairs[1][0] = p1.x, pairs[1][1] = p1.y, pairs[1][2] = p1.z, pairs[1][3] = p1.w;
    } else {  // row g: [sub 0: blocks 0, 1][sub 1: blocks 0, 1]; steps 0, 1 use block 0, steps 2, 3 block 1
      const uint4 p0 = ld_shared_v4(scratch + pair_g * kPairRowBytes);
      pairs[0][0] = pairs[0][1] = p0.x, pairs[0][2] = pairs[0][3] = p0.y;
      pairs[1][0] = pairs[1][1] = p0.z, pairs[1][2] = pairs[1][3] = p0.w;
    }
#pragma unroll
    for (int sub = 0; sub < SUBS; ++sub) {
      const uint4 w = sub == 0 ? w0 : ld_shared_v4(smem_w + kSlot * Smem::kWeightBytes + sub * Smem::kSubWeightBytes);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
      const uint64_t desc = wgmma_desc_at<kN>(desc0, smem_addr, kSlot * Smem::kActBytes + sub * Smem::kSubActBytes);
      wgmma_frag_block_pipe<kN>(acc, a_sub[sub], words, pairs[sub], desc);
    }
  };
  static_assert(STAGES == 4, "the unrolled loop below names 4 slots");
  for (int rem = k_tiles; rem > 0; rem -= STAGES) {  // stages kt0 .. kt0 + 3 in slots 0 .. 3
    compute_stage(I0{}, rem);
    if (rem <= 1) break;
    compute_stage(I1{}, rem);
    if (rem <= 2) break;
    compute_stage(I2{}, rem);
    if (rem <= 3) break;
    compute_stage(I3{}, rem);
    advance_sources();
  }
  wgmma_wait<0>();
  fence_acc(acc);
  // The epilogue's tile values read again from the tile list (unchanged during the kernel;
  // the loop's memory clobbers make these real loads), so that they hold no registers
  // through the k loop: at 128 registers the kept expert index was spilled otherwise.
  const int expert_out = p.tile_expert[tile], slot0_out = p.tile_slot_begin[tile], rows_out = p.tile_row_count[tile];
  wgmma_tile_store<kL1, kN, BT, kL1 ? BW / 2 : BW, Smem::kOutStride>(p, acc, smem, expert_out, rows_out, slot0_out, n0,
                                                                     warp, g, t, tid, kThreads);
}

}  // namespace dsv4::cuda::moe::detail

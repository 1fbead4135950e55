// Grouped W4A16 GEMM for MoE experts (sm_90a, mma.sync BF16 m16n8k16).
// Swap-AB form: the weight rows are the MMA's M (A operand, dequantized in
// registers from the fragment layout of fragment.h), the slots (token rows) its N
// (B operand, BF16 via ldmatrix). One CTA computes BW weight rows x BT slots of one
// expert's tile; a cp.async pipeline of STAGES k-tiles feeds it.
//   L1: weight = interleaved W13 [2I, H]; epilogue = clamped SwiGLU -> h [slots, I]
//   L2: weight = W2 [H, I]; epilogue = * factor * routing weight -> slot_out [slots, H]
#pragma once
#include <cuda_bf16.h>

#include "cuda/common/bf16x2.cuh"
#include "cuda/common/pdl_launch.h"
#include "cuda/moe/fragment.h"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {

template <int BW_, int BT_, int BK_, int WW_, int WT_, int STAGES_, int MIN_CTAS_, int WK_ = 1>
struct GemmTile {
  static constexpr int BW = BW_;          // weight rows per CTA
  static constexpr int BT = BT_;          // slots per CTA
  static constexpr int BK = BK_;          // K per pipeline stage
  static constexpr int WW = WW_;          // warps along weight rows
  static constexpr int WT = WT_;          // warps along slots
  static constexpr int STAGES = STAGES_;
  static constexpr int kMinCtas = MIN_CTAS_;  // per SM: caps registers (__launch_bounds__)
  static constexpr int WK = WK_;          // warps along K: in-CTA split-K (fragment blocks kbl = wk mod WK)
  static constexpr int kThreads = WW * WT * WK * 32;
  static constexpr int MT = BW / WW / 16;  // m16 tiles per warp
  static constexpr int NT = BT / WT / 8;   // n8 tiles per warp
  static_assert(BW % (WW * 16) == 0, "weight rows split into m16 tiles per warp");
  static_assert(BT % (WT * 8) == 0, "slots split into n8 tiles per warp");
  static_assert(BK % kFragCols == 0, "a stage holds whole fragment blocks");
  static_assert((BK / kFragCols) % WK == 0, "each K warp group takes the same number of fragment blocks per stage");
};

// Decode: 128 weight rows x 8 slots, 6 stages of 128 K (~11 KB each) in flight per CTA,
// 3 CTAs per SM. (64 rows per CTA was measured too, 2026-11-24: no gain at 1 token,
// 1-5% slower at 64 tokens; docs/PERFORMANCE.md.)
using DecodeTile = GemmTile<128, 8, 128, 4, 1, 6, 3>;
// Decode with in-CTA split-K (TileConfig::kDecodeKSplit): same 128 x 8 output tile, but
// 16 warps = 4 (weight rows) x 4 (K): a stage is 256 K (4 fragment blocks per weight
// row block), warp group wk takes fragment block wk of every stage, so each warp runs a
// quarter of the dequant + MMA chain of the 4-warp tile and 32 warps per SM (2 CTAs)
// keep the loads going. 4 stages of ~22.7 KB: 3 stages (~54 KB of weights + scales) in
// flight per CTA, ~108 KB per SM. The K groups' partial sums meet in shared memory in
// fixed order wk = 0, 1, 2, 3 (deterministic). Not measured yet.
using DecodeKSplitTile = GemmTile<128, 8, 256, 4, 1, 4, 2, 4>;
using PrefillTile = GemmTile<128, 128, 64, 4, 2, 4, 2>;

template <class Tile, ExpertFormat F>
struct GemmSmem {
  static constexpr int kFbN = Tile::BW / kFragRows;
  static constexpr int kFbK = Tile::BK / kFragCols;
  static constexpr int kWeightBytes = kFbN * kFbK * kFragBytes;             // [fb][lane][16 B]
  static constexpr int kScaleBytes = kFbN * kFbK * frag_scale_bytes(F);     // [fb][SB]
  static constexpr int kActStride = Tile::BK + 8;                           // BF16 per slot row (padded)
  static constexpr int kActBytes = Tile::BT * kActStride * 2;               // [BT][BK + 8]
  static constexpr int kStageBytes = kWeightBytes + kScaleBytes + kActBytes;
  static constexpr int kPipeBytes = kStageBytes * Tile::STAGES;
  static constexpr int kOutStride = Tile::BW + 8;                           // BF16 per slot row (L2 bound)
  static constexpr int kOutBytes = Tile::BT * kOutStride * 2;
  // In-CTA split-K: accumulators of K groups 1..WK-1, [wk - 1][warp in group][element][lane] FP32,
  // placed after the output tile (both live at the same time).
  static constexpr int kAccPerThread = Tile::MT * Tile::NT * 4;
  static constexpr int kRedOffset = (kOutBytes + 15) / 16 * 16;
  static constexpr int kRedBytes = (Tile::WK - 1) * Tile::WW * Tile::WT * 32 * kAccPerThread * 4;
  static constexpr int kEpiBytes = kRedOffset + kRedBytes;
  static constexpr int kBytes = kPipeBytes > kEpiBytes ? kPipeBytes : kEpiBytes;
  static_assert(kWeightBytes % 16 == 0 && kScaleBytes % 16 == 0 && kActBytes % 16 == 0, "16-byte aligned regions");
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_size = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_size));
}
// The same copy to a shared-window address (computed once per kernel, not per copy).
__device__ __forceinline__ void cp_async16_u32(uint32_t smem, const void* gmem, int src_size) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 matrices: lanes 8m..8m+7 address the rows of matrix m, register m gets its fragment
// (so matrices 0, 1 / 2, 3 are two ldmatrix_x2 loads' worth, same registers, same bits).
__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t& r0, uint32_t& r1, const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(s));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}


// Scale code byte `byte` (0..3) of `word` as a BF16x2 multiplier (same value twice).
template <ExpertFormat F>
__device__ __forceinline__ uint32_t scale_pair(uint32_t word, int byte) {
  const uint32_t dup = __byte_perm(word, 0u, static_cast<uint32_t>(byte | (4 << 4) | (byte << 8) | (4 << 12)));
  if constexpr (F == ExpertFormat::kNVFP4) {
    return (dup << 4) + ((static_cast<uint32_t>(kNvfp4ScaleBias) << 7) * 0x10001u);
  } else {
    return dup << 7;
  }
}

// The masks of the decode tile's dequant (frag_decode_word_bits' sign masks, scale_halves'
// byte mask) as operands ptxas cannot constant-fold: with literal masks it re-derives, from
// the known bits, a separate two-instruction mask per register (cuobjdump: 8 LOP3 per weight
// word instead of 6). In constant memory they are a LOP3 operand (c[0x3][..]), no extra
// instruction. One copy per translation unit (static), initialised with the module.
static __constant__ uint32_t kDequantMasks[4] = {kFragSignsOdd, kFragSignsEven, 0x00FF00FFu, 16u};

// Block-scale multipliers of one lane from one 32-bit scale word, rows g and g + 8 apart:
// each result holds in its two BF16 halves the multipliers of the word's two scale blocks
// (the low half from bytes 0 / 1, the high half from bytes 2 / 3), the same BF16 bits
// scale_pair<F> puts in both halves. The MMA operands then take the wanted half of it
// (bf16x2_mul_by_half), so one pair of these serves two k16 steps (NVFP4: s = 2q, 2q + 1)
// or all four (MXFP4: s / 2 = 0, 1).
//   NVFP4 scale word q: bytes [s 2q row g, s 2q row g + 8, s 2q + 1 row g, s 2q + 1 row g + 8]
//   MXFP4 scale word:   bytes [block 0 row g, block 0 row g + 8, block 1 row g, block 1 row g + 8]
template <ExpertFormat F>
__device__ __forceinline__ void scale_halves(uint32_t word, uint32_t& row_g, uint32_t& row_g8) {
  const uint32_t even = word & kDequantMasks[2];         // bytes 0, 2 in the low byte of each half
  const uint32_t odd = __byte_perm(word, 0u, 0x4341u);   // bytes 1, 3 likewise
  if constexpr (F == ExpertFormat::kNVFP4) {
    constexpr uint32_t kBias = (static_cast<uint32_t>(kNvfp4ScaleBias) << 7) * 0x10001u;
    // (code << 4) <= 0xFF0: no carry into the other half. x * 16 + bias with the 16 from
    // constant memory: one IMAD (FMA pipe) instead of the LEA (ALU pipe) ptxas picks for x << 4.
    row_g = even * kDequantMasks[3] + kBias;
    row_g8 = odd * kDequantMasks[3] + kBias;
  } else {
    row_g = even << 7;
    row_g8 = odd << 7;
  }
}

// a * (half `high` of pair, in both halves), round to nearest: the same product as
// bf16x2_mul(a, scale_pair) when that half holds the scale_pair value (SASS: HMUL2.BF16_V2
// with a .H0_H0 / .H1_H1 operand, no separate byte permute).
__device__ __forceinline__ uint32_t bf16x2_mul_by_half(uint32_t a, uint32_t pair, bool high) {
  uint32_t d;
  if (high) {
    asm("{\n .reg .b16 lo, hi;\n .reg .b32 b;\n mov.b32 {lo, hi}, %2;\n mov.b32 b, {hi, hi};\n"
        " mul.rn.bf16x2 %0, %1, b;\n}\n"
        : "=r"(d)
        : "r"(a), "r"(pair));
  } else {
    asm("{\n .reg .b16 lo, hi;\n .reg .b32 b;\n mov.b32 {lo, hi}, %2;\n mov.b32 b, {lo, lo};\n"
        " mul.rn.bf16x2 %0, %1, b;\n}\n"
        : "=r"(d)
        : "r"(a), "r"(pair));
  }
  return d;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// kSplit (TileConfig::kDecodeSplitK, WK == 1 tiles): K is split across the gridDim.z CTAs
// of an output block; CTA z runs k-tiles [z * k_tiles / S, (z + 1) * k_tiles / S), stores
// its FP32 sums to split_partials[z], and the last CTA of the block to arrive (counter
// split_done[tile][blockIdx.y]) adds slices 0..S-1 in that order, then runs the epilogue.
// kStream (TileConfig::kDecodeStream, DecodeTile only): weights + scales come from the decode
// stream layout p.stream_weights ([groups][n / 128][k / 128][stage image], or [groups][k / 128]
// [n / 128][..] with p.stream_k_major; moe.h), so stage kt of CTA (tile, y) is one contiguous
// chunk, copied linearly into the same shared-memory image
// the fragment-layout gather builds: everything after the copy is kDecode's code (bitwise equal).
// kStream also brackets the L1 -> L2 dependency for programmatic dependent launch (PDL,
// GroupedGemmParams::programmatic_wait): L1 triggers its dependents at its start; L2 issues
// the weight + scale copies of its first STAGES - 1 stages, then griddepcontrol.wait (returns
// at once when not launched with PDL), and only then touches h. Weights are constant and the
// tile list was written by the dispatch, which completed before L1 began.
// kStreamMode: 0 = fragment layout; 1 = stream layout by cp.async (kDecodeStream); 2 = stream
// layout by one TMA bulk copy per stage (kDecodeStreamBulk): thread 0 arms the stage's mbarrier
// with the chunk's byte count and issues cp.async.bulk of the whole chunk; every thread waits
// on the barrier (phase parity = use count & 1) before the stage's __syncthreads. The
// activation rows stay on cp.async groups. A wait that never completes traps (no silent hang).
// Where one output unit (BW weight rows x BT slots of tile-list entry `tile`, one K slice)
// of the grouped GEMM lies: column block y() of y_count(), K slice z() of slices().
// GridUnit reads them from the grid at each use, as moe_grouped_gemm_kernel always did (so
// its SASS is unchanged: same instructions in the same order, cuobjdump); DealtUnit holds
// what the persistent decode kernel (decode_persistent.cuh) dealt to a CTA.
struct GridUnit {
  __device__ __forceinline__ unsigned y() const { return blockIdx.y; }
  __device__ __forceinline__ unsigned y_count() const { return gridDim.y; }
  __device__ __forceinline__ unsigned z() const { return blockIdx.z; }
  __device__ __forceinline__ unsigned slices() const { return gridDim.z; }
};
struct DealtUnit {
  unsigned y_, y_count_, z_, slices_;  // unsigned, as blockIdx / gridDim: the same conversions
  __device__ __forceinline__ unsigned y() const { return y_; }
  __device__ __forceinline__ unsigned y_count() const { return y_count_; }
  __device__ __forceinline__ unsigned z() const { return z_; }
  __device__ __forceinline__ unsigned slices() const { return slices_; }
};
// No wait between the weight prefetch and the activation copies (kPrefetch == false).
struct NoActWait {
  __device__ __forceinline__ void operator()() const {}
};
// kChain (persistent decode kernel, DecodeTile): consecutive units of a CTA share one stage
// ring. ChainNext: where the CTA's next unit reads its weights (this thread's copy-plan sources
// at the next unit's first k-tile, chain_next_sources) and how many k-tiles it has (0: none).
struct ChainNext {
  const uint8_t* w_src = nullptr;
  const uint8_t* sc_src = nullptr;
  int k_tiles = 0;
};
// ChainState, carried from unit to unit: ring position of the unit's k-tile 0, and whether
// the previous unit already issued the weight + scale copies of its first
// min(STAGES - 1, k_tiles) k-tiles (into positions base, base + 1, ...).
struct ChainState {
  int base = 0;
  bool in_flight = false;
};

// One unit of the grouped GEMM: the whole per-CTA body of moe_grouped_gemm_kernel, callable
// once per unit from a persistent kernel (forceinline: the kernel's SASS is that of the body).
// The caller separates two units of one CTA by __syncthreads() (shared memory is reused).
// kPrefetch (fragment layout, decode tiles only; the persistent kernel's L2): the weight +
// scale copies of the first STAGES - 1 stages are issued first (no commit: they join group
// 0), then before_act() runs (all threads; the persistent kernel's grid barrier: h complete),
// then the activation rows of each stage, one group per stage (as the PDL path of kStream).
// kChain (implies kPrefetch's order; the persistent kernel's chained variant): the stage ring
// starts at position chain->base; weights of the first stages are skipped when
// chain->in_flight (the previous unit issued them). In its last STAGES - 1 iterations, whose
// refill slots would stay empty, the unit issues the next unit's first STAGES - 1 weight +
// scale stages (next_unit; needs k_tiles >= STAGES - 1) into the ring positions that unit
// will read; the output tile goes to the position of the unit's last k-tile (the one the
// prefetches do not touch), and the unit does not drain cp.async at its end (the pending
// groups are the next unit's weights). On return *chain describes the next unit's ring.
template <class Tile, ExpertFormat F, bool kL1, bool kSplit = false, int kStreamMode = 0, bool kReferenceLoop = false,
          bool kPrefetch = false, class Unit = GridUnit, class BeforeAct = NoActWait, bool kChain = false>
__device__ __forceinline__ void grouped_gemm_unit(const GroupedGemmParams& p, const int tile, const int tile_total,
                                                  const Unit unit, const BeforeAct& before_act = BeforeAct(),
                                                  ChainState* chain = nullptr, const ChainNext& next_unit = ChainNext()) {
  constexpr bool kStream = kStreamMode != 0, kBulk = kStreamMode == 2;
  static_assert(!kSplit || Tile::WK == 1, "split-K across CTAs on WK == 1 tiles only");
  static_assert(!kStream || (Tile::BW == kDecodeStreamRows && Tile::BK == kDecodeStreamK && !kSplit),
                "the stream layout's chunk is DecodeTile's stage");
  static_assert(!(kPrefetch || kChain) || (!kStream && !kReferenceLoop && Tile::BT == 8 && Tile::WK == 1),
                "the weight prefetch is written for the decode tiles' planned fragment copy");
  using Smem = GemmSmem<Tile, F>;
  constexpr int BW = Tile::BW, BT = Tile::BT, BK = Tile::BK, MT = Tile::MT, NT = Tile::NT;
  constexpr int kThreads = Tile::kThreads;
  constexpr int SB = frag_scale_bytes(F);
  extern __shared__ __align__(16) uint8_t smem[];

  const int expert = p.tile_expert[tile];
  const int slot0 = p.tile_slot_begin[tile];
  const int rows = p.tile_row_count[tile];
  const int n0 = unit.y() * BW;
  const int K = p.k;
  const int kb_count = K / kFragCols;
  int kt0 = 0, k_tiles = K / BK;  // this CTA's k-tiles: [kt0, kt0 + k_tiles)
  if constexpr (kSplit) {
    const int all = K / BK, z = unit.z(), slices = unit.slices();
    kt0 = z * all / slices;
    k_tiles = (z + 1) * all / slices - kt0;
  }

  const uint8_t* g_weights = p.weights + static_cast<int64_t>(expert) * p.n * K / 2;  // [n/16][k/64][512]
  const uint8_t* g_scales = p.scales + static_cast<int64_t>(expert) * (p.n / kFragRows) * kb_count * SB;
  // kStream: chunk kt of this CTA at g_stream + kt * stream_step (contiguous per CTA, or every
  // n / BW chunks when k-major).
  constexpr int kChunkBytes = Smem::kWeightBytes + Smem::kScaleBytes;
  const uint8_t* g_stream = nullptr;
  int64_t stream_step = kChunkBytes;
  if constexpr (kStream) {
    const int64_t group_chunks = static_cast<int64_t>(p.n / BW) * (K / BK);
    const int64_t first = p.stream_k_major ? unit.y() : static_cast<int64_t>(unit.y()) * (K / BK);
    g_stream = p.stream_weights + (expert * group_chunks + first) * kChunkBytes;
    if (p.stream_k_major) stream_step = static_cast<int64_t>(p.n / BW) * kChunkBytes;
  }

  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int ww = warp % Tile::WW, wt = (warp / Tile::WW) % Tile::WT;
  const int wk = Tile::WK == 1 ? 0 : warp / (Tile::WW * Tile::WT);  // K group
  const int g = lane >> 2, t = lane & 3;

  // ---- Copy plan of the fragment layout (kStreamMode 0), set up once: per-thread source
  // pointers at k-tile kt0 and shared-memory offsets; a stage's copy is then one 64-bit
  // multiply-add per pointer (k-tile j = kt - kt0 times its stride) and cp.async at immediate
  // offsets from it.
  // Weights: a stage holds kFbN row blocks x kFbK fragment blocks; the kFbK blocks of a row
  // block are one contiguous kFbK x 512 B run both in global memory ([n/16][k/64][512], next
  // row block kb_count x 512 B further) and in shared memory ([fb = rb kFbK + kb][lane][16 B]).
  // Thread tid copies row block tid / kWeightThreads, 16-byte chunks tid % kWeightThreads +
  // i kWeightThreads of its run (i < kWeightPer): same bytes to the same places as a plain
  // c = tid + i kThreads walk (kReferenceLoop), the offsets of i being the immediates
  // 16 kWeightThreads i. A warp still reads whole 128-byte lines (runs of 16 kWeightThreads B).
  // Decode tiles (8 slots) reading the fragment layout only: the prefill tile's 4 activation
  // chunks per thread as 64-bit pointers cost it spills (20 B, NVFP4), so it keeps the offset
  // form below; the stream layouts have their own copy (load_stage_stream).
  constexpr bool kPlannedCopy = !kReferenceLoop && Tile::BT == 8 && !kStream;
  constexpr int kRowRunBytes = Smem::kFbK * kFragBytes;
  constexpr int kWeightThreads = kThreads / Smem::kFbN;
  constexpr int kWeightPer = kRowRunBytes / 16 / kWeightThreads;
  static_assert(kThreads % Smem::kFbN == 0 && (kRowRunBytes / 16) % kWeightThreads == 0,
                "whole weight row runs per thread group");
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int w_rb = tid / kWeightThreads, w_chunk = tid % kWeightThreads;
  const uint32_t w_dst = static_cast<uint32_t>(w_rb * kRowRunBytes + w_chunk * 16);
  const uint8_t* w_src =
      g_weights + (static_cast<int64_t>(n0 / kFragRows + w_rb) * kb_count + static_cast<int64_t>(kt0) * Smem::kFbK) *
                      kFragBytes +
      w_chunk * 16;
  // Scales: per row block a run of kFbK x SB bytes ([n/16][k/64][SB]); chunk c = tid + i kThreads
  // of the stage's [rb][run] image (c < kScaleChunks), one pointer per i.
  constexpr int kScaleRunChunks = Smem::kFbK * SB / 16;
  constexpr int kScaleChunksAll = Smem::kScaleBytes / 16;
  constexpr int kScaleCopies = (kScaleChunksAll + kThreads - 1) / kThreads;
  const uint8_t* sc_src[kScaleCopies];
#pragma unroll
  for (int i = 0; i < kScaleCopies; ++i) {
    const int c = tid + i * kThreads;
    const int rb = c / kScaleRunChunks, part = c % kScaleRunChunks;
    sc_src[i] = g_scales +
                (static_cast<int64_t>(n0 / kFragRows + rb) * kb_count + static_cast<int64_t>(kt0) * Smem::kFbK) * SB +
                part * 16;  // not dereferenced when c >= kScaleChunksAll
  }

  // Activation rows this thread copies: chunk c = tid + i * kThreads of [BT][BK / 8].
  constexpr int kActChunks = BT * BK / 8;
  constexpr int kActIters = (kActChunks + kThreads - 1) / kThreads;
  // Element offset of the chunk's row in act, or -1 for rows past the tile (zero-filled).
  int act_offset[kActIters];
#pragma unroll
  for (int i = 0; i < kActIters; ++i) {
    const int c = tid + i * kThreads;
    const int r = c / (BK / 8);
    act_offset[i] = -1;
    if (c < kActChunks && r < rows) act_offset[i] = (kL1 ? p.slot_token[slot0 + r] : slot0 + r) * K + (c % (BK / 8)) * 8;
  }
  // The same rows as pointers at k-tile kt0 (k-tile kt0 + j: + j BK elements). Rows past the
  // tile point into row 0 of act instead (inside the buffer) with src-size 0: zero-fill,
  // nothing read, and no select per load.
  const uint16_t* act_src[kActIters];
#pragma unroll
  for (int i = 0; i < kActIters; ++i) act_src[i] = p.act + (act_offset[i] >= 0 ? act_offset[i] : 0) + kt0 * BK;

  // Weight / scale chunks this thread copies per stage: chunk c = tid + i * kThreads of the
  // stage's [fb][lane][16 B] weights and [fb][SB] scales, as byte offsets from g_weights /
  // g_scales at k-tile 0 (-1: no chunk). Fixed trip counts and per-thread offsets computed
  // once: the loops over c = tid; c < N; c += kThreads had runtime trip counts and cost ~300
  // SASS instructions per stage (41% of the decode tile's loop; cuobjdump, 2026-12-01).
  constexpr int kWeightChunks = Smem::kWeightBytes / 16, kScaleChunks = Smem::kScaleBytes / 16;
  constexpr int kWeightIters = (kWeightChunks + kThreads - 1) / kThreads;
  constexpr int kScaleIters = (kScaleChunks + kThreads - 1) / kThreads;
  int64_t weight_offset[kWeightIters], scale_offset[kScaleIters];
#pragma unroll
  for (int i = 0; i < kWeightIters; ++i) {
    const int c = tid + i * kThreads;
    const int fb = c / 32, chunk_lane = c % 32;
    const int64_t gfb = static_cast<int64_t>(n0 / kFragRows + fb / Smem::kFbK) * kb_count + fb % Smem::kFbK;
    weight_offset[i] = c < kWeightChunks ? gfb * kFragBytes + chunk_lane * 16 : -1;
  }
#pragma unroll
  for (int i = 0; i < kScaleIters; ++i) {
    const int c = tid + i * kThreads;
    const int fb = c / (SB / 16), part = c % (SB / 16);
    const int64_t gfb = static_cast<int64_t>(n0 / kFragRows + fb / Smem::kFbK) * kb_count + fb % Smem::kFbK;
    scale_offset[i] = c < kScaleChunks ? gfb * SB + part * 16 : -1;
  }

  auto load_stage_act = [&](int stage, int kt) {  // the stage's activation rows only
    uint8_t* s_act = smem + stage * Smem::kStageBytes + Smem::kWeightBytes + Smem::kScaleBytes;
#pragma unroll
    for (int i = 0; i < kActIters; ++i) {
      const int c = tid + i * kThreads;
      if (c < kActChunks) {
        const int r = c / (BK / 8), cc = c % (BK / 8);
        const bool valid = act_offset[i] >= 0;
        cp_async16(s_act + (r * Smem::kActStride + cc * 8) * 2, p.act + (valid ? act_offset[i] + kt * BK : 0), valid);
      }
    }
  };
  __shared__ __align__(8) uint64_t s_bars[kBulk ? Tile::STAGES : 1];  // kBulk: one mbarrier per stage
  if constexpr (kBulk) {
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < Tile::STAGES; ++s) {
        const unsigned bar = static_cast<unsigned>(__cvta_generic_to_shared(&s_bars[s]));
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar));
      }
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
  }
  // The stage's weights + scales (stream layout: one linear chunk, as laid out in shared memory).
  auto load_stage_stream = [&](int stage, int kt) {
    uint8_t* s_weights = smem + stage * Smem::kStageBytes;
    const uint8_t* src = g_stream + kt * stream_step;
    if constexpr (kBulk) {
      if (tid == 0) {
        const unsigned bar = static_cast<unsigned>(__cvta_generic_to_shared(&s_bars[stage]));
        const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(s_weights));
        uint64_t state;
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 %0, [%1], %2;\n"
                     : "=l"(state)
                     : "r"(bar), "r"(kChunkBytes)
                     : "memory");
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
            "l"(src), "r"(kChunkBytes), "r"(bar)
            : "memory");
        (void)state;
      }
    } else {
      constexpr int kChunks = kChunkBytes / 16;
#pragma unroll
      for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
        const int c = tid + i * kThreads;
        if (kChunks % kThreads == 0 || c < kChunks) cp_async16(s_weights + c * 16, src + c * 16, true);
      }
    }
  };
  // Fragment layout through the copy plan above: k-tile kt0 + j into the stage at byte offset
  // stage_offset. Each source is its kt0 pointer + j strides (one 64-bit IMAD.WIDE per
  // pointer; pointers advanced per load cost an add pair and register moves, cuobjdump).
  // Weights + scales of the stage (kPrefetch issues them ahead of the activation rows).
  auto load_stage_fragment_weights = [&](int stage_offset, int j) {  // stage_offset = stage * kStageBytes
    const uint32_t dst = smem_base + static_cast<uint32_t>(stage_offset);
    const uint8_t* w = w_src + static_cast<int64_t>(j) * kRowRunBytes;
#pragma unroll
    for (int i = 0; i < kWeightPer; ++i)
      cp_async16_u32(dst + w_dst + i * 16 * kWeightThreads, w + i * 16 * kWeightThreads, 16);
#pragma unroll
    for (int i = 0; i < kScaleCopies; ++i) {
      const int c = tid + i * kThreads;
      if (kScaleChunksAll % kThreads == 0 || c < kScaleChunksAll)
        cp_async16_u32(dst + Smem::kWeightBytes + c * 16, sc_src[i] + static_cast<int64_t>(j) * (Smem::kFbK * SB), 16);
    }
  };
  auto load_stage_fragment_act = [&](int stage_offset, int j) {  // the stage's activation rows
    const uint32_t act_dst = smem_base + static_cast<uint32_t>(stage_offset) + Smem::kWeightBytes + Smem::kScaleBytes;
#pragma unroll
    for (int i = 0; i < kActIters; ++i) {
      const int c = tid + i * kThreads;
      if (kActChunks % kThreads == 0 || c < kActChunks) {
        const int r = c / (BK / 8), cc = c % (BK / 8);
        cp_async16_u32(act_dst + (r * Smem::kActStride + cc * 8) * 2, act_src[i] + static_cast<int64_t>(j) * BK,
                       act_offset[i] >= 0 ? 16 : 0);
      }
    }
  };
  auto load_stage_fragment = [&](int stage_offset, int j) {
    load_stage_fragment_weights(stage_offset, j);
    load_stage_fragment_act(stage_offset, j);
  };
  auto load_stage = [&](int stage, int kt) {
    uint8_t* s_weights = smem + stage * Smem::kStageBytes;
    uint8_t* s_scales = s_weights + Smem::kWeightBytes;
    if constexpr (kStream) {
      load_stage_stream(stage, kt);
    } else if constexpr (kPlannedCopy) {
      load_stage_fragment(stage * Smem::kStageBytes, kt - kt0);
      return;
    } else {
      const int64_t k_step = static_cast<int64_t>(kt) * Smem::kFbK;  // fragment blocks to k-tile kt
#pragma unroll
      for (int i = 0; i < kWeightIters; ++i) {
        const int c = tid + i * kThreads;
        if (kWeightChunks % kThreads == 0 || weight_offset[i] >= 0)
          cp_async16(s_weights + c * 16, g_weights + weight_offset[i] + k_step * kFragBytes, true);
      }
#pragma unroll
      for (int i = 0; i < kScaleIters; ++i) {
        const int c = tid + i * kThreads;
        if (kScaleChunks % kThreads == 0 || scale_offset[i] >= 0)
          cp_async16(s_scales + c * 16, g_scales + scale_offset[i] + k_step * SB, true);
      }
    }
    load_stage_act(stage, kt);
  };

  // kChain: byte offset of the ring position of this unit's k-tile j (j < 2 STAGES - base).
  const int chain_base = kChain ? chain->base : 0;
  const bool chain_in_flight = kChain && chain->in_flight;
  auto ring_offset = [&](int j) {
    const int pos = chain_base + j;
    return (pos >= Tile::STAGES ? pos - Tile::STAGES : pos) * Smem::kStageBytes;
  };
  // kChain: this unit issues the next unit's first weight stages in its last iterations.
  const bool chain_ahead = kChain && k_tiles >= Tile::STAGES - 1 && next_unit.k_tiles > 0;
  // The next unit's weights + scales of its k-tile j into the stage at stage_offset (the plan
  // of load_stage_fragment_weights from next_unit's sources: same thread -> chunk mapping).
  auto load_next_weights = [&](int stage_offset, int j) {
    const uint32_t dst = smem_base + static_cast<uint32_t>(stage_offset);
    const uint8_t* w = next_unit.w_src + static_cast<int64_t>(j) * kRowRunBytes;
#pragma unroll
    for (int i = 0; i < kWeightPer; ++i)
      cp_async16_u32(dst + w_dst + i * 16 * kWeightThreads, w + i * 16 * kWeightThreads, 16);
    static_assert(!kChain || kScaleCopies == 1, "ChainNext holds one scale source per thread");
    if (kScaleChunksAll % kThreads == 0 || tid < kScaleChunksAll)
      cp_async16_u32(dst + Smem::kWeightBytes + tid * 16, next_unit.sc_src + static_cast<int64_t>(j) * (Smem::kFbK * SB),
                     16);
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.0f;

  if constexpr (kStream && kL1) {
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");  // L2 may be scheduled now
  }
  if constexpr (kStream && !kL1) {
    // Weights of stages 0..STAGES-2 first (no commit: they join group 0), then wait for L1,
    // then the h rows of each stage, one group per stage as below.
#pragma unroll
    for (int s = 0; s < Tile::STAGES - 1; ++s) {
      if (s < k_tiles) load_stage_stream(s, kt0 + s);
    }
    asm volatile("griddepcontrol.wait;\n" ::: "memory");  // L1 complete, its h visible
#pragma unroll
    for (int s = 0; s < Tile::STAGES - 1; ++s) {
      if (s < k_tiles) load_stage_act(s, kt0 + s);
      cp_async_commit();
    }
  } else if constexpr (kChain) {
    // kPrefetch's order on the shared ring: weights (unless in flight), before_act(), act rows.
#pragma unroll
    for (int s = 0; s < Tile::STAGES - 1; ++s) {
      if (s < k_tiles && !chain_in_flight) load_stage_fragment_weights(ring_offset(s), s);
    }
    before_act();
#pragma unroll
    for (int s = 0; s < Tile::STAGES - 1; ++s) {
      if (s < k_tiles) load_stage_fragment_act(ring_offset(s), s);
      cp_async_commit();
    }
  } else if constexpr (kPrefetch) {
    // The same order for the fragment layout: weights + scales of stages 0..STAGES-2 (group 0),
    // before_act() (the persistent kernel's grid barrier), then the activation rows per stage.
#pragma unroll
    for (int s = 0; s < Tile::STAGES - 1; ++s) {
      if (s < k_tiles) load_stage_fragment_weights(s * Smem::kStageBytes, s);
    }
    before_act();
#pragma unroll
    for (int s = 0; s < Tile::STAGES - 1; ++s) {
      if (s < k_tiles) load_stage_fragment_act(s * Smem::kStageBytes, s);
      cp_async_commit();
    }
  } else {
#pragma unroll
    for (int s = 0; s < Tile::STAGES - 1; ++s) {
      if (s < k_tiles) load_stage(s, kt0 + s);
      cp_async_commit();
    }
  }

  // Decode tiles: the stage of k-tile kt as a wrapping byte offset (kt % STAGES) * kStageBytes
  // instead of two divisions by 6 per k-tile; the refill of iteration kt goes to stage
  // (kt + STAGES - 1) % STAGES, the one iteration kt - 1 read (write_offset).
  // The other tiles count stage indices the same way (kReferenceLoop: kt % STAGES as before).
  int read_offset = kChain ? ring_offset(0) : 0;
  int write_offset = kChain ? ring_offset(Tile::STAGES - 1) : (Tile::STAGES - 1) * Smem::kStageBytes;
  int read_stage = 0, write_stage = Tile::STAGES - 1;
  // This thread's shared-memory reads inside a stage at kq = 0, i = 0, s = 0, j = 0 (the rest
  // are immediates): the fragment block (ww MT + i) kFbK + kq WK + wk, lane's 16 bytes, its
  // scale bytes at g SB / 8, and its ldmatrix row of the activation tile. Computed once, so a
  // k-tile costs one add per base. Decode tiles on the fragment layout only (kPlannedCopy):
  // the prefill tile spilled with them (4-16 B) and the stream tiles got longer loops.
  const int w_read = (ww * MT * Smem::kFbK + wk) * kFragBytes + lane * 16;
  const int sc_read = Smem::kWeightBytes + (ww * MT * Smem::kFbK + wk) * SB + g * (SB / 8);
  // (ldmatrix.x4 of steps s, s + 1: lanes 8m.. address matrix m, columns 8 (m & 1) + 16 (m >> 1).)
  const int act_read = Smem::kWeightBytes + Smem::kScaleBytes +
                       ((wt * (BT / Tile::WT) + (lane & 7)) * Smem::kActStride + wk * kFragCols +
                        ((lane >> 3) & 1) * 8 + (lane >> 4) * 16) *
                           2;
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<Tile::STAGES - 2>();
    if constexpr (kBulk) {  // the stage's bulk copy landed (use kt / STAGES of its barrier)
      const unsigned bar = static_cast<unsigned>(__cvta_generic_to_shared(&s_bars[kt % Tile::STAGES]));
      const unsigned parity = static_cast<unsigned>(kt / Tile::STAGES) & 1u;
      unsigned done = 0;
      for (int spin = 0; !done; ++spin) {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
        if (!done && spin > (1 << 24)) __trap();  // seconds: a lost copy, not a slow one
      }
    }
    __syncthreads();  // stage kt visible to all; stage kt - 1 free for the refill below
    {
      const int next = kt + Tile::STAGES - 1;
      if (next < k_tiles) {
        if constexpr (kPlannedCopy)
          load_stage_fragment(write_offset, next);
        else
          load_stage(kReferenceLoop ? next % Tile::STAGES : write_stage, kt0 + next);
      } else if constexpr (kChain) {
        // The slot stays free in this unit: k-tile next - k_tiles of the next unit goes there
        // (ring position base + next = the next unit's base + that k-tile).
        const int m = next - k_tiles;
        if (chain_ahead && m < next_unit.k_tiles) load_next_weights(write_offset, m);
      }
      cp_async_commit();
    }
    const uint8_t* s_weights =
        smem + (kPlannedCopy     ? read_offset
                : kReferenceLoop ? (kt % Tile::STAGES) * Smem::kStageBytes
                                 : read_stage * Smem::kStageBytes);
    write_offset = read_offset;
    read_offset = read_offset == (Tile::STAGES - 1) * Smem::kStageBytes ? 0 : read_offset + Smem::kStageBytes;
    write_stage = read_stage;
    read_stage = read_stage == Tile::STAGES - 1 ? 0 : read_stage + 1;
    const uint8_t* s_scales = s_weights + Smem::kWeightBytes;
    const uint8_t* s_act = s_scales + Smem::kScaleBytes;
#pragma unroll
    for (int kq = 0; kq < Smem::kFbK / Tile::WK; ++kq) {
      const int kbl = kq * Tile::WK + wk;  // == kq when WK == 1
      uint32_t words[MT][4];
      uint32_t scale_words[MT][2];
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        const int fb = (ww * MT + i) * Smem::kFbK + kbl;
        const uint8_t* w_src = !kPlannedCopy ? s_weights + fb * kFragBytes + lane * 16
                                              : s_weights + w_read + (i * Smem::kFbK + kq * Tile::WK) * kFragBytes;
        const uint8_t* sc_src = !kPlannedCopy ? s_scales + fb * SB + g * (SB / 8)
                                               : s_weights + sc_read + (i * Smem::kFbK + kq * Tile::WK) * SB;
        const uint4 w = *reinterpret_cast<const uint4*>(w_src);
        words[i][0] = w.x;
        words[i][1] = w.y;
        words[i][2] = w.z;
        words[i][3] = w.w;
        if constexpr (F == ExpertFormat::kNVFP4) {
          const uint2 sw = *reinterpret_cast<const uint2*>(sc_src);
          scale_words[i][0] = sw.x;
          scale_words[i][1] = sw.y;
        } else {
          scale_words[i][0] = *reinterpret_cast<const uint32_t*>(sc_src);
          scale_words[i][1] = 0;
        }
      }
      // BF16x2 multipliers, rows g / g + 8, both blocks of a scale word in one register
      // (scale_halves): [i][q] for NVFP4 scale word q (k16 steps 2q, 2q + 1), [i][0] for MXFP4.
      uint32_t scale_g[MT][2], scale_g8[MT][2];
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int q = 0; q < (F == ExpertFormat::kNVFP4 ? 2 : 1); ++q) {
          if constexpr (!kReferenceLoop) scale_halves<F>(scale_words[i][q], scale_g[i][q], scale_g8[i][q]);
        }
      // Decode tiles: the B operands of k16 steps (0, 1) and (2, 3) as two ldmatrix.x4 per n8
      // tile instead of four .x2 (lanes 16..31 address step s + 1: column + 16).
      uint32_t b4[4][NT][2];
      if constexpr (kPlannedCopy) {
#pragma unroll
        for (int sp = 0; sp < 4; sp += 2)
#pragma unroll
          for (int j = 0; j < NT; ++j)
            ldmatrix_x4(b4[sp][j][0], b4[sp][j][1], b4[sp + 1][j][0], b4[sp + 1][j][1],
                        s_weights + act_read +
                            (j * 8 * Smem::kActStride + kq * Tile::WK * kFragCols + 16 * sp) * 2);
      }
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        uint32_t b[NT][2];
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          if constexpr (kPlannedCopy) {
            b[j][0] = b4[s][j][0];
            b[j][1] = b4[s][j][1];
          } else {
            const int row = wt * (BT / Tile::WT) + j * 8 + (lane & 7);
            const int col = kbl * kFragCols + 16 * s + ((lane >> 3) & 1) * 8;
            ldmatrix_x2(b[j][0], b[j][1], s_act + (row * Smem::kActStride + col) * 2);
          }
        }
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          uint32_t a[4];
          if constexpr (kReferenceLoop) {
            // The previous form, kept as the bit-exactness reference (tests/cuda/moe/
            // moe_decode_dequant_test.cu instantiates it): per register a decode and a
            // scale_pair (byte permute + shift) of its own.
            uint32_t scale_lo, scale_hi;  // rows g and g + 8
            if constexpr (F == ExpertFormat::kNVFP4) {
              scale_lo = scale_pair<F>(scale_words[i][s / 2], (s % 2) * 2);
              scale_hi = scale_pair<F>(scale_words[i][s / 2], (s % 2) * 2 + 1);
            } else {
              scale_lo = scale_pair<F>(scale_words[i][0], (s / 2) * 2);
              scale_hi = scale_pair<F>(scale_words[i][0], (s / 2) * 2 + 1);
            }
            a[0] = bf16x2_mul(frag_decode_bits(words[i][s], 0), scale_lo);
            a[1] = bf16x2_mul(frag_decode_bits(words[i][s], 1), scale_hi);
            a[2] = bf16x2_mul(frag_decode_bits(words[i][s], 2), scale_lo);
            a[3] = bf16x2_mul(frag_decode_bits(words[i][s], 3), scale_hi);
          } else {
            // Same BF16 bits: frag_decode_word_bits == frag_decode_bits per register, and the
            // multiplier is the same BF16 value, taken from one half of scale_g / scale_g8.
            const int q = F == ExpertFormat::kNVFP4 ? s / 2 : 0;
            const bool high = F == ExpertFormat::kNVFP4 ? (s % 2) != 0 : (s / 2) != 0;
            uint32_t d[4];
            frag_decode_word_bits(words[i][s], words[i][s] & kDequantMasks[0], words[i][s] & kDequantMasks[1], d);
            a[0] = bf16x2_mul_by_half(d[0], scale_g[i][q], high);
            a[1] = bf16x2_mul_by_half(d[1], scale_g8[i][q], high);
            a[2] = bf16x2_mul_by_half(d[2], scale_g[i][q], high);
            a[3] = bf16x2_mul_by_half(d[3], scale_g8[i][q], high);
          }
#pragma unroll
          for (int j = 0; j < NT; ++j) mma_bf16(acc[i][j], a, b[j][0], b[j][1]);
        }
      }
    }
  }
  if constexpr (!kChain) cp_async_wait<0>();  // kChain: what is pending is the next unit's weights
  __syncthreads();  // pipeline buffers are reused for the output tile
  // kChain: the output tile's stage (the last k-tile's, write_offset now) and the next unit's ring.
  const int out_offset = kChain ? write_offset : 0;
  if constexpr (kChain) {
    const int after = chain_base + k_tiles % Tile::STAGES;
    chain->base = after >= Tile::STAGES ? after - Tile::STAGES : after;
    chain->in_flight = chain_ahead;
  }

  if constexpr (Tile::WK > 1) {
    // K groups 1..WK-1 park their partial sums; group 0 adds them in order wk = 1, 2, ...
    // (fixed, so the result does not depend on timing), then alone runs the epilogue.
    float* s_red = reinterpret_cast<float*>(smem + Smem::kRedOffset);
    constexpr int kGroupWarps = Tile::WW * Tile::WT;
    const int warp_in_group = warp % kGroupWarps;
    if (wk > 0) {
      float* dst = s_red + ((wk - 1) * kGroupWarps + warp_in_group) * Smem::kAccPerThread * 32 + lane;
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int v = 0; v < 4; ++v) dst[((i * NT + j) * 4 + v) * 32] = acc[i][j][v];
    }
    __syncthreads();
    if (wk == 0) {
#pragma unroll 1
      for (int q = 1; q < Tile::WK; ++q) {
        const float* src = s_red + ((q - 1) * kGroupWarps + warp_in_group) * Smem::kAccPerThread * 32 + lane;
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
          for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int v = 0; v < 4; ++v) acc[i][j][v] += src[((i * NT + j) * 4 + v) * 32];
      }
    }
  }

  if constexpr (kSplit) {
    // acc[i][j][v]: weight row (ww * MT + i) * 16 + g + 8 * (v / 2), slot wt * (BT / WT) + j * 8 + 2t + v % 2.
    const int slices = unit.slices();
    const int64_t slice_stride = static_cast<int64_t>(p.split_slots) * p.n;
    float* part = p.split_partials + unit.z() * slice_stride;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const int row = n0 + (ww * MT + i) * 16 + g + 8 * (v / 2);
          const int slot = wt * (BT / Tile::WT) + j * 8 + 2 * t + v % 2;
          if (slot < rows) part[static_cast<int64_t>(slot0 + slot) * p.n + row] = acc[i][j][v];
        }
    // Fence / count / fence (as the fused combine): every slice's stores are visible to the
    // last CTA before it reads them (from L2, .cg). It resets the counter for the next launch.
    __shared__ int s_split_last;
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      int32_t* counter = p.split_done + static_cast<int64_t>(tile) * unit.y_count() + unit.y();
      const int last = atomicAdd(counter, 1) == slices - 1;
      if (last) atomicExch(counter, 0);
      s_split_last = last;
    }
    __syncthreads();
    if (!s_split_last) return;
    __threadfence();
    // acc = slice 0 + slice 1 + ... + slice S-1 (from 0.0f, fixed order); slots past the
    // tile stay 0. z outermost: the MT x NT x 4 loads of a slice are in flight together.
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.0f;
    const float* src = p.split_partials + static_cast<int64_t>(slot0) * p.n + n0;
#pragma unroll 2
    for (int z = 0; z < slices; ++z) {
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int v = 0; v < 4; ++v) {
            const int row = (ww * MT + i) * 16 + g + 8 * (v / 2);
            const int slot = wt * (BT / Tile::WT) + j * 8 + 2 * t + v % 2;
            if (slot < rows) acc[i][j][v] += __ldcg(src + z * slice_stride + static_cast<int64_t>(slot) * p.n + row);
          }
    }
  }

  __nv_bfloat16* s_out = reinterpret_cast<__nv_bfloat16*>(smem + out_offset);  // [BT][kOutStride]
  constexpr int kOutCols = kL1 ? BW / 2 : BW;
  if (wk != 0) {
    // K groups > 0 hold no sums any more (group 0 added them): nothing to write.
  } else if constexpr (kL1) {
    const float gate_factor = p.factor_a[expert], up_factor = p.factor_b[expert];
    const float limit = p.swiglu_limit;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int col = (ww * MT + i) * 8 + g;  // intermediate column inside the tile
        const int slot = wt * (BT / Tile::WT) + j * 8 + 2 * t;
#pragma unroll
        for (int v = 0; v < 2; ++v) {
          const float gate = fminf(acc[i][j][v] * gate_factor, limit);
          const float up = fminf(fmaxf(acc[i][j][2 + v] * up_factor, -limit), limit);
          s_out[(slot + v) * Smem::kOutStride + col] = __float2bfloat16_rn(silu(gate) * up);
        }
      }
  } else {
    const float factor = p.factor_a[expert];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        const int slot = wt * (BT / Tile::WT) + j * 8 + 2 * t + v;
        const float scale = slot < rows ? factor * p.slot_weight[slot0 + slot] : 0.0f;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          const int col = (ww * MT + i) * 16 + g;
          s_out[slot * Smem::kOutStride + col] = __float2bfloat16_rn(acc[i][j][v] * scale);
          s_out[slot * Smem::kOutStride + col + 8] = __float2bfloat16_rn(acc[i][j][2 + v] * scale);
        }
      }
  }
  __syncthreads();
  const int out_stride = kL1 ? p.n / 2 : p.n;
  const int out_col0 = kL1 ? n0 / 2 : n0;
  constexpr int kChunksPerRow = kOutCols / 8;
  for (int c = tid; c < BT * kChunksPerRow; c += kThreads) {
    const int r = c / kChunksPerRow, cc = c % kChunksPerRow;
    if (r < rows)
      *reinterpret_cast<uint4*>(p.out + static_cast<int64_t>(slot0 + r) * out_stride + out_col0 + cc * 8) =
          *reinterpret_cast<const uint4*>(s_out + r * Smem::kOutStride + cc * 8);
  }

  if constexpr (!kL1 && BT == 8) {  // decode tiles only (launch_gemm rejects combine_out otherwise)
    if (p.combine_out != nullptr) {
      // Fused combine (decode): the CTA that finishes column block unit.y() last (of the
      // tile_total CTAs that run it) sums every token's slots for these BW columns, in k
      // order, exactly as combine_kernel does. Fence / count / fence: the slot_out rows of
      // every CTA of the block are visible before the last one reads them (from L2, .cg).
      __shared__ int s_last;
      __threadfence();
      __syncthreads();
      if (tid == 0) s_last = atomicAdd(p.combine_done + unit.y(), 1) == tile_total - 1;
      __syncthreads();
      if (s_last) {
        __threadfence();
        constexpr int kChunks = BW / 8;
        for (int c = tid; c < p.combine_tokens * kChunks; c += kThreads) {
          const int token = c / kChunks, col = n0 + (c % kChunks) * 8;
          const int32_t* slots = p.slot_of_pair + static_cast<int64_t>(token) * p.pairs_per_token;
          float sum[8] = {};
          for (int k = 0; k < p.pairs_per_token; ++k) {
            const int slot = slots[k];
            if (slot < 0) continue;
            const uint4 v = __ldcg(reinterpret_cast<const uint4*>(p.out + static_cast<int64_t>(slot) * p.n + col));
            const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const float2 f = __bfloat1622float2(pairs[i]);
              sum[2 * i] += f.x;
              sum[2 * i + 1] += f.y;
            }
          }
          float4* o = reinterpret_cast<float4*>(p.combine_out + static_cast<int64_t>(token) * p.n + col);
          o[0] = make_float4(sum[0], sum[1], sum[2], sum[3]);
          o[1] = make_float4(sum[4], sum[5], sum[6], sum[7]);
        }
      }
    }
  }
}

// kChain: this thread's copy-plan sources (grouped_gemm_unit's w_src and sc_src[0], the same
// formulas) for unit (tile, y, K slice z of S) of GEMM p, and its k-tile count.
template <class Tile, ExpertFormat F>
__device__ __forceinline__ ChainNext chain_next_sources(const GroupedGemmParams& p, int tile, int y, int z, int slices) {
  using Smem = GemmSmem<Tile, F>;
  constexpr int SB = frag_scale_bytes(F);
  constexpr int kRowRunBytes = Smem::kFbK * kFragBytes;
  constexpr int kWeightThreads = Tile::kThreads / Smem::kFbN;
  constexpr int kScaleRunChunks = Smem::kFbK * SB / 16;
  const int expert = p.tile_expert[tile];
  const int K = p.k, kb_count = K / kFragCols, all = K / Tile::BK;
  const int kt0 = z * all / slices;
  const int n0 = y * Tile::BW, tid = threadIdx.x;
  const uint8_t* g_weights = p.weights + static_cast<int64_t>(expert) * p.n * K / 2;
  const uint8_t* g_scales = p.scales + static_cast<int64_t>(expert) * (p.n / kFragRows) * kb_count * SB;
  const int w_rb = tid / kWeightThreads, w_chunk = tid % kWeightThreads;
  const int rb = tid / kScaleRunChunks, part = tid % kScaleRunChunks;
  ChainNext next;
  next.w_src = g_weights +
               (static_cast<int64_t>(n0 / kFragRows + w_rb) * kb_count + static_cast<int64_t>(kt0) * Smem::kFbK) *
                   kFragBytes +
               w_chunk * 16;
  next.sc_src = g_scales +
                (static_cast<int64_t>(n0 / kFragRows + rb) * kb_count + static_cast<int64_t>(kt0) * Smem::kFbK) * SB +
                part * 16;
  next.k_tiles = (z + 1) * all / slices - kt0;
  (void)kRowRunBytes;
  return next;
}

// The grouped GEMM as one CTA per unit: grid (max_tiles, n / BW, S), tile = blockIdx.x.
template <class Tile, ExpertFormat F, bool kL1, bool kSplit = false, int kStreamMode = 0, bool kReferenceLoop = false>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinCtas) moe_grouped_gemm_kernel(const GroupedGemmParams p) {
  const int tile = blockIdx.x;
  // L1 launched with PDL after the fused top-k + dispatch (GroupedGemmParams::
  // programmatic_wait): the tile list is the dispatch's output, so wait for it first.
  if constexpr (kL1) {
    if (p.programmatic_wait) asm volatile("griddepcontrol.wait;\n" ::: "memory");
  }
  const int tile_total = *p.tile_count;
  if (tile >= tile_total) {
    if constexpr (!kL1 && Tile::BT == 8) {
      // Fused combine with no tile at all (every pick dropped, no shared expert): nobody
      // would count, so CTA (0, y) writes the combine's result, zeros, for its columns.
      if (p.combine_out != nullptr && tile_total == 0 && tile == 0 && blockIdx.z == 0) {
        constexpr int kChunks = Tile::BW / 8;
        for (int c = threadIdx.x; c < p.combine_tokens * kChunks; c += Tile::kThreads) {
          float4* o = reinterpret_cast<float4*>(p.combine_out + static_cast<int64_t>(c / kChunks) * p.n +
                                                blockIdx.y * Tile::BW + (c % kChunks) * 8);
          o[0] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          o[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
      }
    }
    return;
  }
  grouped_gemm_unit<Tile, F, kL1, kSplit, kStreamMode, kReferenceLoop>(p, tile, tile_total, GridUnit());
}

template <class Tile, ExpertFormat F, bool kL1, bool kSplit = false, int kStreamMode = 0, bool kReferenceLoop = false>
cudaError_t launch_grouped_gemm(const GroupedGemmParams& p) {
  constexpr bool kStream = kStreamMode != 0;
  using Smem = GemmSmem<Tile, F>;
  if (p.n % Tile::BW != 0 || p.k % Tile::BK != 0 || (kL1 && p.n % 16 != 0)) return cudaErrorInvalidValue;
  if (kStream && p.stream_weights == nullptr) return cudaErrorInvalidValue;  // kDecodeStream: launch_moe_stream_repack
  if constexpr (kSplit) {
    if (p.split_k < 2 || p.split_k > p.k / Tile::BK || p.split_k > 65535 || p.split_partials == nullptr ||
        p.split_done == nullptr || p.split_slots <= 0)
      return cudaErrorInvalidValue;  // split_k in [2, k / BK], workspace from moe_workspace
  }
  if (p.max_tiles <= 0) return cudaSuccess;
  auto kernel = moe_grouped_gemm_kernel<Tile, F, kL1, kSplit, kStreamMode, kReferenceLoop>;
  static bool configured = false;  // attribute set once per instantiation (idempotent)
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes);
    if (err != cudaSuccess) return err;
    if constexpr (Tile::WK > 1) {  // 2 CTAs x ~89 KB per SM: ask for the largest shared-memory carveout
      const cudaError_t carve =
          cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
      if (carve != cudaSuccess) return carve;
    }
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(p.max_tiles), static_cast<unsigned>(p.n / Tile::BW),
                  kSplit ? static_cast<unsigned>(p.split_k) : 1u);
  // PDL: L2 (kStream) may start before L1 ends, L1 before the dispatch ends (both wait in the kernel).
  if ((kL1 || kStream) && p.programmatic_wait)
    return launch_programmatic(kernel, grid, dim3(Tile::kThreads), Smem::kBytes, p.stream, p);
  kernel<<<grid, Tile::kThreads, Smem::kBytes, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe::detail

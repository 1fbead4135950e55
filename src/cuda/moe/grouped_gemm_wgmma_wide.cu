// TileConfig::kPrefillWgmmaWide (opt-in until measured): kPrefillWgmmaPipe's math with
// wgmma N = 256, so each dequantized A fragment feeds twice the FLOPs.
//
// Why: the pipelined kernel (N = 128) spends ~180 dequant ALU instructions per thread and
// stage on fragments that feed 8 HGMMA.64x128x16; the dequant per FLOP is its limiter
// (ncu, H200: tensor pipe 56% busy, issue slots 47%). Here a fragment feeds a 64x256x16.
//
// CTA = 2 consumer warpgroups (256 threads, __launch_bounds__(256, 1)) = BW 128 weight
// rows x BT 256 slots of one tile-list entry; the dispatch builds 256-slot tiles for this
// config (tile_config_rows(kPrefillWgmmaWide) = 256). Warpgroup wg owns weight rows
// [64 wg, 64 wg + 64), its warp w the m16 tile 4 wg + w (fragment block row n0 / 16 + warp).
// Per k16 step one `wgmma.m64n256k16` (rows > 128) or `m64n128k16` (rows <= 128: a lone or
// last partial tile) per warpgroup:
//   A (weights) from registers: load_frag_scale_words / wgmma_frag_block_overlapped of
//     grouped_gemm_wgmma.cuh (kPrefillWgmmaPipe's fragment layout, scale codes, BF16
//     roundings and dequant / wgmma overlap; its wgmma_m64nNk16_rs has the N = 256 form).
//   B (activations) from shared memory: one 64-wide K sub-block per stage, [BT][64] BF16
//     K-major, 128-byte swizzle (wgmma_layout.h: chunk c of slot row r at c ^ (r % 8)),
//     8-row groups 1024 B apart; 256 rows = 32 KB, 1024-aligned.
// Pipeline: STAGES = 6 smem slots of 64 K (36.5 KB each NVFP4: 32 KB activations + 4 KB
// weights + 512 B scales; 6 x 36.5 KB + 1 KB alignment = 220 KB of 227), filled by
// cp.async from all threads, one __syncthreads per stage. kPrefillWgmmaPipe's two-group
// overlap: a stage's 4 k16 steps are two wgmma groups of 2 steps with their own A
// registers (wait_group 1 before rewriting them), so at the barrier of stage kt only the
// two groups of kt - 1 may be in flight and the refill goes to the slot of kt - 2:
// prefetch distance STAGES - 2 = 4 stages (256 K; a stage here is half the pipelined
// kernel's FLOPs, so this is its 2-stage lookahead in time).
// Bytes per FLOP from L2 are 1.5x the pipelined kernel's (32 KB activations + 4 KB weights
// per 128 x 256 x 64; there 32 + 16 KB per 256 x 128 x 128): ~4.8 TB/s at 550 TFLOP/s.
// Loader: every per-thread source pointer, zero-fill size and swizzled destination is
// computed once before the k loop; a stage's copy is one 64-bit add + LDGSTS per chunk.
//   activations: thread tid copies chunk cc = tid % 8 of slot rows tid / 8 + 32 i,
//     i < 8 (the row's swizzle phase (tid / 8) % 8 is the same for all i, so the
//     destinations are dst0 + 4096 i);
//   weights: thread tid copies lane tid % 32 of m16 tile tid / 32 (what it reads back);
//   scales: threads < 8 x SB / 16 copy 16 bytes each.
// Per-element k order: k16 steps in increasing K, as kPrefillWgmmaPipe: expected bitwise
// equal to it (MoeGemmWide.* counts the identical elements).
// Epilogue: wgmma_tile_store (wgmma_epilogue_to_smem / store_out_tile: L1 SwiGLU, L2
// routing weight) into [BT][BW + 8] BF16 over the drained pipeline buffers (256 x 136 x 2
// = 68 KB).
#include <cuda_bf16.h>

#include "cuda/moe/grouped_gemm_wgmma.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {
namespace {

struct WideTile {
  static constexpr int kWarpgroups = 2;            // consumer warpgroups, one m64 slab each
  static constexpr int BW = 64 * kWarpgroups;      // weight rows per CTA
  static constexpr int BT = 256;                   // slots per CTA (wgmma N)
  static constexpr int kSubK = 64;                 // one 128-byte swizzle row = one fragment block
  static constexpr int BK = kSubK;                 // K per stage (one sub-block)
  static constexpr int STAGES = 6;
  static constexpr int kPrefetch = STAGES - 2;     // the two-group overlap (see the header)
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kM16 = BW / kFragRows;      // m16 tiles (= warps) per CTA
  static_assert(kSubK == kFragCols, "one fragment block per m16 tile and stage");
  static_assert(kM16 == kThreads / 32, "one m16 tile per warp");
  static_assert(kSubK * 2 == 128, "one 128-byte swizzle row of BF16 per slot");
};

template <ExpertFormat F>
struct WideSmem {
  using T = WideTile;
  static constexpr int SB = frag_scale_bytes(F);
  static constexpr int kActBytes = T::BT * T::kSubK * 2;               // per stage: [BT][64] swizzled, 32 KB
  static constexpr int kWeightBytes = T::kM16 * kFragBytes;            // per stage: [m16][lane][16 B], 4 KB
  static constexpr int kScaleBytes = T::kM16 * SB;                     // per stage: [m16][SB]
  static constexpr int kWeightOffset = T::STAGES * kActBytes;          // act slots first (1024-aligned)
  static constexpr int kScaleOffset = kWeightOffset + T::STAGES * kWeightBytes;
  static constexpr int kPipeBytes = kScaleOffset + T::STAGES * kScaleBytes;
  static constexpr int kOutStride = T::BW + 8;                         // BF16 per slot row
  static constexpr int kOutBytes = T::BT * kOutStride * 2;
  static constexpr int kAlign = 1024;                                  // 128-byte swizzle atom
  static constexpr int kBytes = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kAlign;
  static_assert(kActBytes % kAlign == 0, "swizzled stages stay 1024-aligned");
  static_assert(kWeightOffset % 16 == 0 && kScaleOffset % 16 == 0, "16-byte cp.async destinations");
  static_assert(kBytes <= 227 * 1024, "fits one SM");
};

// One CTA's tile (128 weight rows from n0 x the tile's `rows` <= 256 slots from slot0):
// main loop and epilogue with wgmma N = kN >= rows (the B tile's rows >= rows are
// zero-filled; rows >= kN are neither loaded nor read).
template <ExpertFormat F, bool kL1, int kN>
__device__ __forceinline__ void wide_tile(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr, int expert,
                                          int slot0, int rows, int n0) {
  using Tile = WideTile;
  using Smem = WideSmem<F>;
  constexpr int BW = Tile::BW, BT = Tile::BT, BK = Tile::BK;
  constexpr int STAGES = Tile::STAGES, kPrefetch = Tile::kPrefetch;
  constexpr int kThreads = Tile::kThreads;
  constexpr int SB = Smem::SB;
  static_assert(kN % 32 == 0 && kN <= BT, "wgmma N");
  const int K = p.k;
  const int kb_count = K / kFragCols;  // = k stages
  const int k_tiles = K / BK;

  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;  // warp = m16 tile of the CTA
  const int g = lane >> 2, t = lane & 3;

  // ---- per-thread copy plan, fixed for the whole k loop --------------------------------
  // Activations: chunk cc of slot rows r_i = r0 + 32 i (only the first kN rows: the rest
  // are never read). src advances by BK elements (128 bytes) per stage.
  constexpr int kChunksPerRow = BK / 8;                    // 8 x 16 bytes
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;   // 32 rows per i
  constexpr int kActIters = kN / kRowsPerPass;             // 8 (N 256) or 4 (N 128)
  static_assert(kN % kRowsPerPass == 0, "whole activation passes");
  static_assert(kRowsPerPass % 8 == 0, "swizzle phase constant over i");
  const int cc = tid % kChunksPerRow, r0 = tid / kChunksPerRow;
  const uint32_t act_dst0 = wgmma_act_offset(r0, cc);      // + 4096 i (= 32 rows x 128 B)
  const char* act_src[kActIters];                          // bytes of k stage 0
  int act_size[kActIters];                                 // 16, or 0: zero-fill (row >= rows)
  wgmma_act_rows<kL1, kActIters, kRowsPerPass>(p, slot0, rows, K, cc, r0, act_src, act_size);
  // Weights: lane (tid % 32) of m16 tile `warp` = exactly what the thread reads back.
  const char* w_src = reinterpret_cast<const char*>(p.weights) + static_cast<int64_t>(expert) * p.n * K / 2 +
                      (static_cast<int64_t>(n0 / kFragRows + warp) * kb_count) * kFragBytes + lane * 16;
  // Scales: 16-byte chunk `tid` of the stage's [m16][SB] (threads < kScaleChunks).
  constexpr int kScaleChunks = Tile::kM16 * SB / 16;
  static_assert(kScaleChunks <= kThreads, "one scale chunk per thread at most");
  const bool copies_scales = tid < kScaleChunks;
  const char* s_src = nullptr;
  {
    const int m16 = (tid % kScaleChunks) / (SB / 16), part = tid % (SB / 16);
    s_src = reinterpret_cast<const char*>(p.scales) +
            (static_cast<int64_t>(expert) * (p.n / kFragRows) + n0 / kFragRows + m16) * kb_count * SB + part * 16;
  }
  const uint32_t smem_act = smem_addr + act_dst0;
  const uint32_t smem_w = smem_addr + Smem::kWeightOffset + tid * 16;
  const uint32_t smem_s = smem_addr + Smem::kScaleOffset + (tid % kScaleChunks) * 16;

  auto load_stage = [&](int slot, int kt) {
    const int64_t act_step = static_cast<int64_t>(kt) * (BK * 2);
#pragma unroll
    for (int i = 0; i < kActIters; ++i)
      cp_async16_shared(smem_act + slot * Smem::kActBytes + i * (kRowsPerPass * 128), act_src[i] + act_step,
                        act_size[i]);
    cp_async16_shared(smem_w + slot * Smem::kWeightBytes, w_src + static_cast<int64_t>(kt) * kFragBytes);
    if (copies_scales) cp_async16_shared(smem_s + slot * Smem::kScaleBytes, s_src + static_cast<int64_t>(kt) * SB);
  };

  float acc[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) acc[i] = 0.0f;
  uint32_t a_pipe[2][2][4];  // A registers of the two in-flight groups [half][k16 step][4]

  cp_async_pipeline_prologue<kPrefetch>(k_tiles, load_stage);

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int slot = kt % STAGES;
    // Stage kt landed everywhere; at the barrier every warpgroup's wgmma of kt - 2 is done
    // (only kt - 1's groups may be in flight), so the refill goes to that slot.
    cp_async_pipeline_advance<STAGES, kPrefetch>(kt, k_tiles, load_stage);
    const uint8_t* s_w = smem + Smem::kWeightOffset + slot * Smem::kWeightBytes + warp * kFragBytes;
    const uint8_t* s_s = smem + Smem::kScaleOffset + slot * Smem::kScaleBytes + warp * SB;
    const uint4 w = *reinterpret_cast<const uint4*>(s_w + lane * 16);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    uint32_t scale_words[2];
    load_frag_scale_words<F>(s_s, g, scale_words);
    const uint64_t desc = wgmma_desc_sw128(smem_addr + slot * Smem::kActBytes);
    wgmma_frag_block_overlapped<F, kN>(acc, a_pipe, words, scale_words, desc);
  }
  wgmma_wait<0>();
  fence_acc(acc);
  wgmma_tile_store<kL1, kN, kN, kL1 ? BW / 2 : BW, Smem::kOutStride>(p, acc, smem, expert, rows, slot0, n0, warp, g, t,
                                                                     tid, kThreads);
}

template <ExpertFormat F, bool kL1>
__global__ void __launch_bounds__(WideTile::kThreads, 1) moe_grouped_gemm_wgmma_wide_kernel(const GroupedGemmParams p) {
  using Smem = WideSmem<F>;
  extern __shared__ uint8_t smem_raw[];
  uint32_t smem_addr;
  uint8_t* smem = align_dynamic_smem<Smem::kAlign>(smem_raw, smem_addr);

  // Weight-row blocks fastest (as kPrefillWgmmaPipe): the n / 128 CTAs of one tile run
  // together and share its activation tile in L2; an expert's tiles follow each other.
  const int tile = blockIdx.y;
  if (tile >= *p.tile_count) return;
  const int expert = p.tile_expert[tile];
  const int slot0 = p.tile_slot_begin[tile];
  const int rows = p.tile_row_count[tile];
  const int n0 = blockIdx.x * WideTile::BW;
  if (rows > WideTile::BT) __trap();  // a tile list cut for more than 256 slots per tile (bad input)
  // wgmma N: 256, or 128 for a tile of <= 128 rows (an expert's last or only tile).
  if (rows <= 128)
    wide_tile<F, kL1, 128>(p, smem, smem_addr, expert, slot0, rows, n0);
  else
    wide_tile<F, kL1, 256>(p, smem, smem_addr, expert, slot0, rows, n0);
}

template <ExpertFormat F, bool kL1>
cudaError_t launch_wide(const GroupedGemmParams& p) {
  using Smem = WideSmem<F>;
  if (p.n % WideTile::BW != 0 || p.k % WideTile::BK != 0 || p.k <= 0) return cudaErrorInvalidValue;  // n % 128, k % 64
  if (p.max_tiles <= 0) return cudaSuccess;
  if (p.max_tiles > 65535) return cudaErrorInvalidValue;  // grid.y
  auto kernel = moe_grouped_gemm_wgmma_wide_kernel<F, kL1>;
  static bool configured = false;  // attribute set once per instantiation (idempotent)
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(p.n / WideTile::BW), static_cast<unsigned>(p.max_tiles));
  kernel<<<grid, WideTile::kThreads, Smem::kBytes, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

// Tiles must hold <= 256 slots (the dispatch with tile_rows = tile_config_rows(kPrefillWgmmaWide)).
cudaError_t launch_wgmma_wide(const GroupedGemmParams& p, bool l1) {
  if (p.format == ExpertFormat::kNVFP4)
    return l1 ? launch_wide<ExpertFormat::kNVFP4, true>(p) : launch_wide<ExpertFormat::kNVFP4, false>(p);
  return l1 ? launch_wide<ExpertFormat::kMXFP4, true>(p) : launch_wide<ExpertFormat::kMXFP4, false>(p);
}

}  // namespace dsv4::cuda::moe::detail

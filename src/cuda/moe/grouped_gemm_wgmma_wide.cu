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
//   A (weights) from registers: dequant_frag_step / load_frag_scale_words of
//     grouped_gemm_wgmma.cuh (the same fragment layout, scale codes and BF16 roundings).
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
// Epilogue: wgmma_epilogue_to_smem / store_out_tile (L1 SwiGLU, L2 routing weight) into
// [BT][BW + 8] BF16 over the drained pipeline buffers (256 x 136 x 2 = 68 KB).
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

// D[64 x 256] += A[64 x 16] (registers, BF16) * B[16 x 256] (shared memory descriptor,
// K-major). scale-d is 1: the accumulator is zeroed before the first k step.
__device__ __forceinline__ void wgmma_m64n256k16_rs(float (&d)[128], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,"
      "%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
      "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,"
      "%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,"
      "%126,%127}, "
      "{%128, %129, %130, %131}, %132, p, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]),
        "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]),
        "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]),
        "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

template <int kN>
__device__ __forceinline__ void wide_wgmma(float (&d)[kN / 2], const uint32_t (&a)[4], uint64_t desc_b) {
  if constexpr (kN == 256)
    wgmma_m64n256k16_rs(d, a, desc_b);
  else
    wgmma_m64nNk16_rs<kN>(d, a, desc_b);
}

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
#pragma unroll
  for (int i = 0; i < kActIters; ++i) {
    const int r = r0 + kRowsPerPass * i;
    const bool valid = r < rows;
    const int64_t row = valid ? (kL1 ? p.slot_token[slot0 + r] : slot0 + r) : 0;
    act_src[i] = reinterpret_cast<const char*>(p.act + row * K + cc * 8);
    act_size[i] = valid ? 16 : 0;
  }
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

#pragma unroll
  for (int s = 0; s < kPrefetch; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int slot = kt % STAGES;
    cp_async_wait<kPrefetch - 1>();  // this thread's copies of stage kt landed
    fence_proxy_async_smem();        // ... and are visible to the async proxy (wgmma)
    // Everyone's copies of stage kt landed; every warpgroup's wgmma of kt - 2 done.
    __syncthreads();
    {
      // Refill the slot read by the wgmma of kt - 2 (only kt - 1's groups may be in flight).
      const int next = kt + kPrefetch;
      if (next < k_tiles) load_stage(next % STAGES, next);
      cp_async_commit();
    }
    const uint8_t* s_w = smem + Smem::kWeightOffset + slot * Smem::kWeightBytes + warp * kFragBytes;
    const uint8_t* s_s = smem + Smem::kScaleOffset + slot * Smem::kScaleBytes + warp * SB;
    const uint4 w = *reinterpret_cast<const uint4*>(s_w + lane * 16);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    uint32_t scale_words[2];
    load_frag_scale_words<F>(s_s, g, scale_words);
    const uint64_t desc = wgmma_desc_sw128(smem_addr + slot * Smem::kActBytes);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      uint32_t(&a)[2][4] = a_pipe[half];
      // The group that last read a_pipe[half] is the second most recent one.
      wgmma_wait<1>();
      dequant_frag_step<F>(words, scale_words, 2 * half, a[0]);
      dequant_frag_step<F>(words, scale_words, 2 * half + 1, a[1]);
      fence_acc(acc);
      wgmma_fence();
      wide_wgmma<kN>(acc, a[0], desc + 4 * half);      // k16 step 2 half: + 64 half bytes
      wide_wgmma<kN>(acc, a[1], desc + 4 * half + 2);  // step 2 half + 1
      wgmma_commit();
      fence_acc(acc);
    }
  }
  wgmma_wait<0>();
  fence_acc(acc);
  cp_async_wait<0>();
  __syncthreads();  // pipeline buffers are reused for the output tile

  __nv_bfloat16* s_out = reinterpret_cast<__nv_bfloat16*>(smem);  // [BT][kOutStride]
  wgmma_epilogue_to_smem<kL1, kN, Smem::kOutStride>(p, acc, s_out, expert, rows, slot0, warp, g, t);
  __syncthreads();
  store_out_tile<kL1, kN, kL1 ? BW / 2 : BW, Smem::kOutStride>(p, s_out, rows, slot0, n0, tid, kThreads);
}

template <ExpertFormat F, bool kL1>
__global__ void __launch_bounds__(WideTile::kThreads, 1) moe_grouped_gemm_wgmma_wide_kernel(const GroupedGemmParams p) {
  using Smem = WideSmem<F>;
  extern __shared__ uint8_t smem_raw[];
  // 1024-aligned base in the shared window (the swizzle pattern is address based).
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  uint8_t* smem = smem_raw + ((Smem::kAlign - (raw_addr & (Smem::kAlign - 1))) & (Smem::kAlign - 1));
  const uint32_t smem_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));

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

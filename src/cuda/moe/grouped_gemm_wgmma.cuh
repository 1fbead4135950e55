// Grouped W4A16 GEMM for MoE experts on Hopper tensor cores (sm_90a, wgmma BF16),
// the prefill path (TileConfig::kPrefillWgmma). Same contract as grouped_gemm.cuh:
// swap-AB (weight rows = M, slots = N), same packed weights (fragment.h), same
// epilogues (L1: clamped SwiGLU -> h [slots, I]; L2: * factor * routing weight ->
// slot_out [slots, H]).
//
// CTA = 4 warpgroups (512 threads) = BW 256 weight rows x BT 128 slots of one tile-list
// entry (256 rows: the BF16 activation tile, 4x the bytes of a weight row, is reused over
// more weight rows, which keeps the L2 -> SM traffic near 3 TB/s at 550 TFLOP/s); warpgroup
// wg owns weight rows [64 wg, 64 wg + 64), its warp w the m16 tile 4 wg + w. Per k step of
// 16 one `wgmma.m64n128k16` per warpgroup:
//   A (weights) from registers: the wgmma A register fragment of one warp (16 rows x
//     k16) is exactly the mma.m16n8k16 A fragment, so each lane's 16 bytes of a fragment
//     block dequantize (fragment.h decode x block scale) to the A registers of 4 k steps.
//   B (activations) from shared memory: per 64-wide K sub-block [BT][64] BF16, K
//     contiguous (K-major), one 128-byte row per slot, 128-byte swizzle (16-byte chunk c
//     of row r stored at chunk c ^ (r % 8)); 8-row groups 1024 bytes apart (SBO); sub-block
//     bases 1024-aligned; the k16 step s starts 32 s bytes in.
// Pipeline: STAGES smem slots filled by cp.async from all threads (activations gathered
// through slot_token for L1, contiguous for L2; weights/scales copied as stored),
// a stage = 2 sub-blocks of 64 K; one __syncthreads per stage. Two variants (template
// kPipe, see the kernel): kPrefillWgmma waits for each warpgroup's wgmma group
// (wait_group 0) before dequantizing the next sub-block into the same A registers
// (prefetch distance STAGES - 1); kPrefillWgmmaPipe splits a sub-block into two groups
// with their own A registers so dequant overlaps the warpgroup's own wgmma and groups
// stay in flight across the stage barrier (prefetch distance STAGES - 2); its tile is
// wgmma_tile_pipe in grouped_gemm_wgmma_pipe.cuh. (TMA + mbarrier producer warp, persistent
// CTAs: grouped_gemm_wgmma_tma.cu.)
#pragma once
#include <cuda_bf16.h>

#include "cuda/common/wgmma_sync.cuh"
#include "cuda/moe/grouped_gemm.cuh"
#include "cuda/moe/wgmma_layout.h"

namespace dsv4::cuda::moe::detail {

struct WgmmaTile {
  static constexpr int kWarpgroups = 4;            // consumer warpgroups, one m64 slab each
  static constexpr int BW = 64 * kWarpgroups;      // weight rows per CTA
  static constexpr int BT = 128;                   // slots per CTA (wgmma N)
  static constexpr int kSubK = 64;                 // one 128-byte swizzle row of BF16 = one fragment block
  static constexpr int kSubs = 2;                  // sub-blocks per stage
  static constexpr int BK = kSubK * kSubs;         // K per stage (one __syncthreads per stage)
  static constexpr int STAGES = 4;
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kMinCtas = 1;               // 512 threads x <= 128 registers
  static constexpr int kM16 = BW / kFragRows;      // m16 tiles (= warps) per CTA
  static_assert(kSubK == kFragCols, "one fragment block per m16 tile and sub-block");
  static_assert(kM16 == kThreads / 32, "one m16 tile per warp");
};

template <ExpertFormat F>
struct WgmmaSmem {
  using T = WgmmaTile;
  static constexpr int kSubActBytes = T::BT * T::kSubK * 2;            // [BT][64] swizzled, 16 KB
  static constexpr int kActBytes = T::kSubs * kSubActBytes;            // per stage: [sub][BT][64]
  static constexpr int kSubWeightBytes = T::kM16 * kFragBytes;         // [m16][lane][16 B]
  static constexpr int kWeightBytes = T::kSubs * kSubWeightBytes;      // per stage: [sub][m16][512]
  static constexpr int kSubScaleBytes = T::kM16 * frag_scale_bytes(F); // [m16][SB]
  static constexpr int kScaleBytes = T::kSubs * kSubScaleBytes;        // per stage: [sub][m16][SB]
  static constexpr int kWeightOffset = T::STAGES * kActBytes;          // act slots first (1024-aligned)
  static constexpr int kScaleOffset = kWeightOffset + T::STAGES * kWeightBytes;
  static constexpr int kPipeBytes = kScaleOffset + T::STAGES * kScaleBytes;
  static constexpr int kOutStride = T::BW + 8;                         // BF16 per slot row
  static constexpr int kOutBytes = T::BT * kOutStride * 2;
  static constexpr int kAlign = 1024;                                  // 128-byte swizzle atom
  static constexpr int kBytes = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kAlign;
  // kPrefillWgmmaPipe (grouped_gemm_wgmma_pipe.cuh) only: after the pipeline buffers, a
  // 16-byte dummy cp.async target (MXFP4 scale lanes with nothing to copy) and the per-warp
  // scale-pair scratch [stage parity 2][m16 16][kPairScratchWarpBytes].
  static constexpr int kPairScratchWarpBytes = 8 * T::kSubs * (F == ExpertFormat::kNVFP4 ? 4 : 2) * 4;  // [g][sub][pair]
  static constexpr int kDummyOffset = kPipeBytes;
  static constexpr int kPairScratchOffset = kPipeBytes + 16;
  static constexpr int kPipeKernelBytes = kPairScratchOffset + 2 * T::kM16 * kPairScratchWarpBytes > kOutBytes
                                              ? kPairScratchOffset + 2 * T::kM16 * kPairScratchWarpBytes + kAlign
                                              : kOutBytes + kAlign;
  static_assert(kSubActBytes % kAlign == 0, "swizzled sub-blocks stay 1024-aligned");
  static_assert(kSubActBytes == kWgmmaSubBytes && T::BT == kWgmmaSlots && T::kSubK == kWgmmaSubK, "wgmma_layout.h");
  static_assert(kBytes <= 227 * 1024 && kPipeKernelBytes <= 227 * 1024, "fits one SM");
};

// wgmma_fence / wgmma_commit / wgmma_wait<N>: cuda/common/wgmma_sync.cuh.
// 16-byte cp.async to a shared-window address (no generic -> shared conversion per copy);
// src_size 0 zero-fills the destination and reads nothing.
__device__ __forceinline__ void cp_async16_shared(uint32_t smem_addr, const void* gmem, int src_size) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem), "r"(src_size));
}
__device__ __forceinline__ void cp_async16_shared(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr), "l"(gmem));
}
// cp.async (generic proxy) writes -> visible to wgmma (async proxy) after a barrier.
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator reads/writes across wgmma waits.
template <int R>
__device__ __forceinline__ void fence_acc(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The dynamic shared memory rounded up to kAlign bytes (the 128-byte swizzle is address
// based: its 1024-byte atoms must start on 1024-byte shared-window addresses; the kernels
// ask for kAlign bytes more). Returns the generic pointer, smem_addr its shared address.
template <int kAlign>
__device__ __forceinline__ uint8_t* align_dynamic_smem(uint8_t* smem_raw, uint32_t& smem_addr) {
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  uint8_t* smem = smem_raw + ((kAlign - (raw_addr & (kAlign - 1))) & (kAlign - 1));
  smem_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return smem;
}

// The cp.async stage pipeline of the wgmma kernels fed by all threads: load_stage(slot, kt)
// issues this thread's copies of k stage kt into smem slot `slot`; one commit group per
// stage, empty past k_tiles, so that the wait counts below hold to the end.
// Prologue: stages 0 .. kPrefetch - 1 into slots 0 .. kPrefetch - 1.
template <int kPrefetch, class LoadStage>
__device__ __forceinline__ void cp_async_pipeline_prologue(int k_tiles, LoadStage& load_stage) {
#pragma unroll
  for (int s = 0; s < kPrefetch; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
}
// Top of k stage kt: waits for this thread's copies of stage kt, makes them visible to the
// async proxy (wgmma), then the barrier (everyone's copies landed; the caller's wgmma
// discipline says which older stages are done reading), then refills the slot of stage
// kt + kPrefetch - kStages (the one the caller guarantees free) with stage kt + kPrefetch.
template <int kStages, int kPrefetch, class LoadStage>
__device__ __forceinline__ void cp_async_pipeline_advance(int kt, int k_tiles, LoadStage& load_stage) {
  cp_async_wait<kPrefetch - 1>();
  fence_proxy_async_smem();
  __syncthreads();
  const int next = kt + kPrefetch;
  if (next < k_tiles) load_stage(next % kStages, next);
  cp_async_commit();
}

// D[64 x N] += A[64 x 16] (registers, BF16) * B[16 x N] (shared memory descriptor,
// K-major), N = 64, 96, 128 or 256 (the first N slot rows of the B tile; 256: the wide
// kernel). scale-d is 1: the accumulator is zeroed before the first k step.
template <int N>
__device__ __forceinline__ void wgmma_m64nNk16_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b) {
  static_assert(N == 64 || N == 96 || N == 128 || N == 256, "instantiated wgmma widths");
  if constexpr (N == 64) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
  }
  if constexpr (N == 96) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %53, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47}, "
        "{%48, %49, %50, %51}, %52, p, 1, 1, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
  }
  if constexpr (N == 128) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
  }
  if constexpr (N == 256) {
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
}

// A lane's scale words of one 64-K fragment block (group g = lane / 4) from the stage's
// scales s_s: NVFP4 8 bytes (two words), MXFP4 4 bytes (word 1 unused).
template <ExpertFormat F>
__device__ __forceinline__ void load_frag_scale_words(const uint8_t* s_s, int g, uint32_t (&scale_words)[2]) {
  if constexpr (F == ExpertFormat::kNVFP4) {
    const uint2 sw = *reinterpret_cast<const uint2*>(s_s + g * 8);
    scale_words[0] = sw.x;
    scale_words[1] = sw.y;
  } else {
    scale_words[0] = *reinterpret_cast<const uint32_t*>(s_s + g * 4);
    scale_words[1] = 0;
  }
}

// k16 step s of a 64-K fragment block (the lane's 4 words) -> the 4 A registers of the
// register-A wgmma fragment (BF16 pairs; scales of rows g and g + 8).
template <ExpertFormat F>
__device__ __forceinline__ void dequant_frag_step(const uint32_t (&words)[4], const uint32_t (&scale_words)[2], int s,
                                                  uint32_t (&a)[4]) {
  uint32_t scale_lo, scale_hi;  // rows g and g + 8
  if constexpr (F == ExpertFormat::kNVFP4) {
    scale_lo = scale_pair<F>(scale_words[s / 2], (s % 2) * 2);
    scale_hi = scale_pair<F>(scale_words[s / 2], (s % 2) * 2 + 1);
  } else {
    scale_lo = scale_pair<F>(scale_words[0], (s / 2) * 2);
    scale_hi = scale_pair<F>(scale_words[0], (s / 2) * 2 + 1);
  }
  a[0] = bf16x2_mul(frag_decode_bits(words[s], 0), scale_lo);
  a[1] = bf16x2_mul(frag_decode_bits(words[s], 1), scale_hi);
  a[2] = bf16x2_mul(frag_decode_bits(words[s], 2), scale_lo);
  a[3] = bf16x2_mul(frag_decode_bits(words[s], 3), scale_hi);
}

// The four k16 steps of one 64-K fragment block with dequant / wgmma overlap (the
// pipelined and the wide kernels): two wgmma groups of 2 steps with their own A
// registers a_pipe[half], each one: wait_group 1 (the group that last read a_pipe[half],
// the second most recent, is done) -> dequant -> fence -> 2 wgmma -> commit. desc: the
// block's B tile; k16 step s is + 32 s bytes (+ 2 s in the descriptor).
template <ExpertFormat F, int kN>
__device__ __forceinline__ void wgmma_frag_block_overlapped(float (&acc)[kN / 2], uint32_t (&a_pipe)[2][2][4],
                                                            const uint32_t (&words)[4], const uint32_t (&scale_words)[2],
                                                            uint64_t desc) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint32_t(&a)[2][4] = a_pipe[half];
    wgmma_wait<1>();
    dequant_frag_step<F>(words, scale_words, 2 * half, a[0]);
    dequant_frag_step<F>(words, scale_words, 2 * half + 1, a[1]);
    fence_acc(acc);
    wgmma_fence();
    wgmma_m64nNk16_rs<kN>(acc, a[0], desc + 4 * half);      // k16 step 2 half: + 64 half bytes
    wgmma_m64nNk16_rs<kN>(acc, a[1], desc + 4 * half + 2);  // step 2 half + 1
    wgmma_commit();
    fence_acc(acc);
  }
}

// The epilogue shared by the wgmma grouped GEMMs (wgmma, pipelined, TMA-fed, W4A8).
// One warp's accumulator fragment, as mma.m16n8k16 C per n8 tile j < kN / 8: acc[4 j + v]
// = weight row g + 8 (v >> 1) of m16 tile `warp`, slot 8 j + 2 t + (v & 1) -> s_out
// [slots][kOutStride] BF16. L1: rows g (gate) and g + 8 (up) are one intermediate column,
// 8 warp + g: silu(min(gate, limit)) * clamp(up, -limit, limit) with the expert's factors;
// L2: columns 16 warp + g (+ 8) times factor x the slot's routing weight (0 past `rows`).
template <bool kL1, int kN, int kOutStride>
__device__ __forceinline__ void wgmma_epilogue_to_smem(const GroupedGemmParams& p, const float (&acc)[kN / 2],
                                                       __nv_bfloat16* s_out, int expert, int rows, int slot0,
                                                       int warp, int g, int t) {
  if constexpr (kL1) {
    const float gate_factor = p.factor_a[expert], up_factor = p.factor_b[expert];
    const float limit = p.swiglu_limit;
    const int col = warp * 8 + g;
#pragma unroll
    for (int j = 0; j < kN / 8; ++j)
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        const int slot = j * 8 + 2 * t + v;
        const float gate = fminf(acc[4 * j + v] * gate_factor, limit);
        const float up = fminf(fmaxf(acc[4 * j + 2 + v] * up_factor, -limit), limit);
        s_out[slot * kOutStride + col] = __float2bfloat16_rn(silu(gate) * up);
      }
  } else {
    const float factor = p.factor_a[expert];
    const int col = warp * 16 + g;
#pragma unroll
    for (int j = 0; j < kN / 8; ++j)
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        const int slot = j * 8 + 2 * t + v;
        const float scale = slot < rows ? factor * p.slot_weight[slot0 + slot] : 0.0f;
        s_out[slot * kOutStride + col] = __float2bfloat16_rn(acc[4 * j + v] * scale);
        s_out[slot * kOutStride + col + 8] = __float2bfloat16_rn(acc[4 * j + 2 + v] * scale);
      }
  }
}

// s_out rows [0, rows) (of BT, kOutCols BF16 each, stride kOutStride) -> p.out rows slot0 + r,
// columns from n0 (L1: n0 / 2, the intermediate column), in 16-byte chunks by `threads`
// threads starting at `tid`.
template <bool kL1, int BT, int kOutCols, int kOutStride>
__device__ __forceinline__ void store_out_tile(const GroupedGemmParams& p, const __nv_bfloat16* s_out, int rows,
                                               int slot0, int n0, int tid, int threads) {
  const int out_stride = kL1 ? p.n / 2 : p.n;
  const int out_col0 = kL1 ? n0 / 2 : n0;
  constexpr int kOutChunks = kOutCols / 8;
  for (int c = tid; c < BT * kOutChunks; c += threads) {
    const int r = c / kOutChunks, cc = c % kOutChunks;
    if (r < rows)
      *reinterpret_cast<uint4*>(p.out + static_cast<int64_t>(slot0 + r) * out_stride + out_col0 + cc * 8) =
          *reinterpret_cast<const uint4*>(s_out + r * kOutStride + cc * 8);
  }
}

// The end of a wgmma tile whose k loop is done (accumulator waited and fenced): drains
// this thread's cp.async groups (all landed or empty), then, past the barrier, writes the
// tile through shared memory over the pipeline buffers: acc -> s_out [kTileSlots]
// [kOutStride] BF16 (wgmma_epilogue_to_smem) -> out rows [0, rows) (store_out_tile).
template <bool kL1, int kN, int kTileSlots, int kOutCols, int kOutStride>
__device__ __forceinline__ void wgmma_tile_store(const GroupedGemmParams& p, const float (&acc)[kN / 2], uint8_t* smem,
                                                 int expert, int rows, int slot0, int n0, int warp, int g, int t,
                                                 int tid, int threads) {
  cp_async_wait<0>();
  __syncthreads();  // pipeline buffers are reused for the output tile
  __nv_bfloat16* s_out = reinterpret_cast<__nv_bfloat16*>(smem);  // [kTileSlots][kOutStride]
  wgmma_epilogue_to_smem<kL1, kN, kOutStride>(p, acc, s_out, expert, rows, slot0, warp, g, t);
  __syncthreads();
  store_out_tile<kL1, kTileSlots, kOutCols, kOutStride>(p, s_out, rows, slot0, n0, tid, threads);
}

// One thread's activation rows of a wgmma tile's copy plan (kPrefillWgmma, its pipe and
// wide variants): 16-byte chunk cc of slot rows r0 + kRowsPerPass i (i < kPasses) of the
// tile's B operand. src[i]: that chunk at k 0 (L1 gathers x rows through slot_token, L2
// reads h rows slot0 + r; K = p.k elements per row); size[i]: 16, or 0 for a row past the
// tile's `rows` (cp.async zero-fill, nothing read).
template <bool kL1, int kPasses, int kRowsPerPass>
__device__ __forceinline__ void wgmma_act_rows(const GroupedGemmParams& p, int slot0, int rows, int K, int cc, int r0,
                                               const char* (&src)[kPasses], int (&size)[kPasses]) {
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int r = r0 + kRowsPerPass * i;
    const bool valid = r < rows;
    const int64_t row = valid ? (kL1 ? p.slot_token[slot0 + r] : slot0 + r) : 0;
    src[i] = reinterpret_cast<const char*>(p.act + row * K + cc * 8);
    size[i] = valid ? 16 : 0;
  }
}

// TileConfig::kPrefillWgmma's tile: each warpgroup waits for its wgmma group before the
// next dequant (prefetch distance STAGES - 1). kPrefillWgmmaPipe's overlapped design
// (two groups of 2 k16 steps with their own A registers, groups in flight across the
// stage barrier, prefetch distance STAGES - 2) is wgmma_tile_pipe
// (grouped_gemm_wgmma_pipe.cuh); its group pattern alone is wgmma_frag_block_overlapped
// (above; the wide kernel's).
//
// One CTA's tile: main loop and epilogue with wgmma N = kN (kN >= rows; kPrefillWgmma
// always 128).
template <ExpertFormat F, bool kL1, int kN>
__device__ __forceinline__ void wgmma_tile(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr, int expert,
                                           int slot0, int rows, int n0) {
  using Tile = WgmmaTile;
  using Smem = WgmmaSmem<F>;
  constexpr int BW = Tile::BW, BT = Tile::BT, BK = Tile::BK, SUBK = Tile::kSubK, SUBS = Tile::kSubs;
  constexpr int STAGES = Tile::STAGES;
  constexpr int kPrefetch = STAGES - 1;  // stages in flight ahead of the one computed
  static_assert(kPrefetch >= 1, "at least one stage ahead");
  constexpr int kThreads = Tile::kThreads;
  constexpr int SB = frag_scale_bytes(F);
  const int K = p.k;
  const int kb_count = K / kFragCols;
  const int k_tiles = K / BK;

  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;  // warp = m16 tile of the CTA (warpgroup warp / 4)
  const int g = lane >> 2, t = lane & 3;

  // Copy plan of this thread, fixed for the whole k loop (a stage's copy is then a 64-bit
  // add and the cp.async). Activations: chunk cc = tid % 8 of slot rows r0 = tid / 8 + 64
  // pass (pass < 2), in both sub-blocks (the same rows 64 K = 128 bytes further on). The
  // swizzle phase r % 8 is the same for every pass, so the destinations are
  // dst0 + sub x 16 KB + pass x 8 KB. Rows >= rows are zero-filled (src_size 0).
  constexpr int kChunksPerRow = SUBK / 8;                  // 8 x 16 bytes = one 128-byte swizzle row
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;   // 64
  constexpr int kPasses = BT / kRowsPerPass;               // 2
  static_assert(BT % kRowsPerPass == 0 && kRowsPerPass % 8 == 0, "whole passes, swizzle phase constant over passes");
  const int cc = tid % kChunksPerRow, r0 = tid / kChunksPerRow;
  const char* act_src[kPasses];  // bytes of the chunk at k 0
  int act_size[kPasses];         // 16, or 0: zero-fill
  wgmma_act_rows<kL1, kPasses, kRowsPerPass>(p, slot0, rows, K, cc, r0, act_src, act_size);
  const uint32_t smem_act = smem_addr + wgmma_act_offset(r0, cc);
  // Weights: thread tid copies lane (tid % 32) of m16 tile tid / 32 = exactly what it reads.
  // [experts][n/16][k/64][512]: fragment block (n0 / 16 + warp, kb).
  const char* w_src = reinterpret_cast<const char*>(p.weights) + static_cast<int64_t>(expert) * p.n * K / 2 +
                      static_cast<int64_t>(n0 / kFragRows + warp) * kb_count * kFragBytes + lane * 16;
  const uint32_t smem_w = smem_addr + Smem::kWeightOffset + tid * 16;
  // Scales: 16-byte chunk tid of a sub-block's [m16][SB] (threads < kScaleChunksPerSub).
  constexpr int kScaleChunksPerSub = Tile::kM16 * SB / 16;
  static_assert(kScaleChunksPerSub <= kThreads, "one scale chunk per thread at most");
  const bool copies_scales = tid < kScaleChunksPerSub;
  const int scale_chunk = tid % kScaleChunksPerSub;
  const char* s_src = reinterpret_cast<const char*>(p.scales) +
                      (static_cast<int64_t>(expert) * (p.n / kFragRows) + n0 / kFragRows + scale_chunk / (SB / 16)) *
                          kb_count * SB +
                      (scale_chunk % (SB / 16)) * 16;
  const uint32_t smem_s = smem_addr + Smem::kScaleOffset + scale_chunk * 16;

  auto load_stage = [&](int slot, int kt) {
    const int64_t act_k = static_cast<int64_t>(kt) * (BK * 2);  // bytes
#pragma unroll
    for (int sub = 0; sub < SUBS; ++sub)
#pragma unroll
      for (int pass = 0; pass < kPasses; ++pass)
        cp_async16_shared(smem_act + slot * Smem::kActBytes + sub * Smem::kSubActBytes + pass * (kRowsPerPass * 128),
                          act_src[pass] + act_k + sub * (SUBK * 2), act_size[pass]);
#pragma unroll
    for (int sub = 0; sub < SUBS; ++sub) {
      const int64_t kb = static_cast<int64_t>(kt) * SUBS + sub;  // fragment block column
      cp_async16_shared(smem_w + slot * Smem::kWeightBytes + sub * Smem::kSubWeightBytes, w_src + kb * kFragBytes);
      if (copies_scales) cp_async16_shared(smem_s + slot * Smem::kScaleBytes + sub * Smem::kSubScaleBytes, s_src + kb * SB);
    }
  };

  static_assert(kN % 32 == 0 && kN <= BT, "wgmma N");
  float acc[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) acc[i] = 0.0f;

  cp_async_pipeline_prologue<kPrefetch>(k_tiles, load_stage);

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int slot = kt % STAGES;
    // Stage kt landed everywhere; at the barrier every warpgroup's wgmma of kt - 1 is done,
    // so the refill goes to that slot.
    cp_async_pipeline_advance<STAGES, kPrefetch>(kt, k_tiles, load_stage);
#pragma unroll
    for (int sub = 0; sub < SUBS; ++sub) {
      const uint8_t* s_w = smem + Smem::kWeightOffset + slot * Smem::kWeightBytes + sub * Smem::kSubWeightBytes +
                           warp * kFragBytes;
      const uint8_t* s_s = smem + Smem::kScaleOffset + slot * Smem::kScaleBytes + sub * Smem::kSubScaleBytes + warp * SB;
      const uint4 w = *reinterpret_cast<const uint4*>(s_w + lane * 16);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
      uint32_t scale_words[2];
      load_frag_scale_words<F>(s_s, g, scale_words);
      const uint64_t desc = wgmma_desc_sw128(smem_addr + slot * Smem::kActBytes + sub * Smem::kSubActBytes);
      // Dequantizes k16 step s of the sub-block into 4 A registers.
      auto dequant_step = [&](int s, uint32_t (&a)[4]) { dequant_frag_step<F>(words, scale_words, s, a); };
      uint32_t a[4][4];
#pragma unroll
      for (int s = 0; s < 4; ++s) dequant_step(s, a[s]);
      fence_acc(acc);  // accumulator writes (the zero fill) stay before the fence
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < 4; ++s) wgmma_m64nNk16_rs<kN>(acc, a[s], desc + 2 * s);  // + 32 bytes per k16 step
      wgmma_commit();
      // Wait for this warpgroup's group: its A registers are rewritten by the next
      // dequant (PTX: A-fragment registers of an in-flight wgmma must not be written), and
      // the stage's smem slot is refilled after the next barrier. The other warpgroups'
      // wgmma keep the tensor cores busy meanwhile.
      wgmma_wait<0>();
      fence_acc(acc);  // ... and accumulator reads after the wait
    }
  }
  wgmma_tile_store<kL1, kN, BT, kL1 ? BW / 2 : BW, Smem::kOutStride>(p, acc, smem, expert, rows, slot0, n0, warp, g, t,
                                                                     tid, kThreads);
}


// kPrefillWgmmaPipe's tile (the overlapped design, fewer instructions per stage):
// grouped_gemm_wgmma_pipe.cuh, included by grouped_gemm_wgmma_pipe.cu, the one TU that
// instantiates the kernel with kPipe = true.
template <ExpertFormat F, bool kL1, int kN>
__device__ __forceinline__ void wgmma_tile_pipe(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr,
                                                int tile, int expert, int slot0, int rows, int n0);

template <ExpertFormat F, bool kL1, bool kPipe>
__global__ void __launch_bounds__(WgmmaTile::kThreads, WgmmaTile::kMinCtas)
    moe_grouped_gemm_wgmma_kernel(const GroupedGemmParams p) {
  using Smem = WgmmaSmem<F>;
  constexpr int BW = WgmmaTile::BW;
  extern __shared__ uint8_t smem_raw[];
  uint32_t smem_addr;
  uint8_t* smem = align_dynamic_smem<Smem::kAlign>(smem_raw, smem_addr);

  // Weight-row blocks fastest: the n / 256 CTAs of one tile run together, so its
  // activation tile comes from HBM once and is re-read from L2 (the tile-fastest order of
  // the decode kernel would stream every activation tile n / 256 times from HBM at prefill
  // sizes), and the tiles of one expert follow each other, sharing its weights in L2.
  const int tile = blockIdx.y;
  if (tile >= *p.tile_count) return;
  const int expert = p.tile_expert[tile];
  const int slot0 = p.tile_slot_begin[tile];
  const int rows = p.tile_row_count[tile];
  const int n0 = blockIdx.x * BW;
  if constexpr (kPipe) {
    // wgmma N = the tile's rows rounded up to 64 / 96 / 128 (a partial tile, e.g. an
    // expert's last one, costs tensor time for its rows only; the B tile is loaded whole).
    if (rows <= 64)
      wgmma_tile_pipe<F, kL1, 64>(p, smem, smem_addr, tile, expert, slot0, rows, n0);
    else if (rows <= 96)
      wgmma_tile_pipe<F, kL1, 96>(p, smem, smem_addr, tile, expert, slot0, rows, n0);
    else
      wgmma_tile_pipe<F, kL1, 128>(p, smem, smem_addr, tile, expert, slot0, rows, n0);
  } else {
    wgmma_tile<F, kL1, 128>(p, smem, smem_addr, expert, slot0, rows, n0);
  }
}

template <ExpertFormat F, bool kL1, bool kPipe>
cudaError_t launch_grouped_gemm_wgmma(const GroupedGemmParams& p) {
  using Smem = WgmmaSmem<F>;
  if (p.n % WgmmaTile::BW != 0 || p.k % WgmmaTile::BK != 0) return cudaErrorInvalidValue;  // n % 256, k % 128
  if (p.max_tiles <= 0) return cudaSuccess;
  auto kernel = moe_grouped_gemm_wgmma_kernel<F, kL1, kPipe>;
  constexpr int kSmemBytes = kPipe ? Smem::kPipeKernelBytes : Smem::kBytes;
  static bool configured = false;  // attribute set once per instantiation (idempotent)
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  if (p.max_tiles > 65535) return cudaErrorInvalidValue;  // grid.y; ~1.2M tokens at top-6 + shared
  const dim3 grid(static_cast<unsigned>(p.n / WgmmaTile::BW), static_cast<unsigned>(p.max_tiles));
  kernel<<<grid, WgmmaTile::kThreads, kSmemBytes, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe::detail

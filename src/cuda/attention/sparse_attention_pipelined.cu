// Sparse MQA attention with sinks on Hopper wgmma, warp-specialized and pipelined
// (issue 6; SparseAttentionParams::Kernel::kWgmmaPipelined, opt-in). Same contract,
// key list, math and roundings as the kWgmmaShareP kernel of sparse_attention_wgmma.cu
// (read its header first: the Q / tile swizzle, the fragment layouts and the share-P
// scheme are the same); what differs:
//   384 threads = 3 warpgroups. Warpgroups 0 and 1 are the consumers (Q staging, S,
//   softmax, P V: the share-P math, consumer g taking keys [24 g, 24 g + 24) of a tile
//   for S and O columns [256 g, 256 g + 256)); warpgroup 2 is the producer: it only
//   gathers key tiles with cp.async into a ring of kStages = 3 stages. setmaxnreg gives
//   the consumers 224 registers and the producer 56 (128 x 56 + 256 x 224 = 3 x 128 x 168,
//   what the launch gave). A producer thread gathers 3 rows x 8 chunks of a tile; its 3
//   kSelected index loads for tile i + 1 are issued before it waits for tile i's stage.
//   Tiles of kTileKeys = 48 keys x 512 (48 KiB) so 3 stages fit with Q (64 KiB) and
//   P (8 KiB): 216 KiB. Two tiles (96 KiB) are in flight while the consumers work on a
//   third, instead of one 64 KiB tile.
//   Stage s has two mbarriers: full[s] (256 arrivals: each producer thread's
//   cp.async.mbarrier.arrive.noinc, which fires once its cp.asyncs of the tile have
//   landed, plus an ordinary arrive releasing its st.shared of the tile's valid[] flags)
//   and empty[s] (256 arrivals: every consumer thread after its P V wgmma of the stage
//   completed). Consumers sync with each other on named barrier 1 (256 threads), never
//   with the producer. A consumer issues fence.proxy.async after its wait on full[s]
//   (cp.async writes are generic-proxy, wgmma reads are async-proxy).
//   Every mbarrier wait is bounded: after 2^32 clocks (~2 s) the kernel traps (a pipeline
//   bug becomes a launch error, not a hang).
//   Q: the consumers stage the FP32 q (rounded) into the panel, or with
//   SparseAttentionParams::q_bf16 the producer copies the BF16 q there by cp.async before
//   its first tile (a "q full" mbarrier, 128 cp.async arrivals; produce_q / start_consumers).
//   The producer, the ring constants and helpers, the Q staging and the epilogue live in
//   sparse_attention_ring.cuh (shared with kWgmmaPingPong, sparse_attention_pingpong.cu).
// Tile layout: like a Q panel but 48 rows per 64-channel column block (block b at
// b * 6144 bytes, row r at r * 128, chunk c at c ^ (r % 8)); S's B descriptor starts at
// row 24 g (a multiple of 8 rows: whole swizzle atoms); P V's MN-major V has LBO 6144.
// Not done here (see docs/kernels/attention.md): issuing S of tile i + 1 before the
// softmax of tile i (tried: ptxas C7512, every wgmma serialized for lack of registers,
// at 224 / 232 / 240 consumer registers; sparse_attention_pingpong.cu found that a
// __trap() path in the consumer code, as in these waits, keeps ptxas at the launch's 168
// registers whatever setmaxnreg says), and HCA CTAs of 2 tokens sharing the compressed
// tiles.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/sparse_attention_ring.cuh"
#include "cuda/attention/sparse_attention_wgmma_common.cuh"
#include "cuda/attention/kv_fp8.h"

namespace dsv4::cuda::attention {

namespace {

using namespace sparse_wgmma;  // kHeads, kDim, kBlockBytes, wgmma / smem helpers, key_row, store_output
using namespace sparse_ring;   // ring shape, mbarrier helpers, tile addressing, the producer warpgroup

constexpr int kHalfKeys = kTileKeys / 2;  // S's N per consumer warpgroup
constexpr int kPBytes = kHeads * 64 * 2;  // P [64 heads x 64 key slots] BF16 (48 used)
constexpr int kSmemBytes = kPanelBytes + kStages * kTileBytes + kPBytes + 1024;  // + 1024-byte alignment slack
static_assert((kHalfKeys % 8) == 0, "S's B operand must start at whole swizzle atoms");

// D[64 x 24] (+)= A[64 x 16] B[16 x 24], both from shared memory, K-major.
__device__ __forceinline__ void wgmma_m64n24k16_ss(float (&d)[12], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %14, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n24k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11}, %12, %13, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// grid (tokens, heads / 64, splits), block 384, dynamic smem kSmemBytes. kFp8:
// SparseAttentionParams::kv_fp8 (the producer decodes FP8 rows instead of cp.async).
template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) sparse_attention_pipelined_kernel(const SparseAttentionParams p,
                                                                                 int splits, float* part_o,
                                                                                 float* part_ml) {
  extern __shared__ uint8_t smem_raw[];
  allow_dependent_launch();  // the split merge (PDL) may be scheduled once every CTA runs
  __shared__ bool s_valid[kStages][kTileKeys];
  __shared__ float s_xchg[2][kHeads];  // per consumer warpgroup: row maxima of a tile / final row sums
  __shared__ uint64_t s_bars[2 * kStages + 1];  // full[0..2], empty[0..2], q full (q_bf16)
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t s_q = smem_u32(smem);
  const uint32_t s_tiles = s_q + kPanelBytes;
  const uint32_t s_p = s_tiles + kStages * kTileBytes;  // 1024-aligned
  const uint32_t bar_full = smem_u32(&s_bars[0]), bar_empty = smem_u32(&s_bars[kStages]);
  const uint32_t bar_q = smem_u32(&s_bars[2 * kStages]);

  const int token = blockIdx.x, head0 = blockIdx.y * kHeads, split = blockIdx.z;
  const KeyList keys = key_list(p, token);
  const auto [tile_begin, tile_end] = split_tiles(keys, splits, split);
  init_ring_barriers(bar_full, bar_empty, bar_q);

  if (threadIdx.x >= kConsumerThreads) {
    // ---- producer warpgroup ----
    produce_tiles<kFp8>(p, keys, token, head0, tile_begin, tile_end, s_q, s_tiles, bar_full, bar_empty, bar_q,
                        s_valid);
    return;
  }

  // ---- consumer warpgroups ----
  start_consumers(p, token, head0, smem, bar_q);
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int row0 = warp * 16 + (lane >> 2);  // this thread's rows row0, row0 + 8 (heads head0 + row)

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  // Per row (0: row0, 1: row0 + 8): running max m (log2 domain, -inf before any key,
  // the same in both warpgroups) and this thread's partial row sum l of its own keys.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float scale_log2 = p.scale * kLog2e;

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int it = tile - tile_begin, stage = it % kStages;
    mbar_wait(bar_full + 8 * stage, (it / kStages) & 1);
    __syncwarp();         // the warp converged again before the .aligned wgmma instructions
    fence_proxy_async();  // the tile's cp.async writes -> this thread's wgmma reads
    const uint32_t s_k = s_tiles + stage * kTileBytes;

    // S for this warpgroup's 24 keys: rows 24 wg.. of every column block of the tile.
    float s[12];
#pragma unroll
    for (int i = 0; i < 12; ++i) s[i] = 0.0f;
    fence_regs(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
      wgmma_m64n24k16_ss(s, make_desc(s_q + (kk >> 2) * kBlockBytes + (kk & 3) * 32, 16, 1024),
                         make_desc(s_k + wg * kHalfKeys * 128 + (kk >> 2) * kTileBlockBytes + (kk & 3) * 32, 16, 1024),
                         kk);
    }
    wgmma_commit();
    wgmma_wait_all();
    fence_regs(s);

    // This thread: rows row0, row0 + 8 x keys 24 wg + 8 j + 2 (lane % 4) + 0/1, j < 3.
    float tile_max[2];
    scale_mask_max(s, &s_valid[stage][kHalfKeys * wg], lane & 3, scale_log2, tile_max);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tile_max[h] = quad_max(tile_max[h]);
      if ((lane & 3) == 0) s_xchg[wg][row0 + 8 * h] = tile_max[h];
    }
    // Both halves' maxima. Also orders this tile's P writes after the other warpgroup's
    // P V of the previous tile (it reaches this barrier only after that wgmma's wait),
    // and the next tile's s_xchg writes come after the P barrier below, which the other
    // warpgroup reaches only after reading this tile's maxima.
    consumer_sync();
    float alpha[2], m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      alpha[h] = advance_max(m[h], fmaxf(m[h], fmaxf(tile_max[h], s_xchg[wg ^ 1][row0 + 8 * h])), m_use[h]);
    }
    float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < 3; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t packed = softmax_pair(s[4 * j + 2 * h], s[4 * j + 2 * h + 1], m_use[h], row_sum[h]);
        // P[row][key]: 16-byte chunk 3 wg + j of the row (swizzled), 4 bytes per lane % 4.
        const int row = row0 + 8 * h;
        st_shared_u32(s_p + row * 128 + (((3 * wg + j) ^ (row & 7)) << 4) + 4 * (lane & 3), packed);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) l[h] = l[h] * alpha[h] + row_sum[h];
    rescale_o(o, alpha);
    fence_proxy_async();  // P (st.shared) -> the wgmma's async-proxy reads
    consumer_sync();      // both halves of P written

    issue_pv(o, s_p, s_k, wg);
    wgmma_wait_all();
    fence_regs(o);
    mbar_arrive(bar_empty + 8 * stage);  // this thread is done with the stage
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] = quad_sum(l[h]);
  // Each warpgroup summed its own keys: add the other's (the other warpgroup read the
  // last maxima before the last P barrier, which this one passed).
#pragma unroll
  for (int h = 0; h < 2; ++h)
    if ((lane & 3) == 0) s_xchg[wg][row0 + 8 * h] = l[h];
  consumer_sync();
#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] += s_xchg[wg ^ 1][row0 + 8 * h];
  store_output(p, token, head0, split, part_o, part_ml, o, m, l);
}

}  // namespace

namespace detail {

cudaError_t launch_sparse_attention_pipelined(const SparseAttentionParams& p, int splits, cudaStream_t stream) {
  static bool attribute_set[2][64] = {};  // this kernel's own (per device and instance)
  static constexpr RingKernel kernels[2] = {sparse_attention_pipelined_kernel<false>,  // BF16 KV
                                            sparse_attention_pipelined_kernel<true>};  // kv_fp8
  return launch_ring_kernel(p, splits, stream, kernels, kSmemBytes, attribute_set);
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

// Sparse MQA attention with sinks on Hopper wgmma, S computed by the two consumer
// warpgroups in turn (SparseAttentionParams::Kernel::kWgmmaPingPong, opt-in). Same
// contract, key list, producer warpgroup, 48-key tile ring (full / empty mbarriers,
// kStages = 3; sparse_attention_ring.cuh), math and roundings as kWgmmaPipelined
// (sparse_attention_pipelined.cu: read its header first); what differs is how the two
// consumer warpgroups share a tile:
//   Scorer: warpgroup w scores the tiles i with i % 2 == w (i counted from the CTA's
//   first tile): S for all 48 keys (HGMMA 64x48x16 SS, 32 k16 steps), the online softmax
//   for every row (no row-max exchange), P (BF16) into P[i % 2] and the tile's row
//   stats. O stays split by columns (warpgroup g owns O columns [256 g, 256 g + 256)), so
//   both warpgroups run P V (3 x HGMMA 64x256x16) for every tile.
//   Overlap: warpgroup w issues S(j) of its next tile, then (while it runs) takes the
//   other warpgroup's tile j - 1: waits for its P, rescales O, issues P V(j - 1); only
//   then waits for both. The tensor core has S(j) and P V(j - 1) queued while the other
//   warpgroup does its softmax, and the other warpgroup's S(j + 1) while this one does.
// Shared memory: Q 64 KiB + 3 stages x 48 KiB + P[2] (8 KiB each, 64 heads x 64 key slots,
//   48 used, the layout of the pipelined kernel's P) = 224 KiB + 1 KiB alignment slack
//   (dynamic); static: valid flags, s_m[2][64] (the row maxima m_i of the last tile of
//   each parity) and the mbarriers. The per-thread partial row sums of a tile (two rows x
//   two 24-key halves, see below) live in the 32 bytes of each P row past key 48 (chunks
//   6 and 7, which no wgmma reads): row r's 4 quad lanes store a float2 each.
// Row stats and exact equality with kWgmmaPipelined: the pipelined kernel's thread of
//   warpgroup g keeps a partial row sum l_g of its 24 keys of every tile
//   (l_g = l_g alpha + rowsum_g), the quad-sum then l_0 + l_1 at the end. Here every
//   consumer thread keeps both l_0 and l_1 of its two rows (the scorer publishes its
//   rowsum_0 / rowsum_1; the other warpgroup's thread with the same (warp, lane) holds
//   the same rows and key columns), and alpha_i = exp2(m_{i-1} - m_i) is recomputed from
//   the published m_i by the same instructions, so m, l, P and O are the pipelined
//   kernel's values bit for bit (S for 48 keys in one wgmma has the same k order per
//   element as the two 24-key halves).
// Named barriers (256 threads = both consumer warpgroups; 1 is the Q / consumer sync):
//   READY[par] = 2 + par: the scorer bar.arrives after P_i, its row sums, m_i and
//     fence.proxy.async; the other warpgroup bar.syncs before reading them.
//   FREE[par] = 4 + par: the non-scorer of tile i bar.arrives after its P V(i) completed
//     and it read the stats of i (only when a tile i + 2 exists); the scorer of i + 2
//     bar.syncs before overwriting P / stats of that parity.
//   Every consumer thread arrives on empty[stage] after its own P V of the stage
//   completed (256 arrivals, as in the pipelined kernel). The non-scorer also waits on
//   full[stage] (already complete: the stage cannot refill before its own arrival)
//   and fences for its own wgmma reads of the tile.
// Loop of warpgroup w over j = w, w + 2, ... < n (tile 0 of warpgroup 0 peeled: nothing
//   to take), then the other warpgroup's last tile if it has one (consume_tiles).
// Persistent (Kernel::kWgmmaPingPongPersistent, opt-in; q_bf16 required): grid
//   min(items, SMs), items = tokens x heads / 64 x splits, item i = (token i % tokens,
//   head group, split) as the one-item kernel's blockIdx (x, y, z) (work_item); CTA b
//   takes items b, b + gridDim.x, ... Per item exactly the one-item kernel's tiles,
//   math (consume_tiles, shared) and store_output, so outputs and split partials are
//   bitwise kWgmmaPingPong's; the merge is unchanged. Both roles walk the same items
//   and compute each item's tile count n from key_list / split_tiles identically, so
//   they agree on the CTA-global ring tile counter g (tiles of earlier items + local j).
//   Producer per item (produce_items): picks of its first tile, wait q empty (phase
//   c - 1 for the c-th item, c > 0), the Q copy (produce_q, q full phase c), then its
//   tiles into the ring (empty waits as before), so the next item's Q copy and first
//   gathers run while the consumers finish this item's last tiles and its epilogue.
//   Consumers per item: wait q full (phase c & 1, mbar_wait_no_trap), consume_tiles with
//   g0 = g, the item-end consumer_sync (bar 1, 256 threads), then row_sums and
//   store_output (the next item's first S may start while the other warpgroup still
//   stores: the epilogue touches no shared memory).
//   Hazards, and what covers them:
//   - Q panel WAR (producer's next Q copy vs the consumers' S reads): q empty, an
//     mbarrier of 256 consumer arrivals per item; each thread arrives once, after the
//     wgmma_wait of its warpgroup's last S of the item (j + 2 >= n), or at once when its
//     warpgroup scores no tile (n <= wg: n == 0, or n == 1 for warpgroup 1). The S reads
//     are complete at the wait (the ring's empty[] pattern: async-proxy reads, then the
//     arrival, then the producer's cp.async writes).
//   - q full / q empty parities: one phase each per item. q full cannot run two phases
//     ahead of a consumer (Q(c + 1) waits for q empty(c), which needs every consumer's
//     arrival after its q full(c) wait); q empty cannot either (q empty(c + 1) needs
//     the consumers' q full(c + 1) wait, which needs the producer's Q(c + 1) copy, issued
//     only after its q empty(c) wait). So parity waits are exact. Items with n == 0
//     still do the whole hand-shake (Q copied, q full waited, q empty arrived): both
//     roles identically.
//   - Ring phases across items: stage (g0 + j) % kStages, phase (g0 + j) / kStages on
//     both sides (produce_range / consume_tiles): one continuous ring; the empty / full
//     protocol is the one-item kernel's over the CTA's whole tile sequence. s_valid[stage]
//     is written by the producer for ring tile g only after empty (g - kStages), read by
//     the scorer before its empty arrival: as before.
//   - P[2], the row sums in P and s_m (per item, parity by local j): READY / FREE
//     arrivals and syncs balance within an item (every tile's scorer arrives READY once,
//     its taker syncs once; FREE arrivals for i + 2 < n match the syncs of tiles >= 2),
//     and every wgmma of both warpgroups is waited before the item-end consumer_sync, so
//     no warpgroup writes the next item's P / stats while the other reads this item's,
//     and no named-barrier use of one item mixes with the next's.
//   - Registers: consumers setmaxnreg 224, producer 56 (pt made opaque per item so the Q
//     copy's 32 addresses are not hoisted and spilled); no trap path in consumer code
//     (mbar_wait_no_trap only); no local memory (checked with cuobjdump).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/sparse_attention_ring.cuh"
#include "cuda/attention/sparse_attention_wgmma_common.cuh"

namespace dsv4::cuda::attention {

namespace {

using namespace sparse_wgmma;  // kHeads, kDim, kBlockBytes, wgmma / smem helpers, key_row, store_output
using namespace sparse_ring;   // ring shape, mbarrier helpers, tile addressing, the producer warpgroup

constexpr int kPBytes = kHeads * 64 * 2;  // one P [64 heads x 64 key slots] BF16 (48 used)
constexpr int kSmemBytes = kPanelBytes + kStages * kTileBytes + 2 * kPBytes + 1024;  // + 1024-byte alignment slack
constexpr int kStaticSmemBytes = kStages * kTileKeys + 2 * kHeads * 4 + (2 * kStages + 1) * 8;  // s_valid, s_m, s_bars
static_assert(kSmemBytes + kStaticSmemBytes <= 232448, "shared memory: 227 KiB per CTA on sm_90");
static_assert(kTileKeys == 48 && kTileKeys / 8 == 6, "S fragment: 6 column groups of 8 keys, 2 halves of 3");
constexpr int kBarReady = 2, kBarFree = 4;  // + parity

// D[64 x 48] (+)= A[64 x 16] B[16 x 48], both from shared memory, K-major.
__device__ __forceinline__ void wgmma_m64n48k16_ss(float (&d)[24], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %26, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, %24, %25, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// Consumer wait on a full barrier: mbar_wait_no_trap (sparse_attention_ring.cuh; a trap
// path in the consumer code costs the setmaxnreg budget, see there).
__device__ __forceinline__ void full_wait(uint32_t bar, uint32_t parity) { mbar_wait_no_trap(bar, parity); }

// Named barriers over the 256 consumer threads (id warp-uniform).
__device__ __forceinline__ void named_sync(int id) { asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory"); }
__device__ __forceinline__ void named_arrive(int id) { asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory"); }

__device__ __forceinline__ void st_shared_v2(uint32_t address, float x, float y) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(address), "f"(x), "f"(y) : "memory");
}
__device__ __forceinline__ float2 ld_shared_v2(uint32_t address) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(address) : "memory");
  return v;
}

// Byte offset in a P buffer of the float2 (rowsum_0, rowsum_1) of quad lane q of row
// `row`: logical chunk 6 + q / 2 (keys 48.., never read by the P V wgmma), 8 bytes per q % 2.
__device__ __forceinline__ uint32_t rowsum_offset(int row, int q) {
  return row * 128 + (((6 + (q >> 1)) ^ (row & 7)) << 4) + 8 * (q & 1);
}

// S(tile) for all 48 keys of the tile at s_k (the k order of the pipelined kernel's
// halves); committed, not waited for.
__device__ __forceinline__ void issue_s(float (&s)[24], uint32_t s_q, uint32_t s_k) {
#pragma unroll
  for (int i = 0; i < 24; ++i) s[i] = 0.0f;
  fence_regs(s);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kDim / 16; ++kk)
    wgmma_m64n48k16_ss(s, make_desc(s_q + (kk >> 2) * kBlockBytes + (kk & 3) * 32, 16, 1024),
                       make_desc(s_k + (kk >> 2) * kTileBlockBytes + (kk & 3) * 32, 16, 1024), kk);
  wgmma_commit();
}

// Thread state of a consumer (both warpgroups hold the same m and l values).
struct RowState {
  float m[2];     // running max of rows row0, row0 + 8 (log2 domain; -inf before any key)
  float l[2][2];  // [row][half]: this thread's partial row sum of keys 24 half + 8 j + 2 (lane % 4) + 0/1
};

// The other warpgroup's tile `tile` (local index: parity tile % 2; in ring stage `stage`;
// the caller waited on its full barrier and fenced): wait for its P and stats, fold them
// into m / l / O and issue P V from P[tile % 2]. Not waited for.
__device__ __forceinline__ void take_tile(int tile, int stage, uint32_t s_tiles, uint32_t s_p,
                                          const float (*s_m)[kHeads], RowState& st, float (&o)[128], int wg,
                                          int row0, int q) {
  const int par = tile & 1;
  named_sync(kBarReady + par);
  const uint32_t s_pp = s_p + par * kPBytes;
  float alpha[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + 8 * h;
    float m_use;
    alpha[h] = advance_max(st.m[h], s_m[par][row], m_use);
    const float2 row_sum = ld_shared_v2(s_pp + rowsum_offset(row, q));
    st.l[h][0] = st.l[h][0] * alpha[h] + row_sum.x;
    st.l[h][1] = st.l[h][1] * alpha[h] + row_sum.y;
  }
  rescale_o(o, alpha);
  issue_pv(o, s_pp, s_tiles + stage * kTileBytes, wg);
}

// This warpgroup's tile `tile` (local index, in ring stage `stage`) after its S
// completed: softmax for all 48 keys, P and stats into parity tile % 2 (after FREE when
// the parity was used before), READY, then P V, waited for, and the stage released.
__device__ __forceinline__ void score_tile(int tile, int stage, float (&s)[24], uint32_t bar_empty,
                                           uint32_t s_tiles, uint32_t s_p, const bool (*s_valid)[kTileKeys],
                                           float (*s_m)[kHeads], float scale_log2, RowState& st, float (&o)[128],
                                           int wg, int row0, int q) {
  const int par = tile & 1;
  // This thread: rows row0, row0 + 8 x keys 8 j + 2 q + 0/1, j < 6 (half j / 3).
  float tile_max[2];
  scale_mask_max(s, s_valid[stage], q, scale_log2, tile_max);
  float alpha[2], m_use[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) alpha[h] = advance_max(st.m[h], fmaxf(st.m[h], quad_max(tile_max[h])), m_use[h]);
  uint32_t packed[6][2];
  float row_sum[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll
  for (int j = 0; j < 6; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      packed[j][h] = softmax_pair(s[4 * j + 2 * h], s[4 * j + 2 * h + 1], m_use[h], row_sum[h][j / 3]);
  if (tile >= 2) named_sync(kBarFree + par);  // the other warpgroup is done with P / stats of tile - 2
  const uint32_t s_pp = s_p + par * kPBytes;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + 8 * h;
#pragma unroll
    for (int j = 0; j < 6; ++j)  // P[row][key]: 16-byte chunk j of the row (swizzled), 4 bytes per quad lane
      st_shared_u32(s_pp + row * 128 + ((j ^ (row & 7)) << 4) + 4 * q, packed[j][h]);
    st_shared_v2(s_pp + rowsum_offset(row, q), row_sum[h][0], row_sum[h][1]);
    if (q == 0) s_m[par][row] = st.m[h];
  }
  fence_proxy_async();  // P (st.shared) -> both warpgroups' wgmma reads
  named_arrive(kBarReady + par);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    st.l[h][0] = st.l[h][0] * alpha[h] + row_sum[h][0];
    st.l[h][1] = st.l[h][1] * alpha[h] + row_sum[h][1];
  }
  rescale_o(o, alpha);
  issue_pv(o, s_pp, s_tiles + stage * kTileBytes, wg);
  wgmma_wait_all();
  fence_regs(o);
  mbar_arrive(bar_empty + 8 * stage);  // this thread is done with the stage
}

// The consumer loop of one CTA's (one work item's) n tiles, local index j = 0 .. n - 1 in
// ring tiles g0 + j (stage (g0 + j) % kStages, full phase (g0 + j) / kStages; g0 = 0 in
// the one-item kernel), P parity and READY / FREE per local j. Loop of warpgroup w over
// j = w, w + 2, ... < n (tile 0 of warpgroup 0 peeled: nothing to take), then the other
// warpgroup's last tile if it has one. kQEmpty (the persistent kernel): each thread
// arrives once on bar_q_empty as soon as its last read of the Q panel is done: after the
// wait of its warpgroup's last S (the last j = w mod 2 < n), or at once when the
// warpgroup scores no tile of the item (n <= w).
template <bool kQEmpty>
__device__ __forceinline__ void consume_tiles(int n, int g0, uint32_t s_q, uint32_t s_tiles, uint32_t s_p,
                                              uint32_t bar_full, uint32_t bar_empty, uint32_t bar_q_empty,
                                              const bool (*s_valid)[kTileKeys], float (*s_m)[kHeads],
                                              float scale_log2, RowState& st, float (&o)[128], float (&s)[24],
                                              int wg, int row0, int q) {
  if (kQEmpty && n <= wg) mbar_arrive(bar_q_empty);  // no S of this item in this warpgroup
  int j = wg;
  if (wg == 0 && n > 0) {
    // Tile 0: nothing of the other warpgroup's to take yet.
    const int stage = g0 % kStages;
    full_wait(bar_full + 8 * stage, (g0 / kStages) & 1);
    __syncwarp();         // the warp converged again before the .aligned wgmma instructions
    fence_proxy_async();  // the tile's cp.async writes -> this thread's wgmma reads
    issue_s(s, s_q, s_tiles + stage * kTileBytes);
    wgmma_wait_all();
    fence_regs(s);
    if (kQEmpty && n <= 2) mbar_arrive(bar_q_empty);  // tile 0 was this warpgroup's last S
    score_tile(0, stage, s, bar_empty, s_tiles, s_p, s_valid, s_m, scale_log2, st, o, wg, row0, q);
    j = 2;
  }
  for (; j < n; j += 2) {
    const int g = g0 + j, stage = g % kStages, prev = (g - 1) % kStages;
    // Both tiles' full barriers before any wgmma is in flight (a bounded wait's trap path
    // between a wgmma and its wait costs registers: ptxas C7512 / C7518). Tile j - 1's is
    // complete or about to be: it cannot refill before this warpgroup's P V(j - 1).
    full_wait(bar_full + 8 * prev, ((g - 1) / kStages) & 1);
    full_wait(bar_full + 8 * stage, (g / kStages) & 1);
    __syncwarp();
    fence_proxy_async();  // the tiles' cp.async writes -> this thread's wgmma reads
    issue_s(s, s_q, s_tiles + stage * kTileBytes);                   // S(j) in flight ...
    take_tile(j - 1, prev, s_tiles, s_p, s_m, st, o, wg, row0, q);  // ... while P V(j - 1) is issued
    wgmma_wait_all();
    fence_regs(s);
    fence_regs(o);
    if (kQEmpty && j + 2 >= n) mbar_arrive(bar_q_empty);  // S(j) was this warpgroup's last
    mbar_arrive(bar_empty + 8 * prev);
    if (j + 1 < n) named_arrive(kBarFree + ((j - 1) & 1));  // the scorer of tile j + 1 may overwrite P / stats
    score_tile(j, stage, s, bar_empty, s_tiles, s_p, s_valid, s_m, scale_log2, st, o, wg, row0, q);
  }
  if (n > 0 && ((n - 1) & 1) != wg) {
    // The other warpgroup's last tile (no tile n + 1: no FREE arrival).
    const int stage = (g0 + n - 1) % kStages;
    full_wait(bar_full + 8 * stage, ((g0 + n - 1) / kStages) & 1);
    __syncwarp();
    fence_proxy_async();
    take_tile(n - 1, stage, s_tiles, s_p, s_m, st, o, wg, row0, q);
    wgmma_wait_all();
    fence_regs(o);
    mbar_arrive(bar_empty + 8 * stage);
  }
}

// Both halves' partial sums over the quad, then the row sums (l_0 + l_1: the pipelined
// kernel's warpgroup 0 order; its warpgroup 1 adds l_1 + l_0, the same value).
__device__ __forceinline__ void row_sums(RowState& st, float (&l)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int half = 0; half < 2; ++half) st.l[h][half] = quad_sum(st.l[h][half]);
    l[h] = st.l[h][0] + st.l[h][1];
  }
}

// grid (tokens, heads / 64, splits), block 384, dynamic smem kSmemBytes. kFp8:
// SparseAttentionParams::kv_fp8 (the producer decodes FP8 rows instead of cp.async).
template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) sparse_attention_pingpong_kernel(const SparseAttentionParams p,
                                                                                int splits, float* part_o,
                                                                                float* part_ml) {
  extern __shared__ uint8_t smem_raw[];
  allow_dependent_launch();  // the split merge (PDL) may be scheduled once every CTA runs
  __shared__ bool s_valid[kStages][kTileKeys];
  __shared__ float s_m[2][kHeads];          // per parity: row maxima m_i after the last tile i of that parity
  __shared__ uint64_t s_bars[2 * kStages + 1];  // full[0..2], empty[0..2], q full (q_bf16)
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t s_q = smem_u32(smem);
  const uint32_t s_tiles = s_q + kPanelBytes;
  const uint32_t s_p = s_tiles + kStages * kTileBytes;  // P[0], P[1] at + kPBytes: 1024-aligned
  const uint32_t bar_full = smem_u32(&s_bars[0]), bar_empty = smem_u32(&s_bars[kStages]);
  const uint32_t bar_q = smem_u32(&s_bars[2 * kStages]);

  const int token = blockIdx.x, head0 = blockIdx.y * kHeads, split = blockIdx.z;
  const KeyList keys = key_list(p, token);
  const auto [tile_begin, tile_end] = split_tiles(keys, splits, split);
  init_ring_barriers(bar_full, bar_empty, bar_q);

  if (threadIdx.x >= kConsumerThreads) {
    // ---- producer warpgroup (the pipelined kernel's) ----
    produce_tiles<kFp8>(p, keys, token, head0, tile_begin, tile_end, s_q, s_tiles, bar_full, bar_empty, bar_q,
                        s_valid);
    return;
  }

  // ---- consumer warpgroups ----
  start_consumers(p, token, head0, smem, bar_q);
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, q = lane & 3;
  const int row0 = warp * 16 + (lane >> 2);  // this thread's rows row0, row0 + 8 (heads head0 + row)

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  RowState st = {{-INFINITY, -INFINITY}, {{0.0f, 0.0f}, {0.0f, 0.0f}}};
  const float scale_log2 = p.scale * kLog2e;
  const int n = tile_end - tile_begin;  // tiles of this CTA, local index j: stage j % 3, parity j % 2
  float s[24];

  consume_tiles<false>(n, 0, s_q, s_tiles, s_p, bar_full, bar_empty, 0, s_valid, s_m, scale_log2, st, o, s, wg,
                       row0, q);

  float l[2];
  row_sums(st, l);
  store_output(p, token, head0, split, part_o, part_ml, o, st.m, l);
}

// The persistent variant (Kernel::kWgmmaPingPongPersistent; header comment "Persistent"):
// grid min(items, SMs), block 384, dynamic smem kSmemBytes; items = tokens x heads / 64
// x splits (work_item), CTA b taking items b, b + gridDim.x, ...; q_bf16 required
// (launchers.cpp refuses the FP32 q).
constexpr int kPersistentStaticSmemBytes = kStaticSmemBytes + 8;  // + the q empty mbarrier
static_assert(kSmemBytes + kPersistentStaticSmemBytes <= 232448, "shared memory: 227 KiB per CTA on sm_90");
template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_attention_pingpong_persistent_kernel(const SparseAttentionParams p, int splits, int items,
                                                float* part_o, float* part_ml) {
  extern __shared__ uint8_t smem_raw[];
  allow_dependent_launch();  // the split merge (PDL) may be scheduled once every CTA runs
  __shared__ bool s_valid[kStages][kTileKeys];
  __shared__ float s_m[2][kHeads];              // per parity: row maxima m_i after the last tile i of that parity
  __shared__ uint64_t s_bars[2 * kStages + 2];  // full[0..2], empty[0..2], q full, q empty
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t s_q = smem_u32(smem);
  const uint32_t s_tiles = s_q + kPanelBytes;
  const uint32_t s_p = s_tiles + kStages * kTileBytes;  // P[0], P[1] at + kPBytes: 1024-aligned
  const uint32_t bar_full = smem_u32(&s_bars[0]), bar_empty = smem_u32(&s_bars[kStages]);
  const uint32_t bar_q = smem_u32(&s_bars[2 * kStages]), bar_q_empty = smem_u32(&s_bars[2 * kStages + 1]);
  init_ring_barriers<true>(bar_full, bar_empty, bar_q, bar_q_empty);

  if (threadIdx.x >= kConsumerThreads) {
    // ---- producer warpgroup: every item's Q copy and tiles, one ring ----
    produce_items<kFp8>(p, splits, items, s_q, s_tiles, bar_full, bar_empty, bar_q, bar_q_empty, s_valid);
    return;
  }

  // ---- consumer warpgroups ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, q = lane & 3;
  const int row0 = warp * 16 + (lane >> 2);  // this thread's rows row0, row0 + 8 (heads head0 + row)
  const float scale_log2 = p.scale * kLog2e;
  int g = 0;           // ring tiles of this CTA's earlier items (the producer counts the same)
  uint32_t count = 0;  // items done: q full / q empty phase
  for (int item = blockIdx.x; item < items; item += gridDim.x, ++count) {
    const WorkItem w = work_item(p, item);
    const KeyList keys = key_list(p, w.token);
    const auto [tile_begin, tile_end] = split_tiles(keys, splits, w.split);
    const int n = tile_end - tile_begin;
    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    RowState st = {{-INFINITY, -INFINITY}, {{0.0f, 0.0f}, {0.0f, 0.0f}}};
    float s[24];
    mbar_wait_no_trap(bar_q, count & 1);  // the item's Q (no trap path in consumer code)
    fence_proxy_async();                  // the producer's cp.async writes of Q -> this thread's wgmma reads
    consume_tiles<true>(n, g, s_q, s_tiles, s_p, bar_full, bar_empty, bar_q_empty, s_valid, s_m, scale_log2, st, o,
                        s, wg, row0, q);
    g += n;
    // Item end: both warpgroups are done with P[2], the row sums and s_m of this item
    // (their every wgmma waited) before either writes the next item's.
    consumer_sync();
    float l[2];
    row_sums(st, l);
    store_output(p, w.token, w.head0, w.split, part_o, part_ml, o, st.m, l);
  }
}

}  // namespace

namespace detail {

cudaError_t launch_sparse_attention_pingpong(const SparseAttentionParams& p, int splits, cudaStream_t stream) {
  static bool attribute_set[2][64] = {};  // this kernel's own (per device and instance)
  static constexpr RingKernel kernels[2] = {sparse_attention_pingpong_kernel<false>,  // BF16 KV
                                            sparse_attention_pingpong_kernel<true>};  // kv_fp8
  return launch_ring_kernel(p, splits, stream, kernels, kSmemBytes, attribute_set);
}

cudaError_t launch_sparse_attention_pingpong_persistent(const SparseAttentionParams& p, int splits,
                                                        cudaStream_t stream) {
  if (p.q_bf16 == nullptr) return cudaErrorInvalidValue;  // launchers.cpp refuses it with a message first
  static bool attribute_set[2][64] = {};  // this kernel's own (per device and instance)
  static constexpr PersistentRingKernel kernels[2] = {sparse_attention_pingpong_persistent_kernel<false>,  // BF16 KV
                                                      sparse_attention_pingpong_persistent_kernel<true>};  // kv_fp8
  return launch_persistent_ring_kernel(p, splits, stream, kernels, kSmemBytes, attribute_set);
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

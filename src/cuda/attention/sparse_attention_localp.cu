// Sparse MQA attention with sinks on Hopper wgmma, 64-key tiles in pairs with P V from a
// register-local P (SparseAttentionParams::Kernel::kWgmmaLocalP, opt-in; q_bf16 required).
// Same contract, key list, numerics class (BF16 q and P, FP32 accumulation), BF16 or
// kv_fp8 rows (the producer decodes FP8 rows into the same BF16 tile), split-KV
// partials and merge, output epilogue (store_output) and persistent work items (grid
// min(items, SMs), item = (token, head group, split), token fastest: work_item) as
// kWgmmaPingPongPersistent (sparse_attention_pingpong.cu); what differs is the tile and how
// the two consumer warpgroups share it.
//
// CTA: 384 threads. Warpgroups 0 and 1 consume (setmaxnreg 224), warpgroup 2 produces
// (setmaxnreg 56: 256 x 224 + 128 x 56 = 384 x 168, the launch budget).
// Shared memory (dynamic, 1024-aligned; every panel 8 column blocks of 64 channels, block b
// at b x 8 KiB, row r at r x 128 B in its block, 16-byte chunk c at c ^ (r % 8): the
// layout of sparse_attention_wgmma.cu, 128-byte swizzle):
//   Q        [64 heads x 512] BF16, 64 KiB (the producer's cp.async of q_bf16: produce_q)
//   tile[2]  [64 keys x 512] BF16, 64 KiB each: buffer 0 holds the even tile of a pair,
//            buffer 1 the odd one. K-major B of S (SBO 1024, k-step kk at block kk / 4 +
//            32 B x (kk % 4)); MN-major B of P V (imm-trans-b, LBO 8 KiB = next 64
//            channels, SBO 1024 = next 8 keys, keys 16 kc.. at + 2 KiB x kc); channel half
//            side s (0: channels 0..255, 1: 256..511) = blocks 4 s .. 4 s + 3.
//   P[2]     [64 heads x 64 keys] BF16, 8 KiB each (one Q column block's layout: K-major A
//            of P V, k-step kc at + 32 B x kc): P[0] = the even tile's weights at the pair's
//            max m1 (written by warpgroup 0 for warpgroup 1), P[1] the odd tile's (by
//            warpgroup 1 for warpgroup 0).
//   = 208 KiB + 1 KiB alignment slack. Static: s_valid[2][64] (per buffer: key row
//   attended), s_m0 / s_m1 [64] (the pair's row maxima), s_l[2][2][64] (the epilogue's row
//   sum exchange, double-buffered by item parity), 10 mbarriers.
// Pair (2i, 2i + 1) of an item's tiles, both warpgroups at once (A = tile 2i in buffer 0,
// B = tile 2i + 1 in buffer 1; m = the running max after the previous pair, in both):
//   WG0: S_A = Q K_A^T (32 x HGMMA 64x64x16 SS, 64 heads x 64 keys, in two groups of 16
//        k-steps, one per channel half: the half filled first (A left; B right for WG1),
//        then, after the other half's full wait with that group in flight, the second:
//        the later half's gather overlaps tensor work); m0 = max(m, rowmax
//        S_A) -> s_m0, bar.arrive M0; P_A = exp2(S_A - m0) (BF16, registers), O_left *= 2^(m
//        - m0); O_left += P_A V_A[:, 0:256] (4 x HGMMA 64x256x16, A from registers: the S
//        accumulator fragment is the A fragment). While it runs: bar.sync M1, read m1;
//        exp2(S_A - m1) (from the FP32 S_A) rounded to BF16 -> P[0], fence.proxy.async,
//        bar.arrive P0. Then
//        wait, O_left *= 2^(m0 - m1); bar.sync P1 and O_left += P[1] V_B[:, 0:256] (SS).
//   WG1: S_B (as S_A) at the same time; bar.sync M0; m1 = max(m0, rowmax S_B) -> s_m1,
//        bar.arrive M1; P_B = exp2(S_B - m1) -> P[1], fence, bar.arrive P1; O_right *=
//        2^(m - m1); O_right += P_B V_B[:, 256:512] (RS); bar.sync P0 and O_right +=
//        P[0] V_A[:, 256:512] (SS) queued behind the RS group (same accumulator, nothing
//        between them); wait_group 1 retires the RS group (B right free), then wait 0.
//   Row sums: each warpgroup sums the BF16 weights of the tile it scored (WG0's rescaled by
//   2^(m0 - m1) with O_left); the epilogue adds the two (quad-summed, through s_l).
//   Numerics: P_A enters O_left as exp2(S_A - m0) and O_right as exp2(S_A - m1), each
//   rounded to BF16 once (the same bits when m1 == m0, but for weights < 2^-126, flushed
//   to 0 in the second); l uses the first, rescaled: not bitwise the other wgmma kernels,
//   within the FP64-loop bounds of the tests.
//   An odd last tile (no B): WG1 scores nothing (m1 = m0, O_right *= 2^(m - m1)) and only
//   runs P[0] V_A[:, 256:512]; WG0 skips the P[1] product. Every wgmma block is issued and
//   waited inside one branch (a wgmma in flight across a data-dependent branch makes ptxas
//   serialise every wgmma, C7514 / C7518); in flight across the consumers' mbarrier wait
//   loops (no trap path) and named barriers it is fine (no advisory, SASS checked).
// Ring: two buffers x two channel halves, each half with a full mbarrier (256 arrivals: each
//   producer thread's cp.async.mbarrier.arrive.noinc plus an ordinary arrive that releases
//   its s_valid stores; kv_fp8: st.shared of the decoded rows, fence.proxy.async, two
//   ordinary arrivals) and an empty mbarrier counting the threads that read the half:
//     A left  (buffer 0, side 0): WG0 (S_A, P_A V_A left)                 128
//     A right (buffer 0, side 1): WG0 (S_A) + WG1 (P[0] V_A right)       256
//     B left  (buffer 1, side 0): WG1 (S_B) + WG0 (P[1] V_B left)        256
//     B right (buffer 1, side 1): WG1 (S_B, P_B V_B right)               128
//   each reader arriving after the wgmma_wait of its last use of the half. The producer
//   fills the halves of a pair in the order they free up: A left (free after WG0's RS
//   product of the previous pair), B right (after WG1's), A right, B left. Fill f of buffer
//   b (counted over the CTA's items: buffer 0 once per pair, buffer 1 once per pair with a
//   B) is full-phase f, waited with parity f & 1; the producer waits empty parity
//   (f & 1) ^ 1 (a fresh barrier passes parity 1). s_valid[b] is written with the first half
//   filled (A left / B right), whose empty barrier only the scorer of b (its only reader)
//   arrives on, after its softmax.
// Named barriers (256 consumer threads; 1 is consumer_sync): M0 = 2, M1 = 3, P0 = 4, P1 = 5,
//   one arrive (128 threads) + one sync (128) per pair each (P1 only in pairs with a B).
//   WAR of s_m0, s_m1, P[0], P[1] across pairs: WG0 writes s_m0 / P[0] of pair k after its
//   M1 sync of pair k - 1 / k, which follows WG1's read of s_m0 and its P[0] product of
//   pair k - 1 (WG1 waits that wgmma before its M1 arrival of pair k); WG1 writes s_m1 /
//   P[1] of pair k after its M0 sync of pair k, which follows WG0's whole pair k - 1 (M1
//   read, P[1] product waited). The same chain holds across items.
// Persistent items: the q full / q empty protocol of kWgmmaPingPongPersistent (produce_q;
//   each consumer thread arrives on q empty after the wait of its warpgroup's last S of
//   the item, or at once when it scores none: n <= wg); both roles compute every item's n
//   from key_list / split_tiles<64> and so agree on the fill counters. Item end: the row-sum
//   exchange (s_l[item parity]) and consumer_sync, then store_output.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/sparse_attention_ring.cuh"
#include "cuda/attention/sparse_attention_wgmma_common.cuh"

namespace dsv4::cuda::attention {

namespace {

using namespace sparse_wgmma;  // kHeads, kDim, kBlockBytes, wgmma wrappers, smem helpers, key_row, store_output
// From the 48-key ring (its tile constants are not used here): mbarriers, consumer_sync,
// the Q copy, work items, the persistent launch.
using sparse_ring::consumer_sync;
using sparse_ring::cp_async_mbar_arrive;
using sparse_ring::cp_async_wait_all;
using sparse_ring::mbar_arrive;
using sparse_ring::mbar_init;
using sparse_ring::mbar_wait;
using sparse_ring::mbar_wait_no_trap;
using sparse_ring::prefetch_l2;
using sparse_ring::produce_q;
using sparse_ring::fetch_picks;
using sparse_ring::split_tiles;
using sparse_ring::TileRange;
using sparse_ring::work_item;
using sparse_ring::WorkItem;

constexpr int kTileKeys = 64;                        // keys per tile = S's N = P V's K
constexpr int kPanelBytes = kDim / 64 * kBlockBytes;  // Q or a tile: 64 rows x 512 BF16 = 64 KiB
constexpr int kPBytes = kHeads * kTileKeys * 2;      // P: 64 heads x 64 keys BF16 = 8 KiB
constexpr int kSideBytes = 4 * kBlockBytes;          // a channel half (4 column blocks) of a tile
constexpr int kConsumerThreads = 256, kThreads = kConsumerThreads + 128;
constexpr int kProducerRegs = 56, kConsumerRegs = 224;
constexpr int kSmemBytes = 3 * kPanelBytes + 2 * kPBytes + 1024;  // Q, 2 tiles, 2 P + alignment slack
constexpr int kBars = 10;  // full[4], empty[4] (half index 2 buffer + side), q full, q empty
constexpr int kStaticSmemBytes = 2 * kTileKeys + 2 * kHeads * 4 + 4 * kHeads * 4 + kBars * 8;
static_assert(kSmemBytes + kStaticSmemBytes <= 232448, "shared memory: 227 KiB per CTA on sm_90");
static_assert(128 * kProducerRegs + kConsumerThreads * kConsumerRegs <= kThreads * 168, "register file at launch");
constexpr int kBarM0 = 2, kBarM1 = 3, kBarP0 = 4, kBarP1 = 5;  // named barriers (1: consumer_sync)

// Half index of (buffer, channel side) in the full / empty barrier arrays.
__host__ __device__ constexpr int half_index(int buffer, int side) { return 2 * buffer + side; }

// Named barriers over the 256 consumer threads.
__device__ __forceinline__ void named_sync(int id) { asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory"); }
__device__ __forceinline__ void named_arrive(int id) { asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory"); }


// ---- producer warpgroup ----
// Thread pt gathers rows 4 (pt / 8) + i (i < 4) of a tile, 16-byte chunks pt % 8 + 8 c of
// each (c: the column block; 4 per channel half): 4 row addresses (kSelected: 4 index
// loads) per tile, 16 cp.async per half; 8 consecutive threads cover a 128-byte line.
constexpr int kProducerRows = 4;
static_assert(kProducerRows * 128 / 8 == kTileKeys, "producer row mapping");


// kv_fp8: this thread's 4 chunks (chunk0 + 8 (4 side + c), c < 4) of one tile row from its
// 584-byte FP8 row (kv_fp8.h; nullptr: zeros), decoded to BF16 (exact) and stored with
// st.shared at row_dst + c x 8 KiB. Side 0: scale blocks 0..3; side 1: blocks 4..6 and the
// BF16 tail (channels 448..511).
__device__ __forceinline__ void produce_fp8_half(uint32_t row_dst, int chunk0, const uint8_t* source, int side) {
  static_assert(kKvFp8NopeDim == 7 * 64 && kKvFp8ScaleOffset % 8 == 0, "one scale block per chunk step");
  if (source == nullptr) {
#pragma unroll
    for (int c = 0; c < 4; ++c) sparse_ring::st_shared_v4(row_dst + c * kBlockBytes, make_uint4(0u, 0u, 0u, 0u));
    return;
  }
  const int fp8_chunks = side == 0 ? 4 : 3;
  uint2 raw[4];  // all loads first, then decode and store
#pragma unroll
  for (int c = 0; c < fp8_chunks; ++c) raw[c] = reinterpret_cast<const uint2*>(source)[chunk0 + 8 * (4 * side + c)];
  const uint2 scales = *reinterpret_cast<const uint2*>(source + kKvFp8ScaleOffset);  // 7 scales + pad
  uint2 lo = make_uint2(0u, 0u), hi = make_uint2(0u, 0u);
  if (side == 1) {
    const uint2* tail = reinterpret_cast<const uint2*>(source + kKvFp8RopeOffset) + 2 * chunk0;
    lo = tail[0];
    hi = tail[1];
  }
#pragma unroll
  for (int c = 0; c < fp8_chunks; ++c) {
    const uint32_t scale_byte = ((side == 0 ? scales.x : scales.y) >> (8 * c)) & 0xff;  // block 4 side + c
    sparse_ring::st_shared_v4(row_dst + c * kBlockBytes, kv_fp8_decode8_bf16(raw[c], static_cast<int>(scale_byte) - 127));
  }
  if (side == 1) sparse_ring::st_shared_v4(row_dst + 3 * kBlockBytes, make_uint4(lo.x, lo.y, hi.x, hi.y));
}

// One channel half of this thread's rows of tile `tile` into the tile at dst (skipped rows
// zero-filled), optionally with their s_valid flags, then both arrivals on the half's full
// barrier. BF16 rows: 16-byte cp.async (the arrival fires when they land); kFp8: the rows
// at key_row_fp8 decoded one row at a time with st.shared, fence.proxy.async, two ordinary
// arrivals.
template <bool kFp8>
__device__ __forceinline__ void gather_half(const SparseAttentionParams& p, const KeyList& keys, int tile,
                                            uint32_t dst, const uint16_t* const (&rows)[kProducerRows], int row0,
                                            int chunk0, int side, bool* valid, uint32_t bar_full) {
  if constexpr (kFp8) {
    static_assert(kProducerRows == 4, "row selection below");
#pragma unroll 1
    for (int i = 0; i < kProducerRows; ++i) {
      const uint16_t* row_bf16 = i == 0 ? rows[0] : i == 1 ? rows[1] : i == 2 ? rows[2] : rows[3];
      if (valid != nullptr && chunk0 == 0) valid[row0 + i] = row_bf16 != nullptr;
      const int row = row0 + i;
      const uint32_t row_dst = dst + side * kSideBytes + row * 128 + ((chunk0 ^ (row & 7)) << 4);
      produce_fp8_half(row_dst, chunk0, sparse_ring::key_row_fp8(p, keys, tile * kTileKeys + row, row_bf16), side);
    }
    fence_proxy_async();  // this thread's st.shared of the half -> the consumers' wgmma reads
    mbar_arrive(bar_full);
    mbar_arrive(bar_full);
  } else {
#pragma unroll
    for (int i = 0; i < kProducerRows; ++i) {
      if (valid != nullptr && chunk0 == 0) valid[row0 + i] = rows[i] != nullptr;
      // panel_offset(row, chunk0 + 8 b) = b x 8 KiB + this row's swizzled 16 bytes (same in every block).
      const int row = row0 + i;
      const uint32_t row_dst = dst + side * kSideBytes + row * 128 + ((chunk0 ^ (row & 7)) << 4);
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int chunk = chunk0 + 8 * (4 * side + c);
        cp_async_16(row_dst + c * kBlockBytes, rows[i] != nullptr ? rows[i] + chunk * 8 : p.window_kv,
                    rows[i] != nullptr ? 16 : 0);
      }
    }
    cp_async_mbar_arrive(bar_full);
    mbar_arrive(bar_full);  // releases the s_valid stores
  }
}

// The producer's whole job: per item of the CTA (blockIdx.x, + gridDim.x, ...; c-th item),
// the first pair's picks, (c > 0) wait q empty phase c - 1, the Q copy (q full phase c),
// then the item's pairs: per pair the rows of A (and B), the next pair's picks (in flight
// across the waits), then the halves A left, B right, A right, B left, each after its
// empty wait. f[b]: fills of buffer b so far (the consumers count the same).
template <bool kFp8>
__device__ __forceinline__ void produce_items(const SparseAttentionParams& p, int splits, int items, uint32_t s_q,
                                              uint32_t s_tiles, uint32_t bar_full, uint32_t bar_empty,
                                              uint32_t bar_q, uint32_t bar_q_empty, bool (&s_valid)[2][kTileKeys]) {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
  const int pt = threadIdx.x - kConsumerThreads;
  const int chunk0 = pt & 7, row0 = kProducerRows * (pt >> 3);
  const bool prefetch = items <= static_cast<int>(gridDim.x);  // one item per CTA: decode-sized, rows from HBM
  uint32_t f0 = 0, f1 = 0, count = 0;
  for (int item = blockIdx.x; item < items; item += gridDim.x, ++count) {
    const WorkItem w = work_item(p, item);
    const KeyList keys = key_list(p, w.token);
    const auto [tile_begin, tile_end] = split_tiles<kTileKeys>(keys, splits, w.split);
    int picks_a[kProducerRows], picks_b[kProducerRows];
    if (tile_begin < tile_end) fetch_picks<kTileKeys>(p, keys, w.token, tile_begin, pt, picks_a);
    if (tile_begin + 1 < tile_end) fetch_picks<kTileKeys>(p, keys, w.token, tile_begin + 1, pt, picks_b);
    if (count > 0) mbar_wait(bar_q_empty, (count - 1) & 1);
    int pt_q = pt;  // opaque per item: else the Q copy's 32 panel addresses are hoisted and spilled
    asm volatile("" : "+r"(pt_q));
    produce_q(p, w.token, w.head0, pt_q, s_q, bar_q);
    for (int tile_a = tile_begin; tile_a < tile_end; tile_a += 2) {
      const bool has_b = tile_a + 1 < tile_end;
      const uint16_t* rows_a[kProducerRows];
      const uint16_t* rows_b[kProducerRows];
#pragma unroll
      for (int i = 0; i < kProducerRows; ++i) {
        rows_a[i] = key_row(p, keys, tile_a * kTileKeys + row0 + i, picks_a[i]);
        rows_b[i] = has_b ? key_row(p, keys, (tile_a + 1) * kTileKeys + row0 + i, picks_b[i]) : nullptr;
      }
#pragma unroll
      for (int i = 0; i < kProducerRows && prefetch; ++i) {
        if constexpr (kFp8) {  // the 584-byte row's 5 lines (chunk0 < 5: line chunk0; 5: the last bytes)
          const uint8_t* a = sparse_ring::key_row_fp8(p, keys, tile_a * kTileKeys + row0 + i, rows_a[i]);
          const uint8_t* b = sparse_ring::key_row_fp8(p, keys, (tile_a + 1) * kTileKeys + row0 + i, rows_b[i]);
          const int line = chunk0 < 5 ? 128 * chunk0 : kKvFp8RowBytes - 8;
          if (a != nullptr && chunk0 <= 5) prefetch_l2(a + line);
          if (b != nullptr && chunk0 <= 5) prefetch_l2(b + line);
        } else {
          if (rows_a[i] != nullptr) prefetch_l2(rows_a[i] + 64 * chunk0);  // 128-byte line chunk0 of the 1 KiB row
          if (rows_b[i] != nullptr) prefetch_l2(rows_b[i] + 64 * chunk0);
        }
      }
      if (tile_a + 2 < tile_end) fetch_picks<kTileKeys>(p, keys, w.token, tile_a + 2, pt, picks_a);
      if (tile_a + 3 < tile_end) fetch_picks<kTileKeys>(p, keys, w.token, tile_a + 3, pt, picks_b);
      const uint32_t tile0 = s_tiles, tile1 = s_tiles + kPanelBytes;
      const int tile_b = tile_a + 1;
      mbar_wait(bar_empty + 8 * half_index(0, 0), (f0 & 1) ^ 1);
      gather_half<kFp8>(p, keys, tile_a, tile0, rows_a, row0, chunk0, 0, s_valid[0], bar_full + 8 * half_index(0, 0));
      if (has_b) {
        mbar_wait(bar_empty + 8 * half_index(1, 1), (f1 & 1) ^ 1);
        gather_half<kFp8>(p, keys, tile_b, tile1, rows_b, row0, chunk0, 1, s_valid[1],
                          bar_full + 8 * half_index(1, 1));
      }
      mbar_wait(bar_empty + 8 * half_index(0, 1), (f0 & 1) ^ 1);
      gather_half<kFp8>(p, keys, tile_a, tile0, rows_a, row0, chunk0, 1, nullptr, bar_full + 8 * half_index(0, 1));
      if (has_b) {
        mbar_wait(bar_empty + 8 * half_index(1, 0), (f1 & 1) ^ 1);
        gather_half<kFp8>(p, keys, tile_b, tile1, rows_b, row0, chunk0, 0, nullptr, bar_full + 8 * half_index(1, 0));
      }
      ++f0;
      if (has_b) ++f1;
    }
  }
  cp_async_wait_all();
}

// ---- consumer warpgroups ----
// make_desc(address + byte_offset, ...) from make_desc(address, ...): the start address
// field (bits 0..13, address / 16) plus byte_offset / 16, added to the low word only (the
// sum is the field of a shared-memory address < 256 KiB: no carry out of the field). One
// integer add per operand instead of make_desc's mask / shift / or sequence (11 SASS
// instructions per HGMMA in the first build, with the LBO / SBO / swizzle bits rebuilt).
__device__ __forceinline__ uint64_t desc_at(uint64_t desc, uint32_t byte_offset) {
  const uint32_t lo = static_cast<uint32_t>(desc) + (byte_offset >> 4);
  return (desc & 0xffffffff00000000ull) | lo;
}

// S = Q K^T for the 64 keys of the tile at s_k, in two groups of 16 k16 steps of HGMMA
// 64x64x16 SS, one per channel half: `first` (the half whose full barrier the caller waited
// first; its first step overwrites s), then the caller waits the other half's full barrier
// with the first group in flight and issues `second`. Committed, not waited for.
__device__ __forceinline__ void issue_s_half(float (&s)[32], uint32_t s_q, uint32_t s_k, int side, bool first) {
  wgmma_fence();
  const uint64_t desc_q = make_desc(s_q, 16, 1024), desc_k = make_desc(s_k, 16, 1024);
#pragma unroll
  for (int step = 0; step < kDim / 32; ++step) {
    const int kk = 16 * side + step;
    const uint32_t offset = (kk >> 2) * kBlockBytes + (kk & 3) * 32;
    wgmma_m64n64k16_ss(s, desc_at(desc_q, offset), desc_at(desc_k, offset), first ? step : 1);
  }
  wgmma_commit();
}
// S of the tile at s_k (buffer `buffer`, fill parity `parity`): the channel half filled
// first (A left / B right), then the other one, each after its full-barrier wait (the
// second wait with the first half's group in flight: the gather of the later half overlaps
// tensor work); waited for.
__device__ __forceinline__ void run_s(float (&s)[32], uint32_t s_q, uint32_t s_k, uint32_t bar_full, int buffer,
                                      uint32_t parity) {
  const int first = buffer == 0 ? 0 : 1;  // the side the producer fills first
#pragma unroll
  for (int i = 0; i < 32; ++i) s[i] = 0.0f;
  fence_regs(s);
  mbar_wait_no_trap(bar_full + 8 * half_index(buffer, first), parity);
  __syncwarp();         // converged before the .aligned wgmma instructions
  fence_proxy_async();  // the half's cp.async writes -> this thread's wgmma reads
  issue_s_half(s, s_q, s_k, first, true);
  mbar_wait_no_trap(bar_full + 8 * half_index(buffer, first ^ 1), parity);
  __syncwarp();
  fence_proxy_async();
  issue_s_half(s, s_q, s_k, first ^ 1, false);
  wgmma_wait_all();
  fence_regs(s);
}

// O += P V_side with P from registers (pa[4 kc + 0..3]: the A fragment of keys 16 kc..,
// see sparse_attention_wgmma.cu) and V = channel half `side` of the tile at s_k;
// committed, not waited for.
__device__ __forceinline__ void issue_pv_rs(float (&o)[128], uint32_t (&pa)[16], uint32_t s_k, int side) {
  fence_regs(o);
  fence_regs(pa);
  wgmma_fence();
  const uint64_t desc_v = make_desc(s_k + side * kSideBytes, kBlockBytes, 1024);
#pragma unroll
  for (int kc = 0; kc < kTileKeys / 16; ++kc) {
    const uint32_t a[4] = {pa[4 * kc + 0], pa[4 * kc + 1], pa[4 * kc + 2], pa[4 * kc + 3]};
    wgmma_m64n256k16_rs_tb(o, a, desc_at(desc_v, kc * 2048));
  }
  wgmma_commit();
}

// O += P V_side with P from the panel at s_pp (SS); committed, not waited for.
__device__ __forceinline__ void issue_pv_ss(float (&o)[128], uint32_t s_pp, uint32_t s_k, int side) {
  fence_regs(o);
  wgmma_fence();
  const uint64_t desc_p = make_desc(s_pp, 16, 1024), desc_v = make_desc(s_k + side * kSideBytes, kBlockBytes, 1024);
#pragma unroll
  for (int kc = 0; kc < kTileKeys / 16; ++kc)
    wgmma_m64n256k16_ss_tb(o, desc_at(desc_p, kc * 32), desc_at(desc_v, kc * 2048));
  wgmma_commit();
}

// Byte offset in a P panel of the BF16 pair (keys 8 j + 2 q, + 1) of row `row`.
__device__ __forceinline__ uint32_t p_offset(int row, int j, int q) {
  return row * 128 + ((j ^ (row & 7)) << 4) + 4 * q;
}

// A consumer thread's view: rows row0, row0 + 8 (heads head0 + row), quad lane q.
struct Rows {
  int row0, q;
};
// The running state of its two rows (the same m in both warpgroups; l: this warpgroup's
// partial, over this thread's columns of the tiles it scored).
struct RowState {
  float m[2];
  float l[2];
};
// Barrier and panel addresses.
struct Smem {
  uint32_t q, tile0, tile1, p0, p1, full, empty, q_empty;
};

// Scale, mask (s_valid) and the row maxima of S for this thread's rows, quad-reduced.
__device__ __forceinline__ void tile_row_max(float (&s)[32], const bool* valid, float scale_log2, const Rows& r,
                                             float (&tile_max)[2]) {
  scale_mask_max(s, valid, r.q, scale_log2, tile_max);
#pragma unroll
  for (int h = 0; h < 2; ++h) tile_max[h] = quad_max(tile_max[h]);
}

// The weights exp2(S - m_use) as BF16 pairs pa[2 j + h] (row h, keys 8 j + 2 q, + 1: the
// RS A-fragment order) and this thread's sum of the rounded weights per row.
__device__ __forceinline__ void softmax_tile(const float (&s)[32], const float (&m_use)[2], uint32_t (&pa)[16],
                                             float (&row_sum)[2]) {
  row_sum[0] = row_sum[1] = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) pa[2 * j + h] = softmax_pair(s[4 * j + 2 * h], s[4 * j + 2 * h + 1], m_use[h], row_sum[h]);
}

__device__ __forceinline__ float use_of(float m) { return m == -INFINITY ? 0.0f : m; }

// 2^x with subnormal results flushed to 0 (one MUFU.EX2; exp2f adds a range fix-up for
// them): the same value as exp2f wherever that is >= 2^-126.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Warpgroup 0 over the item's n tiles (pairs of local tiles 2i, 2i + 1; f0 / f1: the fills
// of buffers 0 / 1 before this item); arrives on q empty after its last S of the item.
__device__ __forceinline__ void consume_wg0(int n, uint32_t f0, uint32_t f1, const Smem& sm,
                                            const bool (*s_valid)[kTileKeys], float* s_m0, const float* s_m1,
                                            float scale_log2, const Rows& r, RowState& st, float (&o)[128]) {
  for (int a = 0; a < n; a += 2) {
    const bool has_b = a + 1 < n;
    float s[32];
    run_s(s, sm.q, sm.tile0, sm.full, 0, f0 & 1);
    mbar_arrive(sm.empty + 8 * half_index(0, 1));     // A right: this warpgroup's last read (S)
    if (a + 2 >= n) mbar_arrive(sm.q_empty);          // the item's last S of this warpgroup
    float tile_max[2], m0[2], m_use[2], alpha[2];
    tile_row_max(s, s_valid[0], scale_log2, r, tile_max);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      m0[h] = fmaxf(st.m[h], tile_max[h]);
      if (r.q == 0) s_m0[r.row0 + 8 * h] = m0[h];
    }
    named_arrive(kBarM0);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      m_use[h] = use_of(m0[h]);
      alpha[h] = exp2f(st.m[h] - m_use[h]);  // 0 while the row had no key (m = -inf)
    }
    uint32_t pa[16];
    float row_sum[2];
    softmax_tile(s, m_use, pa, row_sum);
#pragma unroll
    for (int h = 0; h < 2; ++h) st.l[h] = st.l[h] * alpha[h] + row_sum[h];
    rescale_o(o, alpha);
    issue_pv_rs(o, pa, sm.tile0, 0);  // O_left += P_A V_A[:, 0:256], in flight ...
    // ... while the pair's max comes back and P_A at m1 goes to P[0] for warpgroup 1.
    named_sync(kBarM1);
    float beta[2], m1_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float m1 = s_m1[r.row0 + 8 * h];
      beta[h] = m0[h] == -INFINITY ? 0.0f : exp2f(m0[h] - m1);  // m1 >= m0
      m1_use[h] = use_of(m1);
      st.m[h] = m1;
    }
    // P_A at m1 from the FP32 logits (still live): one rounding, and none of the in-flight
    // RS product's A registers (pa) is involved.
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        st_shared_u32(sm.p0 + p_offset(r.row0 + 8 * h, j, r.q),
                      pack_bf16(exp2_ftz(s[4 * j + 2 * h] - m1_use[h]), exp2_ftz(s[4 * j + 2 * h + 1] - m1_use[h])));
    fence_proxy_async();  // P[0] (st.shared) -> warpgroup 1's wgmma reads
    named_arrive(kBarP0);
    wgmma_wait_all();
    fence_regs(o);
    fence_regs(pa);  // pa stays allocated (unwritten) until the RS wgmma has retired
    mbar_arrive(sm.empty + 8 * half_index(0, 0));  // A left: S and the RS product done
#pragma unroll
    for (int h = 0; h < 2; ++h) st.l[h] *= beta[h];
    rescale_o(o, beta);
    if (has_b) {
      named_sync(kBarP1);  // P[1] written (and fenced) by warpgroup 1
      mbar_wait_no_trap(sm.full + 8 * half_index(1, 0), f1 & 1);  // complete: warpgroup 1's S_B needed it
      __syncwarp();
      fence_proxy_async();
      issue_pv_ss(o, sm.p1, sm.tile1, 0);  // O_left += P[1] V_B[:, 0:256]
      wgmma_wait_all();
      fence_regs(o);
      mbar_arrive(sm.empty + 8 * half_index(1, 0));
      ++f1;
    }
    ++f0;
  }
}

// Warpgroup 1 over the item's n tiles (as consume_wg0).
__device__ __forceinline__ void consume_wg1(int n, uint32_t f0, uint32_t f1, const Smem& sm,
                                            const bool (*s_valid)[kTileKeys], const float* s_m0, float* s_m1,
                                            float scale_log2, const Rows& r, RowState& st, float (&o)[128]) {
  for (int a = 0; a < n; a += 2) {
    const bool has_b = a + 1 < n;
    float s[32];
    float tile_max[2] = {-INFINITY, -INFINITY};
    if (has_b) {
      run_s(s, sm.q, sm.tile1, sm.full, 1, f1 & 1);
      mbar_arrive(sm.empty + 8 * half_index(1, 0));  // B left: this warpgroup's last read (S)
      if (a + 3 >= n) mbar_arrive(sm.q_empty);        // the item's last S of this warpgroup
      tile_row_max(s, s_valid[1], scale_log2, r, tile_max);
    }
    named_sync(kBarM0);
    float m_use[2], alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float m1 = fmaxf(s_m0[r.row0 + 8 * h], tile_max[h]);
      if (r.q == 0) s_m1[r.row0 + 8 * h] = m1;
      m_use[h] = use_of(m1);
      alpha[h] = exp2f(st.m[h] - m_use[h]);
      st.m[h] = m1;
    }
    named_arrive(kBarM1);
    if (has_b) {
      uint32_t pa[16];
      float row_sum[2];
      softmax_tile(s, m_use, pa, row_sum);
#pragma unroll
      for (int h = 0; h < 2; ++h) st.l[h] = st.l[h] * alpha[h] + row_sum[h];
#pragma unroll
      for (int j = 0; j < 8; ++j)  // P_B to P[1] first: warpgroup 0's SS product waits for it
#pragma unroll
        for (int h = 0; h < 2; ++h) st_shared_u32(sm.p1 + p_offset(r.row0 + 8 * h, j, r.q), pa[2 * j + h]);
      fence_proxy_async();
      named_arrive(kBarP1);
      rescale_o(o, alpha);
      issue_pv_rs(o, pa, sm.tile1, 1);  // O_right += P_B V_B[:, 256:512]
      // O_right += P[0] V_A[:, 256:512] queued behind the RS product (same accumulator, no
      // rescale between them), then the RS group retired first (wait_group 1).
      named_sync(kBarP0);  // P[0] at m1 written by warpgroup 0
      mbar_wait_no_trap(sm.full + 8 * half_index(0, 1), f0 & 1);  // complete: warpgroup 0's S_A needed it
      __syncwarp();
      fence_proxy_async();
      issue_pv_ss(o, sm.p0, sm.tile0, 1);
      wgmma_wait<1>();
      fence_regs(pa);
      mbar_arrive(sm.empty + 8 * half_index(1, 1));  // B right: S and the RS product done
      wgmma_wait_all();
      fence_regs(o);
      ++f1;
    } else {
#pragma unroll
      for (int h = 0; h < 2; ++h) st.l[h] *= alpha[h];
      rescale_o(o, alpha);
      named_sync(kBarP0);  // P[0] at m1 written by warpgroup 0
      mbar_wait_no_trap(sm.full + 8 * half_index(0, 1), f0 & 1);
      __syncwarp();
      fence_proxy_async();
      issue_pv_ss(o, sm.p0, sm.tile0, 1);  // O_right += P[0] V_A[:, 256:512]
      wgmma_wait_all();
      fence_regs(o);
    }
    mbar_arrive(sm.empty + 8 * half_index(0, 1));
    ++f0;
  }
}

// grid min(items, SMs), block 384, dynamic smem kSmemBytes; items = tokens x heads / 64 x
// splits (work_item), CTA b taking items b, b + gridDim.x, ...; q_bf16 required.
template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_attention_localp_kernel(const SparseAttentionParams p, int splits, int items, float* part_o,
                                   float* part_ml) {
  extern __shared__ uint8_t smem_raw[];
  allow_dependent_launch();  // the split merge (PDL) may be scheduled once every CTA runs
  __shared__ bool s_valid[2][kTileKeys];
  __shared__ float s_m0[kHeads], s_m1[kHeads];  // the current pair's row maxima m0, m1
  __shared__ float s_l[2][2][kHeads];           // [item parity][warpgroup]: quad-summed row sums
  __shared__ uint64_t s_bars[kBars];            // full[4], empty[4] (half_index), q full, q empty
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  Smem sm;
  sm.q = smem_u32(smem);
  sm.tile0 = sm.q + kPanelBytes;
  sm.tile1 = sm.tile0 + kPanelBytes;
  sm.p0 = sm.tile1 + kPanelBytes;
  sm.p1 = sm.p0 + kPBytes;
  sm.full = smem_u32(&s_bars[0]);
  sm.empty = smem_u32(&s_bars[4]);
  const uint32_t bar_q = smem_u32(&s_bars[8]);
  sm.q_empty = smem_u32(&s_bars[9]);
  if (threadIdx.x == 0) {
    for (int h = 0; h < 4; ++h) {
      mbar_init(sm.full + 8 * h, 256);  // 128 cp.async arrivals + 128 ordinary ones
      // Readers of the half: A left, B right: the scorer only; A right, B left: both.
      const bool one_reader = h == half_index(0, 0) || h == half_index(1, 1);
      mbar_init(sm.empty + 8 * h, one_reader ? 128 : kConsumerThreads);
    }
    mbar_init(bar_q, 128);
    mbar_init(sm.q_empty, kConsumerThreads);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();  // the only CTA-wide barrier

  if (threadIdx.x >= kConsumerThreads) {
    produce_items<kFp8>(p, splits, items, sm.q, sm.tile0, sm.full, sm.empty, bar_q, sm.q_empty, s_valid);
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const Rows r = {warp * 16 + (lane >> 2), lane & 3};
  const float scale_log2 = p.scale * kLog2e;
  uint32_t f0 = 0, f1 = 0;  // fills of buffers 0 / 1 of this CTA's earlier items (the producer counts the same)
  uint32_t count = 0;       // items done: q full / q empty phase, s_l parity
  for (int item = blockIdx.x; item < items; item += gridDim.x, ++count) {
    const WorkItem w = work_item(p, item);
    const KeyList keys = key_list(p, w.token);
    const auto [tile_begin, tile_end] = split_tiles<kTileKeys>(keys, splits, w.split);
    const int n = tile_end - tile_begin;
    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    RowState st = {{-INFINITY, -INFINITY}, {0.0f, 0.0f}};
    mbar_wait_no_trap(bar_q, count & 1);  // the item's Q (no trap path in consumer code)
    fence_proxy_async();                  // the producer's cp.async writes of Q -> this thread's wgmma reads
    if (n <= wg) mbar_arrive(sm.q_empty);  // this warpgroup scores no tile of the item
    if (wg == 0)
      consume_wg0(n, f0, f1, sm, s_valid, s_m0, s_m1, scale_log2, r, st, o);
    else
      consume_wg1(n, f0, f1, sm, s_valid, s_m0, s_m1, scale_log2, r, st, o);
    f0 += (n + 1) / 2;
    f1 += n / 2;
    // Item end: the two warpgroups' row sums (each over the tiles it scored, at the final m).
    float l[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[h] = quad_sum(st.l[h]);
      if (r.q == 0) s_l[count & 1][wg][r.row0 + 8 * h] = l[h];
    }
    consumer_sync();
#pragma unroll
    for (int h = 0; h < 2; ++h) l[h] = s_l[count & 1][0][r.row0 + 8 * h] + s_l[count & 1][1][r.row0 + 8 * h];
    store_output(p, w.token, w.head0, w.split, part_o, part_ml, o, st.m, l);
  }
}

}  // namespace

namespace detail {

cudaError_t launch_sparse_attention_localp(const SparseAttentionParams& p, int splits, cudaStream_t stream) {
  if (p.q_bf16 == nullptr) return cudaErrorInvalidValue;  // launchers.cpp refuses it with a message first
  static bool attribute_set[2][64] = {};  // this kernel's own (per device and instance)
  static constexpr sparse_ring::PersistentRingKernel kernels[2] = {sparse_attention_localp_kernel<false>,  // BF16 KV
                                                                   sparse_attention_localp_kernel<true>};  // kv_fp8
  return sparse_ring::launch_persistent_ring_kernel(p, splits, stream, kernels, kSmemBytes, attribute_set);
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

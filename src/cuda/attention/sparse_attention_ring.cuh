// The 48-key tile ring of the warp-specialised sparse-attention kernels
// (sparse_attention_pipelined.cu: Kernel::kWgmmaPipelined, sparse_attention_pingpong.cu:
// Kernel::kWgmmaPingPong): the CTA shape and shared-memory constants both use, the
// mbarrier helpers, the swizzled 48-row tile addressing and the producer warpgroup
// (index fetch one tile ahead, cp.async gather or the FP8 decode into a ring of kStages
// stages with full / empty mbarriers; with SparseAttentionParams::q_bf16 first the
// cp.async copy of the BF16 Q panel, signalled on the "q full" mbarrier), the Q staging
// and the host launch (launch_ring_kernel); the persistent variant's producer loop over
// work items (produce_items: produce_q + produce_range per item, produce_range being the
// one-item produce_tiles' tile loop with a ring offset) and launch
// (launch_persistent_ring_kernel). Moved here from sparse_attention_pipelined.cu (its
// kernel PTX was identical modulo register names, checked; with produce_range its
// consumer loop is still 887 instructions); the ring protocol is described in that
// file's header comment. key_row and the output epilogue
// (store_output), the same in sparse_attention_wgmma.cu, are in
// sparse_attention_wgmma_common.cuh.
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/kv_fp8.h"
#include "cuda/attention/sparse_attention_wgmma_common.cuh"
#include "cuda/common/mbarrier.cuh"

namespace dsv4::cuda::attention::sparse_ring {

using namespace sparse_wgmma;  // kHeads, kDim, kBlockBytes, wgmma / smem helpers, key_row, store_output
// mbarrier plumbing (cuda/common/mbarrier.cuh), named here for the kernels that take them
// from this header (sparse_attention_localp.cu); mbar_wait traps after 2^32 clocks,
// mbar_wait_no_trap (consumer code: no trap path under setmaxnreg) gives up instead.
using dsv4::cuda::cp_async_mbar_arrive;
using dsv4::cuda::mbar_arrive;
using dsv4::cuda::mbar_init;
using dsv4::cuda::mbar_try_wait;
using dsv4::cuda::mbar_wait;
using dsv4::cuda::mbar_wait_no_trap;

inline constexpr int kTileKeys = 48;       // keys per tile
inline constexpr int kStages = 3;
inline constexpr int kConsumerThreads = 256;
inline constexpr int kThreads = kConsumerThreads + 128;  // + the producer warpgroup
inline constexpr int kPanelBytes = kDim / 64 * kBlockBytes;    // Q: 64 rows x 512 BF16 = 64 KiB
inline constexpr int kTileBlockBytes = kTileKeys * 128;        // tile: one 64-channel column block of 48 rows
inline constexpr int kTileBytes = kDim / 64 * kTileBlockBytes; // 48 KiB
inline constexpr int kProducerRegs = 56, kConsumerRegs = 224;
static_assert(kTileBlockBytes % 1024 == 0, "tile blocks must be whole swizzle atoms");
static_assert(128 * kProducerRegs + kConsumerThreads * kConsumerRegs <= 65536, "register file");

// Byte offset of (row, 16-byte chunk c of 64 per row) in a swizzled 48-row tile.
__device__ __forceinline__ uint32_t tile_offset(int row, int c) {
  return (c >> 3) * kTileBlockBytes + row * 128 + (((c & 7) ^ (row & 7)) << 4);
}

__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// Whether the whole grid fits one CTA per SM, roughly: a decode-sized launch. %nsmid is the
// number of SM ids, which PTX allows to exceed the SM count (ids need not be contiguous), so
// a grid slightly over one wave may still count as one; only the L2 prefetch depends on it.
__device__ __forceinline__ bool one_wave() {
  uint32_t sms;
  asm("mov.u32 %0, %%nsmid;\n" : "=r"(sms));
  return gridDim.x * gridDim.y * gridDim.z <= sms;
}

// The 128-byte line holding `address` into L2 (no register result, nothing to wait for).
__device__ __forceinline__ void prefetch_l2(const void* address) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(address));
}

// Named barrier 1 over the 256 consumer threads (the producer never joins).
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

// The producer thread pt gathers rows 3 (pt / 8) + i (i < 3) of a tile, 16-byte chunks
// pt % 8 + 8 c (c < 8) of each: 3 row addresses (kSelected: 3 index loads) per tile.
inline constexpr int kProducerRows = 3;
static_assert(kProducerRows * 128 / 8 == kTileKeys, "producer row mapping");

// The compressed-list entries of this producer thread's rows of key tile `tile`
// (kSelected: loaded from selected[]; window rows and rows past the list get a value
// key_row ignores). Called one tile ahead, so the loads are in flight while the
// producer waits for the stage. kKeys / kRows: the tile's keys and the rows per producer
// thread (this ring's 48 / 3; kWgmmaLocalP's 64 / 4), thread pt taking rows kRows (pt / 8) + i.
template <int kKeys = kTileKeys, int kRows = kProducerRows>
__device__ __forceinline__ void fetch_picks(const SparseAttentionParams& p, const KeyList& keys, int token, int tile,
                                            int pt, int (&picks)[kRows]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int k = tile * kKeys + kRows * (pt >> 3) + i;
    const int j = k - keys.n_window;
    picks[i] = p.compressed == CompressedKeys::kSelected && j >= 0 && k < keys.n_total
                   ? p.selected[static_cast<int64_t>(token) * p.top_k + j]
                   : j;
  }
}

// kv_fp8: key k's row from key_row (computed with BF16 row strides, never dereferenced)
// as the 584-byte FP8 row (kv_fp8.h) of the same index; nullptr when skipped.
__device__ __forceinline__ const uint8_t* key_row_fp8(const SparseAttentionParams& p, const KeyList& keys, int k,
                                                      const uint16_t* row) {
  if (row == nullptr) return nullptr;
  const bool is_entry = k >= keys.n_window;
  const uint16_t* base = is_entry ? p.entries : p.window_kv;
  const int64_t index = (row - base) / kDim;
  return reinterpret_cast<const uint8_t*>(base) + index * kKvFp8RowBytes;
}

// kv_fp8 producer: this thread's 8 chunks (chunk0 + 8 c) of tile row `row` from the FP8
// row (nullptr: zeros), decoded to BF16 (exact) and stored with st.shared into the
// swizzled tile. Chunk chunk0 + 8 c (c < 7) is in scale block c; c = 7 is the BF16 tail.
__device__ __forceinline__ void st_shared_v4(uint32_t address, uint4 v) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void produce_fp8_row(uint32_t dst, int row, int chunk0, const uint8_t* source) {
  static_assert(kKvFp8NopeDim == 7 * 64 && kKvFp8ScaleOffset % 8 == 0, "one scale block per chunk step");
  if (source == nullptr) {
#pragma unroll
    for (int c = 0; c < 8; ++c) st_shared_v4(dst + tile_offset(row, chunk0 + 8 * c), make_uint4(0u, 0u, 0u, 0u));
    return;
  }
  // All loads first (20 registers), then decode and store chunk by chunk.
  uint2 raw[7];
#pragma unroll
  for (int c = 0; c < 7; ++c) raw[c] = reinterpret_cast<const uint2*>(source)[chunk0 + 8 * c];
  const uint2 scales = *reinterpret_cast<const uint2*>(source + kKvFp8ScaleOffset);  // 7 scales + pad
  const uint2* tail = reinterpret_cast<const uint2*>(source + kKvFp8RopeOffset) + 2 * chunk0;
  const uint2 lo = tail[0], hi = tail[1];
#pragma unroll
  for (int c = 0; c < 7; ++c) {
    const uint32_t scale_byte = ((c < 4 ? scales.x : scales.y) >> (8 * (c & 3))) & 0xff;
    st_shared_v4(dst + tile_offset(row, chunk0 + 8 * c),
                 kv_fp8_decode8_bf16(raw[c], static_cast<int>(scale_byte) - 127));
  }
  st_shared_v4(dst + tile_offset(row, chunk0 + 56), make_uint4(lo.x, lo.y, hi.x, hi.y));
}

// O (+)= P V for this warpgroup's 256 O columns: P [64 heads x 64 key slots] BF16 at s_pp
// (K-major, 48 keys used), V the tile at s_k (MN-major); committed, not waited for.
__device__ __forceinline__ void issue_pv(float (&o)[128], uint32_t s_pp, uint32_t s_k, int wg) {
  fence_regs(o);
  wgmma_fence();
#pragma unroll
  for (int kc = 0; kc < kTileKeys / 16; ++kc)
    wgmma_m64n256k16_ss_tb(o, make_desc(s_pp + kc * 32, 16, 1024),
                           make_desc(s_k + wg * 4 * kTileBlockBytes + kc * 2048, kTileBlockBytes, 1024));
  wgmma_commit();
}

// Consumer threads (both warpgroups, 256): the token's 64 heads of q, rounded to BF16,
// into the swizzled Q panel at smem (K-major A operand of S). The caller fences and syncs.
__device__ __forceinline__ void stage_q(const SparseAttentionParams& p, int token, int head0, uint8_t* smem) {
  const float* q = p.q + (static_cast<int64_t>(token) * p.heads + head0) * kDim;
  const int chunk = threadIdx.x & 63;
#pragma unroll
  for (int i = 0; i < kHeads / 4; ++i) {
    const int r = (threadIdx.x >> 6) + 4 * i;
    const float4 a = *reinterpret_cast<const float4*>(q + r * kDim + chunk * 8);
    const float4 b = *reinterpret_cast<const float4*>(q + r * kDim + chunk * 8 + 4);
    const uint4 v = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
    *reinterpret_cast<uint4*>(smem + panel_offset(r, chunk)) = v;
  }
}

// The kernel start both ring kernels share: split_tiles, init_ring_barriers, then
// start_consumers on the consumer side and produce_tiles on the producer side.

// The CTA's tiles [begin, end) of the token's key list: range `split` of `splits` equal
// ranges of kKeys-key tiles (empty past the list; kWgmmaLocalP: kKeys 64).
struct TileRange {
  int begin, end;
};
template <int kKeys = kTileKeys>
__device__ __forceinline__ TileRange split_tiles(const KeyList& keys, int splits, int split) {
  const int n_tiles = (keys.n_total + kKeys - 1) / kKeys;
  const int per_split = (n_tiles + splits - 1) / splits;
  const int tile_begin = split * per_split;
  // A split past the list (e.g. 1 tile over 3 splits) is empty, never end < begin: the
  // persistent kernel adds end - begin to its ring's tile counter.
  const int tile_end = max(tile_begin, min(n_tiles, tile_begin + per_split));
  return {tile_begin, tile_end};
}

// Thread 0 initialises the ring's mbarriers and the q full barrier (used with q_bf16:
// one phase per work item, the 128 producer threads' cp.async arrivals), with
// kQEmpty also the q empty barrier (the persistent kernel: 256 consumer arrivals per
// work item), then the CTA's only __syncthreads.
template <bool kQEmpty = false>
__device__ __forceinline__ void init_ring_barriers(uint32_t bar_full, uint32_t bar_empty, uint32_t bar_q,
                                                   uint32_t bar_q_empty = 0) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(bar_full + 8 * s, 256);  // 128 cp.async arrivals + 128 ordinary ones
      mbar_init(bar_empty + 8 * s, kConsumerThreads);
    }
    mbar_init(bar_q, 128);
    if constexpr (kQEmpty) mbar_init(bar_q_empty, kConsumerThreads);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();  // the only CTA-wide barrier
}

// Consumer threads: raise the register budget, then Q in the panel and visible to wgmma:
// with q_bf16 the producer's copy (wait on bar_q, no trap path: mbar_wait_no_trap), else
// stage_q by the consumers themselves.
__device__ __forceinline__ void start_consumers(const SparseAttentionParams& p, int token, int head0,
                                                uint8_t* smem, uint32_t bar_q) {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  if (p.q_bf16 != nullptr) {
    mbar_wait_no_trap(bar_q, 0);
    fence_proxy_async();  // the producer's cp.async writes of Q -> this thread's wgmma reads
    return;
  }
  stage_q(p, token, head0, smem);
  fence_proxy_async();
  consumer_sync();  // all of Q written
}

// Producer thread pt (q_bf16 only): its 32 of the token's 4096 16-byte chunks of 64 heads
// x 512 BF16 q (chunk pt % 64 of rows pt / 64 + 2 i: consecutive threads, consecutive
// chunks) by cp.async into the swizzled Q panel at s_q (stage_q's panel_offset layout),
// then the cp.async arrival on bar_q (fires when they have landed).
__device__ __forceinline__ void produce_q(const SparseAttentionParams& p, int token, int head0, int pt,
                                          uint32_t s_q, uint32_t bar_q) {
  constexpr int kChunksPerThread = kHeads * kDim / 8 / 128;
  static_assert(kChunksPerThread == 32 && kDim / 8 == 64, "Q copy mapping: 64 chunks per row, 2 rows per step");
  const int chunk = pt & 63;
  const uint16_t* q = p.q_bf16 + (static_cast<int64_t>(token) * p.heads + head0) * kDim + chunk * 8;
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int row = (pt >> 6) + 2 * i;
    cp_async_16(s_q + panel_offset(row, chunk), q + row * kDim, 16);
  }
  cp_async_mbar_arrive(bar_q);
}

// Producer thread pt: tiles [tile_begin, tile_end) of the token's key list into the
// ring, tile `tile` as ring tile g0 + tile - tile_begin (stage (that) % kStages, phase
// (that) / kStages; g0: the ring tiles produced before, 0 in the one-item kernels) at
// s_tiles, s_valid[stage][row] = whether key row of the tile is attended; picks: the
// fetch_picks of tile_begin (when the range is not empty); full / empty: the kStages
// mbarriers of each kind (8 bytes apart).
template <bool kFp8>
__device__ __forceinline__ void produce_range(const SparseAttentionParams& p, const KeyList& keys, int token,
                                              int tile_begin, int tile_end, int g0, int pt,
                                              int (&picks)[kProducerRows], uint32_t s_tiles, uint32_t bar_full,
                                              uint32_t bar_empty, bool (&s_valid)[kStages][kTileKeys],
                                              bool prefetch) {
  const int chunk0 = pt & 7, row0 = kProducerRows * (pt >> 3);
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int it = g0 + tile - tile_begin, stage = it % kStages;
    const uint16_t* rows[kProducerRows];
#pragma unroll
    for (int i = 0; i < kProducerRows; ++i) rows[i] = key_row(p, keys, tile * kTileKeys + row0 + i, picks[i]);
    // prefetch (one wave of CTAs: decode, rows from HBM): the tile's rows into L2 before
    // the wait for its stage (about a tile's time in steady state), so the gathers after
    // it hit L2. H200, 2026-12-02 04:30 UTC: decode 4-11% faster at 1-16 tokens (FP8 rows
    // 7-11% at every batch); prefill (rows mostly in L2 already) 1-6% slower, hence off there.
#pragma unroll
    for (int i = 0; i < kProducerRows && prefetch; ++i) {
      if constexpr (kFp8) {
        const uint8_t* source = key_row_fp8(p, keys, tile * kTileKeys + row0 + i, rows[i]);
        if (source != nullptr && chunk0 <= 5) prefetch_l2(source + (chunk0 < 5 ? 128 * chunk0 : kKvFp8RowBytes - 8));
      } else {
        if (rows[i] != nullptr) prefetch_l2(rows[i] + 64 * chunk0);  // 128-byte line chunk0 of the 1 KiB row
      }
    }
    if (tile + 1 < tile_end) fetch_picks(p, keys, token, tile + 1, pt, picks);  // in flight across the wait
    mbar_wait(bar_empty + 8 * stage, ((it / kStages) & 1) ^ 1);  // a fresh barrier passes parity 1
    const uint32_t dst = s_tiles + stage * kTileBytes;
    if constexpr (kFp8) {
      // One row at a time (the producer has 56 registers); rows[] picked by selects so
      // it stays in registers.
      static_assert(kProducerRows == 3, "row selection below");
#pragma unroll 1
      for (int i = 0; i < kProducerRows; ++i) {
        const uint16_t* row = i == 0 ? rows[0] : i == 1 ? rows[1] : rows[2];
        if (chunk0 == 0) s_valid[stage][row0 + i] = row != nullptr;
        produce_fp8_row(dst, row0 + i, chunk0, key_row_fp8(p, keys, tile * kTileKeys + row0 + i, row));
      }
      fence_proxy_async();  // this thread's st.shared of the tile -> the consumers' wgmma reads
      mbar_arrive(bar_full + 8 * stage);  // both of this thread's arrivals: no cp.async here
      mbar_arrive(bar_full + 8 * stage);
    } else {
#pragma unroll
      for (int i = 0; i < kProducerRows; ++i) {
        if (chunk0 == 0) s_valid[stage][row0 + i] = rows[i] != nullptr;
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          const int chunk = chunk0 + 8 * c;
          cp_async_16(dst + tile_offset(row0 + i, chunk), rows[i] != nullptr ? rows[i] + chunk * 8 : p.window_kv,
                      rows[i] != nullptr ? 16 : 0);
        }
      }
      cp_async_mbar_arrive(bar_full + 8 * stage);
      mbar_arrive(bar_full + 8 * stage);  // releases the s_valid stores
    }
  }
}

// The producer warpgroup's whole job (thread pt = threadIdx.x - kConsumerThreads; it
// first lowers its register budget): with q_bf16 the Q panel (produce_q; the ring's
// stages are free, so the first tiles' gathers follow at once), then tiles
// [tile_begin, tile_end) of the token's key list into ring tiles 0.. (produce_range).
template <bool kFp8>
__device__ __forceinline__ void produce_tiles(const SparseAttentionParams& p, const KeyList& keys, int token,
                                              int head0, int tile_begin, int tile_end, uint32_t s_q,
                                              uint32_t s_tiles, uint32_t bar_full, uint32_t bar_empty,
                                              uint32_t bar_q, bool (&s_valid)[kStages][kTileKeys]) {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
  const int pt = threadIdx.x - kConsumerThreads;
  int picks[kProducerRows];
  if (tile_begin < tile_end) fetch_picks(p, keys, token, tile_begin, pt, picks);  // in flight across the Q copy
  if (p.q_bf16 != nullptr) produce_q(p, token, head0, pt, s_q, bar_q);
  produce_range<kFp8>(p, keys, token, tile_begin, tile_end, 0, pt, picks, s_tiles, bar_full, bar_empty, s_valid,
                      one_wave());
  cp_async_wait_all();
}

// ---- Persistent ring kernels (Kernel::kWgmmaPingPongPersistent) ----
// A work item is what one CTA of the one-item grid (tokens, heads / 64, splits) does:
// item i = token + tokens (group + groups split), token fastest (the grid's x).
struct WorkItem {
  int token, head0, split;
};
__device__ __forceinline__ WorkItem work_item(const SparseAttentionParams& p, int item) {
  const int groups = p.heads / kHeads, token = item % p.batch.tokens, rest = item / p.batch.tokens;
  return {token, (rest % groups) * kHeads, rest / groups};
}

// The persistent producer warpgroup (q_bf16 required): for the CTA's items
// blockIdx.x, + gridDim.x, ... < items (c-th item: c = 0, 1, ...): the item's first
// picks, then (c > 0) wait on q empty for phase c - 1 (every consumer thread's last S of
// item c - 1 has completed: the Q panel is free), the item's Q copy (produce_q: phase c
// of q full) and its tiles as ring tiles g.. (g: the tiles of the CTA's earlier items),
// so the ring keeps running across items. An item without tiles still copies Q and
// takes part in the q full / q empty hand-shake (the consumers do the same).
template <bool kFp8>
__device__ __forceinline__ void produce_items(const SparseAttentionParams& p, int splits, int items, uint32_t s_q,
                                              uint32_t s_tiles, uint32_t bar_full, uint32_t bar_empty,
                                              uint32_t bar_q, uint32_t bar_q_empty,
                                              bool (&s_valid)[kStages][kTileKeys]) {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
  const int pt = threadIdx.x - kConsumerThreads;
  int g = 0;
  uint32_t count = 0;
  for (int item = blockIdx.x; item < items; item += gridDim.x, ++count) {
    const WorkItem w = work_item(p, item);
    const KeyList keys = key_list(p, w.token);
    const auto [tile_begin, tile_end] = split_tiles(keys, splits, w.split);
    int picks[kProducerRows];
    if (tile_begin < tile_end) fetch_picks(p, keys, w.token, tile_begin, pt, picks);  // in flight across the waits
    if (count > 0) mbar_wait(bar_q_empty, (count - 1) & 1);
    // pt made opaque per item: else the 32 Q panel addresses are hoisted out of the item
    // loop and spilled (56 registers).
    int pt_q = pt;
    asm volatile("" : "+r"(pt_q));
    produce_q(p, w.token, w.head0, pt_q, s_q, bar_q);
    produce_range<kFp8>(p, keys, w.token, tile_begin, tile_end, g, pt, picks, s_tiles, bar_full, bar_empty,
                        s_valid, items <= static_cast<int>(gridDim.x));  // one item per CTA: decode-sized
    g += tile_end - tile_begin;
  }
  cp_async_wait_all();
}

// Host side. A ring kernel: grid (tokens, heads / 64, splits), block kThreads,
// (p, splits, part_o, part_ml) as both kernels take them.
using RingKernel = void (*)(SparseAttentionParams, int, float*, float*);

// cudaFuncAttributeMaxDynamicSharedMemorySize = smem_bytes for `kernel` once per device
// (attribute_set: the calling kernel family's flags for this instance), so no attribute
// call lands inside a later stream capture.
template <class KernelFn>
inline cudaError_t set_max_dynamic_smem_once(KernelFn kernel, int smem_bytes, int device, bool (&attribute_set)[64]) {
  if (device < 64 && attribute_set[device]) return cudaSuccess;
  const cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (error == cudaSuccess && device < 64) attribute_set[device] = true;
  return error;
}

// The launch both ring kernels share: kernels[p.kv_fp8 ? 1 : 0] with smem_bytes of dynamic
// shared memory; splits > 1 writes the partials into p.split_workspace, then the merge.
// attribute_set: the calling kernel family's own once-per-device-and-instance flags (no
// attribute call inside a later stream capture).
inline cudaError_t launch_ring_kernel(const SparseAttentionParams& p, int splits, cudaStream_t stream,
                                      const RingKernel (&kernels)[2], int smem_bytes,
                                      bool (&attribute_set)[2][64]) {
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  const int instance = p.kv_fp8 ? 1 : 0;
  error = set_max_dynamic_smem_once(kernels[instance], smem_bytes, device, attribute_set[instance]);
  if (error != cudaSuccess) return error;
  splits = max(1, splits);
  const SplitPartials parts = split_partials(p, splits);
  const dim3 grid(p.batch.tokens, p.heads / kHeads, splits);
  kernels[instance]<<<grid, kThreads, smem_bytes, stream>>>(p, splits, parts.o, parts.ml);
  if (splits > 1) {
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
    return detail::launch_sparse_attention_merge(p, splits, parts.o, parts.ml, stream);
  }
  return cudaGetLastError();
}

// A persistent ring kernel: grid min(items, SMs), block kThreads, (p, splits, items,
// part_o, part_ml); items = tokens x heads / 64 x splits (the caller checked it fits an
// int).
using PersistentRingKernel = void (*)(SparseAttentionParams, int, int, float*, float*);

// launch_ring_kernel for a persistent kernel: the same attribute cache, partials and
// merge; the grid is min(items, multiprocessor count) CTAs (one per SM: the shared
// memory), each looping over its items.
inline cudaError_t launch_persistent_ring_kernel(const SparseAttentionParams& p, int splits, cudaStream_t stream,
                                                 const PersistentRingKernel (&kernels)[2], int smem_bytes,
                                                 bool (&attribute_set)[2][64]) {
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  const int instance = p.kv_fp8 ? 1 : 0;
  error = set_max_dynamic_smem_once(kernels[instance], smem_bytes, device, attribute_set[instance]);
  if (error != cudaSuccess) return error;
  int sms = 0;
  error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (error != cudaSuccess) return error;
  splits = max(1, splits);
  const SplitPartials parts = split_partials(p, splits);
  const int64_t items = static_cast<int64_t>(p.batch.tokens) * (p.heads / kHeads) * splits;
  if (items <= 0 || items > INT32_MAX) return cudaErrorInvalidValue;  // launchers.cpp checks this first
  const int grid = items < sms ? static_cast<int>(items) : max(1, sms);
  kernels[instance]<<<grid, kThreads, smem_bytes, stream>>>(p, splits, static_cast<int>(items), parts.o, parts.ml);
  if (splits > 1) {
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
    return detail::launch_sparse_attention_merge(p, splits, parts.o, parts.ml, stream);
  }
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::attention::sparse_ring

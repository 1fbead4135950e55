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
// Tile layout: like a Q panel but 48 rows per 64-channel column block (block b at
// b * 6144 bytes, row r at r * 128, chunk c at c ^ (r % 8)); S's B descriptor starts at
// row 24 g (a multiple of 8 rows: whole swizzle atoms); P V's MN-major V has LBO 6144.
// Not done here (see docs/kernels/attention.md): issuing S of tile i + 1 before the
// softmax of tile i (tried: ptxas C7512, every wgmma serialized for lack of registers,
// at 224 / 232 / 240 consumer registers), and HCA CTAs of 2 tokens sharing the
// compressed tiles.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/sparse_attention_wgmma_common.cuh"
#include "cuda/attention/kv_fp8.h"

namespace dsv4::cuda::attention {

namespace {

using namespace sparse_wgmma;  // kBlockBytes, the wgmma / smem helpers, KeyList

constexpr int kHeads = 64;          // heads per CTA = wgmma M
constexpr int kDim = 512;           // head_dim of the fast path
constexpr int kTileKeys = 48;       // keys per tile
constexpr int kHalfKeys = kTileKeys / 2;  // S's N per consumer warpgroup
constexpr int kStages = 3;
constexpr int kConsumerThreads = 256;
constexpr int kThreads = kConsumerThreads + 128;  // + the producer warpgroup
constexpr int kPanelBytes = kDim / 64 * kBlockBytes;    // Q: 64 rows x 512 BF16 = 64 KiB
constexpr int kTileBlockBytes = kTileKeys * 128;        // tile: one 64-channel column block of 48 rows
constexpr int kTileBytes = kDim / 64 * kTileBlockBytes; // 48 KiB
constexpr int kPBytes = kHeads * 64 * 2;                // P [64 heads x 64 key slots] BF16 (48 used)
constexpr int kSmemBytes = kPanelBytes + kStages * kTileBytes + kPBytes + 1024;  // + 1024-byte alignment slack
constexpr int kProducerRegs = 56, kConsumerRegs = 224;
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kTileBlockBytes % 1024 == 0 && (kHalfKeys % 8) == 0, "tile blocks must be whole swizzle atoms");
static_assert(128 * kProducerRegs + kConsumerThreads * kConsumerRegs <= 65536, "register file");

// D[64 x 24] (+)= A[64 x 16] B[16 x 24], both from shared memory, K-major.
__device__ __forceinline__ void wgmma_m64n24k16_ss(float (&d)[12], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %14, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n24k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11}, %12, %13, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// Byte offset of (row, 16-byte chunk c of 64 per row) in a swizzled 48-row tile.
__device__ __forceinline__ uint32_t tile_offset(int row, int c) {
  return (c >> 3) * kTileBlockBytes + row * 128 + (((c & 7) ^ (row & 7)) << 4);
}

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
// Arrives on `bar` once all of this thread's earlier cp.asyncs have completed (counts
// against the init count: .noinc).
__device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// Waits until the phase of parity `parity` of `bar` has completed; traps after 2^32
// SM clocks (~2 s: a deadlock becomes a launch error, not a hung run).
__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  if (mbar_try_wait(bar, parity)) return;
  const long long start = clock64();
  while (!mbar_try_wait(bar, parity))
    if (clock64() - start > (1ll << 32)) __trap();
}
// Named barrier 1 over the 256 consumer threads (the producer never joins).
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

// The producer thread pt gathers rows 3 (pt / 8) + i (i < 3) of a tile, 16-byte chunks
// pt % 8 + 8 c (c < 8) of each: 3 row addresses (kSelected: 3 index loads) per tile.
constexpr int kProducerRows = 3;
static_assert(kProducerRows * 128 / 8 == kTileKeys, "producer row mapping");

// The compressed-list entries of this producer thread's rows of key tile `tile`
// (kSelected: loaded from selected[]; window rows and rows past the list get a value
// key_row ignores). Called one tile ahead, so the loads are in flight while the
// producer waits for the stage.
__device__ __forceinline__ void fetch_picks(const SparseAttentionParams& p, const KeyList& keys, int token, int tile,
                                            int pt, int (&picks)[kProducerRows]) {
#pragma unroll
  for (int i = 0; i < kProducerRows; ++i) {
    const int k = tile * kTileKeys + kProducerRows * (pt >> 3) + i;
    const int j = k - keys.n_window;
    picks[i] = p.compressed == CompressedKeys::kSelected && j >= 0 && k < keys.n_total
                   ? p.selected[static_cast<int64_t>(token) * p.top_k + j]
                   : j;
  }
}

// Row of key k in window_kv or entries (w: its compressed-list entry from fetch_picks),
// or nullptr when skipped (past the list, a -1 / out-of-range pick).
__device__ __forceinline__ const uint16_t* key_row(const SparseAttentionParams& p, const KeyList& keys, int k, int w) {
  if (k >= keys.n_total) return nullptr;
  if (k < keys.n_window) {
    const int row = (keys.first_window + k) % p.ring_rows;
    return p.window_kv + (static_cast<int64_t>(keys.slot) * p.ring_rows + row) * kDim;
  }
  if (w < 0 || w >= keys.visible) return nullptr;
  return p.entries + (static_cast<int64_t>(keys.slot) * p.max_entries + w) * kDim;
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

// grid (tokens, heads / 64, splits), block 384, dynamic smem kSmemBytes. kFp8:
// SparseAttentionParams::kv_fp8 (the producer decodes FP8 rows instead of cp.async).
template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) sparse_attention_pipelined_kernel(const SparseAttentionParams p,
                                                                                 int splits, float* part_o,
                                                                                 float* part_ml) {
  extern __shared__ uint8_t smem_raw[];
  __shared__ bool s_valid[kStages][kTileKeys];
  __shared__ float s_xchg[2][kHeads];  // per consumer warpgroup: row maxima of a tile / final row sums
  __shared__ uint64_t s_bars[2 * kStages];  // full[0..2], empty[0..2]
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t s_q = smem_u32(smem);
  const uint32_t s_tiles = s_q + kPanelBytes;
  const uint32_t s_p = s_tiles + kStages * kTileBytes;  // 1024-aligned
  const uint32_t bar_full = smem_u32(&s_bars[0]), bar_empty = smem_u32(&s_bars[kStages]);

  const int token = blockIdx.x, head0 = blockIdx.y * kHeads, split = blockIdx.z;
  const KeyList keys = key_list(p, token);
  const int n_tiles = (keys.n_total + kTileKeys - 1) / kTileKeys;
  const int per_split = (n_tiles + splits - 1) / splits;
  const int tile_begin = split * per_split, tile_end = min(n_tiles, tile_begin + per_split);

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(bar_full + 8 * s, 256);   // 128 cp.async arrivals + 128 ordinary ones
      mbar_init(bar_empty + 8 * s, kConsumerThreads);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();  // the only CTA-wide barrier

  if (threadIdx.x >= kConsumerThreads) {
    // ---- producer warpgroup ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    const int pt = threadIdx.x - kConsumerThreads, chunk0 = pt & 7, row0 = kProducerRows * (pt >> 3);
    int picks[kProducerRows];
    if (tile_begin < tile_end) fetch_picks(p, keys, token, tile_begin, pt, picks);
    for (int tile = tile_begin; tile < tile_end; ++tile) {
      const int it = tile - tile_begin, stage = it % kStages;
      const uint16_t* rows[kProducerRows];
#pragma unroll
      for (int i = 0; i < kProducerRows; ++i) rows[i] = key_row(p, keys, tile * kTileKeys + row0 + i, picks[i]);
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
      }  // kFp8
    }
    cp_async_wait_all();
    return;
  }

  // ---- consumer warpgroups ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int row0 = warp * 16 + (lane >> 2);  // this thread's rows row0, row0 + 8 (heads head0 + row)
  {
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
  fence_proxy_async();
  consumer_sync();  // all of Q written

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
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 3; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool valid = s_valid[stage][kHalfKeys * wg + 8 * j + 2 * (lane & 3) + e];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float& x = s[4 * j + 2 * h + e];
          x = valid ? x * scale_log2 : -INFINITY;
          tile_max[h] = fmaxf(tile_max[h], x);
        }
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
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
      const float m_new = fmaxf(m[h], fmaxf(tile_max[h], s_xchg[wg ^ 1][row0 + 8 * h]));
      m_use[h] = m_new == -INFINITY ? 0.0f : m_new;
      alpha[h] = exp2f(m[h] - m_use[h]);
      m[h] = m_new;
    }
    float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < 3; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float p0 = exp2f(s[4 * j + 2 * h] - m_use[h]), p1 = exp2f(s[4 * j + 2 * h + 1] - m_use[h]);
        const uint32_t packed = pack_bf16(p0, p1);
        const __nv_bfloat162 r = *reinterpret_cast<const __nv_bfloat162*>(&packed);
        row_sum[h] += __low2float(r) + __high2float(r);  // the rounded weights, as the numerator
        // P[row][key]: 16-byte chunk 3 wg + j of the row (swizzled), 4 bytes per lane % 4.
        const int row = row0 + 8 * h;
        st_shared_u32(s_p + row * 128 + (((3 * wg + j) ^ (row & 7)) << 4) + 4 * (lane & 3), packed);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) l[h] = l[h] * alpha[h] + row_sum[h];
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      o[4 * j + 0] *= alpha[0];
      o[4 * j + 1] *= alpha[0];
      o[4 * j + 2] *= alpha[1];
      o[4 * j + 3] *= alpha[1];
    }
    fence_proxy_async();  // P (st.shared) -> the wgmma's async-proxy reads
    consumer_sync();      // both halves of P written

    fence_regs(o);
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < kTileKeys / 16; ++kc)
      wgmma_m64n256k16_ss_tb(o, make_desc(s_p + kc * 32, 16, 1024),
                             make_desc(s_k + wg * 4 * kTileBlockBytes + kc * 2048, kTileBlockBytes, 1024));
    wgmma_commit();
    wgmma_wait_all();
    fence_regs(o);
    mbar_arrive(bar_empty + 8 * stage);  // this thread is done with the stage
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  // Each warpgroup summed its own keys: add the other's (the other warpgroup read the
  // last maxima before the last P barrier, which this one passed).
#pragma unroll
  for (int h = 0; h < 2; ++h)
    if ((lane & 3) == 0) s_xchg[wg][row0 + 8 * h] = l[h];
  consumer_sync();
#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] += s_xchg[wg ^ 1][row0 + 8 * h];
  const int col0 = wg * 256 + 2 * (lane & 3);
  if (part_o == nullptr) {
    // Final: the sink joins the denominator only.
    float factor[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int head = head0 + row0 + 8 * h;
      const float sink = p.sinks != nullptr ? p.sinks[head] * kLog2e : -INFINITY;
      const float m_final = fmaxf(m[h], sink);
      const float rescale = m[h] == -INFINITY ? 0.0f : exp2f(m[h] - m_final);
      const float denominator = l[h] * rescale + (sink == -INFINITY ? 0.0f : exp2f(sink - m_final));
      factor[h] = denominator > 0.0f ? rescale / denominator : 0.0f;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float* out = p.out + (static_cast<int64_t>(token) * p.heads + head0 + row0 + 8 * h) * kDim + col0;
#pragma unroll
      for (int j = 0; j < 32; ++j)
        *reinterpret_cast<float2*>(out + 8 * j) = make_float2(o[4 * j + 2 * h] * factor[h], o[4 * j + 2 * h + 1] * factor[h]);
    }
  } else {
    // Partial: [splits, tokens, heads, 512] unnormalised O, [splits, tokens, heads, 2] (m, l).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = (static_cast<int64_t>(split) * p.batch.tokens + token) * p.heads + head0 + row0 + 8 * h;
      float* out = part_o + row * kDim + col0;
      if (m[h] != -INFINITY) {  // the merge skips a split without keys for this row (no O read)
#pragma unroll
        for (int j = 0; j < 32; ++j)
          *reinterpret_cast<float2*>(out + 8 * j) = make_float2(o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
      }
      if (wg == 0 && (lane & 3) == 0) *reinterpret_cast<float2*>(part_ml + row * 2) = make_float2(m[h], l[h]);
    }
  }
}

}  // namespace

namespace detail {

cudaError_t launch_sparse_attention_pipelined(const SparseAttentionParams& p, int splits, cudaStream_t stream) {
  // Once per device and instance (no attribute call inside a later stream capture).
  static bool attribute_set[2][64] = {};
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  const int instance = p.kv_fp8 ? 1 : 0;
  if (device >= 64 || !attribute_set[instance][device]) {
    error = cudaFuncSetAttribute(p.kv_fp8 ? sparse_attention_pipelined_kernel<true>
                                          : sparse_attention_pipelined_kernel<false>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (error != cudaSuccess) return error;
    if (device < 64) attribute_set[instance][device] = true;
  }
  splits = max(1, splits);
  float* part_o = nullptr;
  float* part_ml = nullptr;
  if (splits > 1) {
    part_o = p.split_workspace;
    part_ml = part_o + static_cast<int64_t>(splits) * p.batch.tokens * p.heads * kDim;
  }
  const dim3 grid(p.batch.tokens, p.heads / kHeads, splits);
  if (p.kv_fp8)
    sparse_attention_pipelined_kernel<true><<<grid, kThreads, kSmemBytes, stream>>>(p, splits, part_o, part_ml);
  else
    sparse_attention_pipelined_kernel<false><<<grid, kThreads, kSmemBytes, stream>>>(p, splits, part_o, part_ml);
  if (splits > 1) {
    error = cudaGetLastError();
    if (error != cudaSuccess) return error;
    return launch_sparse_attention_merge(p, splits, part_o, part_ml, stream);
  }
  return cudaGetLastError();
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

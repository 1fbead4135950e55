// TileConfig::kPrefillWgmmaTma (opt-in): kPrefillWgmmaPipe's math (same 256 weight rows x
// 128 slots per work item, same register dequant, same k order, same two-group overlap and
// epilogue; wgmma N is always 128: with the 64 / 96 / 128 choice inside the persistent loop
// ptxas serializes the wgmma (C7512) even at 128 registers. Expected bitwise equal to
// kPrefillWgmmaPipe, as kPrefillWgmmaPipe (N 64 / 96) is to kPrefillWgmma (N 128)) with
//   - a producer warp (warp 16; 544 threads = 4 consumer warpgroups + 1 warp) that moves
//     every stage by TMA: the activation B tile as two 2D boxes [128 slots][64 K] BF16
//     (cp.async.bulk.tensor.2d, 128-byte swizzle = the wgmma B descriptor's layout,
//     wgmma_layout.h) and the weights + scales of the stage as 16 + 16 bulk copies
//     (cp.async.bulk; per m16 tile the stage's two fragment blocks are contiguous);
//   - full / empty mbarriers per stage (full: 1 arrival + the stage's bytes; empty: one
//     arrival per consumer warp after its wgmma reading the stage completed); every wait
//     traps after a bounded spin (a lost copy is a launch error, not a hang);
//   - persistent CTAs (grid = min(SMs, items)) over work items (tile, 256-row block),
//     row blocks fastest (the CTAs running together share one activation tile and one
//     expert's weights in L2), with the output tile staged in its own shared buffer so
//     the producer prefetches the next item during the epilogue.
// TMA needs the activation rows in slot order: L2's h already is; for L1 launch_moe_l1
// first gathers x into GroupedGemmParams::act_perm [act_rows, k] (moe_gather_rows below).
// Registers: 96 per thread (TmaTile::kMaxRegs says why); a whole producer warpgroup
// (640 threads) with setmaxnreg could give the consumers 104.
#include <cuda.h>
#include <cuda_bf16.h>

#include "cuda/common/tensor_map.h"
#include "cuda/common/tma.cuh"
#include "cuda/moe/grouped_gemm_wgmma.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {
namespace {

struct TmaTile {
  static constexpr int kConsumerWarpgroups = 4;
  static constexpr int BW = 64 * kConsumerWarpgroups;  // weight rows per item
  static constexpr int BT = 128;                       // slots per item (wgmma N <= 128)
  static constexpr int kSubK = 64;
  static constexpr int kSubs = 2;
  static constexpr int BK = kSubK * kSubs;
  static constexpr int STAGES = 3;  // 4 do not fit next to the output buffer
  static constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
  static constexpr int kConsumerWarps = kConsumerThreads / 32;
  static constexpr int kThreads = kConsumerThreads + 32;  // + the producer warp
  // The SM allocates warps in groups of 4, so the 17 warps take 20 warps' registers: at most
  // 65536 / (20 x 32) = 102 -> 96 per thread (allocation unit 8). 120 failed on the H200 with
  // "too many resources requested for launch" (2026-12-01). At 96 ptxas spills 64-100 bytes
  // per thread (L1-resident). __launch_bounds__(544, 1) would also cap at 96; __maxnreg__
  // states it directly.
  static constexpr int kMaxRegs = 96;
  static constexpr int kWarpAllocation = (kThreads / 32 + 3) / 4 * 4;
  static_assert(kWarpAllocation * ((kMaxRegs * 32 + 255) / 256 * 256) <= 65536, "register file");
  static constexpr int kM16 = BW / kFragRows;
  static_assert(kM16 == kConsumerWarps, "one m16 tile per consumer warp");
  static_assert(kM16 <= 16, "producer lanes 0..15 copy weights, 16..31 scales");
};

template <ExpertFormat F>
struct TmaSmem {
  using T = TmaTile;
  static constexpr int SB = frag_scale_bytes(F);
  static constexpr int kSubActBytes = T::BT * T::kSubK * 2;             // 16 KB, one TMA box
  static constexpr int kActBytes = T::kSubs * kSubActBytes;             // [sub][BT][64] swizzled
  static constexpr int kM16WeightBytes = T::kSubs * kFragBytes;         // [sub][lane][16 B] per m16 tile
  static constexpr int kWeightBytes = T::kM16 * kM16WeightBytes;        // [m16][sub][512]
  static constexpr int kM16ScaleBytes = T::kSubs * SB;
  static constexpr int kScaleBytes = T::kM16 * kM16ScaleBytes;          // [m16][sub][SB]
  static constexpr int kStageTx = kActBytes + kWeightBytes + kScaleBytes;  // bytes per full barrier phase
  static constexpr int kWeightOffset = T::STAGES * kActBytes;
  static constexpr int kScaleOffset = kWeightOffset + T::STAGES * kWeightBytes;
  static constexpr int kOutOffset = kScaleOffset + T::STAGES * kScaleBytes;
  static constexpr int kOutStride = T::BW + 8;
  static constexpr int kOutBytes = T::BT * kOutStride * 2;
  static constexpr int kBarOffset = kOutOffset + kOutBytes;  // full[STAGES], empty[STAGES]
  static constexpr int kAlign = 1024;
  static constexpr int kBytes = kBarOffset + 2 * T::STAGES * 8 + kAlign;
  static_assert(kSubActBytes % kAlign == 0 && kActBytes % kAlign == 0, "TMA 128B-swizzle boxes 1024-aligned");
  static_assert(kM16WeightBytes % 16 == 0 && kM16ScaleBytes % 16 == 0, "bulk copy sizes");
  static_assert(kScaleOffset % 16 == 0 && kOutOffset % 16 == 0 && kBarOffset % 8 == 0, "alignment");
  static_assert(kSubActBytes == kWgmmaSubBytes && T::BT == kWgmmaSlots && T::kSubK == kWgmmaSubK, "wgmma_layout.h");
  static_assert(kBytes <= 227 * 1024, "fits one SM");
};

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits for the phase with parity `parity` to complete; traps after ~2^24 polls (each
// try_wait may suspend the thread for a while: seconds in all, a lost copy, not a slow one).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  for (int spin = 0; !done; ++spin) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (!done && spin > (1 << 24)) __trap();
  }
}
// Named barrier 1 over the 512 consumer threads (the producer warp never joins).
__device__ __forceinline__ void consumer_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(TmaTile::kConsumerThreads) : "memory");
}

struct ItemCoords {
  int expert, slot0, rows, n0;
};

// One work item of the consumers: main loop (stages q0 .. q0 + k_tiles - 1 of the CTA's
// running stage counter) and epilogue. wgmma N = kN (>= rows; the kernel uses 128 only).
template <ExpertFormat F, bool kL1, int kN>
__device__ __forceinline__ void consumer_item(const GroupedGemmParams& p, uint8_t* smem, uint32_t smem_addr,
                                              const ItemCoords& it, uint32_t q0) {
  using Tile = TmaTile;
  using Smem = TmaSmem<F>;
  constexpr int BW = Tile::BW, BT = Tile::BT, SUBS = Tile::kSubs, STAGES = Tile::STAGES;
  constexpr int SB = Smem::SB;
  const int k_tiles = p.k / Tile::BK;
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const uint32_t full0 = smem_addr + Smem::kBarOffset, empty0 = full0 + STAGES * 8;

  static_assert(kN % 32 == 0 && kN <= BT, "wgmma N");
  float acc[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) acc[i] = 0.0f;
  uint32_t a_pipe[2][2][4];

  for (int kt = 0; kt < k_tiles; ++kt) {
    const uint32_t q = q0 + kt;
    const int slot = static_cast<int>(q % STAGES);
    mbar_wait(full0 + slot * 8, (q / STAGES) & 1u);
#pragma unroll
    for (int sub = 0; sub < SUBS; ++sub) {
      const uint8_t* s_w = smem + Smem::kWeightOffset + slot * Smem::kWeightBytes + warp * Smem::kM16WeightBytes +
                           sub * kFragBytes;
      const uint8_t* s_s = smem + Smem::kScaleOffset + slot * Smem::kScaleBytes + warp * Smem::kM16ScaleBytes + sub * SB;
      const uint4 w = *reinterpret_cast<const uint4*>(s_w + lane * 16);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
      uint32_t scale_words[2];
      load_frag_scale_words<F>(s_s, g, scale_words);
      const uint64_t desc = wgmma_desc_sw128(smem_addr + slot * Smem::kActBytes + sub * Smem::kSubActBytes);
      // Dequantizes k16 step s of the sub-block into 4 A registers.
      auto dequant_step = [&](int s, uint32_t (&a)[4]) { dequant_frag_step<F>(words, scale_words, s, a); };
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        uint32_t(&a)[2][4] = a_pipe[half];
        wgmma_wait<1>();  // the group that last read a_pipe[half] (the second most recent) is done
        if (sub == 0 && half == 1 && kt > 0 && lane == 0) {
          // Only group (kt, 0, 0) may still run: every wgmma of stage kt - 1 completed.
          mbar_arrive(empty0 + static_cast<uint32_t>((q - 1) % STAGES) * 8);
        }
        dequant_step(2 * half, a[0]);
        dequant_step(2 * half + 1, a[1]);
        fence_acc(acc);
        wgmma_fence();
        wgmma_m64nNk16_rs<kN>(acc, a[0], desc + 4 * half);
        wgmma_m64nNk16_rs<kN>(acc, a[1], desc + 4 * half + 2);
        wgmma_commit();
        fence_acc(acc);
      }
    }
  }
  wgmma_wait<0>();
  fence_acc(acc);
  if (lane == 0) mbar_arrive(empty0 + static_cast<uint32_t>((q0 + k_tiles - 1) % STAGES) * 8);

  // Epilogue (kPrefillWgmmaPipe's arithmetic) through the dedicated output buffer.
  consumer_sync();  // every consumer finished reading s_out for the previous item
  __nv_bfloat16* s_out = reinterpret_cast<__nv_bfloat16*>(smem + Smem::kOutOffset);
  wgmma_epilogue_to_smem<kL1, kN, Smem::kOutStride>(p, acc, s_out, it.expert, it.rows, it.slot0, warp, g, t);
  consumer_sync();
  store_out_tile<kL1, BT, kL1 ? BW / 2 : BW, Smem::kOutStride>(p, s_out, it.rows, it.slot0, it.n0, tid,
                                                                Tile::kConsumerThreads);
}

template <ExpertFormat F, bool kL1>
__global__ void __maxnreg__(TmaTile::kMaxRegs)
    moe_grouped_gemm_wgmma_tma_kernel(const __grid_constant__ GroupedGemmParams p,
                                      const __grid_constant__ CUtensorMap act_map) {
  using Tile = TmaTile;
  using Smem = TmaSmem<F>;
  constexpr int STAGES = Tile::STAGES;
  extern __shared__ uint8_t smem_raw[];
  uint32_t smem_addr;
  uint8_t* smem = align_dynamic_smem<Smem::kAlign>(smem_raw, smem_addr);
  const uint32_t full0 = smem_addr + Smem::kBarOffset, empty0 = full0 + STAGES * 8;

  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full0 + s * 8, 1);
      mbar_init(empty0 + s * 8, Tile::kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();  // the only CTA-wide barrier

  const int n_blocks = p.n / Tile::BW;
  const int items = p.max_tiles * n_blocks;
  const int tile_count = *p.tile_count;
  const int k_tiles = p.k / Tile::BK;
  const int kb_count = p.k / kFragCols;

  if (tid >= Tile::kConsumerThreads) {
    // ---- producer warp ----
    const int lane = tid & 31;
    if (lane == 0) asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&act_map)) : "memory");
    uint32_t q = 0;
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
      const int tile = item / n_blocks;
      if (tile >= tile_count) break;  // items are tile-major: all later ones are empty too
      const int expert = p.tile_expert[tile];
      const int slot0 = p.tile_slot_begin[tile];
      const int n0 = (item % n_blocks) * Tile::BW;
      const uint8_t* g_weights = p.weights + static_cast<int64_t>(expert) * p.n * p.k / 2;
      const uint8_t* g_scales = p.scales + static_cast<int64_t>(expert) * (p.n / kFragRows) * kb_count * Smem::SB;
      for (int kt = 0; kt < k_tiles; ++kt, ++q) {
        const int slot = static_cast<int>(q % STAGES);
        const uint32_t full = full0 + slot * 8;
        // Free once every consumer warp released its previous use (fresh barrier: the
        // parity-1 wait returns at once on the first round).
        if (lane == 0) {
          mbar_wait(empty0 + slot * 8, ((q / STAGES) & 1u) ^ 1u);
          mbar_arrive_expect_tx(full, Smem::kStageTx);
        }
        __syncwarp();
        const int kb0 = kt * Tile::kSubs;
        if (lane < 16) {
          const int m16 = lane;
          const int64_t fb = static_cast<int64_t>(n0 / kFragRows + m16) * kb_count + kb0;
          bulk_g2s(smem_addr + Smem::kWeightOffset + slot * Smem::kWeightBytes + m16 * Smem::kM16WeightBytes,
                   g_weights + fb * kFragBytes, Smem::kM16WeightBytes, full);
        } else {
          const int m16 = lane - 16;
          const int64_t fb = static_cast<int64_t>(n0 / kFragRows + m16) * kb_count + kb0;
          bulk_g2s(smem_addr + Smem::kScaleOffset + slot * Smem::kScaleBytes + m16 * Smem::kM16ScaleBytes,
                   g_scales + fb * Smem::SB, Smem::kM16ScaleBytes, full);
        }
        if (lane == 0) {
#pragma unroll
          for (int sub = 0; sub < Tile::kSubs; ++sub)
            tma_load_2d(smem_addr + slot * Smem::kActBytes + sub * Smem::kSubActBytes, &act_map,
                        kt * Tile::BK + sub * Tile::kSubK, slot0, full);
        }
      }
    }
    return;  // copies in flight complete on their barriers; the consumers wait for them
  }

  // ---- consumer warpgroups ----
  uint32_t q0 = 0;
  for (int item = blockIdx.x; item < items; item += gridDim.x) {
    const int tile = item / n_blocks;
    if (tile >= tile_count) break;
    ItemCoords it;
    it.expert = p.tile_expert[tile];
    it.slot0 = p.tile_slot_begin[tile];
    it.rows = p.tile_row_count[tile];
    it.n0 = (item % n_blocks) * Tile::BW;
    consumer_item<F, kL1, 128>(p, smem, smem_addr, it, q0);  // B rows >= rows: other slots / TMA zeros, unused
    q0 += static_cast<uint32_t>(k_tiles);
  }
}

// x_perm[s][:] = x[slot_token[s]][:] for the slots of the tile list (CTA (tile, part) copies
// rows part, part + kGatherParts, ... of the tile; 16-byte chunks, k % 8 == 0). Walking the
// tile list, not [0, act_rows): slots past the dispatch's slot count (pairs without an
// expert) have no slot_token entry. Rows of x_perm outside every tile stay unwritten; the
// TMA may load them into B rows past a tile, whose accumulator columns are never stored.
constexpr int kGatherParts = 8;
__global__ void moe_gather_rows_kernel(const uint16_t* __restrict__ x, const int32_t* __restrict__ slot_token,
                                       const int32_t* __restrict__ tile_slot_begin,
                                       const int32_t* __restrict__ tile_row_count, const int32_t* __restrict__ tile_count,
                                       uint16_t* __restrict__ x_perm, int k) {
  const int tile = blockIdx.x;
  if (tile >= *tile_count) return;
  const int slot0 = tile_slot_begin[tile], rows = tile_row_count[tile];
  for (int r = blockIdx.y; r < rows; r += kGatherParts) {
    const int s = slot0 + r;
    const uint4* src = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(slot_token[s]) * k);
    uint4* dst = reinterpret_cast<uint4*>(x_perm + static_cast<int64_t>(s) * k);
    for (int c = threadIdx.x; c < k / 8; c += blockDim.x) dst[c] = src[c];
  }
}

cudaError_t encode_act_map(CUtensorMap* map, const uint16_t* act, int rows, int k) {
  // [rows][k] BF16 in boxes [128 rows][64 BF16 = 128 B], 128-byte swizzle (wgmma_layout.h).
  return encode_tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, act, static_cast<uint64_t>(k),
                              static_cast<uint64_t>(rows), static_cast<uint64_t>(k) * 2, TmaTile::kSubK, TmaTile::BT,
                              CU_TENSOR_MAP_SWIZZLE_128B);
}

template <ExpertFormat F, bool kL1>
cudaError_t launch_tma(const GroupedGemmParams& p, const uint16_t* act) {
  using Smem = TmaSmem<F>;
  auto kernel = moe_grouped_gemm_wgmma_tma_kernel<F, kL1>;
  static bool configured = false;
  if (!configured) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem::kBytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  CUtensorMap map;
  cudaError_t err = encode_act_map(&map, act, p.act_rows, p.k);
  if (err != cudaSuccess) return err;
  int device = 0, sms = 0;
  if ((err = cudaGetDevice(&device)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) return err;
  const int64_t items = static_cast<int64_t>(p.max_tiles) * (p.n / TmaTile::BW);
  const int grid = static_cast<int>(items < sms ? items : sms);
  GroupedGemmParams q = p;
  q.act = act;
  kernel<<<grid, TmaTile::kThreads, Smem::kBytes, p.stream>>>(q, map);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_wgmma_tma(const GroupedGemmParams& p, bool l1) {
  if (p.n % TmaTile::BW != 0 || p.k % TmaTile::BK != 0) return cudaErrorInvalidValue;  // n % 256, k % 128
  if (p.max_tiles <= 0) return cudaSuccess;
  if (p.act_rows <= 0 || !p.act) return cudaErrorInvalidValue;  // TMA needs the row count of act
  if (static_cast<int64_t>(p.max_tiles) * (p.n / TmaTile::BW) > INT32_MAX) return cudaErrorInvalidValue;
  const uint16_t* act = p.act;
  if (l1) {
    if (!p.act_perm || !p.slot_token) return cudaErrorInvalidValue;  // L1 needs the slot-order copy of x
    const dim3 grid(static_cast<unsigned>(p.max_tiles), kGatherParts);
    moe_gather_rows_kernel<<<grid, 128, 0, p.stream>>>(p.act, p.slot_token, p.tile_slot_begin, p.tile_row_count,
                                                       p.tile_count, p.act_perm, p.k);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    act = p.act_perm;
  }
  if (p.format == ExpertFormat::kNVFP4)
    return l1 ? launch_tma<ExpertFormat::kNVFP4, true>(p, act) : launch_tma<ExpertFormat::kNVFP4, false>(p, act);
  return l1 ? launch_tma<ExpertFormat::kMXFP4, true>(p, act) : launch_tma<ExpertFormat::kMXFP4, false>(p, act);
}

}  // namespace dsv4::cuda::moe::detail

// Persistent decode GEMMs (TileConfig::kDecodePersistent): L1 (+ clamped SwiGLU -> h) and L2
// (+ factor x routing weight -> slot_out, fused combine) in one launch of resident CTAs.
// Each unit runs grouped_gemm_unit, the body of moe_grouped_gemm_kernel, with kDecode's tile
// (so a unit's arithmetic is kDecode's, or kDecodeSplitK's for K-sliced units):
//   unit u of a GEMM (units = tile_count x (n / 128) x S): tile = u mod tiles, then
//   slice z = (u / tiles) mod S, column block y = u / (tiles S); CTA c runs u = c, c + grid, ...
// Tensors (moe.h): x [tokens, H] BF16, W13 / W2 in the fragment layout, h [slots, I] BF16,
// slot_out [slots, H] BF16, split_partials [S][slots][n] FP32, combine_out [tokens, H] FP32.
// Between L1 and L2 one grid barrier (grid_barrier below): every L2 unit reads all of h's
// columns of its slots, which other CTAs wrote. Before waiting, a CTA issues the weight +
// scale copies of the first STAGES - 1 stages of its first L2 unit (grouped_gemm_unit's
// kPrefetch: the weights do not depend on L1), so L2's stream starts while the barrier drains.
#pragma once
#include "cuda/moe/grouped_gemm.cuh"

namespace dsv4::cuda::moe::detail {

// A barrier wait longer than this traps (a lost CTA or a grid that is not co-resident),
// instead of hanging the GPU; waits are microseconds.
inline constexpr unsigned long long kGridBarrierTimeoutNs = 2000000000ull;

__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

// Grid-wide barrier over the gridDim.x CTAs of this launch, all resident. counter: 64 bits,
// a multiple of gridDim.x at launch; each CTA adds 1 once per launch, so launch e (0, 1, ...
// since the last zeroing) sees arrivals e * grid .. e * grid + grid - 1 and waits until the
// counter reaches (e + 1) * grid: no re-zeroing between launches, and 2^64 never wraps.
// Release: every thread fences its global writes (h, partials) before the CTA barrier, thread
// 0 then arrives (relaxed atomic after the fence). Acquire: thread 0 polls with ld.acquire.gpu
// and fences; the CTA barrier passes that on. Consumers read h with cp.async.cg / ld.cg (L2).
__device__ __forceinline__ void grid_barrier(unsigned long long* counter) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned long long grid = gridDim.x;
    const unsigned long long arrived = atomicAdd(counter, 1ull);
    const unsigned long long target = (arrived / grid + 1) * grid;
    const unsigned long long start = global_timer_ns();
    for (;;) {
      unsigned long long now;
      asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(now) : "l"(counter) : "memory");
      if (static_cast<long long>(now - target) >= 0) break;
      if (global_timer_ns() - start > kGridBarrierTimeoutNs) __trap();
      __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
}

// Unit u of a GEMM with `tiles` tiles, y_count column blocks and `slices` K slices.
__device__ __forceinline__ DealtUnit deal_unit(int u, int tiles, int y_count, int slices, int& tile) {
  tile = u % tiles;
  const int rest = u / tiles;
  return DealtUnit{static_cast<unsigned>(rest / slices), static_cast<unsigned>(y_count),
                   static_cast<unsigned>(rest % slices), static_cast<unsigned>(slices)};
}

// kSplitL1 / kSplitL2: that GEMM runs K slices (split_k > 1, kDecodeSplitK's code path); false:
// kDecode's (split_k is then ignored). The host picks the instantiation from split_k.
// kChained (DecodePersistentParams::chain_units): a CTA's units share one stage ring, each
// unit issuing the next one's first 5 weight stages in its own last 5 iterations
// (grouped_gemm_unit's kChain), so the pipeline does not drain and refill between units; the
// CTA's last L1 unit issues its first L2 unit's weights, which then land during the barrier.
template <ExpertFormat F, bool kSplitL1, bool kSplitL2, bool kChained>
__global__ void __launch_bounds__(DecodeTile::kThreads, DecodeTile::kMinCtas)
    moe_decode_persistent_kernel(const DecodePersistentParams a) {
  using Tile = DecodeTile;
  const int tile_total = *a.l1.tile_count;
  const int grid = static_cast<int>(gridDim.x);
  const int y1 = a.l1.n / Tile::BW, y2 = a.l2.n / Tile::BW;
  const int s1 = kSplitL1 ? a.l1.split_k : 1, s2 = kSplitL2 ? a.l2.split_k : 1;
  const int units1 = tile_total * y1 * s1, units2 = tile_total * y2 * s2;
  // Every CTA arrives at the grid barrier exactly once: inside its first L2 unit (after that
  // unit's weight prefetch), or after the L2 loop when it has none. Later L2 units take the
  // same prologue without the wait (their first k-tile then waits for all 5 prefetched
  // weight stages).
  bool arrived = false;
  const auto barrier_once = [&] {
    if (!arrived) grid_barrier(a.grid_barrier);
    arrived = true;
  };
  if constexpr (kChained) {
    // This CTA's units: c, c + grid, ... of L1, then c, c + grid, ... of L2; sources(l2, u):
    // the weight sources of unit u of that GEMM, for the unit before it to prefetch.
    auto sources = [&](bool l2, int u) {
      int tile;
      if (!l2) {
        const DealtUnit d = deal_unit(u, tile_total, y1, s1, tile);
        return chain_next_sources<Tile, F>(a.l1, tile, static_cast<int>(d.y()), static_cast<int>(d.z()), s1);
      }
      const DealtUnit d = deal_unit(u, tile_total, y2, s2, tile);
      return chain_next_sources<Tile, F>(a.l2, tile, static_cast<int>(d.y()), static_cast<int>(d.z()), s2);
    };
    ChainState chain;
    for (int u = blockIdx.x; u < units1; u += grid) {
      int tile;
      const DealtUnit unit = deal_unit(u, tile_total, y1, s1, tile);
      ChainNext next;  // k_tiles 0: none
      if (u + grid < units1)
        next = sources(false, u + grid);
      else if (static_cast<int>(blockIdx.x) < units2)
        next = sources(true, blockIdx.x);
      __syncthreads();
      grouped_gemm_unit<Tile, F, true, kSplitL1, 0, false, true, DealtUnit, NoActWait, true>(
          a.l1, tile, tile_total, unit, NoActWait(), &chain, next);
    }
    for (int u = blockIdx.x; u < units2; u += grid) {
      int tile;
      const DealtUnit unit = deal_unit(u, tile_total, y2, s2, tile);
      ChainNext next;
      if (u + grid < units2) next = sources(true, u + grid);
      __syncthreads();
      grouped_gemm_unit<Tile, F, false, kSplitL2, 0, false, true, DealtUnit, decltype(barrier_once), true>(
          a.l2, tile, tile_total, unit, barrier_once, &chain, next);
    }
    barrier_once();
    cp_async_wait<0>();  // nothing should be pending (the last unit had no next one); cheap
  } else {
    for (int u = blockIdx.x; u < units1; u += grid) {
      int tile;
      const DealtUnit unit = deal_unit(u, tile_total, y1, s1, tile);
      __syncthreads();  // the previous unit's epilogue is done with shared memory
      grouped_gemm_unit<Tile, F, true, kSplitL1>(a.l1, tile, tile_total, unit);
    }

    for (int u = blockIdx.x; u < units2; u += grid) {
      int tile;
      const DealtUnit unit = deal_unit(u, tile_total, y2, s2, tile);
      __syncthreads();
      grouped_gemm_unit<Tile, F, false, kSplitL2, 0, false, true>(a.l2, tile, tile_total, unit, barrier_once);
    }
    barrier_once();
  }

  // Fused combine with no tile at all: nobody counts, so the CTAs write the combine's
  // result, zeros, for column blocks y = blockIdx.x, + grid, ... (as moe_grouped_gemm_kernel's CTA (0, y)).
  if (tile_total == 0 && a.l2.combine_out != nullptr) {
    constexpr int kChunks = Tile::BW / 8;
    for (int y = blockIdx.x; y < y2; y += grid)
      for (int c = threadIdx.x; c < a.l2.combine_tokens * kChunks; c += Tile::kThreads) {
        float4* o = reinterpret_cast<float4*>(a.l2.combine_out + static_cast<int64_t>(c / kChunks) * a.l2.n +
                                              y * Tile::BW + (c % kChunks) * 8);
        o[0] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        o[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
  }
}

// CTAs of moe_decode_persistent_kernel<F, ...> resident at once on the current device,
// queried once per instantiation (its dynamic shared memory attribute set on the way).
// 0 on an error (no device).
template <ExpertFormat F, bool kSplitL1, bool kSplitL2, bool kChained>
int decode_persistent_resident_ctas() {
  static const int ctas = [] {
    auto kernel = moe_decode_persistent_kernel<F, kSplitL1, kSplitL2, kChained>;
    constexpr int kBytes = GemmSmem<DecodeTile, F>::kBytes;
    int device = 0, sms = 0, per_sm = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, DecodeTile::kThreads, kBytes) != cudaSuccess) {
      (void)cudaGetLastError();  // leave no sticky error behind
      return 0;
    }
    return per_sm * sms;
  }();
  return ctas;
}

template <ExpertFormat F, bool kSplitL1, bool kSplitL2, bool kChained>
cudaError_t launch_decode_persistent(const DecodePersistentParams& a) {
  const int resident = decode_persistent_resident_ctas<F, kSplitL1, kSplitL2, kChained>();
  if (resident <= 0) return cudaErrorInvalidDevice;
  const int grid = a.grid > 0 && a.grid < resident ? a.grid : resident;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(grid));
  config.blockDim = dim3(DecodeTile::kThreads);
  config.dynamicSmemBytes = GemmSmem<DecodeTile, F>::kBytes;
  config.stream = a.l1.stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeCooperative;
  attribute[0].val.cooperative = 1;
  config.attrs = attribute;
  config.numAttrs = a.cooperative ? 1 : 0;
  return cudaLaunchKernelEx(&config, moe_decode_persistent_kernel<F, kSplitL1, kSplitL2, kChained>, a);
}

// The eight instantiations of one format by split_k (S > 1 per GEMM) and chain_units.
template <ExpertFormat F, bool kChained>
cudaError_t launch_decode_persistent_split(const DecodePersistentParams& a) {
  const bool split1 = a.l1.split_k > 1, split2 = a.l2.split_k > 1;
  if (split1 && split2) return launch_decode_persistent<F, true, true, kChained>(a);
  if (split1) return launch_decode_persistent<F, true, false, kChained>(a);
  if (split2) return launch_decode_persistent<F, false, true, kChained>(a);
  return launch_decode_persistent<F, false, false, kChained>(a);
}
template <ExpertFormat F>
cudaError_t launch_decode_persistent_format(const DecodePersistentParams& a) {
  return a.chain_units ? launch_decode_persistent_split<F, true>(a) : launch_decode_persistent_split<F, false>(a);
}

}  // namespace dsv4::cuda::moe::detail

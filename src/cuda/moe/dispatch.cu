// Dispatch (one CTA: per-expert counts, offsets, slot maps and the GEMM tile list)
// and the deterministic combine.
#include <cuda_bf16.h>

#include <cstdlib>
#include <cstring>

#include "cuda/common/pdl_launch.h"
#include "cuda/moe/moe.h"
#include "cuda/moe/route_topk.cuh"

namespace dsv4::cuda::moe {

namespace {

constexpr int kDispatchThreads = 1024;
constexpr int kMaxExpertsWithShared = 512;

__device__ __forceinline__ int expert_of_pair(const DispatchParams& p, int pair, int pairs_per_token) {
  const int token = pair / pairs_per_token, k = pair % pairs_per_token;
  if (k == p.top_k) return p.experts;  // shared expert
  const int e = p.topk_ids[static_cast<int64_t>(token) * p.top_k + k];
  return e >= 0 && e < p.experts ? e : -1;
}

// The dispatch of one CTA of kDispatchThreads threads (dispatch_kernel and the fused
// top-k + dispatch kernel).
__device__ __forceinline__ void dispatch_cta(const DispatchParams& p) {
  __shared__ int counts[kMaxExpertsWithShared];
  __shared__ int offsets[kMaxExpertsWithShared + 1];
  __shared__ int tile_base[kMaxExpertsWithShared + 1];
  __shared__ int cursor[kMaxExpertsWithShared];
  const int tid = threadIdx.x, lane = tid & 31;
  const int groups = p.experts + (p.has_shared ? 1 : 0);
  const int pairs_per_token = p.top_k + (p.has_shared ? 1 : 0);
  const int pairs = p.tokens * pairs_per_token;
  for (int e = tid; e < groups; e += kDispatchThreads) counts[e] = 0, cursor[e] = 0;
  for (int i = tid; i < p.zero_count; i += kDispatchThreads) p.zero_ints[i] = 0;
  __syncthreads();

  // Pass 1: counts. Lanes routed to the same expert add once (warp-aggregated).
  for (int base = 0; base < pairs; base += kDispatchThreads) {
    const int pair = base + tid;
    const int e = pair < pairs ? expert_of_pair(p, pair, pairs_per_token) : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    if (e >= 0 && lane == __ffs(peers) - 1) atomicAdd(&counts[e], __popc(peers));
  }
  __syncthreads();

  // Exclusive scans of counts and of tiles per expert, by warp 0 (each lane a run).
  if (tid < 32) {
    const int per_lane = (groups + 31) / 32;
    const int begin = min(groups, lane * per_lane), end = min(groups, begin + per_lane);
    int run_rows = 0, run_tiles = 0;
    for (int e = begin; e < end; ++e) run_rows += counts[e], run_tiles += (counts[e] + p.tile_rows - 1) / p.tile_rows;
    int rows_before = run_rows, tiles_before = run_tiles;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int r = __shfl_up_sync(0xffffffffu, rows_before, offset);
      const int tl = __shfl_up_sync(0xffffffffu, tiles_before, offset);
      if (lane >= offset) rows_before += r, tiles_before += tl;
    }
    rows_before -= run_rows;
    tiles_before -= run_tiles;
    for (int e = begin; e < end; ++e) {
      offsets[e] = rows_before;
      tile_base[e] = tiles_before;
      rows_before += counts[e];
      tiles_before += (counts[e] + p.tile_rows - 1) / p.tile_rows;
    }
    if (lane == 31) {
      offsets[groups] = rows_before;
      tile_base[groups] = tiles_before;
      *p.tile_count = min(tiles_before, p.max_tiles);
    }
  }
  __syncthreads();
  for (int e = tid; e < groups; e += kDispatchThreads) {
    p.expert_counts[e] = counts[e];
    p.expert_offsets[e] = offsets[e];
  }
  if (tid == 0) p.expert_offsets[groups] = offsets[groups];

  // Pass 2: slots.
  for (int base = 0; base < pairs; base += kDispatchThreads) {
    const int pair = base + tid;
    const int e = pair < pairs ? expert_of_pair(p, pair, pairs_per_token) : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int leader = __ffs(peers) - 1;
    int first = 0;
    if (e >= 0 && lane == leader) first = atomicAdd(&cursor[e], __popc(peers));
    first = __shfl_sync(0xffffffffu, first, leader);
    if (pair < pairs) {
      if (e < 0) {
        p.slot_of_pair[pair] = -1;
      } else {
        const int slot = offsets[e] + first + __popc(peers & ((1u << lane) - 1u));
        const int token = pair / pairs_per_token, k = pair % pairs_per_token;
        p.slot_of_pair[pair] = slot;
        p.slot_token[slot] = token;
        p.slot_weight[slot] = k < p.top_k ? p.topk_weights[static_cast<int64_t>(token) * p.top_k + k] : 1.0f;
      }
    }
  }

  // Tile list: expert e's tiles cover its slots in runs of tile_rows.
  for (int e = tid; e < groups; e += kDispatchThreads) {
    for (int i = 0, tile = tile_base[e]; i * p.tile_rows < counts[e] && tile < p.max_tiles; ++i, ++tile) {
      p.tile_expert[tile] = e;
      p.tile_slot_begin[tile] = offsets[e] + i * p.tile_rows;
      p.tile_row_count[tile] = min(p.tile_rows, counts[e] - i * p.tile_rows);
    }
  }
}

__global__ void __launch_bounds__(kDispatchThreads) dispatch_kernel(const DispatchParams p) { dispatch_cta(p); }

// Decode fusion: top-k of every token (warp w takes tokens w, w + 32, ...; the same
// per-token code as router_topk_kernel, so ids and weights are bit-identical), then the
// dispatch of the same CTA. The CTA barrier makes the top-k writes (global memory)
// visible to the dispatch's reads.
// Launched with programmatic stream serialization after the scores kernel (which triggers
// at its start), so the CTA is resident before the scores are done; griddepcontrol.wait
// returns once that grid has completed and its scores are visible.
__global__ void __launch_bounds__(kDispatchThreads) topk_dispatch_kernel(const RouterParams r, const DispatchParams p) {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  // L1 (launched with PDL by moe_forward) may be scheduled now; it waits for this grid.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int token = warp; token < r.tokens; token += kDispatchThreads / 32) detail::route_topk_token(r, token, lane);
  __syncthreads();
  dispatch_cta(p);
}

// One CTA per token; each thread sums 8 columns over the token's slots in k order.
__global__ void __launch_bounds__(256) combine_kernel(const CombineParams p) {
  const int token = blockIdx.x;
  const int32_t* slots = p.slot_of_pair + static_cast<int64_t>(token) * p.pairs_per_token;
  for (int c = threadIdx.x * 8; c < p.hidden; c += blockDim.x * 8) {
    float sum[8] = {};
    for (int k = 0; k < p.pairs_per_token; ++k) {
      const int slot = slots[k];
      if (slot < 0) continue;
      const uint4 v = *reinterpret_cast<const uint4*>(p.slot_out + static_cast<int64_t>(slot) * p.hidden + c);
      const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(pairs[i]);
        sum[2 * i] += f.x;
        sum[2 * i + 1] += f.y;
      }
    }
    float4* out = reinterpret_cast<float4*>(p.out + static_cast<int64_t>(token) * p.hidden + c);
    out[0] = make_float4(sum[0], sum[1], sum[2], sum[3]);
    out[1] = make_float4(sum[4], sum[5], sum[6], sum[7]);
  }
}

}  // namespace

int moe_max_tiles(int tokens, int pairs_per_token, int experts_with_shared, int tile_rows) {
  const int pairs = tokens * pairs_per_token;
  const int bound = (pairs + tile_rows - 1) / tile_rows + experts_with_shared;
  return pairs < bound ? pairs : bound;
}

cudaError_t launch_dispatch(const DispatchParams& p) {
  if (p.experts + 1 > kMaxExpertsWithShared || p.tile_rows <= 0) return cudaErrorInvalidValue;
  if (p.tokens == 0) return cudaMemsetAsync(p.tile_count, 0, sizeof(int32_t), p.stream);
  dispatch_kernel<<<1, kDispatchThreads, 0, p.stream>>>(p);
  return cudaGetLastError();
}

namespace detail {
// The decode path's programmatic launches (the fused top-k + dispatch after the scores, L1
// after it): on unless the environment says DSV4_MOE_PDL=0 (read once; A/B timing).
bool decode_pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DSV4_MOE_PDL");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}
cudaError_t check_router(const RouterParams& p);
cudaError_t launch_router_scores(const RouterParams& p);
}  // namespace detail

cudaError_t launch_route_dispatch(const RouterParams& r, const DispatchParams& p) {
  if (r.tokens != p.tokens || r.top_k != p.top_k || r.experts != p.experts || r.topk_ids != p.topk_ids ||
      r.topk_weights != p.topk_weights)
    return cudaErrorInvalidValue;  // the dispatch must read what the top-k writes
  if (r.tokens == 0 || r.tokens > kFusedRouteMaxTokens) return cudaErrorInvalidValue;
  if (p.experts + 1 > kMaxExpertsWithShared || p.tile_rows <= 0) return cudaErrorInvalidValue;
  cudaError_t err = detail::check_router(r);
  if (err != cudaSuccess) return err;
  if ((err = detail::launch_router_scores(r)) != cudaSuccess) return err;
  // PDL: the launch and scheduling of the one dispatch CTA overlap the scores kernel.
  if (!detail::decode_pdl_enabled()) {
    topk_dispatch_kernel<<<1, kDispatchThreads, 0, p.stream>>>(r, p);  // griddepcontrol.wait: a no-op
    return cudaGetLastError();
  }
  return launch_programmatic(topk_dispatch_kernel, dim3(1), dim3(kDispatchThreads), 0, p.stream, r, p);
}

cudaError_t launch_combine(const CombineParams& p) {
  if (p.hidden % 8 != 0) return cudaErrorInvalidValue;
  if (p.tokens == 0) return cudaSuccess;
  combine_kernel<<<p.tokens, 256, 0, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe

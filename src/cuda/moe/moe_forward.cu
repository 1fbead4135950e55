// The MoE layer as five launches on one stream: router, dispatch, L1 (+SwiGLU),
// L2 (+routing weight), combine. Workspace carving and the tile-config choice.
#include "cuda/moe/moe.h"

#include <cstdlib>
#include <cstring>

namespace dsv4::cuda::moe {

namespace detail {
cudaError_t launch_nvfp4(const GroupedGemmParams& p, bool l1);
cudaError_t launch_mxfp4(const GroupedGemmParams& p, bool l1);
cudaError_t launch_wgmma(const GroupedGemmParams& p, bool l1);
}  // namespace detail

namespace {

cudaError_t launch_gemm(const GroupedGemmParams& p, bool l1) {
  if (p.combine_out != nullptr &&
      (l1 || (p.config != TileConfig::kDecode && p.config != TileConfig::kDecodeKSplit) || p.n % 128 != 0 ||
       p.slot_of_pair == nullptr || p.combine_done == nullptr))
    return cudaErrorInvalidValue;  // fused combine: L2 on the decode tiles only
  if (p.config == TileConfig::kPrefillWgmma || p.config == TileConfig::kPrefillWgmmaPipe)
    return detail::launch_wgmma(p, l1);
  return p.format == ExpertFormat::kNVFP4 ? detail::launch_nvfp4(p, l1) : detail::launch_mxfp4(p, l1);
}

// Bump allocator over the workspace: 256-byte aligned regions.
struct Carver {
  char* base;
  size_t offset = 0;
  template <typename T>
  T* take(size_t count) {
    offset = (offset + 255) / 256 * 256;
    T* ptr = base ? reinterpret_cast<T*>(base + offset) : nullptr;
    offset += count * sizeof(T);
    return ptr;
  }
};

}  // namespace

int tile_config_rows(TileConfig config) {
  return config == TileConfig::kDecode || config == TileConfig::kDecodeKSplit ? 8 : 128;
}

cudaError_t launch_moe_l1(const GroupedGemmParams& p) { return launch_gemm(p, true); }
cudaError_t launch_moe_l2(const GroupedGemmParams& p) { return launch_gemm(p, false); }

TileConfig moe_default_tile_config(int tokens) {
  // H200, 2026-12-01: the pipelined wgmma kernel 420-503 TFLOP/s at 4096-16384 tokens vs
  // 334-460 for the first wgmma kernel; the K-split decode tile ahead only at <= 8 tokens.
  if (tokens > 512) return TileConfig::kPrefillWgmmaPipe;
  if (tokens > 8) return TileConfig::kDecode;
  // Switch for the older 4-warp decode tile (read once): DSV4_MOE_DECODE_TILE=decode.
  static const bool legacy_decode = [] {
    const char* v = std::getenv("DSV4_MOE_DECODE_TILE");
    return v != nullptr && std::strcmp(v, "decode") == 0;
  }();
  return legacy_decode ? TileConfig::kDecode : TileConfig::kDecodeKSplit;
}

MoeWorkspace moe_workspace(const MoeLayerWeights& w, int tokens, TileConfig config, void* base) {
  const size_t pairs_per_token = w.top_k + (w.has_shared ? 1 : 0);
  const size_t pairs = static_cast<size_t>(tokens) * pairs_per_token;
  const size_t groups = w.experts + 1;
  MoeWorkspace ws{};
  Carver carve{static_cast<char*>(base)};
  ws.max_tiles = moe_max_tiles(tokens, static_cast<int>(pairs_per_token), static_cast<int>(groups),
                               tile_config_rows(config));
  ws.scores = carve.take<float>(static_cast<size_t>(tokens) * w.experts);
  ws.topk_ids = carve.take<int32_t>(static_cast<size_t>(tokens) * w.top_k);
  ws.topk_weights = carve.take<float>(static_cast<size_t>(tokens) * w.top_k);
  ws.expert_counts = carve.take<int32_t>(groups);
  ws.expert_offsets = carve.take<int32_t>(groups + 1);
  ws.slot_of_pair = carve.take<int32_t>(pairs);
  ws.slot_token = carve.take<int32_t>(pairs);
  ws.slot_weight = carve.take<float>(pairs);
  ws.tile_expert = carve.take<int32_t>(ws.max_tiles);
  ws.tile_slot_begin = carve.take<int32_t>(ws.max_tiles);
  ws.tile_row_count = carve.take<int32_t>(ws.max_tiles);
  ws.tile_count = carve.take<int32_t>(1);
  ws.h = carve.take<uint16_t>(pairs * w.intermediate);
  ws.slot_out = carve.take<uint16_t>(pairs * w.hidden);
  ws.combine_done = carve.take<int32_t>(w.hidden / 16 + 1);
  ws.bytes = carve.offset;
  return ws;
}

cudaError_t moe_forward(const MoeForwardParams& p) {
  const MoeLayerWeights& w = *p.weights;
  if (p.tokens == 0) return cudaSuccess;
  const MoeWorkspace ws = moe_workspace(w, p.tokens, p.config, p.workspace);
  const int pairs_per_token = w.top_k + (w.has_shared ? 1 : 0);

  RouterParams router;
  router.x = p.x;
  router.x_f32 = p.x_f32;
  router.gate_weight = w.router_weight;
  router.gate_bias = w.router_bias;
  router.tid2eid = w.tid2eid;
  router.token_ids = p.token_ids;
  router.vocab_size = w.vocab_size;
  router.tokens = p.tokens;
  router.hidden = w.hidden;
  router.experts = w.experts;
  router.top_k = w.top_k;
  router.routed_scaling_factor = w.routed_scaling_factor;
  router.scores = ws.scores;
  router.topk_ids = ws.topk_ids;
  router.topk_weights = ws.topk_weights;
  router.error_flag = p.error_flag;
  router.split_rows = p.split_router_rows;
  router.stream = p.stream;

  DispatchParams dispatch;
  dispatch.topk_ids = ws.topk_ids;
  dispatch.topk_weights = ws.topk_weights;
  dispatch.tokens = p.tokens;
  dispatch.top_k = w.top_k;
  dispatch.experts = w.experts;
  dispatch.has_shared = w.has_shared;
  dispatch.tile_rows = tile_config_rows(p.config);
  dispatch.max_tiles = ws.max_tiles;
  dispatch.expert_counts = ws.expert_counts;
  dispatch.expert_offsets = ws.expert_offsets;
  dispatch.slot_of_pair = ws.slot_of_pair;
  dispatch.slot_token = ws.slot_token;
  dispatch.slot_weight = ws.slot_weight;
  dispatch.tile_expert = ws.tile_expert;
  dispatch.tile_slot_begin = ws.tile_slot_begin;
  dispatch.tile_row_count = ws.tile_row_count;
  dispatch.tile_count = ws.tile_count;
  dispatch.error_flag = p.error_flag;
  dispatch.stream = p.stream;
  const bool fuse_combine = p.fuse_combine && p.tokens <= kFusedRouteMaxTokens &&
                            (p.config == TileConfig::kDecode || p.config == TileConfig::kDecodeKSplit);
  if (fuse_combine) {
    dispatch.zero_ints = ws.combine_done;
    dispatch.zero_count = w.hidden / 16 + 1;
  }
  cudaError_t err = cudaSuccess;
  if (p.fuse_route_dispatch && p.tokens <= kFusedRouteMaxTokens) {
    if ((err = launch_route_dispatch(router, dispatch)) != cudaSuccess) return err;
  } else {
    if ((err = launch_router(router)) != cudaSuccess) return err;
    if ((err = launch_dispatch(dispatch)) != cudaSuccess) return err;
  }

  GroupedGemmParams gemm;
  gemm.format = w.format;
  gemm.config = p.config;
  gemm.tile_expert = ws.tile_expert;
  gemm.tile_slot_begin = ws.tile_slot_begin;
  gemm.tile_row_count = ws.tile_row_count;
  gemm.tile_count = ws.tile_count;
  gemm.max_tiles = ws.max_tiles;
  gemm.stream = p.stream;

  GroupedGemmParams l1 = gemm;
  l1.weights = w.w13;
  l1.scales = w.w13_scales;
  l1.factor_a = w.gate_factor;
  l1.factor_b = w.up_factor;
  l1.act = p.x;
  l1.slot_token = ws.slot_token;
  l1.n = 2 * w.intermediate;
  l1.k = w.hidden;
  l1.swiglu_limit = w.swiglu_limit;
  l1.out = ws.h;
  if ((err = launch_moe_l1(l1)) != cudaSuccess) return err;

  GroupedGemmParams l2 = gemm;
  l2.weights = w.w2;
  l2.scales = w.w2_scales;
  l2.factor_a = w.down_factor;
  l2.act = ws.h;
  l2.slot_weight = ws.slot_weight;
  l2.n = w.hidden;
  l2.k = w.intermediate;
  l2.out = ws.slot_out;
  if (fuse_combine) {
    l2.combine_out = p.out;
    l2.slot_of_pair = ws.slot_of_pair;
    l2.combine_done = ws.combine_done;
    l2.combine_tokens = p.tokens;
    l2.pairs_per_token = pairs_per_token;
    return launch_moe_l2(l2);
  }
  if ((err = launch_moe_l2(l2)) != cudaSuccess) return err;

  CombineParams combine;
  combine.slot_out = ws.slot_out;
  combine.slot_of_pair = ws.slot_of_pair;
  combine.tokens = p.tokens;
  combine.pairs_per_token = pairs_per_token;
  combine.hidden = w.hidden;
  combine.out = p.out;
  combine.stream = p.stream;
  return launch_combine(combine);
}

}  // namespace dsv4::cuda::moe

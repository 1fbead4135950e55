// The MoE layer as five launches on one stream: router, dispatch, L1 (+SwiGLU),
// L2 (+routing weight), combine. Workspace carving and the tile-config choice.
#include "cuda/moe/moe.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace dsv4::cuda::moe {

namespace detail {
cudaError_t launch_nvfp4(const GroupedGemmParams& p, bool l1);
cudaError_t launch_mxfp4(const GroupedGemmParams& p, bool l1);
cudaError_t launch_wgmma(const GroupedGemmParams& p, bool l1);
cudaError_t launch_w4a8(const GroupedGemmParams& p, bool l1);
cudaError_t launch_w4a8_producer(const GroupedGemmParams& p, bool l1);
cudaError_t launch_w4a8_ws(const GroupedGemmParams& p, bool l1);
cudaError_t launch_w4a8_ws_ss(const GroupedGemmParams& p, bool l1);
cudaError_t launch_w4a8_ws_tma(const GroupedGemmParams& p, bool l1);
cudaError_t launch_wgmma_tma(const GroupedGemmParams& p, bool l1);
cudaError_t launch_wgmma_wide(const GroupedGemmParams& p, bool l1);
bool decode_pdl_enabled();  // dispatch.cu: DSV4_MOE_PDL=0 turns the decode path's PDL off
}  // namespace detail

namespace {

cudaError_t launch_gemm(const GroupedGemmParams& p, bool l1) {
  if (p.combine_out != nullptr &&
      (l1 || !is_decode_tile_config(p.config) || p.n % 128 != 0 ||
       p.slot_of_pair == nullptr || p.combine_done == nullptr))
    return cudaErrorInvalidValue;  // fused combine: L2 on the decode tiles only
  if (p.config == TileConfig::kDecodePersistent)
    return cudaErrorInvalidValue;  // L1 + L2 in one launch: launch_moe_decode_persistent
  if (p.config == TileConfig::kPrefillW4A8 || p.config == TileConfig::kPrefillW4A8Serial ||
      p.config == TileConfig::kPrefillW4A8Lut)
    return detail::launch_w4a8(p, l1);  // opt-in W4A8
  if (p.config == TileConfig::kPrefillW4A8Producer) return detail::launch_w4a8_producer(p, l1);  // opt-in W4A8
  if (p.config == TileConfig::kPrefillW4A8Ws) return detail::launch_w4a8_ws(p, l1);  // opt-in W4A8, 256-slot tiles
  if (p.config == TileConfig::kPrefillW4A8WsSS) return detail::launch_w4a8_ws_ss(p, l1);  // opt-in W4A8, 256-slot tiles
  if (p.config == TileConfig::kPrefillW4A8WsTma) return detail::launch_w4a8_ws_tma(p, l1);  // opt-in W4A8, 256-slot tiles
  if (p.config == TileConfig::kPrefillWgmmaTma) return detail::launch_wgmma_tma(p, l1);  // opt-in
  if (p.config == TileConfig::kPrefillWgmmaWide) return detail::launch_wgmma_wide(p, l1);  // opt-in
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

bool is_decode_tile_config(TileConfig config) {
  return config == TileConfig::kDecode || config == TileConfig::kDecodeKSplit || config == TileConfig::kDecodeSplitK ||
         config == TileConfig::kDecodeStream || config == TileConfig::kDecodeStreamBulk ||
         config == TileConfig::kDecodePersistent;
}

int tile_config_rows(TileConfig config) {
  if (is_decode_tile_config(config)) return 8;
  return config == TileConfig::kPrefillWgmmaWide || config == TileConfig::kPrefillW4A8Ws ||
                 config == TileConfig::kPrefillW4A8WsSS || config == TileConfig::kPrefillW4A8WsTma
             ? 256
             : 128;  // wgmma N = 256: one tile = one CTA's slots
}

int moe_decode_split_k(int max_tiles, int n, int k, int forced) {
  constexpr int kBK = 128, kMaxForced = 16, kMaxAuto = 8;
  const int k_tiles = k / kBK;
  if (k_tiles <= 1 || max_tiles <= 0 || n < 128) return 1;
  if (forced > 0) return std::min({forced, k_tiles, kMaxForced});
  const int64_t ctas = static_cast<int64_t>(max_tiles) * (n / 128);
  int s = 1;
  while (s * 2 <= kMaxAuto && ctas * s < kDecodeSplitTargetCtas && k / (s * 2) >= kDecodeSplitMinK &&
         k_tiles % (s * 2) == 0)
    s *= 2;
  return s;
}

cudaError_t launch_moe_l1(const GroupedGemmParams& p) { return launch_gemm(p, true); }
cudaError_t launch_moe_l2(const GroupedGemmParams& p) { return launch_gemm(p, false); }

TileConfig moe_default_tile_config(int tokens) {
  // H200, 2026-12-01: the pipelined wgmma kernel 420-503 TFLOP/s at 4096-16384 tokens vs
  // 334-460 for the first wgmma kernel.
  if (tokens > 512) return TileConfig::kPrefillWgmmaPipe;
  // Switch (read once): DSV4_MOE_DECODE_TILE=ksplit: kDecodeKSplit at <= 8 tokens (the
  // default until the fixed-trip-count copies; =decode is accepted and names the default).
  static const bool ksplit_env = [] {
    const char* v = std::getenv("DSV4_MOE_DECODE_TILE");
    return v != nullptr && std::strcmp(v, "ksplit") == 0;
  }();
  if (ksplit_env && tokens <= 8) return TileConfig::kDecodeKSplit;
  // The 4-warp decode tile at every decode size: with its copies at fixed trip counts it
  // went ahead of the K-split tile at 1 and 8 tokens too (H200, 2026-12-01 23:50 UTC, layer
  // ms NVFP4 0.0707 vs 0.0732 at 1 token, 0.240 vs 0.258 at 8; MXFP4 likewise).
  // kDecodeSplitK (split-K across CTAs) stays opt-in: slower at 1 and 8 tokens, equal at 64.
  return TileConfig::kDecode;
}

namespace {
// The S kDecodeSplitK is forced to at `tokens` tokens: decode_split when > 0, else
// DSV4_MOE_SPLITK=S (read once) at <= kFusedRouteMaxTokens tokens only (so the knob cannot
// blow up a workspace sized for many tokens), else 0 (automatic).
int forced_split(int decode_split, int tokens) {
  static const int env_split = [] {
    const char* v = std::getenv("DSV4_MOE_SPLITK");
    return v != nullptr ? std::atoi(v) : 0;
  }();
  if (decode_split > 0) return decode_split;
  return tokens <= kFusedRouteMaxTokens && env_split > 0 ? env_split : 0;
}

// FP32 partial sums kDecodeSplitK needs at t <= tokens (the largest of L1's and L2's, over t:
// S shrinks as t grows, so a workspace sized for more tokens still fits fewer).
// The S of kDecodeSplitK (persistent == false: moe_decode_split_k) or kDecodePersistent
// (moe_persistent_split_k on `ctas` CTAs) for L1 / L2 at max_tiles tiles.
// kDecodePersistent: DSV4_MOE_PERSISTENT_S="S1,S2" (read once) forces L1's and L2's S apart
// (for sweeps on the GPU; decode_split / DSV4_MOE_SPLITK force both alike and win over it).
void persistent_env_split(int* s1, int* s2) {
  static const std::pair<int, int> env = [] {
    const char* v = std::getenv("DSV4_MOE_PERSISTENT_S");
    int a = 0, b = 0;
    if (v != nullptr) {
      a = std::atoi(v);
      const char* comma = std::strchr(v, ',');
      b = comma != nullptr ? std::atoi(comma + 1) : a;
    }
    return std::pair<int, int>(a, b);
  }();
  *s1 = env.first;
  *s2 = env.second;
}

void split_choice(const MoeLayerWeights& w, int max_tiles, int forced, bool persistent, int ctas, int* s1, int* s2) {
  if (persistent) {
    int env1 = 0, env2 = 0;
    if (forced <= 0) persistent_env_split(&env1, &env2);
    *s1 = moe_persistent_split_k(max_tiles, 2 * w.intermediate, w.hidden, ctas, forced > 0 ? forced : env1);
    *s2 = moe_persistent_split_k(max_tiles, w.hidden, w.intermediate, ctas, forced > 0 ? forced : env2);
  } else {
    *s1 = moe_decode_split_k(max_tiles, 2 * w.intermediate, w.hidden, forced);
    *s2 = moe_decode_split_k(max_tiles, w.hidden, w.intermediate, forced);
  }
}

size_t split_partial_floats(const MoeLayerWeights& w, int tokens, int pairs_per_token, int groups, int decode_split,
                            bool persistent = false, int ctas = 0) {
  size_t best = 0;
  for (int t = decode_split > 0 ? tokens : 1; t <= tokens; ++t) {
    const int forced = forced_split(decode_split, t);
    const int mt = moe_max_tiles(t, pairs_per_token, groups, 8);
    int s1 = 1, s2 = 1;
    split_choice(w, mt, forced, persistent, ctas, &s1, &s2);
    const size_t pairs = static_cast<size_t>(t) * pairs_per_token;
    if (s1 > 1) best = std::max(best, s1 * pairs * 2 * w.intermediate);
    if (s2 > 1) best = std::max(best, s2 * pairs * w.hidden);
    if (s1 == 1 && s2 == 1 && forced_split(decode_split, tokens) == 0 && !persistent)
      break;  // max_tiles grows with t: no split beyond (kDecodeSplitK; the persistent choice is not monotone)
  }
  return best;
}
}  // namespace

MoeWorkspace moe_workspace(const MoeLayerWeights& w, int tokens, TileConfig config, void* base, int decode_split) {
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
  // combine_done, then (decode configs) the split-K counters of L1 and L2, one region so
  // the dispatch zeroes them together.
  const bool decode = is_decode_tile_config(config);
  const size_t combine_ints = w.hidden / 16 + 1;
  const size_t split_l1_ints = decode ? static_cast<size_t>(ws.max_tiles) * (2 * w.intermediate / 128) : 0;
  const size_t split_l2_ints = decode ? static_cast<size_t>(ws.max_tiles) * (w.hidden / 128) : 0;
  // kDecodePersistent: its grid barrier's 64-bit counter after the split counters (8-byte
  // aligned: the region starts 256-aligned), zeroed with them; other configs' layout unchanged.
  const bool persistent = config == TileConfig::kDecodePersistent;
  const size_t counter_ints = combine_ints + split_l1_ints + split_l2_ints;
  const size_t barrier_int = (counter_ints + 1) / 2 * 2;
  ws.combine_done = carve.take<int32_t>(persistent ? barrier_int + 2 : counter_ints);
  ws.split_done_l1 = ws.combine_done ? ws.combine_done + combine_ints : nullptr;
  ws.split_done_l2 = ws.split_done_l1 ? ws.split_done_l1 + split_l1_ints : nullptr;
  ws.grid_barrier = persistent && ws.combine_done
                        ? reinterpret_cast<unsigned long long*>(ws.combine_done + barrier_int)
                        : nullptr;
  ws.split_l1 = ws.split_l2 = 1;
  const int persistent_ctas = persistent ? moe_decode_persistent_ctas(w.format) : 0;
  if (config == TileConfig::kDecodeSplitK || persistent)
    split_choice(w, ws.max_tiles, forced_split(decode_split, tokens), persistent, persistent_ctas, &ws.split_l1,
                 &ws.split_l2);
  ws.split_slots = static_cast<int>(pairs);
  ws.split_partials =
      decode ? carve.take<float>(split_partial_floats(w, tokens, static_cast<int>(pairs_per_token),
                                                      static_cast<int>(groups), decode_split, persistent,
                                                      persistent_ctas))
             : nullptr;
  // kPrefillWgmmaTma: x in slot order for L1's TMA (carved last: other configs' layout unchanged).
  ws.x_perm = config == TileConfig::kPrefillWgmmaTma ? carve.take<uint16_t>(pairs * w.hidden) : nullptr;
  ws.bytes = carve.offset;
  return ws;
}

cudaError_t moe_forward(const MoeForwardParams& p) {
  const MoeLayerWeights& w = *p.weights;
  if (p.tokens == 0) return cudaSuccess;
  const MoeWorkspace ws = moe_workspace(w, p.tokens, p.config, p.workspace, p.decode_split);
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
  const bool fuse_combine =
      p.fuse_combine && p.tokens <= kFusedRouteMaxTokens && is_decode_tile_config(p.config);
  const bool split = ws.split_l1 > 1 || ws.split_l2 > 1;
  const bool persistent = p.config == TileConfig::kDecodePersistent;
  if (fuse_combine || split || persistent) {
    dispatch.zero_ints = ws.combine_done;
    dispatch.zero_count = w.hidden / 16 + 1;
    if (split)  // the split-K counters follow combine_done in the same region
      dispatch.zero_count = static_cast<int>(ws.split_done_l2 - ws.combine_done) + ws.max_tiles * (w.hidden / 128);
    if (persistent)  // and the grid barrier's counter after them (2 ints)
      dispatch.zero_count = static_cast<int>(reinterpret_cast<int32_t*>(ws.grid_barrier) - ws.combine_done) + 2;
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
  l1.split_k = ws.split_l1;
  l1.split_partials = ws.split_partials;
  l1.split_done = ws.split_done_l1;
  l1.split_slots = ws.split_slots;
  l1.stream_weights = w.w13_stream;  // kDecodeStream only
  l1.stream_k_major = w.stream_k_major;
  l1.act_rows = ws.split_slots;  // kPrefillWgmmaTma: pairs = slots
  l1.act_perm = ws.x_perm;
  // PDL after the fused top-k + dispatch (it triggers at its start; L1 waits before the tile list).
  l1.programmatic_wait = p.fuse_route_dispatch && p.tokens <= kFusedRouteMaxTokens && is_decode_tile_config(p.config) &&
                         p.config != TileConfig::kDecodePersistent && detail::decode_pdl_enabled();

  GroupedGemmParams l2 = gemm;
  l2.weights = w.w2;
  l2.scales = w.w2_scales;
  l2.factor_a = w.down_factor;
  l2.act = ws.h;
  l2.slot_weight = ws.slot_weight;
  l2.n = w.hidden;
  l2.k = w.intermediate;
  l2.out = ws.slot_out;
  l2.split_k = ws.split_l2;
  l2.split_partials = ws.split_partials;
  l2.split_done = ws.split_done_l2;
  l2.split_slots = ws.split_slots;
  l2.stream_weights = w.w2_stream;  // kDecodeStream only
  l2.stream_k_major = w.stream_k_major;
  l2.act_rows = ws.split_slots;  // kPrefillWgmmaTma: rows of h
  l2.programmatic_wait =
      p.overlap_l2 && (p.config == TileConfig::kDecodeStream || p.config == TileConfig::kDecodeStreamBulk);
  if (fuse_combine) {
    l2.combine_out = p.out;
    l2.slot_of_pair = ws.slot_of_pair;
    l2.combine_done = ws.combine_done;
    l2.combine_tokens = p.tokens;
    l2.pairs_per_token = pairs_per_token;
  }
  if (persistent) {  // L1 + L2 (+ fused combine) in one launch
    DecodePersistentParams pp;
    pp.l1 = l1;
    pp.l2 = l2;
    pp.grid_barrier = ws.grid_barrier;
    pp.grid = p.persistent_grid;
    pp.cooperative = p.persistent_cooperative;
    pp.chain_units = p.persistent_chain;
    if ((err = launch_moe_decode_persistent(pp)) != cudaSuccess) return err;
  } else {
    if ((err = launch_moe_l1(l1)) != cudaSuccess) return err;
    if ((err = launch_moe_l2(l2)) != cudaSuccess) return err;
  }
  if (fuse_combine) return cudaSuccess;

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

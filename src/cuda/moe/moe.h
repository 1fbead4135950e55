// MoE layer on Hopper: router, dispatch, grouped GEMMs on 4-bit experts (W4A16,
// mma.sync BF16), combine. Launchers take params structs of raw device pointers;
// nothing here synchronises with the host, so a forward is CUDA-graph capturable.
// Operand layouts: docs/kernels/moe.md.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/moe/fragment.h"

namespace dsv4::cuda::moe {

// Bits OR-ed into *error_flag by the router and dispatch.
inline constexpr int32_t kErrorTokenIdOutOfRange = 1;  // hash routing: token id outside [0, vocab)
inline constexpr int32_t kErrorExpertOutOfRange = 2;   // tid2eid or topk id outside [0, experts)

// ---- Router: scores = sqrt(softplus(x Wg^T)) in FP32, then top-k -------------------
struct RouterParams {
  const uint16_t* x = nullptr;            // [tokens, hidden] BF16 (scores from it when x_f32 is null)
  const float* x_f32 = nullptr;           // [tokens, hidden] FP32: when not null the scores come from it
                                          // (the CPU reference routes from FP32 x; BF16 x flips near-ties)
  const float* gate_weight = nullptr;     // [experts, hidden]
  const float* gate_bias = nullptr;       // [experts], selection only (score routing)
  const int32_t* tid2eid = nullptr;       // [vocab, top_k]: hash routing when not null
  const int32_t* token_ids = nullptr;     // [tokens] (hash routing)
  int64_t vocab_size = 0;
  int tokens = 0, hidden = 0, experts = 0, top_k = 0;  // hidden % 128 == 0, experts <= 256, top_k <= 8
  float routed_scaling_factor = 1.0f;
  float* scores = nullptr;                // [tokens, experts] workspace (sqrtsoftplus scores)
  int32_t* topk_ids = nullptr;            // [tokens, top_k]; -1 where routing failed
  float* topk_weights = nullptr;          // [tokens, top_k]: score / (sum + 1e-20) * scaling
  int32_t* error_flag = nullptr;          // device int
  bool split_rows = true;                 // <= 64 tokens: 4 warps per gate row (false: one warp per row,
                                          // the older scores kernel; FP32 sums in a different order)
  cudaStream_t stream = nullptr;
};
cudaError_t launch_router(const RouterParams& params);

// ---- Dispatch: (token, k) pairs grouped by expert ------------------------------------
// Pair p = token * pairs_per_token + k; k < top_k are routed, k == top_k the shared
// expert (index `experts`, weight 1) when has_shared. Slots are rows of the permuted
// activation order; expert e owns slots [offsets[e], offsets[e] + counts[e]).
// Slot order inside an expert is not fixed; results do not depend on it.
struct DispatchParams {
  const int32_t* topk_ids = nullptr;      // [tokens, top_k]
  const float* topk_weights = nullptr;    // [tokens, top_k]
  int tokens = 0, top_k = 0, experts = 0;
  bool has_shared = true;
  int tile_rows = 8;                      // rows (slots) per GEMM tile
  int max_tiles = 0;                      // capacity of the tile arrays (moe_max_tiles)
  int32_t* expert_counts = nullptr;       // [experts + 1]
  int32_t* expert_offsets = nullptr;      // [experts + 2]
  int32_t* slot_of_pair = nullptr;        // [tokens * pairs_per_token], -1 = dropped
  int32_t* slot_token = nullptr;          // [tokens * pairs_per_token]
  float* slot_weight = nullptr;           // [tokens * pairs_per_token]
  int32_t* tile_expert = nullptr;         // [max_tiles]
  int32_t* tile_slot_begin = nullptr;     // [max_tiles]
  int32_t* tile_row_count = nullptr;      // [max_tiles]
  int32_t* tile_count = nullptr;          // [1]
  int32_t* error_flag = nullptr;
  int32_t* zero_ints = nullptr;           // [zero_count] set to 0 by the dispatch (L2's fused-combine counters)
  int zero_count = 0;
  cudaStream_t stream = nullptr;
};
cudaError_t launch_dispatch(const DispatchParams& params);
int moe_max_tiles(int tokens, int pairs_per_token, int experts_with_shared, int tile_rows);

// Decode fusion of router + dispatch (tokens <= kFusedRouteMaxTokens): the scores kernel,
// then ONE single-CTA kernel running the top-k of every token and the dispatch (instead
// of a top-k kernel and a dispatch kernel). Same results bit for bit as launch_router +
// launch_dispatch. `router` and `dispatch` must agree on tokens / top_k / experts and on
// the topk_ids / topk_weights buffers; their streams must be the same.
inline constexpr int kFusedRouteMaxTokens = 64;
cudaError_t launch_route_dispatch(const RouterParams& router, const DispatchParams& dispatch);

// ---- Grouped GEMMs ---------------------------------------------------------------------
enum class TileConfig : int {
  kDecode = 0,   // 128 weight rows x 8 slots per CTA: weight streaming for few tokens per expert
  kPrefill = 1,  // 128 weight rows x 128 slots per CTA, mma.sync (the older prefill path, kept as oracle)
  kPrefillWgmma = 2,  // 128 weight rows x 128 slots per CTA, wgmma (Hopper tensor cores): default prefill
  kPrefillWgmmaPipe = 3,  // kPrefillWgmma with dequant / wgmma overlap (2 groups per sub-block in flight)
  kPrefillW4A8 = 4,  // opt-in, MXFP4 only, launch_moe_l1 / l2 only (not moe_forward): W4A8 FP8 wgmma, 128 x 128
  //   (its first version raced on the H200; fixed 2026-12-01 and equal to its emulation since)
                     // tiles; act8 / act_scale from launch_act_quant_fp8 (docs/kernels/moe.md, W4A8)
  kPrefillW4A8Serial = 5,  // kPrefillW4A8 without the convert / wgmma overlap (opt-in, the simpler oracle)
  kPrefillW4A8Lut = 6,  // opt-in: kPrefillW4A8 converting weights through a PRMT table of E4M3 codes per
                        // (row, 32-block) (the same bytes; fewer instructions; grouped_gemm_w4a8.cuh)
  kDecodeKSplit = 8,  // kDecode's 128 x 8 tiles, 16 warps: in-CTA split-K over 4 warp groups (needs
                      // k % 256 == 0, else kDecode's tile; the default at <= 8 tokens)
  kDecodeSplitK = 9,  // kDecode's 128 x 8 tiles and CTA, K split ACROSS CTAs (grid z = S slices, S from
                      // moe_decode_split_k): FP32 partials to a workspace, the last CTA of each output block
                      // sums them in slice order 0..S-1 (deterministic) and runs the usual epilogue. S == 1:
                      // exactly kDecode. Opt-in: slower than kDecodeKSplit / kDecode at 1-8 tokens on the H200
  kDecodeStream = 10,  // opt-in: kDecode's tile, CTA and arithmetic (bitwise equal to kDecode) reading the
                       // decode stream layout (GroupedGemmParams::stream_weights, MoeLayerWeights::w13_stream /
                       // w2_stream from launch_moe_stream_repack): each CTA's weights + scales one linear region
  kDecodeStreamBulk = 11,  // opt-in: kDecodeStream with each stage's chunk moved by one TMA bulk copy
                           // (cp.async.bulk + mbarrier) instead of 16-byte cp.async; same stream weights
  kPrefillWgmmaTma = 12,  // opt-in: kPrefillWgmmaPipe's math (bitwise equal) fed by a TMA producer warp (full /
                          // empty mbarriers, 3 stages), persistent CTAs; needs act_rows (and act_perm for L1:
                          // x gathered into slot order first). grouped_gemm_wgmma_tma.cu, docs/kernels/moe.md
  kPrefillWgmmaWide = 13,  // opt-in (measured slower on the H200): kPrefillWgmmaPipe's math with wgmma N = 256: 128 weight
                           // rows x 256 slots per CTA (2 warpgroups), tiles of 256 slots (tile_config_rows);
                           // expected bitwise equal to kPrefillWgmmaPipe. grouped_gemm_wgmma_wide.cu
  kPrefillW4A8Producer = 14,  // opt-in (measured slower than kPrefillW4A8Lut on the H200), MXFP4, launch_moe_l1 / l2 only: kPrefillW4A8's math
                              // (expected bitwise equal) with the weights converted to E4M3 once per stage by a
                              // producer warpgroup into shared memory, SS FP8 wgmma, persistent CTAs.
                              // grouped_gemm_w4a8_producer.cu, docs/kernels/moe.md (W4A8)
  kDecodePersistent = 15,  // opt-in (measured slower than kDecode on the H200), moe_forward / launch_moe_decode_persistent only: L1 (+ SwiGLU)
                           // and L2 (+ routing weight, fused combine) in ONE launch of resident CTAs: kDecode's
                           // 128 x 8 units (or kDecodeSplitK's K slices) dealt round-robin, a grid barrier between
                           // L1 and L2, L2's first weight stages prefetched before it. Bitwise equal to kDecode
                           // (S == 1) / kDecodeSplitK (same S). decode_persistent.cuh, docs/kernels/moe.md
  kPrefillW4A8Ws = 16,  // opt-in, MXFP4, launch_moe_l1 / l2 only (the fastest W4A8: 585 TFLOP/s, H200): warp-specialised W4A8 (producer warpgroup moving bytes
                        // through mbarriers, 2 converting consumer warpgroups), 128 x 256 tiles (tile_config_rows 256),
                        // per-row weight exponent reference (w4a8_row_ref). grouped_gemm_w4a8_ws.cu, docs/kernels/moe.md
  kPrefillW4A8WsSS = 17,  // opt-in, MXFP4, launch_moe_l1 / l2 only (not yet run on a GPU): kPrefillW4A8Ws's inputs, tiles (256) and math
                          // (expected bitwise equal) with the weights converted once per stage by the producer warpgroup into
                          // shared memory, SS FP8 wgmma. grouped_gemm_w4a8_ws_ss.cu, docs/kernels/moe.md
  kPrefillW4A8WsTma = 18,  // opt-in, MXFP4, launch_moe_l1 / l2 only: kPrefillW4A8Ws's consumers and math (expected bitwise
                           // equal) fed by TMA from ONE producer thread (B box, activation scales, weights, scales per stage)
                           // instead of 128 threads of cp.async. Needs act8 in slot order (L1 too: launch_act_quant_fp8 with
                           // gather = slot_token), act_rows, and transposed act_scale (act_scale_stride). grouped_gemm_w4a8_ws.cu
};
// Slots per tile-list entry: 8 for the decode configs, 256 for kPrefillWgmmaWide / kPrefillW4A8Ws / kPrefillW4A8WsSS /
// kPrefillW4A8WsTma, else 128.
int tile_config_rows(TileConfig config);
// The 8-slot decode configs (kDecode, kDecodeKSplit, kDecodeSplitK, kDecodeStream, kDecodeStreamBulk,
// kDecodePersistent).
bool is_decode_tile_config(TileConfig config);

// K slices S for kDecodeSplitK on a GEMM [n, k] with max_tiles tiles: forced > 0 takes
// min(forced, k / 128, 16); forced == 0 doubles S (up to 8) while the grid
// max_tiles x n / 128 x S has < kDecodeSplitTargetCtas CTAs and each slice keeps
// >= kDecodeSplitMinK of K (128 rows x 512 K = 32 KB of weights). A pure function: results
// do not depend on timing or device. moe_workspace picks `forced`: decode_split, else the
// environment DSV4_MOE_SPLITK=S (read once) at <= kFusedRouteMaxTokens tokens, else 0.
inline constexpr int kDecodeSplitTargetCtas = 2048;
inline constexpr int kDecodeSplitMinK = 512;
int moe_decode_split_k(int max_tiles, int n, int k, int forced);

struct GroupedGemmParams {
  ExpertFormat format = ExpertFormat::kNVFP4;
  TileConfig config = TileConfig::kDecode;
  const uint8_t* weights = nullptr;       // [experts + 1][n / 16][k / 64][512] fragment layout
  const uint8_t* scales = nullptr;        // [experts + 1][n / 16][k / 64][frag_scale_bytes]
  const float* factor_a = nullptr;        // [experts + 1]: L1 gate rows / L2 all rows
  const float* factor_b = nullptr;        // [experts + 1]: L1 up rows
  const uint16_t* act = nullptr;          // L1: x [tokens, k] BF16 (rows gathered); L2: h [slots, k]
  const int32_t* slot_token = nullptr;    // L1: row of x for each slot
  const uint8_t* act8 = nullptr;          // kPrefillW4A8: act as E4M3 [rows, k] (launch_act_quant_fp8)
  const float* act_scale = nullptr;       // kPrefillW4A8: [rows, k / 128] FP32 block scales
  const uint8_t* w4a8_row_ref = nullptr;  // kPrefillW4A8Ws: [experts + 1][n] max MXFP4 scale code per weight row (launch_w4a8_row_ref)
  const float* slot_weight = nullptr;     // L2: routing weight per slot
  const int32_t* tile_expert = nullptr;
  const int32_t* tile_slot_begin = nullptr;
  const int32_t* tile_row_count = nullptr;
  const int32_t* tile_count = nullptr;
  int max_tiles = 0;
  int n = 0, k = 0;                       // weight [n, k]; n % 128 == 0, k % 128 == 0 (tile sizes)
  float swiglu_limit = 0.0f;              // L1
  uint16_t* out = nullptr;                // L1: h [slots, n / 2] BF16; L2: slot_out [slots, n] BF16
  // L2 with the decode tiles (kDecode, kDecodeKSplit, kDecodeSplitK) only: fused combine. When combine_out
  // is set, the last CTA to finish each column block (counted in combine_done[blockIdx.y],
  // which must be 0 at launch: the dispatch zeroes it) writes combine_out[t][cols] = sum over
  // k of slot_out[slot_of_pair[t][k]][cols], the same order and arithmetic as launch_combine.
  // With *tile_count == 0 CTA (0, y) writes the zeros the combine would.
  float* combine_out = nullptr;           // [combine_tokens, n] FP32
  const int32_t* slot_of_pair = nullptr;  // [combine_tokens, pairs_per_token]
  int32_t* combine_done = nullptr;        // [n / 128]
  int combine_tokens = 0, pairs_per_token = 0;
  // kDecodeSplitK only: split_k K slices across CTAs (grid z); split_k <= 1 runs kDecode.
  // split_k > 1 needs split_partials and split_done (moe_workspace carves both).
  int split_k = 1;
  float* split_partials = nullptr;        // [split_k][split_slots][n] FP32 partial sums
  int32_t* split_done = nullptr;          // [max_tiles * n / 128]: 0 at launch, left 0 by the kernel
  int split_slots = 0;                    // slot capacity (pairs) of split_partials
  // kDecodeStream only: the same matrix in the decode stream layout (launch_moe_stream_repack);
  // weights / scales are then not read. Required (else cudaErrorInvalidValue).
  const uint8_t* stream_weights = nullptr;
  bool stream_k_major = false;            // stream_weights' chunk order (StreamRepackParams::k_major)
  // Launch with programmatic stream serialization (PDL). kDecodeStream / kDecodeStreamBulk L2:
  // its CTAs may start while L1 runs (L1's kDecodeStream kernel triggers at its start),
  // prefetch their first 5 weight stages, then wait (griddepcontrol.wait) for L1's h before
  // reading it; the previous kernel on the stream must be L1 (launch_moe_l1 with kDecodeStream).
  // L1 (every moe_grouped_gemm_kernel config; moe_forward sets it after the fused top-k +
  // dispatch, which triggers at its start): waits at its start, before the tile list.
  bool programmatic_wait = false;
  // kPrefillWgmmaTma only: act_rows = rows of the activation matrix the TMA reads (L1: the
  // slot count, rows of act_perm and entries of slot_token; L2: rows of h); act_perm (L1):
  // workspace [act_rows, k] BF16 that the launch fills with x in slot order
  // (act_perm[s] = act[slot_token[s]] for the slots of the tile list) before the GEMM reads it.
  // kPrefillW4A8WsTma also reads act_rows (rows of act8, in slot order for L1 and L2).
  int act_rows = 0;
  uint16_t* act_perm = nullptr;
  // kPrefillW4A8WsTma only: act_scale is transposed, [k / 128][act_scale_stride] (block b of
  // row r at b * act_scale_stride + r; launch_act_quant_fp8 with scale_stride), stride >= act_rows, % 4.
  int act_scale_stride = 0;
  cudaStream_t stream = nullptr;
};
// L1: h = silu(min(g, limit)) * clamp(u, -limit, limit), g/u from the interleaved W13.
cudaError_t launch_moe_l1(const GroupedGemmParams& params);
// L2: slot_out = (h W2^T) * factor * slot_weight.
cudaError_t launch_moe_l2(const GroupedGemmParams& params);

// ---- Persistent decode GEMMs (TileConfig::kDecodePersistent; docs/kernels/moe.md) --------
// L1 and L2 of launch_moe_l1 / launch_moe_l2 in one launch of `grid` CTAs that are all resident
// at once. Work units = (tile, 128-row column block, K slice) of kDecode's tile, dealt
// round-robin (unit u to CTA u mod grid; tile fastest, then slice, then column block). After
// its L1 units a CTA issues the weight + scale copies of the first 5 stages of its first L2
// unit, then waits at a grid barrier (h complete), then runs its L2 units (the fused combine
// when l2.combine_out is set, as launch_moe_l2).
// K slices: l1.split_k / l2.split_k (S <= 1: kDecode's arithmetic, bitwise equal to kDecode;
// S > 1: kDecodeSplitK's partials + last-arriver sum in slice order, bitwise equal to
// kDecodeSplitK with the same S; split_partials / split_done / split_slots as for kDecodeSplitK,
// l1 and l2 may share split_partials). S: moe_persistent_split_k (moe_workspace picks it).
// grid_barrier: a 64-bit counter each launch adds `grid` to; it must hold a multiple of the
// grid at launch (0 once at allocation; moe_forward's dispatch zeroes it every forward), so
// repeated launches need no re-zeroing (launches sharing one counter must use the same grid,
// or zero it in between). A barrier wait longer than ~2 s traps (no hang).
// Refused (cudaErrorInvalidValue): n or k not multiples of 128, l1.n != 2 * l2.k, different
// formats / tile lists, l1.combine_out set, missing split buffers for S > 1, null grid_barrier.
struct DecodePersistentParams {
  GroupedGemmParams l1, l2;               // config ignored; l1.stream is the launch's stream
  unsigned long long* grid_barrier = nullptr;  // [1] in the workspace (MoeWorkspace::grid_barrier)
  int grid = 0;                           // CTAs: 0 = all that fit at once (moe_decode_persistent_ctas);
                                          // > 0: min(grid, that) (tests: few CTAs, many units each)
  bool cooperative = true;                // cudaLaunchAttributeCooperative: the driver refuses a grid that
                                          // cannot be co-resident (false: plain launch, same grid)
  bool chain_units = false;               // a CTA's units share one stage ring: each unit issues the next
                                          // one's first 5 weight stages in its last 5 iterations (no drain /
                                          // refill between units; L2's first weights during L1's tail). Same
                                          // results bit for bit. Opt-in until measured.
};
cudaError_t launch_moe_decode_persistent(const DecodePersistentParams& params);
// CTAs of kDecodePersistent resident at once on the current device (occupancy x SMs, queried
// once per format); kPersistentFallbackCtas when no device answers (sizing on a host).
inline constexpr int kPersistentFallbackCtas = 396;  // H200: 3 CTAs x 132 SMs
int moe_decode_persistent_ctas(ExpertFormat format);
// K slices S of kDecodePersistent on a GEMM [n, k] with max_tiles tiles and `ctas` CTAs:
// forced > 0 takes min(forced, k / 128, 16); forced == 0 takes the S in {1, 2, 4, 8, 16}
// (dividing k / 128) with the least  ceil(units x S / ctas) x (k / 128 / S + 2)  (the k-tiles
// of the busiest CTA, + 2 per unit for its pipeline fill and epilogue; units = max_tiles x
// n / 128), the smallest S on ties. Pure (host): V4-Flash at 1 token on 396 CTAs: L1 4, L2 1.
// moe_workspace's `forced`: decode_split, else DSV4_MOE_SPLITK (both GEMMs alike), else the
// environment DSV4_MOE_PERSISTENT_S="S1,S2" (read once; L1 / L2 apart, for sweeps), else 0.
int moe_persistent_split_k(int max_tiles, int n, int k, int ctas, int forced);

// ---- Decode stream layout (TileConfig::kDecodeStream; docs/kernels/moe.md, decode) -------
// The packed weights + scales of a matrix [n, k] re-ordered so that what one decode CTA
// (128 rows) reads per 128-K stage is one contiguous chunk, and its chunks follow each other:
//   [groups][n / 128][k / 128][chunk], chunk = 16 fragment blocks [row block 0..7][k block 0..1]
//   x 512 B, then their 16 x frag_scale_bytes scale bytes in the same order
// (= the kernel's shared-memory stage image, so a stage is one linear 16-byte copy).
// k_major: chunks ordered [groups][k / 128][n / 128] instead (the 32 CTAs of an expert that
// run together then sweep one contiguous window of 32 chunks per k step, as a copy does).
// The order is a property of the buffer: MoeLayerWeights::stream_k_major must say which.
// Size = the fragment layout's weight + scale bytes exactly (a second copy of the matrix:
// the other configs keep reading the fragment layout). n % 128 == 0, k % 128 == 0.
inline constexpr int kDecodeStreamRows = 128;  // weight rows per chunk (DecodeTile::BW)
inline constexpr int kDecodeStreamK = 128;     // K per chunk (DecodeTile::BK)
size_t moe_stream_layout_bytes(ExpertFormat format, int groups, int n, int k);
struct StreamRepackParams {
  ExpertFormat format = ExpertFormat::kNVFP4;
  int groups = 0, n = 0, k = 0;           // groups = experts + 1 (shared expert included)
  const uint8_t* weights = nullptr;       // [groups][n / 16][k / 64][512] fragment layout
  const uint8_t* scales = nullptr;        // [groups][n / 16][k / 64][frag_scale_bytes]
  uint8_t* out = nullptr;                 // moe_stream_layout_bytes(format, groups, n, k) bytes, not aliasing
  bool k_major = false;                   // chunk order [groups][k / 128][n / 128] (above)
  cudaStream_t stream = nullptr;
};
// One-time re-pack at load (a pure permutation of 16-byte chunks, no arithmetic);
// cudaErrorInvalidValue on a shape that is not a multiple of 128 or a null pointer.
cudaError_t launch_moe_stream_repack(const StreamRepackParams& params);

// ---- W4A8 activation quantizer (kPrefillW4A8) -------------------------------------------
// x8 = E4M3_rn_satfinite(x * 448 / amax), scale = amax / 448 per 1 x 128 block (amax = max |x|;
// 0 -> scale 0, x8 0); bytes of each 32-block in the packed-weight fragment K order
// (act_quant_fp8.cu). L1: quantize x [tokens, H]; L2: quantize h [slots, I].
struct ActQuantParams {
  const uint16_t* x = nullptr;            // [x rows, k] BF16
  int rows = 0, k = 0;                    // output rows; k % 128 == 0
  uint8_t* x8 = nullptr;                  // [rows, k] E4M3
  float* scale = nullptr;                 // [rows, k / 128], or [k / 128][scale_stride] (below)
  // Optional (kPrefillW4A8WsTma, whose TMA reads rows in slot order): output row r quantizes
  // x row gather[r] (L1: gather = slot_token, rows = the slot count), values in [0, x_rows).
  const int32_t* gather = nullptr;
  int x_rows = 0;                         // rows of x when gather is set
  // > 0: scale transposed, scale[b * scale_stride + r] (block b of row r); scale_stride >= rows,
  // % 4 == 0 (the rows of a 16-byte aligned TMA box).
  int scale_stride = 0;
  int32_t* error_flag = nullptr;          // gather: an out-of-range index sets it to 1 (row left 0)
  cudaStream_t stream = nullptr;
};
cudaError_t launch_act_quant_fp8(const ActQuantParams& params);

// ---- Combine: out[t] = sum over k (in k order, shared last) of slot_out[slot_of_pair] --
struct CombineParams {
  const uint16_t* slot_out = nullptr;     // [slots, hidden] BF16
  const int32_t* slot_of_pair = nullptr;  // [tokens, pairs_per_token]
  int tokens = 0, pairs_per_token = 0, hidden = 0;  // hidden % 8 == 0
  float* out = nullptr;                   // [tokens, hidden] FP32
  cudaStream_t stream = nullptr;
};
cudaError_t launch_combine(const CombineParams& params);

// ---- The whole layer -----------------------------------------------------------------
struct MoeLayerWeights {                   // device pointers
  ExpertFormat format = ExpertFormat::kNVFP4;
  int hidden = 0, intermediate = 0, experts = 0, top_k = 0;  // experts: routed ones
  bool has_shared = true;                  // shared expert stored as expert index `experts`
  const uint8_t* w13 = nullptr;            // [experts + 1][2I / 16][H / 64][512]
  const uint8_t* w13_scales = nullptr;
  const uint8_t* w2 = nullptr;             // [experts + 1][H / 16][I / 64][512]
  const uint8_t* w2_scales = nullptr;
  // kDecodeStream only (else unused, may be null): W13 / W2 + their scales in the decode
  // stream layout (launch_moe_stream_repack), a second copy of the same weights.
  const uint8_t* w13_stream = nullptr;     // moe_stream_layout_bytes(format, experts + 1, 2I, H)
  const uint8_t* w2_stream = nullptr;      // moe_stream_layout_bytes(format, experts + 1, H, I)
  bool stream_k_major = false;             // both copies re-packed with StreamRepackParams::k_major
  const float* gate_factor = nullptr;      // [experts + 1]
  const float* up_factor = nullptr;
  const float* down_factor = nullptr;
  const float* router_weight = nullptr;    // [experts, H] FP32
  const float* router_bias = nullptr;      // [experts]
  const int32_t* tid2eid = nullptr;        // hash routing when not null
  int64_t vocab_size = 0;
  float routed_scaling_factor = 1.0f, swiglu_limit = 0.0f;
};

// Workspace regions, all carved from one device buffer.
struct MoeWorkspace {
  float* scores;          // [tokens, experts]
  int32_t* topk_ids;      // [tokens, top_k]
  float* topk_weights;    // [tokens, top_k]
  int32_t* expert_counts; // [experts + 1]
  int32_t* expert_offsets;
  int32_t* slot_of_pair;
  int32_t* slot_token;
  float* slot_weight;
  int32_t* tile_expert;
  int32_t* tile_slot_begin;
  int32_t* tile_row_count;
  int32_t* tile_count;
  uint16_t* h;            // [slots, I] BF16
  uint16_t* slot_out;     // [slots, H] BF16
  int32_t* combine_done;  // [H / 16]: L2 fused-combine counters (zeroed by the dispatch)
  int max_tiles;
  size_t bytes;           // total
  // kDecodeSplitK (carved for every decode config, so a workspace sized with kDecode fits
  // kDecodeSplitK too). split_l1 / split_l2: the S moe_forward uses for L1 / L2.
  int32_t* split_done_l1; // [max_tiles * 2I / 128], right after combine_done (zeroed by the dispatch)
  int32_t* split_done_l2; // [max_tiles * H / 128]
  float* split_partials;  // [S][pairs][n] FP32, sized for the largest need at <= tokens
  int split_l1, split_l2, split_slots;
  uint16_t* x_perm;       // kPrefillWgmmaTma only: [pairs, H] BF16, x in slot order (else null)
  // kDecodePersistent only (else null): the grid barrier's counter, 8-byte aligned, after the
  // split-K counters in the region the dispatch zeroes. split_l1 / split_l2 are then
  // moe_persistent_split_k's S and split_partials is sized for them.
  unsigned long long* grid_barrier;
};
// Layout of the workspace for `tokens` tokens with tile config `config`; base may be
// null to only compute the size. decode_split: MoeForwardParams::decode_split (0: auto).
MoeWorkspace moe_workspace(const MoeLayerWeights& weights, int tokens, TileConfig config, void* base,
                           int decode_split = 0);
// <= 512 tokens: kDecode; more: kPrefillWgmmaPipe. Environment DSV4_MOE_DECODE_TILE=ksplit
// (read once): kDecodeKSplit at <= 8 tokens (the default before 2026-12-01 23:50 UTC).
TileConfig moe_default_tile_config(int tokens);

struct MoeForwardParams {
  const MoeLayerWeights* weights = nullptr;
  const uint16_t* x = nullptr;             // [tokens, H] BF16 (after ffn_norm): the GEMMs' input
  const float* x_f32 = nullptr;            // [tokens, H] FP32, optional: router scores from it when not null
  const int32_t* token_ids = nullptr;      // [tokens] (hash routing)
  int tokens = 0;
  TileConfig config = TileConfig::kDecode;
  void* workspace = nullptr;               // moe_workspace(...).bytes
  float* out = nullptr;                    // [tokens, H] FP32: routed + shared
  int32_t* error_flag = nullptr;           // device int, never cleared here
  bool fuse_route_dispatch = true;         // tokens <= kFusedRouteMaxTokens: launch_route_dispatch
                                           // (false: the separate top-k and dispatch kernels)
  bool fuse_combine = true;                // tokens <= kFusedRouteMaxTokens, decode tiles:
                                           // combine in L2's last CTA per column block (false: combine kernel)
  bool split_router_rows = true;           // RouterParams::split_rows
  int decode_split = 0;                    // kDecodeSplitK / kDecodePersistent: forced S (0: moe_decode_split_k's /
                                           // moe_persistent_split_k's choice);
                                           // moe_workspace must be given the same value
  int persistent_grid = 0;                 // kDecodePersistent: DecodePersistentParams::grid (0: all resident CTAs)
  bool persistent_cooperative = true;      // kDecodePersistent: DecodePersistentParams::cooperative
  bool persistent_chain = false;           // kDecodePersistent: DecodePersistentParams::chain_units
  bool overlap_l2 = false;                 // kDecodeStream(Bulk) only (opt-in): L2 launched with PDL
                                           // (GroupedGemmParams::programmatic_wait), bitwise the same result
  cudaStream_t stream = nullptr;
};
// Router, dispatch, L1, L2, combine, no host synchronisation: 6 kernels (router scores,
// top-k, dispatch, L1, L2, combine); at <= 64 tokens 5 with fuse_route_dispatch and 4 with
// fuse_combine too (scores, top-k + dispatch, L1, L2 + combine); kDecodePersistent: L1 + L2
// one launch (3 kernels at <= 64 tokens with both fusions).
cudaError_t moe_forward(const MoeForwardParams& params);

}  // namespace dsv4::cuda::moe

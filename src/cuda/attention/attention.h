// DeepSeek-V4 attention pieces on CUDA (issue 4, straightforward kernels; issue 6
// replaces them with fast ones behind the same launchers): the sliding-window KV ring,
// the compressors (CSA rate 4 with two overlapping series, HCA), the Lightning indexer
// with its top-k, and sparse MQA attention with sinks. CPU twins: src/cpu/attention.cpp
// and src/cpu/compressor.cpp. Tests: tests/cuda/attention against them.
//
// Caches are per layer, one region per cache slot (sequence); a TokenBatch says which
// slot and position each token row has. Nothing here keeps counters: how many entries
// a slot has follows from positions (after position p: (p + 1) / rate entries).
// All launchers are asynchronous, allocate nothing and never synchronise.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/device_types.h"

namespace dsv4::cuda::attention {

// ---- Sliding-window KV ring -------------------------------------------------------------
// window_kv: [slots, ring_rows, head_dim] BF16; position p of a slot lives in row
// p % ring_rows. The engine keeps ring_rows >= sliding_window - 1 + (tokens of one
// sequence in any batch), so a batch never overwrites a row its own queries still need.
// Writes kv[t] (FP32, already normed and RoPE'd) at its slot/position.
void kv_window_write(const float* kv /*[tokens, head_dim]*/, int head_dim, uint16_t* window_kv, int ring_rows,
                     const TokenBatch& batch, cudaStream_t stream);

// ---- Compressor (cpu: compressor_append / pool_window) ---------------------------------
// Window w of a sequence covers positions [w*rate, (w+1)*rate). When the batch holds the
// last token of a window (position p with (p + 1) % rate == 0), entry w is pooled:
// per channel c < dim, softmax over slots of (gate + ape) weighting kv, where the slots
// are (CSA, overlapping) the previous window's Ca half (columns [0, dim), only if w > 0)
// then this window's Cb half (columns [dim, 2 dim)); (HCA) this window's whole
// projection. ape row j belongs to the j-th token of a window. Then RMSNorm(norm_weight)
// and RoPE at position w * rate (interleaved pairs on the last rope_dim channels).
// Projections of positions before the batch's chunk come from the state ring; after
// pooling, the state ring receives every batch token's projections.
// Value OR-ed into *error_flag when a closing window's entry index is >= max_entries
// (the entry is not written). Values 1 and 2 belong to the MoE router/dispatch.
inline constexpr int32_t kErrorCompressedEntryOverflow = 4;
// OR-ed in by Kernel::kWide with single_token_chunks when a token's sequence has another
// token in the batch (that token is neither pooled nor saved).
inline constexpr int32_t kErrorCompressorNotSingleToken = 8;
struct CompressorParams {
  const float* kv_proj = nullptr;     // [tokens, width] x Wkv^T of the batch, width = (overlapping ? 2 : 1) * dim
  const float* gate_proj = nullptr;   // [tokens, width] x Wgate^T
  const float* ape = nullptr;         // [rate, width] position bias
  const float* norm_weight = nullptr; // [dim]
  const float* inv_freq = nullptr;    // [rope_dim / 2] (the compress RoPE)
  int rope_dim = 0;
  int rate = 0, dim = 0;
  bool overlapping = false;           // CSA (and the indexer's compressor): true; HCA: false
  float rms_eps = 1e-6f;
  float* state_kv = nullptr;          // [slots, state_rows, width] raw kv projections; position p in row p % state_rows
  float* state_gate = nullptr;        // [slots, state_rows, width] raw gate projections (ape not added)
  int state_rows = 0;                 // 2 * rate when overlapping, else rate
  void* entries = nullptr;            // [slots, max_entries, dim]; entry w in row w
  bool entries_bf16 = true;           // BF16 (attention's KV entries) or FP32 (indexer keys)
  int max_entries = 0;                // a window past it is an error (kErrorCompressedEntryOverflow)
  TokenBatch batch;
  int32_t* error_flag = nullptr;
  // Kernels (compressor.cu; issue 6 item 3): kAuto takes kWide with single_token_chunks
  // (decode) or rate >= 64 (HCA), else kSimple (measured, compressor.cu). kSimple: the issue-4 pool and save kernels. kWide (opt-in): a pool CTA of one
  // thread per channel (up to 512) whose slot loads are issued 16 at a time before the
  // same online-softmax updates, the RMSNorm sum in kSimple's order: entries and ring
  // bitwise kSimple's (asserted by cuda_compressor_test); a float4 save.
  enum class Kernel : int { kAuto = 0, kSimple = 1, kWide = 2 } kernel = Kernel::kAuto;
  // Caller's promise that every sequence has exactly one token in the batch (decode:
  // first_rows[t] == t, no later row of the same slot). kWide then pools and saves in one
  // launch (a one-token chunk's save overwrites ring row p % state_rows = position
  // p - state_rows, which its pool never reads); a token breaking it sets
  // kErrorCompressorNotSingleToken and is not written. Ignored by kSimple.
  bool single_token_chunks = false;
};
void compressor_update(const CompressorParams& params, cudaStream_t stream);

// ---- Lightning indexer + top-k (cpu: run_indexer / indexer_select) ---------------------
// For token t at position p, entries w < visible = (p + 1) / rate are scored:
//   score[w] = sum_h relu(q[t,h] . key[w]) / sqrt(dim) * head_weights[t,h] / sqrt(heads)
// and the top min(top_k, visible) are kept (ties toward the lower index), written to
// selected[t] in ascending entry order, -1 padded to top_k.
struct IndexerParams {
  const float* q = nullptr;            // [tokens, heads, dim] indexer queries after RoPE
  const float* head_weights = nullptr; // [tokens, heads] x weights_proj^T
  const float* entries = nullptr;      // [slots, max_entries, dim] FP32 indexer keys
  int max_entries = 0;
  int heads = 0, dim = 0, rate = 0, top_k = 0;
  TokenBatch batch;
  float* scores = nullptr;             // workspace [rows, max_entries] FP32, rows = scores_floats / max_entries
  // Capacity of `scores` in floats; 0: [tokens, max_entries] (the whole batch at once).
  // When smaller, the batch is scored and selected in consecutive token chunks of
  // scores_floats / max_entries rows (>= 1), reusing the workspace; the picks are identical
  // (each token's scores do not depend on the other tokens). Size it with
  // indexer_workspace_floats.
  int64_t scores_floats = 0;
  int32_t* selected = nullptr;         // [tokens, top_k]
  // heads 64 x dim 128 score on tensor cores with BF16 operands (indexer_mma.cu) unless
  // this is set; other shapes always take the FP32 kernels (the oracle).
  bool fp32_scores = false;
  // Tensor-core score kernel for heads 64 x dim 128 (ignored with fp32_scores): kAuto takes
  // kWgmma (faster in every case measured); kMma is indexer_mma.cu (mma.sync); kWgmma is indexer_wgmma.cu
  // (Hopper wgmma, keys as M, each key tile reused by 8 tokens per CTA). Both BF16
  // operands, FP32 accumulation; scores agree to FP32 summation order, not bitwise.
  enum class ScoreKernel : int { kAuto = 0, kMma = 1, kWgmma = 2 } score_kernel = ScoreKernel::kAuto;
};
void indexer_topk(const IndexerParams& params, cudaStream_t stream);
// FP32 values of IndexerParams::scores for a batch of up to `tokens` rows and max_entries
// keys per slot: min(tokens, max(64, 16M / max_entries)) rows of max_entries (<= 64 MiB
// unless max_entries > 256K; the whole [tokens, max_entries] matrix when it fits that).
// Pass the same value as IndexerParams::scores_floats.
int64_t indexer_workspace_floats(int tokens, int max_entries);

// ---- Sparse MQA attention with sinks (cpu: attention_forward's inner loop) -------------
// For token t (slot s, position p) and head h, the keys (= values) are the window rows
// of positions max(0, p - window + 1) .. p, then compressed entries: none (sliding
// layers), every entry w < (p + 1) / rate (HCA), or selected[t] without the -1s (CSA).
// out[t,h] = sum_k softmax_k(q.key_k * scale with the sink logit sinks[h] in the
// denominator only) * key_k. FP32 math, BF16 keys.
enum class CompressedKeys : int { kNone = 0, kAllVisible = 1, kSelected = 2 };
struct SparseAttentionParams {
  const float* q = nullptr;             // [tokens, heads, head_dim]
  // Optional BF16 q: [tokens, heads, head_dim] BF16 bits, the round-to-nearest-even of q
  // (ops::rms_norm_rope's out_bf16), 16-byte aligned. Read only by kWgmmaPipelined,
  // kWgmmaPingPong (kAuto's wgmma choices; BF16 and kv_fp8 rows) and
  // kWgmmaPingPongPersistent and kWgmmaLocalP (which require it): their producer warpgroup
  // copies the token's BF16 q with cp.async into the Q panel instead of the consumers
  // loading and rounding 128 KiB of FP32 q, so the copy overlaps the first tiles' gathers;
  // the outputs are bitwise those with q (the kernels round q this way). q may then be
  // null; every other kernel (the FP32 kernel, kWgmma, kWgmmaShareP, split merges need
  // nothing of q) reads q only and is an error without it.
  const uint16_t* q_bf16 = nullptr;
  int heads = 0, head_dim = 0;
  const uint16_t* window_kv = nullptr;  // [slots, ring_rows, head_dim] BF16
  int ring_rows = 0, window = 0;
  CompressedKeys compressed = CompressedKeys::kNone;
  const uint16_t* entries = nullptr;    // [slots, max_entries, head_dim] BF16
  int max_entries = 0, rate = 0;
  const int32_t* selected = nullptr;    // [tokens, top_k] (kSelected)
  int top_k = 0;
  const float* sinks = nullptr;         // [heads]
  float scale = 0.0f;                   // 1 / sqrt(head_dim)
  TokenBatch batch;
  float* out = nullptr;                 // [tokens, heads, head_dim]
  // out_bf16 (every kernel; with split-KV the merge writes it): [tokens, heads, head_dim]
  // BF16 bits written INSTEAD of out (exactly one of the two is set; 16-byte aligned): the
  // round-to-nearest-even of each value out would hold, half the output bytes (the ring
  // kernels' epilogue writes 128 KiB of FP32 per token).
  uint16_t* out_bf16 = nullptr;
  // Kernel choice (issue 6): kAuto takes kWgmmaPingPong (below; BF16 or kv_fp8 rows), or
  // kWgmmaPingPongPersistent when q_bf16 is given and there are >= 2 x SMs work items, where
  // a wgmma kernel (sparse_attention_wgmma.cu: heads % 64 == 0, head_dim 512; BF16 q and
  // weights, FP32 accumulation) applies, else the FP32 kernel; kSimple forces the FP32 kernel (the tests' oracle);
  // kWgmma requires the wgmma kernel (an error where it does not apply). kWgmmaShareP:
  // the same kernel computing S = Q K^T once instead of in both warpgroups (each takes
  // half of a tile's keys, P goes through shared memory); same conditions and roundings;
  // 190 vs 173 TFLOP/s (CSA 8 k prefill, H200).
  // kWgmmaPipelined (226 TFLOP/s there; sparse_attention_pipelined.cu): the share-P math
  // with a producer warpgroup gathering 48-key tiles into a 3-stage mbarrier ring; same
  // conditions and roundings (kv_splits and its workspace work the same way).
  // kWgmmaPingPong (the kAuto choice: 272 / 131 TFLOP/s at CSA / HCA 8 k prefill vs 226 /
  // 119 for kWgmmaPipelined, H200 2026-12-01 23:25 UTC; 361 / 225 given q_bf16, 2026-12-02
  // 00:45 UTC; sparse_attention_pingpong.cu):
  // kWgmmaPipelined's producer, ring and math, but the two consumer warpgroups score
  // alternate tiles (S for all 48 keys, the softmax, P through shared memory) while both
  // run P V for every tile; same conditions, kv_fp8 and split-KV; outputs bitwise equal
  // to kWgmmaPipelined (asserted in every SparseAttentionWgmma case, passed on the H200).
  // kWgmmaPingPongPersistent (kAuto's choice for prefill with q_bf16: 372.5 / 253.0 TFLOP/s
  // at CSA / HCA 8 k vs 360.4 / 223.0, H200 2026-12-02 04:05 UTC; sparse_attention_pingpong.cu):
  // kWgmmaPingPong as a persistent kernel, min(work items, SMs) CTAs each looping over the
  // (token, head group, split) items of the one-CTA-per-item grid, the tile ring running
  // across items (the next item's Q copy and first gathers overlap this item's last tiles
  // and epilogue); same conditions, kv_fp8 and split-KV, outputs bitwise kWgmmaPingPong's;
  // requires q_bf16 (an error without it: the producer copies each item's Q).
  // kWgmmaLocalP (opt-in, not measured yet; sparse_attention_localp.cu): persistent like
  // kWgmmaPingPongPersistent, but 64-key tiles taken in pairs, both consumer warpgroups
  // scoring one tile each at the same time (S = 64 heads x 64 keys), one running max per
  // pair (handshake through shared memory) and each warpgroup's own P fed to P V from
  // registers; same conditions, kv_fp8 and split-KV, q_bf16 required; outputs within the
  // wgmma bounds of the FP64 loop, not bitwise the other kernels.
  enum class Kernel : int {
    kAuto = 0,
    kSimple = 1,
    kWgmma = 2,
    kWgmmaShareP = 3,
    kWgmmaPipelined = 4,
    kWgmmaPingPong = 5,
    kWgmmaPingPongPersistent = 6,
    kWgmmaLocalP = 7
  } kernel = Kernel::kAuto;
  // Split-KV of the wgmma kernel (decode with long key lists): each token's key list in
  // kv_splits ranges on separate CTAs, merged by a second kernel. Needs split_workspace
  // of sparse_attention_workspace_floats(tokens, heads, kv_splits) FP32 values; without
  // one there is no split. kv_splits 0: chosen from the shape; 1: off.
  int kv_splits = 0;
  float* split_workspace = nullptr;
  int64_t split_workspace_floats = 0;
  // FP8 KV cache (kv_fp8.h, opt-in): window_kv and entries point to rows of
  // kKvFp8RowBytes (584) bytes in the FP8 layout instead of BF16 rows (pass the byte
  // arrays reinterpret_cast to const uint16_t*; 16-byte aligned bases), dequantized as
  // they are loaded (exact in BF16, so the math is the BF16 path's on the decoded rows).
  // head_dim 512 only. Read by kWgmmaPingPong (kAuto's choice where it fits),
  // kWgmmaPingPongPersistent, kWgmmaLocalP and kWgmmaPipelined (their producer decodes the
  // rows into the BF16 tile; same split-KV),
  // and by the FP32 kernel (kSimple; kAuto where the wgmma kernels do not fit);
  // kWgmma / kWgmmaShareP with kv_fp8 are an error.
  bool kv_fp8 = false;
};
void sparse_attention(const SparseAttentionParams& params, cudaStream_t stream);
// FP32 values of split_workspace for up to kv_splits splits (0 when kv_splits <= 1).
int64_t sparse_attention_workspace_floats(int tokens, int heads, int kv_splits);

}  // namespace dsv4::cuda::attention

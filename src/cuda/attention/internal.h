// Attention family internals: the kernel launch functions of the four .cu files and
// the limits the public launchers (launchers.cpp) check before calling them. The .cu
// files stay free of dsv4/error.h (fmt does not compile under nvcc); validation and
// dsv4::Error live in launchers.cpp.
#pragma once
#include <cuda_runtime.h>

#include "cuda/attention/attention.h"

namespace dsv4::cuda::attention::detail {

// kv_splits 0 (auto) for the wgmma kernels: the split count in 1..min(most, 64-key tiles)
// of least modelled time, the smaller on ties. Model (host arithmetic, fitted to the H200
// decode rows of 2026-12-02 04:16 / 04:23 UTC, bench_attention *_s1 / _s2 / _s4):
//   compute: 1 CTA per SM, ceil(ctas x s / sms) waves of (tiles / s + 2 fixed) tiles of
//            kSplitTileUs each (the 2: Q load, epilogue);
//   gather:  every token's rows (max_keys x row_bytes) at kSplitGatherGBps, the rate the
//            gathers reached however many CTAs ran (b64: 1 and 2 splits took the same time);
//   merge:   s > 1 writes and reads back s partial O rows (2 x s x tokens x heads x 2 KiB)
//            at kSplitMergeGBps, plus a launch.
//   time(s) = max(compute, gather) + merge.
// E.g. V4-Flash CSA (640 keys): 1 token -> 10 splits, 16 -> 5, 64 -> 1 (2 measured 4%
// slower); HCA 64 tokens: 160 keys -> 1 (2 were 42% slower), 1152 keys -> 2 (11% faster).
inline constexpr double kSplitTileUs = 3.0;
inline constexpr double kSplitGatherGBps = 2000.0;
inline constexpr double kSplitMergeGBps = 3000.0;
inline constexpr double kSplitMergeLaunchUs = 2.0;
inline int sparse_attention_auto_splits(int64_t tokens, int heads, int64_t max_keys, int64_t row_bytes, int sms,
                                        int most) {
  const int64_t ctas = tokens * (heads / 64);
  const int64_t tiles = max_keys > 0 ? (max_keys + 63) / 64 : 1;
  const double gather_us = static_cast<double>(tokens) * max_keys * row_bytes / (kSplitGatherGBps * 1e3);
  int best = 1;
  double best_us = -1.0;
  for (int s = 1; s <= most && s <= tiles; ++s) {
    const int64_t waves = (ctas * s + sms - 1) / (sms > 0 ? sms : 1);
    const double compute_us = static_cast<double>(waves) * static_cast<double>((tiles + s - 1) / s + 2) * kSplitTileUs;
    const double merge_us =
        s > 1 ? 2.0 * s * tokens * heads * 2048.0 / (kSplitMergeGBps * 1e3) + kSplitMergeLaunchUs : 0.0;
    const double us = (compute_us > gather_us ? compute_us : gather_us) + merge_us;
    if (best_us < 0.0 || us < best_us) best_us = us, best = s;
  }
  return best;
}

inline constexpr int kCompressorMaxDim = 12 * 1024;       // pool kernel's [dim] FP32 shared buffer <= 48 KiB
inline constexpr int kIndexerMaxDim = 256;                // 8 key channels per lane
inline constexpr int kIndexerEntriesPerCta = 64;          // score grid: max_entries / 64 CTAs along y (<= 65535)
inline constexpr size_t kIndexerMaxSmem = 227 * 1024;     // queries [heads, dim] + weights [heads] FP32
inline constexpr int kIndexerMmaHeads = 64;               // indexer_mma.cu: the tensor-core path's shape (V4)
inline constexpr int kIndexerMmaDim = 128;
inline constexpr int kIndexerMmaTileKeys = 64;
inline constexpr int kIndexerWgmmaGroupMax = 8;            // indexer_wgmma.cu: tokens per CTA
inline constexpr int kSparseMaxHeadDim = 512;             // 16 channels per lane
inline constexpr int kSparseHeadDimMultiple = 8;          // 16-byte BF16 row loads

// Each returns the launch error (cudaGetLastError after the launches).
cudaError_t launch_kv_window_write(const float* kv, int head_dim, uint16_t* window_kv, int ring_rows,
                                   const TokenBatch& batch, cudaStream_t stream);
cudaError_t launch_compressor_update(const CompressorParams& params, cudaStream_t stream);
// Its two halves (the benchmark times them apart): the pool kernel (kWide with
// single_token_chunks: pool and save), then the save kernel (none in that case).
cudaError_t launch_compressor_pool(const CompressorParams& params, cudaStream_t stream);
cudaError_t launch_compressor_save(const CompressorParams& params, cudaStream_t stream);
cudaError_t launch_indexer_topk(const IndexerParams& params, cudaStream_t stream);
// indexer_mma.cu: BF16 tensor-core scores into params.scores (heads 64, dim 128 only).
cudaError_t launch_indexer_scores_mma(const IndexerParams& params, cudaStream_t stream);
// indexer_wgmma.cu: the same scores on wgmma (heads 64, dim 128 only, sm_90a).
cudaError_t launch_indexer_scores_wgmma(const IndexerParams& params, cudaStream_t stream);
cudaError_t launch_sparse_attention(const SparseAttentionParams& params, cudaStream_t stream);
// sparse_attention_wgmma.cu: the wgmma kernel (heads % 64 == 0, head_dim 512), kv_splits
// >= 1 ranges per token (> 1: params.split_workspace holds the partials, then the merge).
bool sparse_attention_wgmma_supported(const SparseAttentionParams& params);
int64_t sparse_attention_split_workspace_floats(int tokens, int heads, int splits);
// share_p: the variant that computes S once (half the keys per warpgroup, P through
// shared memory; Kernel::kWgmmaShareP), else S in both warpgroups (kWgmma, kAuto).
cudaError_t launch_sparse_attention_wgmma(const SparseAttentionParams& params, int kv_splits, bool share_p,
                                          cudaStream_t stream);
// The split-KV merge of both wgmma families (log-sum-exp over the kv_splits partials):
// part_o [splits, tokens, heads, 512] and part_ml [splits, tokens, heads, 2] (running max
// in the exp2 domain, row sum) -> params.out.
cudaError_t launch_sparse_attention_merge(const SparseAttentionParams& params, int kv_splits, const float* part_o,
                                          const float* part_ml, cudaStream_t stream);
// sparse_attention_pipelined.cu: Kernel::kWgmmaPipelined (same conditions, same split
// workspace layout as launch_sparse_attention_wgmma).
cudaError_t launch_sparse_attention_pipelined(const SparseAttentionParams& params, int kv_splits, cudaStream_t stream);
// sparse_attention_pingpong.cu: Kernel::kWgmmaPingPong (same conditions and split workspace).
cudaError_t launch_sparse_attention_pingpong(const SparseAttentionParams& params, int kv_splits, cudaStream_t stream);
// The same file: Kernel::kWgmmaPingPongPersistent (same conditions and split workspace,
// q_bf16 required; grid min(tokens x heads / 64 x kv_splits, SMs)).
cudaError_t launch_sparse_attention_pingpong_persistent(const SparseAttentionParams& params, int kv_splits,
                                                        cudaStream_t stream);
// sparse_attention_localp.cu: Kernel::kWgmmaLocalP (persistent like the one above, 64-key
// tiles in pairs, P V with a register-local P; same conditions and split workspace, q_bf16
// required; BF16 or kv_fp8 rows).
cudaError_t launch_sparse_attention_localp(const SparseAttentionParams& params, int kv_splits, cudaStream_t stream);

}  // namespace dsv4::cuda::attention::detail

// V4 attention on the CPU: q low-rank path, MQA over one shared K=V head (head_dim
// with a trailing RoPE slice), sliding window + compressed entries (HCA: all causal
// entries; CSA: the Lightning indexer's top-k), per-head sinks, output de-rotation,
// grouped output projection.
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/compressor.h"
#include "cpu/rope.h"
#include "dsv4/weights.h"

namespace dsv4::cpu {

// Everything one layer remembers about one sequence.
struct LayerCache {
  int64_t first_row_position = 0;  // absolute position of kv_rows[0]
  std::vector<float> kv_rows;      // [rows, head_dim] normed + RoPE'd K=V of the last sliding_window-1 tokens (+ chunk)
  CompressorState compressor;      // CSA / HCA
  CompressorState indexer;         // CSA only (index_head_dim)
  bool round_kv_bf16 = false;      // kv_rows and compressor entries hold BF16 values (CpuRounding::kv_cache)
  bool round_kv_fp8 = false;       // ... FP8 KV codec values (CpuRounding::kv_cache_fp8)
};

// round_kv_bf16: KV rows and compressed attention entries are stored as BF16 values
// (the CUDA engine's caches); the indexer's keys stay FP32 as there. round_kv_fp8: as the
// CUDA FP8 cache stores them instead (KV rows FP32 -> FP8; entries FP32 -> BF16 -> FP8);
// head_dim 512 only.
void init_layer_cache(LayerCache& cache, const ModelConfig& config, AttentionType type, bool round_kv_bf16 = false,
                      bool round_kv_fp8 = false);

struct RopeTables {
  RopeTable main;      // sliding-only layers
  RopeTable compress;  // CSA/HCA layers, compressors, indexer
};

// x: [tokens, hidden] (after attn_norm), tokens at positions start..start+tokens-1.
// Returns [tokens, hidden]. Updates the cache.
std::vector<float> attention_forward(const AttentionWeights& weights, AttentionType type, const ModelConfig& config,
                                     const RopeTables& ropes, LayerCache& cache, const float* x, int64_t tokens,
                                     int64_t start);

// Lightning indexer selection for one query: the entries (< visible) with the top
// min(index_topk, visible) scores; ties broken toward the lower index. Exposed for tests.
std::vector<int64_t> indexer_select(const float* scores, int64_t visible, int64_t top_k);

}  // namespace dsv4::cpu

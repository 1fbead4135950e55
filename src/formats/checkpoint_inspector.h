// `dsv4 inspect DIR`: what a checkpoint is (config summary, per-layer attention and
// MLP types), how it is stored (every tensor's format and bytes: totals per format,
// per layer, optionally every tensor) and what it needs to run (GPU memory estimate:
// weights + KV cache for a context length and batch).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "dsv4/config.h"

namespace dsv4::formats {

struct InspectOptions {
  int64_t context = 4096;   // tokens per sequence
  int64_t batch = 1;        // sequences
  int64_t kv_element_bytes = 2;  // KV cache element size: 2 (BF16), 1 (FP8), 4 (FP32)
  bool list_tensors = false;
};

// KV cache of one sequence of `context` tokens, in elements, for the engine's cache
// layout (src/cpu/attention.h, compressor.h): every layer keeps the last
// sliding_window rows of K=V [head_dim]; CSA/HCA layers add one compressed entry
// [head_dim] per `rate` tokens and their open-window buffers (kv + gate,
// [rate, coff*head_dim] each, plus CSA's overlap half [rate, head_dim] x 2); CSA
// layers add the indexer's own compressed keys [index_head_dim] per 4 tokens with
// the same buffers at index_head_dim.
struct KvCacheElements {
  int64_t sliding = 0, compressed = 0, indexer = 0, buffers = 0;
  int64_t total() const { return sliding + compressed + indexer + buffers; }
};
KvCacheElements kv_cache_elements(const ModelConfig& config, int64_t context);

// The printed report. Throws dsv4::Error when DIR holds no readable checkpoint.
std::string inspect_checkpoint(const std::filesystem::path& directory, const InspectOptions& options);

}  // namespace dsv4::formats

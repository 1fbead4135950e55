// KV compressors of CSA (rate 4, two overlapping series) and HCA (rate 128) layers,
// and the Lightning indexer's own compressor (CSA scheme at index_head_dim).
// Entries are pooled from raw sublayer inputs, one per closed window of `rate`
// tokens; incomplete windows wait in the buffer (decode emits when a window fills).
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/rope.h"
#include "dsv4/weights.h"

namespace dsv4::cpu {

struct CompressorState {
  int64_t rate = 0;
  int64_t dim = 0;            // entry width (head_dim, or index_head_dim)
  bool overlapping = false;   // CSA: projections are [Ca | Cb], 2*dim wide
  int64_t buffered = 0;       // tokens of the open window, < rate
  std::vector<float> buffer_kv;    // [rate, width] raw kv projections of the open window
  std::vector<float> buffer_gate;  // [rate, width] raw gate projections (no position bias)
  bool has_overlap = false;
  std::vector<float> overlap_kv;   // [rate, dim] Ca of the last closed window (CSA)
  std::vector<float> overlap_gate; // [rate, dim] its gate, position bias included
  std::vector<float> entries;      // [entry_count, dim] pooled, normed, RoPE'd at w*rate
  int64_t entry_count = 0;
  bool round_entries_bf16 = false; // store entries as BF16 values (CpuRounding::kv_cache)
  bool round_entries_fp8 = false;  // then through the FP8 KV codec (CpuRounding::kv_cache_fp8; dim 512)

  void init(int64_t rate_, int64_t dim_, bool overlapping_);
  int64_t width() const { return overlapping ? 2 * dim : dim; }
};

// Projects the new tokens (x: [tokens, hidden], the attention input), buffers them,
// and pools every window that closes. Entry w gets RoPE at position w*rate.
void compressor_append(CompressorState& state, const CompressorWeights& weights, const RopeTable& rope,
                       double rms_eps, const float* x, int64_t tokens);

}  // namespace dsv4::cpu

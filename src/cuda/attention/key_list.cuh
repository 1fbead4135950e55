// A query token's key list in the sparse attention kernels (sparse_attention.cu, the
// wgmma families): its window rows, positions first_window .. first_window + n_window - 1
// (ring row = position % ring_rows), then the compressed part: every visible entry (HCA),
// top_k selections (CSA: picks outside [0, visible) skipped), or none (sliding layers).
// A token with a negative position or slot has an empty list.
#pragma once
#include "cuda/attention/attention.h"

namespace dsv4::cuda::attention {

struct KeyList {
  int slot = 0, first_window = 0, n_window = 0, n_total = 0, visible = 0;
};

__device__ __forceinline__ KeyList key_list(const SparseAttentionParams& p, int token) {
  KeyList keys;
  const int position = p.batch.positions[token];
  keys.slot = p.batch.slots[token];
  if (position >= 0 && keys.slot >= 0) {
    keys.first_window = max(0, position - p.window + 1);
    keys.n_window = position - keys.first_window + 1;
    keys.visible = p.compressed == CompressedKeys::kNone ? 0 : min((position + 1) / p.rate, p.max_entries);
    const int n_compressed = p.compressed == CompressedKeys::kAllVisible ? keys.visible
                             : p.compressed == CompressedKeys::kSelected ? p.top_k
                                                                         : 0;
    keys.n_total = keys.n_window + n_compressed;
  }
  return keys;
}

}  // namespace dsv4::cuda::attention

// Public launchers of the attention family: validate the params (dsv4::Error naming
// the bad value), then call the kernel launch functions of the .cu files. Host only,
// no synchronisation; checks touch only host-side scalars and pointers.
#include <algorithm>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/kv_fp8.h"
#include "cuda/common/cuda_check.h"

namespace dsv4::cuda::attention {

void kv_window_write(const float* kv, int head_dim, uint16_t* window_kv, int ring_rows, const TokenBatch& batch,
                     cudaStream_t stream) {
  DSV4_CHECK(head_dim > 0 && ring_rows > 0, "kv_window_write: head_dim {} and ring_rows {} must be positive",
             head_dim, ring_rows);
  if (batch.tokens <= 0) return;
  DSV4_CHECK(kv && window_kv && batch.positions && batch.slots, "kv_window_write: a required pointer is null");
  DSV4_CUDA_CHECK(detail::launch_kv_window_write(kv, head_dim, window_kv, ring_rows, batch, stream));
}

void compressor_update(const CompressorParams& params, cudaStream_t stream) {
  const CompressorParams& p = params;
  DSV4_CHECK(p.rate > 0 && p.dim > 0 && p.max_entries > 0,
             "compressor_update: rate {}, dim {}, max_entries {} must be positive", p.rate, p.dim, p.max_entries);
  DSV4_CHECK(p.dim <= detail::kCompressorMaxDim, "compressor_update: dim {} > {}", p.dim, detail::kCompressorMaxDim);
  DSV4_CHECK(p.rope_dim >= 0 && p.rope_dim % 2 == 0 && p.rope_dim <= p.dim,
             "compressor_update: rope_dim {} must be even and <= dim {}", p.rope_dim, p.dim);
  const int needed_rows = (p.overlapping ? 2 : 1) * p.rate;
  DSV4_CHECK(p.state_rows >= needed_rows,
             "compressor_update: state_rows {} < {} (pooling reads that many positions back)", p.state_rows,
             needed_rows);
  const int kernel = static_cast<int>(p.kernel);
  DSV4_CHECK(kernel >= 0 && kernel <= static_cast<int>(CompressorParams::Kernel::kWide),
             "compressor_update: kernel {} is not a CompressorParams::Kernel", kernel);
  if (p.batch.tokens <= 0) return;
  DSV4_CHECK(p.kv_proj && p.gate_proj && p.ape && p.norm_weight && p.state_kv && p.state_gate && p.entries &&
                 (p.rope_dim == 0 || p.inv_freq) && p.batch.positions && p.batch.slots && p.batch.first_rows,
             "compressor_update: a required pointer is null");
  DSV4_CUDA_CHECK(detail::launch_compressor_update(p, stream));
}

void indexer_topk(const IndexerParams& params, cudaStream_t stream) {
  const IndexerParams& p = params;
  DSV4_CHECK(p.heads > 0 && p.dim > 0 && p.rate > 0 && p.top_k > 0 && p.max_entries > 0,
             "indexer_topk: heads {}, dim {}, rate {}, top_k {}, max_entries {} must be positive", p.heads, p.dim,
             p.rate, p.top_k, p.max_entries);
  DSV4_CHECK(p.dim <= detail::kIndexerMaxDim, "indexer_topk: dim {} > {}", p.dim, detail::kIndexerMaxDim);
  const size_t smem = (static_cast<size_t>(p.heads) * p.dim + p.heads) * sizeof(float);
  DSV4_CHECK(smem <= detail::kIndexerMaxSmem, "indexer_topk: heads x dim = {} x {} needs {} bytes of shared memory",
             p.heads, p.dim, smem);
  const int64_t tiles = (static_cast<int64_t>(p.max_entries) + detail::kIndexerEntriesPerCta - 1) /
                        detail::kIndexerEntriesPerCta;
  DSV4_CHECK(tiles <= 65535, "indexer_topk: max_entries {} too large for the score grid", p.max_entries);
  if (p.batch.tokens <= 0) return;
  DSV4_CHECK(p.q && p.head_weights && p.entries && p.scores && p.selected && p.batch.positions && p.batch.slots,
             "indexer_topk: a required pointer is null");
  DSV4_CHECK(p.scores_floats >= 0, "indexer_topk: scores_floats {} must be >= 0 (0: [tokens, max_entries])",
             p.scores_floats);
  const int64_t whole = static_cast<int64_t>(p.batch.tokens) * p.max_entries;
  if (p.scores_floats == 0 || p.scores_floats >= whole) {
    DSV4_CUDA_CHECK(detail::launch_indexer_topk(p, stream));
    return;
  }
  // Token chunks sharing the workspace (stream order keeps a chunk's top-k before the next
  // chunk's scores). Rows per chunk a multiple of the MMA kernel's 4-token group when >= 4.
  int64_t rows = p.scores_floats / p.max_entries;
  DSV4_CHECK(rows >= 1, "indexer_topk: scores_floats {} < max_entries {} (one token row of scores)",
             p.scores_floats, p.max_entries);
  if (rows >= 4) rows -= rows % 4;
  for (int64_t first = 0; first < p.batch.tokens; first += rows) {
    IndexerParams chunk = p;
    const int64_t count = std::min<int64_t>(rows, p.batch.tokens - first);
    chunk.batch.tokens = static_cast<int>(count);
    chunk.batch.positions = p.batch.positions + first;
    chunk.batch.slots = p.batch.slots + first;
    chunk.batch.token_ids = p.batch.token_ids ? p.batch.token_ids + first : nullptr;
    chunk.batch.first_rows = nullptr;  // batch-relative rows; the indexer kernels do not read them
    chunk.q = p.q + first * p.heads * p.dim;
    chunk.head_weights = p.head_weights + first * p.heads;
    chunk.selected = p.selected + first * p.top_k;
    chunk.scores_floats = count * p.max_entries;
    DSV4_CUDA_CHECK(detail::launch_indexer_topk(chunk, stream));
  }
}

int64_t indexer_workspace_floats(int tokens, int max_entries) {
  constexpr int64_t kBudgetFloats = int64_t{1} << 24;  // 64 MiB of FP32 scores
  constexpr int64_t kMinRows = 64;
  const int64_t t = std::max(1, tokens), e = std::max(1, max_entries);
  const int64_t rows = std::min(t, std::max(kMinRows, kBudgetFloats / e));
  return rows * e;
}

namespace {
// The current device's multiprocessor count for sparse_attention's launch-shape choices
// (132, an H100 / H200, if the query fails: only the choice depends on it; the launch
// itself reports errors).
int current_device_sms() {
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return sms;
}
}  // namespace

void sparse_attention(const SparseAttentionParams& params, cudaStream_t stream) {
  const SparseAttentionParams& p = params;
  DSV4_CHECK(p.heads > 0 && p.head_dim > 0 && p.head_dim <= detail::kSparseMaxHeadDim &&
                 p.head_dim % detail::kSparseHeadDimMultiple == 0,
             "sparse_attention: heads {} must be positive and head_dim {} a multiple of {} up to {}", p.heads,
             p.head_dim, detail::kSparseHeadDimMultiple, detail::kSparseMaxHeadDim);
  DSV4_CHECK(p.ring_rows > 0 && p.window > 0, "sparse_attention: ring_rows {} and window {} must be positive",
             p.ring_rows, p.window);
  if (p.compressed != CompressedKeys::kNone)
    DSV4_CHECK(p.entries && p.rate > 0 && p.max_entries > 0,
               "sparse_attention: compressed keys need entries, rate {} > 0 and max_entries {} > 0", p.rate,
               p.max_entries);
  if (p.compressed == CompressedKeys::kSelected)
    DSV4_CHECK(p.selected && p.top_k > 0, "sparse_attention: selected keys need `selected` and top_k {} > 0",
               p.top_k);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.window_kv) % 16 == 0 && reinterpret_cast<uintptr_t>(p.entries) % 16 == 0,
             "sparse_attention: window_kv and entries must be 16-byte aligned");
  using Kernel = SparseAttentionParams::Kernel;
  if (p.kv_fp8) {
    DSV4_CHECK(p.head_dim == kKvFp8HeadDim, "sparse_attention: kv_fp8 rows hold head_dim {}, not {}", kKvFp8HeadDim,
               p.head_dim);
    DSV4_CHECK(p.kernel == Kernel::kAuto || p.kernel == Kernel::kSimple || p.kernel == Kernel::kWgmmaPipelined ||
                   p.kernel == Kernel::kWgmmaPingPong || p.kernel == Kernel::kWgmmaPingPongPersistent ||
                   p.kernel == Kernel::kWgmmaLocalP,
               "sparse_attention: kv_fp8 is read by the FP32 kernel (kAuto, kSimple), kWgmmaPipelined, "
               "kWgmmaPingPong, kWgmmaPingPongPersistent and kWgmmaLocalP only, not kernel {}",
               static_cast<int>(p.kernel));
    // kv_fp8 takes the same kernel choice as BF16 rows below (the FP32 kernel for kSimple
    // and shapes the wgmma kernels do not take; kAuto the ping-pong kernel).
  }
  const bool wgmma_fits = detail::sparse_attention_wgmma_supported(p);
  DSV4_CHECK(p.kernel >= Kernel::kAuto && p.kernel <= Kernel::kWgmmaLocalP,
             "sparse_attention: unknown kernel {} (expected 0..{})", static_cast<int>(p.kernel),
             static_cast<int>(Kernel::kWgmmaLocalP));
  const bool persistent = p.kernel == Kernel::kWgmmaPingPongPersistent;
  const bool local_p = p.kernel == Kernel::kWgmmaLocalP;
  const bool wgmma_forced = p.kernel == Kernel::kWgmma || p.kernel == Kernel::kWgmmaShareP ||
                            p.kernel == Kernel::kWgmmaPipelined || p.kernel == Kernel::kWgmmaPingPong ||
                            persistent || local_p;
  DSV4_CHECK(!wgmma_forced || wgmma_fits,
             "sparse_attention: the wgmma kernel takes heads % 64 == 0 and head_dim 512, not heads {} head_dim {}",
             p.heads, p.head_dim);
  DSV4_CHECK(p.kv_splits >= 0 && p.kv_splits <= 64, "sparse_attention: kv_splits {} must be in [0, 64]",
             p.kv_splits);
  if (p.batch.tokens <= 0) return;
  DSV4_CHECK(p.q || p.q_bf16, "sparse_attention: q (FP32) or q_bf16 is required, both are null");
  DSV4_CHECK(p.window_kv && p.batch.positions && p.batch.slots,
             "sparse_attention: window_kv and the batch arrays are required");
  DSV4_CHECK((p.out != nullptr) != (p.out_bf16 != nullptr),
             "sparse_attention: exactly one of out (FP32) and out_bf16 must be set, got {}",
             p.out ? "both" : "neither");
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.out_bf16) % 16 == 0, "sparse_attention: out_bf16 must be 16-byte aligned");
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.q_bf16) % 16 == 0, "sparse_attention: q_bf16 must be 16-byte aligned");
  DSV4_CHECK(!persistent || p.q_bf16,
             "sparse_attention: kWgmmaPingPongPersistent requires q_bf16 (its producer copies each work item's BF16 "
             "q); q_bf16 is null (the FP32 q alone is not supported: use kWgmmaPingPong)");
  DSV4_CHECK(!local_p || p.q_bf16,
             "sparse_attention: kWgmmaLocalP requires q_bf16 (its producer copies each work item's BF16 q); q_bf16 "
             "is null (the FP32 q alone is not supported: use kWgmmaPingPong)");
  // q_bf16 feeds the ring kernels only; every other kernel reads the FP32 q.
  const bool fp32_kernel = p.kernel == Kernel::kSimple || !wgmma_fits;
  const bool ring_kernel = !fp32_kernel && (p.kernel == Kernel::kAuto || p.kernel == Kernel::kWgmmaPipelined ||
                                            p.kernel == Kernel::kWgmmaPingPong || persistent || local_p);
  DSV4_CHECK(p.q || ring_kernel,
             "sparse_attention: q_bf16 is read only by kWgmmaPipelined / kWgmmaPingPong / kWgmmaPingPongPersistent / "
             "kWgmmaLocalP; "
             "kernel {} ({}) needs the FP32 q, which is null",
             static_cast<int>(p.kernel),
             fp32_kernel ? (wgmma_fits ? "the FP32 kernel" : "the FP32 kernel: the shape does not fit the wgmma ones")
                         : p.kernel == Kernel::kWgmma ? "kWgmma" : "kWgmmaShareP");
  if (fp32_kernel) {
    DSV4_CUDA_CHECK(detail::launch_sparse_attention(p, stream));
    return;
  }
  DSV4_CHECK(reinterpret_cast<uintptr_t>(p.q) % 16 == 0, "sparse_attention: q must be 16-byte aligned");
  int splits = 1;
  if (p.kv_splits > 1) {
    splits = p.kv_splits;
    const int64_t needed = detail::sparse_attention_split_workspace_floats(p.batch.tokens, p.heads, splits);
    DSV4_CHECK(p.split_workspace && p.split_workspace_floats >= needed,
               "sparse_attention: kv_splits {} needs split_workspace of {} floats, got {}", splits, needed,
               p.split_workspace ? p.split_workspace_floats : 0);
  } else if (p.kv_splits == 0 && p.split_workspace) {
    const int sms = current_device_sms();
    // max_keys is the capacity (max_entries), not what the tokens see.
    const int64_t max_keys = static_cast<int64_t>(p.window) + (p.compressed == CompressedKeys::kSelected ? p.top_k
                                                               : p.compressed == CompressedKeys::kAllVisible
                                                                   ? p.max_entries
                                                                   : 0);
    int most = 16;
    while (most > 1 &&
           detail::sparse_attention_split_workspace_floats(p.batch.tokens, p.heads, most) > p.split_workspace_floats)
      --most;
    splits = detail::sparse_attention_auto_splits(p.batch.tokens, p.heads, max_keys,
                                                  p.kv_fp8 ? kKvFp8RowBytes : 2 * p.head_dim, sms, most);
  }
  // kAuto takes the ping-pong kernel: on the H200 (2026-12-01 23:25 UTC) it gave the
  // pipelined kernel's outputs bit for bit in every SparseAttentionWgmma case and ran CSA /
  // HCA 8 k prefill at 272 / 131 TFLOP/s (pipelined 226 / 119), every decode row equal or
  // faster; over the FP8 cache (2026-12-02 00:45 UTC) CSA / HCA 8 k prefill 200.6 / 123.8
  // vs 186.4 / 117.5, decode batch 64 ctx 4 k CSA 0.0487 vs 0.0497 ms (KvFp8.*: bitwise equal).
  // kAuto with q_bf16 and at least two waves of work items (prefill) takes the persistent
  // variant: on the H200 (2026-12-02 04:05 UTC) CSA / HCA 8 k prefill 372.5 / 253.0 TFLOP/s
  // vs 360.4 / 223.0 (FP8 cache 239.1 / 181.0 vs 225.1 / 158.4), bitwise equal outputs
  // (PersistentManyItems, KvFp8.SparseAttentionReadsFp8); one wave or less (decode) gains
  // nothing there and stays on the ping-pong kernel.
  // Work items (token, head group, split) of the persistent kernel, an int there.
  const int64_t items = static_cast<int64_t>(p.batch.tokens) * (p.heads / 64) * std::max(1, splits);
  const bool persistent_auto = p.kernel == Kernel::kAuto && p.q_bf16 != nullptr && items <= INT32_MAX &&
                               items >= 2 * static_cast<int64_t>(current_device_sms());
  // kAuto over selected (CSA) lists with BF16 rows, in the same prefill regime, takes
  // kWgmmaLocalP: H200 2026-12-02 08:50 UTC, CSA 8 k / 32 k prefill 400.2 / 438.5 TFLOP/s vs
  // the persistent ping-pong's 372.0 / 412.2 (HCA lists: 242.6 / 323.9 vs 252.4 / 321.6, so
  // HCA stays; FP8 rows not measured yet). Not bitwise the ping-pong kernels (P rounded at the
  // pair's max), within the same FP64-loop bounds (SparseAttentionWgmma.*, all passed).
  const bool local_p_auto = persistent_auto && !p.kv_fp8 && p.compressed == CompressedKeys::kSelected;
  if (local_p || local_p_auto) {
    DSV4_CHECK(items <= INT32_MAX,
               "sparse_attention: kWgmmaLocalP takes < 2^31 work items (tokens x heads / 64 x kv_splits), got {}",
               items);
    DSV4_CUDA_CHECK(detail::launch_sparse_attention_localp(p, std::max(1, splits), stream));
    return;
  }
  if (persistent || persistent_auto) {
    DSV4_CHECK(items <= INT32_MAX,
               "sparse_attention: kWgmmaPingPongPersistent takes < 2^31 work items (tokens x heads / 64 x kv_splits), "
               "got {}",
               items);
    DSV4_CUDA_CHECK(detail::launch_sparse_attention_pingpong_persistent(p, std::max(1, splits), stream));
    return;
  }
  if (p.kernel == Kernel::kWgmmaPingPong || p.kernel == Kernel::kAuto) {
    DSV4_CUDA_CHECK(detail::launch_sparse_attention_pingpong(p, std::max(1, splits), stream));
    return;
  }
  if (p.kernel == Kernel::kWgmmaPipelined) {
    DSV4_CUDA_CHECK(detail::launch_sparse_attention_pipelined(p, std::max(1, splits), stream));
    return;
  }
  DSV4_CUDA_CHECK(
      detail::launch_sparse_attention_wgmma(p, std::max(1, splits), p.kernel != Kernel::kWgmma, stream));
}

int64_t sparse_attention_workspace_floats(int tokens, int heads, int kv_splits) {
  return detail::sparse_attention_split_workspace_floats(tokens, heads, kv_splits);
}

// ---- FP8 KV cache (kv_fp8.h) ---------------------------------------------------------

namespace {
void check_fp8_source_alignment(const char* what, const void* pointer) {
  DSV4_CHECK(reinterpret_cast<uintptr_t>(pointer) % 16 == 0, "{}: the 512-channel source rows must be 16-byte aligned",
             what);
}
void check_fp8_rows_alignment(const char* what, const void* pointer) {
  DSV4_CHECK(reinterpret_cast<uintptr_t>(pointer) % 8 == 0, "{}: the 584-byte FP8 rows must be 8-byte aligned", what);
}
}  // namespace

void kv_fp8_write_window(const float* kv, uint8_t* window_fp8, int ring_rows, const TokenBatch& batch,
                         cudaStream_t stream) {
  DSV4_CHECK(ring_rows > 0, "kv_fp8_write_window: ring_rows {} must be positive", ring_rows);
  if (batch.tokens <= 0) return;
  DSV4_CHECK(kv && window_fp8 && batch.positions && batch.slots, "kv_fp8_write_window: a required pointer is null");
  check_fp8_source_alignment("kv_fp8_write_window", kv);
  check_fp8_rows_alignment("kv_fp8_write_window", window_fp8);
  DSV4_CUDA_CHECK(detail::launch_kv_fp8_write_window(kv, window_fp8, ring_rows, batch, stream));
}

void kv_fp8_write_entries(const void* source, bool source_bf16, uint8_t* entries_fp8, int max_entries, int rate,
                          const TokenBatch& batch, cudaStream_t stream) {
  DSV4_CHECK(max_entries > 0 && rate > 0, "kv_fp8_write_entries: max_entries {} and rate {} must be positive",
             max_entries, rate);
  if (batch.tokens <= 0) return;
  DSV4_CHECK(source && entries_fp8 && batch.positions && batch.slots,
             "kv_fp8_write_entries: a required pointer is null");
  check_fp8_source_alignment("kv_fp8_write_entries", source);
  check_fp8_rows_alignment("kv_fp8_write_entries", entries_fp8);
  DSV4_CUDA_CHECK(
      detail::launch_kv_fp8_write_entries(source, source_bf16, entries_fp8, max_entries, rate, batch, stream));
}

void kv_fp8_quantize_rows(const float* rows, int64_t count, uint8_t* out, cudaStream_t stream) {
  DSV4_CHECK(count >= 0, "kv_fp8_quantize_rows: count {} must be >= 0", count);
  if (count == 0) return;
  DSV4_CHECK(rows && out, "kv_fp8_quantize_rows: a required pointer is null");
  DSV4_CHECK(count / 4 < (int64_t{1} << 31), "kv_fp8_quantize_rows: count {} too large for one grid", count);
  check_fp8_source_alignment("kv_fp8_quantize_rows", rows);
  check_fp8_rows_alignment("kv_fp8_quantize_rows", out);
  DSV4_CUDA_CHECK(detail::launch_kv_fp8_quantize_rows(rows, count, out, stream));
}

void kv_fp8_dequantize_rows(const uint8_t* rows, int64_t count, void* out, bool out_bf16, cudaStream_t stream) {
  DSV4_CHECK(count >= 0, "kv_fp8_dequantize_rows: count {} must be >= 0", count);
  if (count == 0) return;
  DSV4_CHECK(rows && out, "kv_fp8_dequantize_rows: a required pointer is null");
  DSV4_CHECK(count / 4 < (int64_t{1} << 31), "kv_fp8_dequantize_rows: count {} too large for one grid", count);
  check_fp8_rows_alignment("kv_fp8_dequantize_rows", rows);
  DSV4_CHECK(reinterpret_cast<uintptr_t>(out) % 16 == 0, "kv_fp8_dequantize_rows: out must be 16-byte aligned");
  DSV4_CUDA_CHECK(detail::launch_kv_fp8_dequantize_rows(rows, count, out, out_bf16, stream));
}

}  // namespace dsv4::cuda::attention

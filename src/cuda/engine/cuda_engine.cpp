#include "cuda/engine/cuda_engine.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cuda/attention/attention.h"
#include "cuda/attention/kv_fp8.h"
#include "cuda/common/cuda_check.h"
#include "cuda/engine/device_model.h"
#include "cuda/engine/shared_expert.h"
#include "cuda/moe/moe.h"
#include "cuda/ops/argmax.h"
#include "cuda/ops/ops.h"
#include "dsv4/error.h"

namespace dsv4::cuda {

namespace {

constexpr size_t kCublasWorkspaceBytes = 32u << 20;
constexpr int kMaxKvSplits = 16;  // split-KV ranges per decode token (sparse attention)
constexpr int kDefaultPrefillChunk = 2048;
constexpr int64_t kDefaultMaxContext = 8192;
constexpr int kLogitRowsPerPiece = 256;  // all-logits prefill computes the head in pieces
constexpr int kMaxProfileEvents = 8192;

// Sizes every buffer is carved for.
struct Limits {
  int slots = 0;            // cache slots = max sequences alive at once = max decode batch
  int64_t max_context = 0;  // positions per sequence
  int prefill_chunk = 0;    // tokens per prefill step
  int max_tokens = 0;       // rows of one forward step: max(prefill_chunk, slots)
  int ring_rows = 0;        // sliding-window ring rows per slot
  int logit_rows = 0;       // rows of the logits buffer
  bool kv_fp8 = false;      // KvCacheFormat::kFP8
};

Limits limits_for(const ModelConfig& config, const EngineOptions& options) {
  Limits l;
  l.slots = options.max_batch;
  DSV4_CHECK(l.slots >= 1, "max_batch must be >= 1 (got {})", l.slots);
  l.max_context = options.max_context > 0 ? options.max_context
                                          : std::min<int64_t>(config.max_position_embeddings, kDefaultMaxContext);
  DSV4_CHECK(l.max_context <= config.max_position_embeddings,
             "max_context {} exceeds the model's max_position_embeddings {}", l.max_context,
             config.max_position_embeddings);
  l.prefill_chunk = options.prefill_chunk > 0 ? options.prefill_chunk : kDefaultPrefillChunk;
  l.prefill_chunk = static_cast<int>(std::min<int64_t>(l.prefill_chunk, l.max_context));
  l.max_tokens = std::max(l.prefill_chunk, l.slots);
  // A step's queries of one sequence need the window before its first token and every
  // row of the step itself: window - 1 + tokens rows must coexist in the ring.
  l.ring_rows = static_cast<int>(config.sliding_window) + l.prefill_chunk;
  l.logit_rows = std::max(l.slots, kLogitRowsPerPiece);
  l.kv_fp8 = options.kv_cache == KvCacheFormat::kFP8;
  DSV4_CHECK(!l.kv_fp8 || config.head_dim == attention::kKvFp8HeadDim,
             "the FP8 KV cache stores head_dim {} rows (448 E4M3 + 64 RoPE channels); this model has head_dim {}",
             attention::kKvFp8HeadDim, config.head_dim);
  return l;
}

struct LayerCache {
  uint16_t* window_kv = nullptr;  // [slots, ring_rows, head_dim] BF16 (null with the FP8 cache)
  uint8_t* window_fp8 = nullptr;  // [slots, ring_rows, 584] FP8 KV rows (KvCacheFormat::kFP8)
  uint8_t* entries_fp8 = nullptr; // [slots, max_entries, 584] FP8 copies of `entries` (kFP8)
  int state_rows = 0;
  float* state_kv = nullptr;      // [slots, state_rows, width]
  float* state_gate = nullptr;
  uint16_t* entries = nullptr;    // [slots, max_entries, head_dim] BF16
  int max_entries = 0;
  int index_state_rows = 0;
  float* index_state_kv = nullptr;    // [slots, index_state_rows, 2 * index_dim]
  float* index_state_gate = nullptr;
  float* index_entries = nullptr;     // [slots, max_entries, index_dim] FP32
};

// Activations and workspaces of one forward step, for up to max_tokens rows.
struct Buffers {
  int32_t* meta = nullptr;        // [4, max_tokens]: token_ids, positions, slots, first_rows
  int32_t* error_flag = nullptr;  // [1]
  float* streams = nullptr;       // [T, n, H]
  float* x = nullptr;             // [T, H] collapsed sublayer input
  float* post = nullptr;          // [T, n]
  float* comb = nullptr;          // [T, n, n]
  float* hc_workspace = nullptr;  // [ops::hyper_workspace_floats]: mHC mixing partial sums
  int64_t hc_workspace_floats = 0;
  float* q_residual = nullptr;    // [T, q_lora_rank]
  float* q = nullptr;             // [T, heads, head_dim]
  uint16_t* q_bf16 = nullptr;     // [T, heads, head_dim] BF16 of q for the ring attention kernels (null: other shapes)
  float* kv = nullptr;            // [T, head_dim]
  float* comp_kv = nullptr;       // [T, 2 * head_dim]
  float* comp_gate = nullptr;     // [T, 2 * head_dim]
  float* index_kv = nullptr;      // [T, 2 * index_dim]
  float* index_gate = nullptr;    // [T, 2 * index_dim]
  float* index_q = nullptr;       // [T, index_heads, index_dim]
  float* index_weights = nullptr; // [T, index_heads]
  float* index_scores = nullptr;  // [rows, max_entries] indexer workspace (index_scores_floats)
  int64_t index_scores_floats = 0;
  int32_t* selected = nullptr;    // [T, index_topk]
  float* attn = nullptr;          // [T, heads, head_dim]
  float* attn_split = nullptr;    // split-KV partials of decode-sized batches (attn_split_floats)
  int64_t attn_split_floats = 0;
  float* grouped = nullptr;       // [T, o_groups * o_lora_rank]
  float* sub_out = nullptr;       // [T, H] sublayer output
  uint16_t* x_bf16 = nullptr;     // [T, H] fast MoE input
  float* shared_gate = nullptr;   // [T, I] dense shared expert
  float* shared_up = nullptr;     // [T, I]
  float* shared_out = nullptr;    // [T, H]
  float* head_x = nullptr;        // [logit_rows, H]
  float* logits = nullptr;        // [logit_rows, vocab]
  int32_t* next_ids = nullptr;    // [logit_rows]: greedy token of each decode row (ops::argmax_rows)
  void* moe_workspace = nullptr;
  uint16_t* act_bf16 = nullptr;
  uint16_t* weight_bf16 = nullptr;
  void* cublas_workspace = nullptr;
  int64_t act_capacity = 0, weight_capacity = 0;
  float* linear_split = nullptr;  // [2 min(T, 64), widest output]: stacked split GEMM
  int64_t linear_split_capacity = 0;
};

size_t fast_moe_workspace_bytes(const moe::MoeLayerWeights& w, int max_tokens) {
  const int decode_tokens = std::min(max_tokens, 512);
  return std::max(moe::moe_workspace(w, max_tokens, moe::TileConfig::kPrefill, nullptr).bytes,
                  moe::moe_workspace(w, decode_tokens, moe::TileConfig::kDecode, nullptr).bytes);
}

// Everything in the arena: weights, caches, activations. Runs in the sizing pass and the real pass.
struct ArenaLayout {
  DeviceModel model;
  std::vector<LayerCache> caches;
  Buffers buffers;
};

ArenaLayout carve_arena(const ModelWeights& weights, const Limits& lim, Carver& carver, cudaStream_t stream) {
  const ModelConfig& c = weights.config;
  ArenaLayout a;
  a.model = build_device_model(weights, carver, /*seed=*/20261201, stream);
  const int64_t S = lim.slots, T = lim.max_tokens, H = c.hidden_size, n = c.hc_mult;
  const int64_t hd = c.head_dim, heads = c.num_attention_heads, id = c.index_head_dim, ih = c.index_n_heads;
  int64_t max_entries_any = 0;
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    LayerCache cache;
    const AttentionType type = weights.layers[l].attention_type;
    if (lim.kv_fp8)
      cache.window_fp8 = carver.take<uint8_t>("cache.window_kv_fp8", RegionKind::kCache,
                                              S * lim.ring_rows * attention::kKvFp8RowBytes);
    else
      cache.window_kv = carver.take<uint16_t>("cache.window_kv", RegionKind::kCache, S * lim.ring_rows * hd);
    if (type != AttentionType::kSliding) {
      const int64_t rate = c.compress_rate(static_cast<int64_t>(l));
      const bool csa = type == AttentionType::kCompressedSparse;
      const int64_t width = (csa ? 2 : 1) * hd;
      cache.state_rows = static_cast<int>((csa ? 2 : 1) * rate);
      cache.max_entries = static_cast<int>(std::max<int64_t>(1, lim.max_context / rate));
      max_entries_any = std::max<int64_t>(max_entries_any, cache.max_entries);
      cache.state_kv = carver.take<float>("cache.compressor_state", RegionKind::kCache, S * cache.state_rows * width);
      cache.state_gate = carver.take<float>("cache.compressor_state", RegionKind::kCache, S * cache.state_rows * width);
      cache.entries = carver.take<uint16_t>(csa ? "cache.csa_entries" : "cache.hca_entries", RegionKind::kCache,
                                            S * cache.max_entries * hd);
      // FP8: the compressor still writes BF16 entries (staging), quantized after each step.
      if (lim.kv_fp8)
        cache.entries_fp8 = carver.take<uint8_t>(csa ? "cache.csa_entries_fp8" : "cache.hca_entries_fp8",
                                                 RegionKind::kCache, S * cache.max_entries * attention::kKvFp8RowBytes);
      if (csa) {
        cache.index_state_rows = static_cast<int>(2 * rate);
        cache.index_state_kv =
            carver.take<float>("cache.indexer_state", RegionKind::kCache, S * cache.index_state_rows * 2 * id);
        cache.index_state_gate =
            carver.take<float>("cache.indexer_state", RegionKind::kCache, S * cache.index_state_rows * 2 * id);
        cache.index_entries = carver.take<float>("cache.indexer_entries", RegionKind::kCache, S * cache.max_entries * id);
      }
    }
    a.caches.push_back(cache);
  }

  Buffers& b = a.buffers;
  auto act = [&](const char* name, int64_t count) { return carver.take<float>(name, RegionKind::kActivations, count); };
  b.meta = carver.take<int32_t>("step.metadata", RegionKind::kActivations, 4 * T);
  b.error_flag = carver.take<int32_t>("step.error_flag", RegionKind::kActivations, 1);
  b.streams = act("act.streams", T * n * H);
  b.x = act("act.x", T * H);
  b.post = act("act.hc_post", T * n);
  b.comb = act("act.hc_comb", T * n * n);
  {
    ops::HyperShape hs;
    hs.n = static_cast<int>(n);
    hs.hidden = static_cast<int>(H);
    // Sublayer sites see T rows, the head up to logit_rows (fewer mix rows: fits).
    b.hc_workspace_floats = ops::hyper_workspace_floats(hs, static_cast<int>(std::max<int64_t>(T, lim.logit_rows)));
    b.hc_workspace = act("workspace.hc_partials", b.hc_workspace_floats);
  }
  b.q_residual = act("act.q_residual", T * c.q_lora_rank);
  b.q = act("act.q", T * heads * hd);
  // The ring attention kernels' shape (heads % 64 == 0, head_dim 512): their producer copies
  // this BF16 q instead of the consumers rounding the FP32 one (SparseAttentionParams::q_bf16).
  if (heads % 64 == 0 && hd == 512)
    b.q_bf16 = carver.take<uint16_t>("act.q_bf16", RegionKind::kActivations, T * heads * hd);
  b.kv = act("act.kv", T * hd);
  b.comp_kv = act("act.compressor_proj", T * 2 * hd);
  b.comp_gate = act("act.compressor_proj", T * 2 * hd);
  b.index_kv = act("act.indexer_proj", T * 2 * id);
  b.index_gate = act("act.indexer_proj", T * 2 * id);
  b.index_q = act("act.indexer_q", T * ih * id);
  b.index_weights = act("act.indexer_weights", T * ih);
  b.index_scores_floats = attention::indexer_workspace_floats(static_cast<int>(T),
                                                              static_cast<int>(std::max<int64_t>(1, max_entries_any)));
  b.index_scores = carver.take<float>("workspace.indexer_scores", RegionKind::kWorkspace, b.index_scores_floats);
  b.selected = carver.take<int32_t>("act.indexer_selected", RegionKind::kActivations, T * std::max<int64_t>(1, c.index_topk));
  b.attn = act("act.attention", T * heads * hd);
  // Split-KV partials: sparse_attention splits long key lists only when the batch has few
  // tokens (it picks the split count to fill the GPU and to fit this workspace).
  b.attn_split_floats = attention::sparse_attention_workspace_floats(
      static_cast<int>(std::min<int64_t>(T, lim.slots)), static_cast<int>(heads), kMaxKvSplits);
  if (b.attn_split_floats > 0)
    b.attn_split = carver.take<float>("workspace.attention_split_kv", RegionKind::kWorkspace, b.attn_split_floats);
  b.grouped = act("act.grouped", T * c.o_groups * c.o_lora_rank);
  b.sub_out = act("act.sublayer_out", T * H);
  b.x_bf16 = carver.take<uint16_t>("act.x_bf16", RegionKind::kActivations, T * H);
  b.head_x = act("act.head_x", static_cast<int64_t>(lim.logit_rows) * H);
  b.logits = act("act.logits", static_cast<int64_t>(lim.logit_rows) * c.vocab_size);
  b.next_ids = carver.take<int32_t>("step.next_ids", RegionKind::kActivations, lim.logit_rows);

  bool dense_shared = false;
  size_t moe_bytes = 0;
  for (size_t l = 0; l < a.model.layers.size(); ++l) {
    const DeviceMoeLayer& m = a.model.layers[l].moe;
    dense_shared = dense_shared || m.dense_shared;
    moe_bytes = std::max(moe_bytes, m.fast ? fast_moe_workspace_bytes(m.fast_weights, static_cast<int>(T))
                                           : ops::moe_generic_workspace_bytes(m.generic, static_cast<int>(T)));
  }
  if (dense_shared) {
    b.shared_gate = act("act.shared_expert", T * c.moe_intermediate_size);
    b.shared_up = act("act.shared_expert", T * c.moe_intermediate_size);
    b.shared_out = act("act.shared_expert", T * H);
  }
  b.moe_workspace = carver.take_bytes("workspace.moe", RegionKind::kWorkspace, moe_bytes);
  b.act_capacity = 2 * T * std::max<int64_t>(a.model.max_linear_cols, H);  // split activations: hi + lo
  // ops::linear_grouped converts all heads x head_dim columns at once (decode sizes).
  // Decode-sized calls split into three parts, stacked in one GEMM (ops::LinearContext).
  b.act_capacity = std::max(b.act_capacity, 3 * std::min<int64_t>(T, ops::kStackedSplitMaxTokens) *
                                                std::max<int64_t>({a.model.max_linear_cols, H, heads * hd}));
  b.act_bf16 = carver.take<uint16_t>("workspace.linear_act_bf16", RegionKind::kWorkspace, b.act_capacity);
  b.weight_capacity = a.model.max_dequantized_elements;
  b.weight_bf16 = carver.take<uint16_t>("workspace.linear_weight_bf16", RegionKind::kWorkspace,
                                        std::max<int64_t>(1, b.weight_capacity));
  b.cublas_workspace = carver.take_bytes("workspace.cublas", RegionKind::kWorkspace, kCublasWorkspaceBytes);
  {
    // Outputs of ops::linear / linear_grouped calls (any narrower call fits; a wider one
    // falls back to two GEMMs): lm_head, wq_b, wo_a (grouped), wo_b, shared expert, ...
    const int64_t widest = std::max<int64_t>({c.vocab_size, heads * hd, c.o_groups * c.o_lora_rank, H,
                                              c.q_lora_rank, 2 * hd, c.moe_intermediate_size, ih * id});
    b.linear_split_capacity = 3 * std::min<int64_t>(T, ops::kStackedSplitMaxTokens) * widest;
    b.linear_split = carver.take<float>("workspace.linear_split_f32", RegionKind::kWorkspace, b.linear_split_capacity);
  }
  return a;
}

// Event-based time per op group; only on eager (not captured) steps.
class OpProfiler {
 public:
  void set_enabled(bool enabled) {
    enabled_ = enabled;
    if (!enabled || !events_.empty()) return;
    events_.resize(kMaxProfileEvents);
    for (auto& e : events_) DSV4_CUDA_CHECK(cudaEventCreate(&e));
  }
  bool enabled() const { return enabled_; }
  ~OpProfiler() {
    for (auto& e : events_) cudaEventDestroy(e);
  }
  bool active() const { return enabled_ && active_; }
  void begin_step(cudaStream_t stream) {
    if (!enabled_) return;
    active_ = true;
    used_ = 0;
    groups_.clear();
    record(stream, nullptr);
  }
  // The time since the previous mark belongs to `group`.
  void mark(cudaStream_t stream, const char* group) {
    if (!active()) return;
    record(stream, group);
  }
  void end_step() {
    if (!active()) return;
    active_ = false;
    DSV4_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
    for (int i = 1; i < used_; ++i) {
      float ms = 0;
      DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i - 1], events_[i]));
      totals_[groups_[i]] += ms;
      if (std::find(order_.begin(), order_.end(), groups_[i]) == order_.end()) order_.push_back(groups_[i]);
    }
  }
  std::vector<OpTime> times() const {
    std::vector<OpTime> out;
    for (const std::string& g : order_) out.push_back({g, totals_.at(g)});
    return out;
  }
  void reset() {
    totals_.clear();
    order_.clear();
  }

 private:
  void record(cudaStream_t stream, const char* group) {
    DSV4_CHECK(used_ < kMaxProfileEvents, "op profiler: more than {} marks in one step", kMaxProfileEvents);
    DSV4_CUDA_CHECK(cudaEventRecord(events_[used_], stream));
    groups_.push_back(group ? group : "");
    ++used_;
  }
  bool enabled_ = false, active_ = false;
  std::vector<cudaEvent_t> events_;
  std::vector<std::string> groups_;
  int used_ = 0;
  std::map<std::string, double> totals_;
  std::vector<std::string> order_;
};

class CudaEngine final : public Engine {
 public:
  CudaEngine(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options)
      : weights_(std::move(weights)), config_(weights_->config), options_(options),
        limits_(limits_for(config_, options)) {
    int device_count = 0;
    DSV4_CHECK(cudaGetDeviceCount(&device_count) == cudaSuccess && device_count > 0,
               "--device cuda: no CUDA device is visible ({})", cudaGetErrorString(cudaGetLastError()));
    DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    Carver sizing;
    carve_arena(*weights_, limits_, sizing, stream_);
    arena_bytes_ = sizing.used();
    const cudaError_t alloc = cudaMalloc(&arena_, arena_bytes_);
    if (alloc != cudaSuccess) {
      size_t free_bytes = 0, total_bytes = 0;
      cudaGetLastError();
      cudaMemGetInfo(&free_bytes, &total_bytes);
      fail("the CUDA engine needs {:.2f} GiB of device memory in one allocation but {:.2f} GiB are free "
           "(lower --max-batch / --max-context, or see `dsv4 inspect --plan`):\n{}",
           arena_bytes_ / 1073741824.0, free_bytes / 1073741824.0, sizing.plan().describe(false));
    }
    Carver real(static_cast<char*>(arena_), arena_bytes_);
    layout_ = carve_arena(*weights_, limits_, real, stream_);
    plan_ = real.plan();
    DSV4_CHECK(real.used() == arena_bytes_, "arena passes disagree: {} vs {} bytes", real.used(), arena_bytes_);

    DSV4_CUBLAS_CHECK(cublasCreate(&cublas_));
    DSV4_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    DSV4_CUBLAS_CHECK(cublasSetWorkspace(cublas_, layout_.buffers.cublas_workspace, kCublasWorkspaceBytes));
    DSV4_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
    linear_.cublas = cublas_;
    linear_.stream = stream_;
    linear_.act_bf16 = layout_.buffers.act_bf16;
    linear_.act_capacity = layout_.buffers.act_capacity;
    linear_.weight_bf16 = layout_.buffers.weight_bf16;
    linear_.weight_capacity = layout_.buffers.weight_capacity;
    linear_.split_activations = true;
    linear_.split_out = layout_.buffers.linear_split;
    linear_.split_out_capacity = layout_.buffers.linear_split_capacity;
    // A/B switch for the few-token GEMV (ops.h: LinearContext::small_gemv): DSV4_SMALL_GEMV=0
    // runs decode-sized linears on the cuBLAS stacked-split path as before.
    if (const char* v = std::getenv("DSV4_SMALL_GEMV"); v != nullptr && std::strcmp(v, "0") == 0)
      linear_.small_gemv = false;
    linear_.small_gemv_max_tokens = 2;  // measured: faster at 1 token, slower at 8 (ops.h)
    attention_kernel_ = attention_kernel_from_env();

    DSV4_CUDA_CHECK(cudaMallocHost(&host_meta_, 4 * sizeof(int32_t) * limits_.max_tokens));
    DSV4_CUDA_CHECK(cudaMallocHost(&host_logits_, sizeof(float) * limits_.logit_rows * config_.vocab_size));
    DSV4_CUDA_CHECK(cudaMallocHost(&host_error_, sizeof(int32_t)));
    DSV4_CUDA_CHECK(cudaMallocHost(&host_ids_, sizeof(int32_t) * limits_.logit_rows));
    DSV4_CUDA_CHECK(cudaMemsetAsync(layout_.buffers.error_flag, 0, sizeof(int32_t), stream_));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (int s = limits_.slots - 1; s >= 0; --s) free_slots_.push_back(s);
    profiler_.set_enabled(options.profile);
    cudaDeviceProp prop{};
    int device = 0;
    DSV4_CUDA_CHECK(cudaGetDevice(&device));
    DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    device_name_ = prop.name;
  }

  ~CudaEngine() override {
    for (auto& [batch, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (cublas_) cublasDestroy(cublas_);
    if (host_meta_) cudaFreeHost(host_meta_);
    if (host_logits_) cudaFreeHost(host_logits_);
    if (host_error_) cudaFreeHost(host_error_);
    if (host_ids_) cudaFreeHost(host_ids_);
    if (arena_) cudaFree(arena_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  const ModelConfig& config() const override { return config_; }
  Device device() const override { return Device::kCuda; }
  size_t device_memory_bytes() const override { return arena_bytes_; }
  std::vector<OpTime> op_times() const override { return profiler_.times(); }
  void reset_op_times() override { profiler_.reset(); }
  void set_profiling(bool on) override { profiler_.set_enabled(on); }
  std::string device_name() const override { return device_name_; }

  SequenceId add_sequence() override {
    DSV4_CHECK(!free_slots_.empty(), "all {} CUDA cache slots are in use (max_batch); remove a sequence first",
               limits_.slots);
    const SequenceId id = next_id_++;
    sequences_[id] = {free_slots_.back(), 0};
    free_slots_.pop_back();
    return id;
  }

  void remove_sequence(SequenceId sequence) override {
    auto it = sequences_.find(sequence);
    DSV4_CHECK(it != sequences_.end(), "unknown sequence id {}", sequence);
    free_slots_.push_back(it->second.slot);
    sequences_.erase(it);
  }

  int64_t sequence_length(SequenceId sequence) const override { return state_of(sequence).length; }

  std::vector<float> prefill(SequenceId sequence, std::span<const int32_t> tokens, bool all_logits) override {
    SequenceState& seq = state_of(sequence);
    const int64_t count = static_cast<int64_t>(tokens.size());
    DSV4_CHECK(count > 0, "prefill called with no tokens");
    check_tokens(tokens);
    DSV4_CHECK(seq.length + count <= limits_.max_context,
               "sequence {} would reach {} tokens, over the engine's max_context {}", sequence, seq.length + count,
               limits_.max_context);
    const int64_t vocab = config_.vocab_size;
    std::vector<float> logits(static_cast<size_t>((all_logits ? count : 1) * vocab));
    for (int64_t begin = 0; begin < count; begin += limits_.prefill_chunk) {
      const int rows = static_cast<int>(std::min<int64_t>(limits_.prefill_chunk, count - begin));
      for (int r = 0; r < rows; ++r) {
        host_meta_[r] = tokens[begin + r];
        host_meta_[limits_.max_tokens + r] = static_cast<int32_t>(seq.length + r);
        host_meta_[2 * limits_.max_tokens + r] = seq.slot;
        host_meta_[3 * limits_.max_tokens + r] = 0;
      }
      profiler_.begin_step(stream_);
      upload_meta();
      forward_layers(rows);
      const bool last_chunk = begin + rows == count;
      if (all_logits) {
        for (int piece = 0; piece < rows; piece += limits_.logit_rows) {
          const int piece_rows = std::min(limits_.logit_rows, rows - piece);
          head(piece, piece_rows);
          download_logits(piece_rows);
          finish_step();
          std::memcpy(logits.data() + (begin + piece) * vocab, host_logits_, sizeof(float) * piece_rows * vocab);
        }
      } else if (last_chunk) {
        head(rows - 1, 1);
        download_logits(1);
        finish_step();
        std::memcpy(logits.data(), host_logits_, sizeof(float) * vocab);
      } else {
        finish_step();
      }
      profiler_.end_step();
      seq.length += rows;
    }
    return logits;
  }

  std::vector<float> decode(std::span<const SequenceId> sequences, std::span<const int32_t> tokens) override {
    const int batch = run_decode_step(sequences, tokens, /*logits_to_host=*/true);
    return std::vector<float>(host_logits_, host_logits_ + static_cast<size_t>(batch) * config_.vocab_size);
  }

  std::vector<int32_t> decode_greedy(std::span<const SequenceId> sequences,
                                     std::span<const int32_t> tokens) override {
    const int batch = run_decode_step(sequences, tokens, /*logits_to_host=*/false);
    return std::vector<int32_t>(host_ids_, host_ids_ + batch);
  }

  const MemoryPlan& plan() const { return plan_; }

 private:
  struct SequenceState {
    int slot = 0;
    int64_t length = 0;
  };

  SequenceState& state_of(SequenceId id) {
    auto it = sequences_.find(id);
    DSV4_CHECK(it != sequences_.end(), "unknown sequence id {}", id);
    return it->second;
  }
  const SequenceState& state_of(SequenceId id) const { return const_cast<CudaEngine*>(this)->state_of(id); }

  void check_tokens(std::span<const int32_t> tokens) const {
    for (size_t t = 0; t < tokens.size(); ++t)
      DSV4_CHECK(tokens[t] >= 0 && tokens[t] < config_.vocab_size,
                 "token id {} at index {} is outside the vocabulary [0, {})", tokens[t], t, config_.vocab_size);
  }

  // One decode step of `sequences` (checked) fed `tokens`: the step (graph replay, or eager
  // while profiling) leaves the greedy ids in host_ids_ and, with logits_to_host, the
  // logits [batch, vocab] in host_logits_. Returns the batch size.
  int run_decode_step(std::span<const SequenceId> sequences, std::span<const int32_t> tokens, bool logits_to_host) {
    const int batch = static_cast<int>(sequences.size());
    DSV4_CHECK(batch > 0, "decode called with no sequences");
    DSV4_CHECK(tokens.size() == sequences.size(), "decode: {} sequences but {} tokens", sequences.size(), tokens.size());
    DSV4_CHECK(batch <= limits_.slots, "decode batch {} exceeds max_batch {}", batch, limits_.slots);
    check_tokens(tokens);
    std::set<SequenceId> distinct(sequences.begin(), sequences.end());
    DSV4_CHECK(static_cast<int>(distinct.size()) == batch, "decode: a sequence appears twice in one batch");
    for (int b = 0; b < batch; ++b) {
      const SequenceState& seq = state_of(sequences[b]);
      DSV4_CHECK(seq.length + 1 <= limits_.max_context, "sequence {} is full (max_context {})", sequences[b],
                 limits_.max_context);
      host_meta_[b] = tokens[b];
      host_meta_[limits_.max_tokens + b] = static_cast<int32_t>(seq.length);
      host_meta_[2 * limits_.max_tokens + b] = seq.slot;
      host_meta_[3 * limits_.max_tokens + b] = b;
    }
    const bool eager = !options_.cuda_graphs || profiler_.enabled();
    if (eager) {
      profiler_.begin_step(stream_);
      decode_step(batch);
    } else {
      DSV4_CUDA_CHECK(cudaGraphLaunch(graph_for(batch), stream_));
    }
    // The logits stay on the device unless asked for (33 MB at batch 64, vocab 129280).
    if (logits_to_host) copy_logits_to_host(batch);
    finish_step();
    if (eager) profiler_.end_step();
    for (int b = 0; b < batch; ++b) state_of(sequences[b]).length += 1;
    return batch;
  }

  // The whole decode step on the stream (captured as a graph or run eagerly): forward,
  // logits, the greedy ids and the error flag to the host (the logits stay on the device).
  void decode_step(int batch) {
    upload_meta();
    // One token per distinct sequence (run_decode_step checked it): the compressors may
    // pool and save in one launch (CompressorParams::single_token_chunks).
    single_token_batch_ = true;
    forward_layers(batch);
    single_token_batch_ = false;
    head(0, batch);
    ops::argmax_rows(layout_.buffers.logits, batch, static_cast<int>(config_.vocab_size), layout_.buffers.next_ids,
                     stream_);
    profiler_.mark(stream_, "head");  // the greedy pick counts as part of the head
    DSV4_CUDA_CHECK(cudaMemcpyAsync(host_ids_, layout_.buffers.next_ids, sizeof(int32_t) * batch,
                                    cudaMemcpyDeviceToHost, stream_));
    download_error_flag();
  }

  cudaGraphExec_t graph_for(int batch) {
    auto it = graphs_.find(batch);
    if (it != graphs_.end()) return it->second;
    cudaGraph_t graph = nullptr;
    DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      decode_step(batch);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    DSV4_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    DSV4_CUDA_CHECK(cudaGraphDestroy(graph));
    graphs_[batch] = exec;
    return exec;
  }

  void upload_meta() {
    DSV4_CUDA_CHECK(cudaMemsetAsync(layout_.buffers.error_flag, 0, sizeof(int32_t), stream_));
    DSV4_CUDA_CHECK(cudaMemcpyAsync(layout_.buffers.meta, host_meta_, 4 * sizeof(int32_t) * limits_.max_tokens,
                                    cudaMemcpyHostToDevice, stream_));
  }

  void download_logits(int rows) {
    copy_logits_to_host(rows);
    download_error_flag();
  }
  void copy_logits_to_host(int rows) {
    DSV4_CUDA_CHECK(cudaMemcpyAsync(host_logits_, layout_.buffers.logits, sizeof(float) * rows * config_.vocab_size,
                                    cudaMemcpyDeviceToHost, stream_));
  }
  void download_error_flag() {
    DSV4_CUDA_CHECK(cudaMemcpyAsync(host_error_, layout_.buffers.error_flag, sizeof(int32_t), cudaMemcpyDeviceToHost,
                                    stream_));
  }

  void finish_step() {
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (*host_error_ != 0)
      fail("the CUDA forward flagged bad data (error bits {:#x}: 1 = token id out of range, 2 = expert id out of "
           "range, 4 = compressed-entry capacity exceeded)",
           *host_error_);
  }

  TokenBatch batch_view(int tokens) const {
    TokenBatch b;
    const int32_t* meta = layout_.buffers.meta;
    b.tokens = tokens;
    b.token_ids = meta;
    b.positions = meta + limits_.max_tokens;
    b.slots = meta + 2 * limits_.max_tokens;
    b.first_rows = meta + 3 * limits_.max_tokens;
    return b;
  }

  ops::HyperShape hyper_shape() const {
    ops::HyperShape s;
    s.n = static_cast<int>(config_.hc_mult);
    s.hidden = static_cast<int>(config_.hidden_size);
    s.sinkhorn_iters = static_cast<int>(config_.hc_sinkhorn_iters);
    s.hc_eps = static_cast<float>(config_.hc_eps);
    s.rms_eps = static_cast<float>(config_.rms_norm_eps);
    return s;
  }

  // y [tokens, W.rows] = x [tokens, W.cols] W^T (dense rows, no strides).
  void linear(const DeviceMatrix& w, const float* x, int tokens, float* y) {
    ops::linear(linear_, w, x, w.cols, tokens, y, w.rows);
  }

  float eps() const { return static_cast<float>(config_.rms_norm_eps); }

  void forward_layers(int tokens) {
    Buffers& b = layout_.buffers;
    const TokenBatch batch = batch_view(tokens);
    const ops::HyperShape shape = hyper_shape();
    ops::embed_tokens(layout_.model.embed, batch.token_ids, tokens, shape.n, b.streams, b.error_flag, stream_);
    profiler_.mark(stream_, "embed");
    for (size_t l = 0; l < layout_.model.layers.size(); ++l) {
      const DeviceLayer& layer = layout_.model.layers[l];
      ops::hyper_collapse_norm(layer.hc_attn, shape, b.streams, tokens, layer.attn_norm, eps(), b.hc_workspace,
                               b.hc_workspace_floats, b.x, b.post, b.comb, stream_);
      profiler_.mark(stream_, "mhc+norm");
      attention_sublayer(static_cast<int>(l), layer, layout_.caches[l], batch);
      ops::hyper_expand(b.post, b.comb, shape, b.sub_out, tokens, b.streams, stream_);
      // The fast MoE's BF16 input x_bf16 comes from the same kernel (no separate conversion).
      ops::hyper_collapse_norm(layer.hc_ffn, shape, b.streams, tokens, layer.ffn_norm, eps(), b.hc_workspace,
                               b.hc_workspace_floats, b.x, b.post, b.comb, stream_,
                               layer.moe.fast ? b.x_bf16 : nullptr);
      profiler_.mark(stream_, "mhc+norm");
      moe_sublayer(layer, batch);
      ops::hyper_expand(b.post, b.comb, shape, b.sub_out, tokens, b.streams, stream_);
      profiler_.mark(stream_, "mhc+norm");
    }
  }

  // Projects the step's tokens through one compressor (x = the attention input in
  // b.x) into kv_proj / gate_proj [T, width] and pools every window that closes.
  void run_compressor(const DeviceCompressor& c, float* kv_proj, float* gate_proj, int rate, int dim, bool overlapping,
                      float* state_kv, float* state_gate, int state_rows, void* entries, bool entries_bf16,
                      int max_entries, const TokenBatch& batch) {
    Buffers& b = layout_.buffers;
    // Same x: one GEMV launch at decode sizes (BF16 weights; else two linear calls).
    const ops::LinearOutput kv_gate[] = {{&c.wkv, kv_proj, c.wkv.rows}, {&c.wgate, gate_proj, c.wgate.rows}};
    ops::linear_same_input(linear_, kv_gate, 2, b.x, c.wkv.cols, batch.tokens);
    attention::CompressorParams p;
    p.kv_proj = kv_proj;
    p.gate_proj = gate_proj;
    p.ape = c.ape;
    p.norm_weight = c.norm;
    p.inv_freq = layout_.model.inv_freq_compress;
    p.rope_dim = static_cast<int>(config_.rope_compress.rope_dim);
    p.rate = rate;
    p.dim = dim;
    p.overlapping = overlapping;
    p.rms_eps = eps();
    p.state_kv = state_kv;
    p.state_gate = state_gate;
    p.state_rows = state_rows;
    p.entries = entries;
    p.entries_bf16 = entries_bf16;
    p.max_entries = max_entries;
    p.batch = batch;
    p.error_flag = b.error_flag;
    p.single_token_chunks = single_token_batch_;
    attention::compressor_update(p, stream_);
  }

  void attention_sublayer(int layer_index, const DeviceLayer& layer, LayerCache& cache, const TokenBatch& batch) {
    Buffers& b = layout_.buffers;
    const DeviceAttention& a = layer.attn;
    const int T = batch.tokens;
    const int64_t heads = config_.num_attention_heads, hd = config_.head_dim;
    const int64_t q_rank = config_.q_lora_rank;
    const bool sliding = layer.attention_type == AttentionType::kSliding;
    const float* inv_freq = sliding ? layout_.model.inv_freq_main : layout_.model.inv_freq_compress;
    const int rope_dim = static_cast<int>(sliding ? config_.rope_main.rope_dim : config_.rope_compress.rope_dim);
    const int compress_rope_dim = static_cast<int>(config_.rope_compress.rope_dim);

    // q: rmsnorm(wq_a x) -> wq_b -> per-head unweighted rmsnorm -> RoPE. kv: rmsnorm(wkv x) -> RoPE.
    // wq_a and wkv read the same x: one launch at decode sizes (ops::linear_same_input).
    const ops::LinearOutput q_kv[] = {{&a.wq_a, b.q_residual, a.wq_a.rows}, {&a.wkv, b.kv, a.wkv.rows}};
    ops::linear_same_input(linear_, q_kv, 2, b.x, a.wq_a.cols, T);
    ops::rms_norm(b.q_residual, T, q_rank, a.q_norm, eps(), stream_);
    linear(a.wq_b, b.q_residual, T, b.q);
    // Norm + RoPE fused (one launch each, the same bits as rms_norm then rope).
    ops::rms_norm_rope(b.q, T, static_cast<int>(heads), static_cast<int>(hd), nullptr, eps(), rope_dim, inv_freq,
                       batch.positions, stream_, b.q_bf16);
    ops::rms_norm_rope(b.kv, T, 1, static_cast<int>(hd), a.kv_norm, eps(), rope_dim, inv_freq, batch.positions,
                       stream_);
    if (limits_.kv_fp8)
      attention::kv_fp8_write_window(b.kv, cache.window_fp8, limits_.ring_rows, batch, stream_);
    else
      attention::kv_window_write(b.kv, static_cast<int>(hd), cache.window_kv, limits_.ring_rows, batch, stream_);
    profiler_.mark(stream_, "attn.qkv");

    if (a.has_compressor) {
      const int rate = static_cast<int>(config_.compress_rate(layer_index));
      const bool csa = layer.attention_type == AttentionType::kCompressedSparse;
      run_compressor(a.compressor, b.comp_kv, b.comp_gate, rate, static_cast<int>(hd), csa, cache.state_kv,
                     cache.state_gate, cache.state_rows, cache.entries, /*entries_bf16=*/true, cache.max_entries,
                     batch);
      if (limits_.kv_fp8)  // the entries this step closed, BF16 -> FP8 rows
        attention::kv_fp8_write_entries(cache.entries, /*source_bf16=*/true, cache.entries_fp8, cache.max_entries, rate,
                                        batch, stream_);
      profiler_.mark(stream_, "attn.compressor");
    }
    if (a.has_indexer) {
      const int rate = static_cast<int>(config_.compress_rate(layer_index));
      const int64_t id = config_.index_head_dim, ih = config_.index_n_heads;
      run_compressor(a.index_compressor, b.index_kv, b.index_gate, rate, static_cast<int>(id), /*overlapping=*/true,
                     cache.index_state_kv, cache.index_state_gate, cache.index_state_rows, cache.index_entries,
                     /*entries_bf16=*/false, cache.max_entries, batch);
      linear(a.index_wq_b, b.q_residual, T, b.index_q);
      ops::rope(b.index_q, T, static_cast<int>(ih), static_cast<int>(id), compress_rope_dim,
                layout_.model.inv_freq_compress, batch.positions, false, stream_);
      linear(a.index_weights_proj, b.x, T, b.index_weights);
      attention::IndexerParams ip;
      ip.q = b.index_q;
      ip.head_weights = b.index_weights;
      ip.entries = cache.index_entries;
      ip.max_entries = cache.max_entries;
      ip.heads = static_cast<int>(ih);
      ip.dim = static_cast<int>(id);
      ip.rate = rate;
      ip.top_k = static_cast<int>(config_.index_topk);
      ip.batch = batch;
      ip.scores = b.index_scores;
      ip.scores_floats = b.index_scores_floats;
      ip.selected = b.selected;
      attention::indexer_topk(ip, stream_);
      profiler_.mark(stream_, "attn.indexer");
    }

    attention::SparseAttentionParams sp;
    sp.q = b.q;
    sp.q_bf16 = b.q_bf16;  // null unless the ring kernels' shape
    sp.heads = static_cast<int>(heads);
    sp.head_dim = static_cast<int>(hd);
    // FP8 cache: the rows are 584-byte FP8 records (the params take them as uint16_t*).
    sp.window_kv = limits_.kv_fp8 ? reinterpret_cast<const uint16_t*>(cache.window_fp8) : cache.window_kv;
    sp.kv_fp8 = limits_.kv_fp8;
    // kAuto: the ping-pong kernel where heads % 64 == 0 (BF16 or FP8 rows), else the FP32 kernel.
    sp.kernel = attention_kernel_;
    sp.ring_rows = limits_.ring_rows;
    sp.window = static_cast<int>(config_.sliding_window);
    sp.compressed = sliding ? attention::CompressedKeys::kNone
                    : layer.attention_type == AttentionType::kHeavilyCompressed ? attention::CompressedKeys::kAllVisible
                                                                                : attention::CompressedKeys::kSelected;
    sp.entries = limits_.kv_fp8 && cache.entries_fp8 != nullptr ? reinterpret_cast<const uint16_t*>(cache.entries_fp8)
                                                                : cache.entries;
    sp.max_entries = cache.max_entries;
    sp.rate = sliding ? 0 : static_cast<int>(config_.compress_rate(layer_index));
    sp.selected = b.selected;
    sp.top_k = static_cast<int>(config_.index_topk);
    sp.sinks = a.sinks;
    sp.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    sp.batch = batch;
    sp.split_workspace = b.attn_split;
    sp.split_workspace_floats = b.attn_split_floats;
    sp.out = b.attn;
    attention::sparse_attention(sp, stream_);
    // V carried RoPE (K = V): rotate the output back by -angle at the query position.
    ops::rope(b.attn, T, static_cast<int>(heads), static_cast<int>(hd), rope_dim, inv_freq, batch.positions, true,
              stream_);
    profiler_.mark(stream_, "attn.core");

    // Grouped output projection: group g's heads (a contiguous slice of each row) through
    // rows [g R, (g + 1) R) of wo_a, then wo_b over the concatenation.
    const int64_t groups = config_.o_groups, rank = config_.o_lora_rank, group_width = heads * hd / groups;
    DSV4_CHECK(a.wo_a.cols == group_width && a.wo_a.rows == groups * rank,
               "wo_a is [{}, {}], expected [o_groups {} x o_lora_rank {}, heads x head_dim / o_groups = {}]",
               a.wo_a.rows, a.wo_a.cols, groups, rank, group_width);
    ops::linear_grouped(linear_, a.wo_a, groups, b.attn, heads * hd, T, b.grouped, groups * rank);
    linear(a.wo_b, b.grouped, T, b.sub_out);
    profiler_.mark(stream_, "attn.out_proj");
  }

  void moe_sublayer(const DeviceLayer& layer, const TokenBatch& batch) {
    Buffers& b = layout_.buffers;
    const DeviceMoeLayer& m = layer.moe;
    const int T = batch.tokens;
    const int64_t I = config_.moe_intermediate_size;
    if (!m.fast) {
      ops::moe_generic_forward(linear_, m.generic, b.x, batch.token_ids, T, b.moe_workspace, b.sub_out, b.error_flag);
      profiler_.mark(stream_, "moe");
      return;
    }
    // b.x_bf16 = bf16_rn(b.x): written by the ffn-site hyper_collapse_norm in forward_layers.
    moe::MoeForwardParams p;
    p.weights = &m.fast_weights;
    p.x = b.x_bf16;
    p.x_f32 = b.x;  // routing from FP32 x, as the CPU reference (near-tied top-k)
    p.token_ids = batch.token_ids;
    p.tokens = T;
    p.config = moe::moe_default_tile_config(T);
    p.workspace = b.moe_workspace;
    p.out = b.sub_out;
    p.error_flag = b.error_flag;
    p.stream = stream_;
    DSV4_CUDA_CHECK(moe::moe_forward(p));
    profiler_.mark(stream_, "moe.routed");
    if (m.dense_shared) {
      const ops::LinearOutput gate_up[] = {{&m.shared_w1, b.shared_gate, m.shared_w1.rows},
                                           {&m.shared_w3, b.shared_up, m.shared_w3.rows}};
      ops::linear_same_input(linear_, gate_up, 2, b.x, m.shared_w1.cols, T);  // one launch at decode sizes
      DSV4_CUDA_CHECK(clamped_swiglu_inplace(b.shared_gate, b.shared_up, T * I, static_cast<float>(config_.swiglu_limit), stream_));
      // sub_out += w2 act (the add in the GEMV's epilogue at decode sizes; else via shared_out).
      ops::linear_add(linear_, m.shared_w2, b.shared_gate, m.shared_w2.cols, T, b.sub_out, b.shared_out);
      profiler_.mark(stream_, "moe.shared");
    }
  }

  // logits[0 .. rows) = lm_head(norm(HyperHead(streams[row_begin .. row_begin + rows)))).
  void head(int row_begin, int rows) {
    Buffers& b = layout_.buffers;
    const int64_t H = config_.hidden_size, n = config_.hc_mult;
    ops::hyper_head_norm(layout_.model.hc_head, hyper_shape(), b.streams + row_begin * n * H, rows, layout_.model.norm,
                         eps(), b.hc_workspace, b.hc_workspace_floats, b.head_x, stream_);
    linear(layout_.model.head, b.head_x, rows, b.logits);
    profiler_.mark(stream_, "head");
  }

  std::shared_ptr<const ModelWeights> weights_;
  ModelConfig config_;
  EngineOptions options_;
  Limits limits_;
  cudaStream_t stream_ = nullptr;
  void* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  ArenaLayout layout_;
  MemoryPlan plan_;
  cublasHandle_t cublas_ = nullptr;
  ops::LinearContext linear_;
  // Sparse-attention kernel of every layer: kAuto unless DSV4_ATTENTION_KERNEL says otherwise
  // (an A/B switch for dsv4 bench: auto, pipelined, pingpong, persistent, localp).
  attention::SparseAttentionParams::Kernel attention_kernel_ = attention::SparseAttentionParams::Kernel::kAuto;

  static attention::SparseAttentionParams::Kernel attention_kernel_from_env() {
    using Kernel = attention::SparseAttentionParams::Kernel;
    const char* v = std::getenv("DSV4_ATTENTION_KERNEL");
    if (v == nullptr || std::strcmp(v, "auto") == 0) return Kernel::kAuto;
    if (std::strcmp(v, "pipelined") == 0) return Kernel::kWgmmaPipelined;
    if (std::strcmp(v, "pingpong") == 0) return Kernel::kWgmmaPingPong;
    if (std::strcmp(v, "persistent") == 0) return Kernel::kWgmmaPingPongPersistent;
    if (std::strcmp(v, "localp") == 0) return Kernel::kWgmmaLocalP;
    fail("DSV4_ATTENTION_KERNEL must be auto, pipelined, pingpong, persistent or localp, got '{}'", v);
  }
  bool single_token_batch_ = false;  // inside decode_step: one token per sequence
  int32_t* host_meta_ = nullptr;    // pinned [4, max_tokens]
  float* host_logits_ = nullptr;    // pinned [logit_rows, vocab]
  int32_t* host_error_ = nullptr;   // pinned [1]
  int32_t* host_ids_ = nullptr;     // pinned [logit_rows]: the decode step's greedy tokens
  std::vector<int> free_slots_;
  std::map<SequenceId, SequenceState> sequences_;
  SequenceId next_id_ = 1;
  std::map<int, cudaGraphExec_t> graphs_;
  OpProfiler profiler_;
  std::string device_name_;
};

}  // namespace

std::unique_ptr<Engine> create_cuda_engine(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options) {
  return std::make_unique<CudaEngine>(std::move(weights), options);
}

MemoryPlan plan_cuda_engine(const ModelWeights& weights, const EngineOptions& options) {
  Carver sizing;
  carve_arena(weights, limits_for(weights.config, options), sizing, nullptr);
  return sizing.plan();
}

}  // namespace dsv4::cuda

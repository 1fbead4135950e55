// Backend-neutral inference engine: sequences with their own caches, prefill and
// batched decode steps returning FP32 logits. The CPU reference backend and the CUDA
// backend both implement it; the CLI, the server and the bindings use only this.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dsv4/config.h"

namespace dsv4 {

struct ModelWeights;

enum class Device { kCpu, kCuda };

// Where the CPU reference backend rounds to BF16. Default: nowhere (FP32 throughout,
// the oracle that matches transformers). The CUDA engine stores BF16 at these points;
// turning them on makes the CPU backend compute the same values, so the two backends
// can be compared value for value (a BF16 difference upstream of a top-k would
// otherwise flip near-tied routing or indexer choices).
struct CpuRounding {
  bool kv_cache = false;         // attention KV rows and compressed attention entries (not the indexer's keys)
  bool expert_operands = false;  // 4-bit experts: input, SwiGLU output and weighted output (the fast MoE kernels)
  // KV rows and compressed attention entries through the FP8 KV cache codec instead of
  // BF16 (EngineOptions::kv_cache = kFP8; head_dim 512). Entries go BF16 first, then FP8,
  // as the CUDA engine stages them.
  bool kv_cache_fp8 = false;
};

// CUDA KV cache storage of the window ring and the compressed attention entries.
// kFP8: DeepSeek's V4 layout, 584 bytes a row (448 E4M3 channels with a UE8M0 scale per
// 64, the 64 RoPE channels in BF16; src/cuda/attention/kv_fp8.h), head_dim 512 only. Not yet
// run on a GPU; the compressed entries keep their BF16 staging copy, so it saves no memory yet.
enum class KvCacheFormat { kBF16, kFP8 };
// "bf16" / "fp8" (the --kv-cache flag); anything else is an error naming the choices.
KvCacheFormat parse_kv_cache_format(const std::string& name);

struct EngineOptions {
  std::filesystem::path model_dir;
  Device device = Device::kCpu;
  int max_batch = 64;        // sequences decoded together in one step (CUDA: cache slots)
  int64_t max_context = 0;   // 0: the model's max_position_embeddings (CUDA: min of it and 8192)
  int prefill_chunk = 0;     // CUDA: tokens per prefill step (0: 2048); longer prompts are chunked
  bool cuda_graphs = true;   // CUDA: capture each decode batch size once and replay it
  bool profile = false;      // CUDA: start with profiling on (see Engine::set_profiling)
  CpuRounding cpu_rounding;  // CPU: BF16 rounding points (see CpuRounding)
  KvCacheFormat kv_cache = KvCacheFormat::kBF16;  // CUDA: KV cache storage
};

// Accumulated device time per op group (CUDA engine with profile = true).
struct OpTime {
  std::string op;
  double milliseconds = 0;
};

using SequenceId = int64_t;

class Engine {
 public:
  virtual ~Engine() = default;
  static std::unique_ptr<Engine> create(const EngineOptions& options);

  virtual const ModelConfig& config() const = 0;
  virtual Device device() const = 0;

  // A new sequence with empty caches.
  virtual SequenceId add_sequence() = 0;
  virtual void remove_sequence(SequenceId sequence) = 0;
  // Tokens consumed so far by the sequence (its next position).
  virtual int64_t sequence_length(SequenceId sequence) const = 0;

  // Appends `tokens` to the sequence (chunked prefill is allowed: any number of
  // calls). Returns logits [tokens.size(), vocab] when all_logits, else [vocab] for
  // the last token.
  virtual std::vector<float> prefill(SequenceId sequence, std::span<const int32_t> tokens,
                                     bool all_logits = false) = 0;

  // One token for each of `sequences` (distinct). Returns logits [sequences.size(), vocab].
  virtual std::vector<float> decode(std::span<const SequenceId> sequences,
                                    std::span<const int32_t> tokens) = 0;
  // The same step, returning each sequence's greedy next token (greedy_token of its
  // logits) instead of the logits. The CUDA engine picks them on the device and copies
  // back only the ids (at batch 64 the logits are 33 MB per step); this default runs
  // decode and picks on the host.
  virtual std::vector<int32_t> decode_greedy(std::span<const SequenceId> sequences, std::span<const int32_t> tokens);

  // Profiling (CUDA with EngineOptions::profile): time per op group since the last reset.
  virtual void set_profiling(bool /*on*/) {}   // eager, event-timed steps while on
  virtual std::vector<OpTime> op_times() const { return {}; }
  virtual void reset_op_times() {}
  virtual std::string device_name() const { return "cpu"; }
  // Peak device memory the engine holds, bytes (0 on the CPU).
  virtual size_t device_memory_bytes() const { return 0; }
};

// The greedy pick of every engine path: the first index of the largest non-NaN logit
// (-0 == +0; all NaN gives 0). The CUDA argmax (src/cuda/ops/argmax.h) applies the same rule.
int32_t greedy_token(std::span<const float> logits);

// An engine over weights already loaded (or synthetic, for dsv4 bench: QuantMatrix
// views without data are filled with random values on the device).
std::unique_ptr<Engine> create_engine(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options);

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  float top_p = 1.0f;
  int top_k = 0;             // 0: off
  uint64_t seed = 0;
};

// Deterministic sampler: the same seed and logits give the same tokens.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits);
 private:
  SamplingParams params_;
  uint64_t state_;
};

}  // namespace dsv4

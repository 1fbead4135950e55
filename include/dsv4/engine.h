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

enum class Device { kCpu, kCuda };

struct EngineOptions {
  std::filesystem::path model_dir;
  Device device = Device::kCpu;
  int max_batch = 64;        // sequences decoded together in one step
  int64_t max_context = 0;   // 0: the model's max_position_embeddings
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
};

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

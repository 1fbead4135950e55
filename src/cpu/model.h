// The whole DeepSeek-V4 forward on the CPU for one sequence at a time: embedding,
// mHC streams, layers (attention + MoE), HyperHead, final norm, lm_head.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "dsv4/engine.h"
#include "dsv4/weights.h"

namespace dsv4::cpu {

struct SequenceCache {
  int64_t length = 0;              // tokens consumed
  std::vector<LayerCache> layers;
};

// Optional observer of named intermediate activations ("layer3.out", ...), for
// debugging divergence against transformers' hooks. data: [tokens, ...].
using ActivationObserver = std::function<void(const std::string& name, std::span<const float> data,
                                              const std::vector<int64_t>& shape)>;

class CpuModel {
 public:
  explicit CpuModel(std::shared_ptr<const ModelWeights> weights, const CpuRounding& rounding = {});

  const ModelConfig& config() const { return weights_->config; }
  const ModelWeights& weights() const { return *weights_; }

  SequenceCache new_cache() const;

  // Consumes `tokens` at positions cache.length.. and returns logits: [tokens, vocab]
  // when all_logits, else [vocab] of the last token.
  std::vector<float> forward(SequenceCache& cache, std::span<const int32_t> tokens, bool all_logits,
                             const ActivationObserver& observer = {}) const;

 private:
  std::shared_ptr<const ModelWeights> weights_;
  CpuRounding rounding_;
  RopeTables ropes_;
};

}  // namespace dsv4::cpu

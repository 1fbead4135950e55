// Engine over the CPU reference backend: each sequence owns a cpu::SequenceCache;
// a batched decode step runs the sequences one after another (each op is
// multithreaded inside).
#pragma once
#include <map>
#include <memory>

#include "cpu/model.h"
#include "dsv4/engine.h"

namespace dsv4 {

class CpuEngine final : public Engine {
 public:
  explicit CpuEngine(std::shared_ptr<const ModelWeights> weights, const CpuRounding& rounding = {});

  const ModelConfig& config() const override { return model_.config(); }
  Device device() const override { return Device::kCpu; }
  SequenceId add_sequence() override;
  void remove_sequence(SequenceId sequence) override;
  int64_t sequence_length(SequenceId sequence) const override;
  std::vector<float> prefill(SequenceId sequence, std::span<const int32_t> tokens, bool all_logits) override;
  std::vector<float> decode(std::span<const SequenceId> sequences, std::span<const int32_t> tokens) override;

  const cpu::CpuModel& model() const { return model_; }

 private:
  cpu::SequenceCache& cache_of(SequenceId sequence);
  cpu::CpuModel model_;
  std::map<SequenceId, cpu::SequenceCache> sequences_;
  SequenceId next_id_ = 1;
};

}  // namespace dsv4

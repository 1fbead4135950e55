#include "engine/cpu_engine.h"

#include <set>

#include "dsv4/error.h"

namespace dsv4 {

CpuEngine::CpuEngine(std::shared_ptr<const ModelWeights> weights, const CpuRounding& rounding)
    : model_(std::move(weights), rounding) {}

SequenceId CpuEngine::add_sequence() {
  const SequenceId id = next_id_++;
  sequences_.emplace(id, model_.new_cache());
  return id;
}

void CpuEngine::remove_sequence(SequenceId sequence) { sequences_.erase(sequence); }

cpu::SequenceCache& CpuEngine::cache_of(SequenceId sequence) {
  auto it = sequences_.find(sequence);
  DSV4_CHECK(it != sequences_.end(), "unknown sequence id {}", sequence);
  return it->second;
}

int64_t CpuEngine::sequence_length(SequenceId sequence) const {
  auto it = sequences_.find(sequence);
  DSV4_CHECK(it != sequences_.end(), "unknown sequence id {}", sequence);
  return it->second.length;
}

std::vector<float> CpuEngine::prefill(SequenceId sequence, std::span<const int32_t> tokens, bool all_logits) {
  return model_.forward(cache_of(sequence), tokens, all_logits);
}

std::vector<float> CpuEngine::decode(std::span<const SequenceId> sequences, std::span<const int32_t> tokens) {
  DSV4_CHECK(sequences.size() == tokens.size(), "decode: {} sequences but {} tokens", sequences.size(),
             tokens.size());
  std::set<SequenceId> distinct(sequences.begin(), sequences.end());
  DSV4_CHECK(distinct.size() == sequences.size(), "decode: a sequence appears twice in one step");
  const int64_t vocab = config().vocab_size;
  std::vector<float> logits(sequences.size() * static_cast<size_t>(vocab));
  for (size_t i = 0; i < sequences.size(); ++i) {
    const std::vector<float> row = model_.forward(cache_of(sequences[i]), tokens.subspan(i, 1), false);
    std::copy(row.begin(), row.end(), logits.begin() + static_cast<int64_t>(i) * vocab);
  }
  return logits;
}

}  // namespace dsv4

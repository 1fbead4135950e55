// A deterministic stand-in for the model: the logits of a sequence are a function of
// its tokens only (an FNV hash of them picks the argmax), so greedy output does not
// depend on what else is in the batch. Optional per-step delay, and a script of tokens
// to emit instead (for reasoning / stop-string cases). Counts what the scheduler did.
#pragma once
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "dsv4/engine.h"
#include "dsv4/error.h"

namespace dsv4::test {

class FakeEngine final : public Engine {
 public:
  // `words`: ids the hash chooses among; `eos_every`: about one step in this many ends
  // the sequence with eos (0: never).
  FakeEngine(int64_t vocab, int64_t context, int32_t eos, std::vector<int32_t> words, int eos_every)
      : words_(std::move(words)), eos_every_(eos_every) {
    config_.vocab_size = vocab;
    config_.max_position_embeddings = context;
    config_.bos_token_id = eos;
    config_.eos_token_id = eos;
    config_.eos_token_ids = {eos};
  }

  const ModelConfig& config() const override { return config_; }
  Device device() const override { return Device::kCpu; }

  SequenceId add_sequence() override {
    std::lock_guard lock(mutex_);
    sequences_[next_id_] = {};
    return next_id_++;
  }
  void remove_sequence(SequenceId sequence) override {
    std::lock_guard lock(mutex_);
    DSV4_CHECK(sequences_.erase(sequence) == 1, "remove_sequence: unknown sequence {}", sequence);
  }
  int64_t sequence_length(SequenceId sequence) const override {
    std::lock_guard lock(mutex_);
    return static_cast<int64_t>(sequences_.at(sequence).tokens.size());
  }

  std::vector<float> prefill(SequenceId sequence, std::span<const int32_t> tokens, bool all_logits) override {
    DSV4_CHECK(!all_logits, "the fake engine returns last-token logits only");
    std::this_thread::sleep_for(step_delay);
    std::lock_guard lock(mutex_);
    Sequence& s = sequences_.at(sequence);
    if (s.tokens.empty()) {
      s.prompt_length = static_cast<int64_t>(tokens.size());
      last_prompt_.assign(tokens.begin(), tokens.end());
    }
    append(s, tokens);
    return logits(s);
  }

  std::vector<float> decode(std::span<const SequenceId> ids, std::span<const int32_t> tokens) override {
    DSV4_CHECK(ids.size() == tokens.size(), "decode: {} sequences, {} tokens", ids.size(), tokens.size());
    std::this_thread::sleep_for(step_delay);
    std::lock_guard lock(mutex_);
    max_batch_seen = std::max<int>(max_batch_seen, static_cast<int>(ids.size()));
    ++decode_steps;
    std::vector<float> out;
    for (size_t i = 0; i < ids.size(); ++i) {
      Sequence& s = sequences_.at(ids[i]);
      append(s, tokens.subspan(i, 1));
      const std::vector<float> row = logits(s);
      out.insert(out.end(), row.begin(), row.end());
    }
    return out;
  }

  std::vector<int32_t> last_prompt() const {
    std::lock_guard lock(mutex_);
    return last_prompt_;
  }

  size_t live_sequences() const {
    std::lock_guard lock(mutex_);
    return sequences_.size();
  }

  std::chrono::microseconds step_delay{0};
  std::vector<int32_t> script;  // non-empty: generated token i is script[min(i, size-1)]
  std::atomic<int> max_batch_seen{0};
  std::atomic<int> decode_steps{0};

 private:
  struct Sequence {
    std::vector<int32_t> tokens;
    int64_t prompt_length = 0;
  };

  void append(Sequence& s, std::span<const int32_t> tokens) {
    s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
    DSV4_CHECK(static_cast<int64_t>(s.tokens.size()) <= config_.max_position_embeddings,
               "sequence of {} tokens exceeds the context {}", s.tokens.size(), config_.max_position_embeddings);
  }

  std::vector<float> logits(const Sequence& s) const {
    uint64_t hash = 1469598103934665603ull;
    for (const int32_t t : s.tokens) hash = (hash ^ static_cast<uint32_t>(t)) * 1099511628211ull;
    std::vector<float> out(static_cast<size_t>(config_.vocab_size));
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>((hash >> (i % 48)) & 7) * 0.1f;
    int32_t next;
    const auto generated = static_cast<int64_t>(s.tokens.size()) - s.prompt_length;
    if (!script.empty()) {
      next = script[std::min<size_t>(generated, script.size() - 1)];
    } else if (eos_every_ > 0 && (hash >> 17) % eos_every_ == 0 && generated > 0) {
      next = static_cast<int32_t>(config_.eos_token_id);
    } else {
      next = words_[(hash >> 7) % words_.size()];
    }
    out[next] = 10.0f;
    return out;
  }

  ModelConfig config_;
  std::vector<int32_t> words_;
  int eos_every_;
  mutable std::mutex mutex_;
  std::map<SequenceId, Sequence> sequences_;
  std::vector<int32_t> last_prompt_;
  SequenceId next_id_ = 1;
};

}  // namespace dsv4::test

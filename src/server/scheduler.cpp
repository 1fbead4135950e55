#include "scheduler.h"

#include <algorithm>

#include "api.h"
#include "dsv4/error.h"

namespace dsv4::server {

// ---------------------------------------------------------------------------- Job

Job::Update Job::take(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return finished_ || !new_content_.empty() || !new_reasoning_.empty(); });
  Update update{std::move(new_content_), std::move(new_reasoning_), finished_};
  new_content_.clear();
  new_reasoning_.clear();
  return update;
}

void Job::wait_finished() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return finished_; });
}

void Job::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
}

bool Job::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

void Job::emit(const std::string& text, bool is_reasoning) {
  if (text.empty()) return;
  {
    std::lock_guard lock(mutex_);
    (is_reasoning ? new_reasoning_ : new_content_) += text;
    (is_reasoning ? reasoning : content) += text;
  }
  changed_.notify_all();
}

void Job::finish(const std::string& reason, const std::string& error_message) {
  {
    std::lock_guard lock(mutex_);
    finish_reason = reason;
    error = error_message;
    finished_ = true;
  }
  changed_.notify_all();
}

// ---------------------------------------------------------------------------- Scheduler

struct Scheduler::Active {
  Active(std::shared_ptr<Job> j, SequenceId s, const Tokenizer& tokenizer)
      : job(std::move(j)), sequence(s), sampler(job->sampling), decoder(tokenizer, /*skip_special_tokens=*/true),
        reasoning(job->think_end_id >= 0), reserved(static_cast<int64_t>(job->prompt.size()) + job->max_tokens) {}
  std::shared_ptr<Job> job;
  SequenceId sequence;
  Sampler sampler;
  StreamDecoder decoder;
  bool reasoning;
  int64_t reserved;       // budget tokens held while running
  int32_t last_token = -1;
  int64_t generated = 0;
  std::string held;       // content held back: it may be the start of a stop string
  Clock::time_point last_token_time;
};

Scheduler::Scheduler(std::unique_ptr<Engine> engine, const Tokenizer& tokenizer, SchedulerOptions options,
                     Metrics& metrics)
    : engine_(std::move(engine)), tokenizer_(tokenizer), config_(engine_->config()), options_(options), metrics_(metrics) {
  DSV4_CHECK(options_.max_running >= 1 && options_.max_waiting >= 0,
             "scheduler needs max_running >= 1 and max_waiting >= 0, got {} and {}", options_.max_running,
             options_.max_waiting);
  if (options_.context_length <= 0) options_.context_length = config_.max_position_embeddings;
  options_.context_length = std::min(options_.context_length, config_.max_position_embeddings);
  if (options_.kv_budget_tokens <= 0) options_.kv_budget_tokens = options_.max_running * options_.context_length;
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Scheduler::submit(const std::shared_ptr<Job>& job) {
  const int64_t need = static_cast<int64_t>(job->prompt.size()) + job->max_tokens;
  if (need > options_.kv_budget_tokens) {
    metrics_.count_rejected("too_large");
    throw ApiError(503,
                   "prompt (" + std::to_string(job->prompt.size()) + " tokens) + max_tokens (" +
                       std::to_string(job->max_tokens) + ") exceeds the server's KV budget of " +
                       std::to_string(options_.kv_budget_tokens) + " tokens: it can never be scheduled",
                   "service_unavailable", "max_tokens", "kv_budget_exceeded");
  }
  {
    std::lock_guard lock(mutex_);
    if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
      metrics_.count_rejected("queue_full");
      throw ApiError(429, "the server's request queue is full (" + std::to_string(options_.max_waiting) +
                              " waiting); retry later", "rate_limit_error", "", "queue_full");
    }
    waiting_.push_back(job);
  }
  wake_.notify_all();
}

void Scheduler::run() {
  std::vector<std::unique_ptr<Active>> running;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !running.empty(); });
      if (stopping_) break;
    }
    for (auto& active : running) {
      if (active->job->cancelled()) retire(*active, "abort");
    }
    std::erase_if(running, [](const auto& a) { return a->sequence < 0; });
    admit(running);
    decode_step(running);
    publish_state(running.size());
  }
  for (auto& active : running) retire(*active, "abort", "server shutting down");
  std::lock_guard lock(mutex_);
  for (auto& job : waiting_) job->finish("abort", "server shutting down");
  waiting_.clear();
}

void Scheduler::admit(std::vector<std::unique_ptr<Active>>& running) {
  while (static_cast<int>(running.size()) < options_.max_running) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard lock(mutex_);
      if (waiting_.empty()) return;
      const int64_t need = static_cast<int64_t>(waiting_.front()->prompt.size()) + waiting_.front()->max_tokens;
      if (reserved_tokens_ + need > options_.kv_budget_tokens) return;  // FIFO: no overtaking
      job = waiting_.front();
      waiting_.pop_front();
    }
    if (job->cancelled()) {
      metrics_.count_finished("abort");
      job->finish("abort");
      continue;
    }
    auto active = std::make_unique<Active>(job, engine_->add_sequence(), tokenizer_);
    reserved_tokens_ += active->reserved;
    publish_state(running.size() + 1);
    try {
      const std::vector<float> logits = engine_->prefill(active->sequence, job->prompt);
      metrics_.add_prompt_tokens(static_cast<int64_t>(job->prompt.size()));
      if (on_token(*active, active->sampler.sample(logits))) continue;
    } catch (const std::exception& error) {
      retire(*active, "error", error.what());
      continue;
    }
    running.push_back(std::move(active));
  }
}

void Scheduler::decode_step(std::vector<std::unique_ptr<Active>>& running) {
  if (running.empty()) return;
  std::vector<SequenceId> sequences;
  std::vector<int32_t> tokens;
  for (const auto& active : running) {
    sequences.push_back(active->sequence);
    tokens.push_back(active->last_token);
  }
  // All greedy: the engine picks the tokens (on the device for CUDA; no logits copied).
  const bool all_greedy =
      std::all_of(running.begin(), running.end(), [](const auto& a) { return a->job->sampling.temperature == 0.0f; });
  std::vector<float> logits;
  std::vector<int32_t> greedy;
  try {
    if (all_greedy)
      greedy = engine_->decode_greedy(sequences, tokens);
    else
      logits = engine_->decode(sequences, tokens);
  } catch (const std::exception& error) {
    for (auto& active : running) retire(*active, "error", error.what());
    running.clear();
    return;
  }
  // Sampling in parallel (each request has its own Sampler: the tokens do not depend on the
  // thread count), then the tokens in order on this thread. A sampler error (NaN / +inf
  // logits) ends that request only.
  const size_t n = running.size(), vocab = all_greedy ? 0 : logits.size() / n;
  std::vector<int32_t> picked = all_greedy ? std::move(greedy) : std::vector<int32_t>(n, 0);
  std::vector<std::string> errors(n);
  if (!all_greedy) {
    sampling_pool_.run(n, [&](size_t i) {
      try {
        picked[i] = running[i]->sampler.sample(std::span<const float>(logits).subspan(i * vocab, vocab));
      } catch (const std::exception& error) {
        errors[i] = error.what();
      }
    });
  }
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i].empty())
      retire(*running[i], "error", errors[i]);
    else
      on_token(*running[i], picked[i]);
  }
  std::erase_if(running, [](const auto& a) { return a->sequence < 0; });
}

bool Scheduler::on_token(Active& active, int32_t token) {
  Job& job = *active.job;
  const auto now = Clock::now();
  ++active.generated;
  metrics_.add_generation_tokens(1);
  if (active.generated == 1) {
    metrics_.observe_time_to_first_token(std::chrono::duration<double>(now - job.arrival).count());
  } else {
    metrics_.observe_inter_token_latency(std::chrono::duration<double>(now - active.last_token_time).count());
  }
  active.last_token_time = now;
  active.last_token = token;

  const bool end_of_turn = std::find(job.stop_ids.begin(), job.stop_ids.end(), token) != job.stop_ids.end();
  bool stopped = false;
  if (!end_of_turn) {
    if (active.reasoning && token == job.think_end_id) {
      job.emit(active.decoder.finish(), true);
      active.reasoning = false;
    } else if (active.reasoning) {
      job.emit(active.decoder.push(token), true);
    } else {
      stopped = append_content(active, active.decoder.push(token), false);
    }
  }
  const bool out_of_tokens = active.generated >= job.max_tokens;
  if (!(end_of_turn || stopped || out_of_tokens)) return false;
  if (!stopped) {  // release held-back text (a stop string may still complete in it)
    const std::string rest = active.decoder.finish();
    if (active.reasoning) {
      job.emit(rest, true);
    } else {
      stopped = append_content(active, rest, true);
    }
  }
  retire(active, end_of_turn || stopped ? "stop" : "length");
  return true;
}

bool Scheduler::append_content(Active& active, const std::string& text, bool final) {
  Job& job = *active.job;
  active.held += text;
  size_t first = std::string::npos;
  for (const std::string& stop : job.stop_strings) first = std::min(first, active.held.find(stop));
  if (first != std::string::npos) {
    job.emit(active.held.substr(0, first), false);
    active.held.clear();
    return true;
  }
  size_t keep = 0;  // longest tail of held that starts some stop string
  if (!final) {
    for (const std::string& stop : job.stop_strings) {
      for (size_t k = std::min(stop.size() - 1, active.held.size()); k > keep; --k) {
        if (active.held.compare(active.held.size() - k, k, stop, 0, k) == 0) {
          keep = k;
          break;
        }
      }
    }
  }
  job.emit(active.held.substr(0, active.held.size() - keep), false);
  active.held.erase(0, active.held.size() - keep);
  return false;
}

void Scheduler::retire(Active& active, const std::string& reason, const std::string& error) {
  if (active.sequence < 0) return;
  try {
    engine_->remove_sequence(active.sequence);
  } catch (const std::exception&) {
    // The sequence is gone either way; the request's own outcome is what matters.
  }
  active.sequence = -1;
  reserved_tokens_ -= active.reserved;
  active.job->completion_tokens = active.generated;
  metrics_.count_finished(reason);
  metrics_.observe_request_latency(std::chrono::duration<double>(Clock::now() - active.job->arrival).count());
  active.job->finish(reason, error);
}

void Scheduler::publish_state(size_t running) {
  size_t waiting = 0;
  {
    std::lock_guard lock(mutex_);
    waiting = waiting_.size();
  }
  metrics_.set_state(static_cast<int>(running), static_cast<int>(waiting),
                     static_cast<double>(reserved_tokens_) / static_cast<double>(options_.kv_budget_tokens));
}

}  // namespace dsv4::server

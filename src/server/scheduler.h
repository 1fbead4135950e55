// Continuous batching over one Engine. A single scheduler thread owns the engine; each
// iteration it (1) drops cancelled requests, (2) admits waiting requests in arrival
// order while the batch and the token budget allow, prefilling each and sampling its
// first token, (3) runs one decode step for every running sequence. Requests thus join
// and leave the batch between decode steps. HTTP threads see a Job: inputs set before
// submit(), text that grows as tokens are sampled, and a finish reason.
#pragma once
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dsv4/engine.h"
#include "dsv4/tokenizer.h"
#include "metrics.h"
#include "worker_pool.h"

namespace dsv4::server {

using Clock = std::chrono::steady_clock;

class Job {
 public:
  // Inputs: set before submit(), read-only afterwards.
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop_strings;  // content ends before the first match
  std::vector<int32_t> stop_ids;          // end of turn; not part of the text
  int32_t think_end_id = -1;              // >= 0: output is reasoning until this id
  Clock::time_point arrival = Clock::now();

  struct Update {
    std::string content, reasoning;  // new since the previous take()
    bool finished = false;
  };
  // Waits up to `timeout` for new text or the end, and returns it.
  Update take(std::chrono::milliseconds timeout);
  void wait_finished();
  // Asks the scheduler to drop the request at its next step (client gone).
  void cancel();
  bool cancelled() const;

  // Valid after take() reported finished or wait_finished() returned.
  std::string finish_reason;  // stop, length, abort, error
  std::string error;          // for finish_reason "error"
  int64_t completion_tokens = 0;
  std::string content, reasoning;  // the whole output

  // Scheduler side.
  void emit(const std::string& text, bool is_reasoning);
  void finish(const std::string& reason, const std::string& error_message = {});

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string new_content_, new_reasoning_;
  bool finished_ = false;
  bool cancelled_ = false;
};

struct SchedulerOptions {
  int max_running = 16;
  int max_waiting = 256;
  int64_t kv_budget_tokens = 0;  // 0: max_running * context_length
  int64_t context_length = 0;    // 0: the model's max_position_embeddings
};

class Scheduler {
 public:
  Scheduler(std::unique_ptr<Engine> engine, const Tokenizer& tokenizer, SchedulerOptions options, Metrics& metrics);
  ~Scheduler();

  // Queues the job. Throws ApiError: 503 when prompt + max_tokens exceeds the whole
  // budget (it could never run), 429 when the waiting queue is full.
  void submit(const std::shared_ptr<Job>& job);

  const ModelConfig& config() const { return config_; }
  int64_t context_length() const { return options_.context_length; }
  int64_t kv_budget_tokens() const { return options_.kv_budget_tokens; }

 private:
  struct Active;
  void run();
  void admit(std::vector<std::unique_ptr<Active>>& running);
  void decode_step(std::vector<std::unique_ptr<Active>>& running);
  // Takes one sampled token; returns true when the request is done.
  bool on_token(Active& active, int32_t token);
  bool append_content(Active& active, const std::string& text, bool final);
  void retire(Active& active, const std::string& reason, const std::string& error = {});
  void publish_state(size_t running);

  // Samples the running sequences of a decode step in parallel (scheduler thread + workers).
  WorkerPool sampling_pool_{std::max(1u, std::thread::hardware_concurrency()) - 1};
  std::unique_ptr<Engine> engine_;
  const Tokenizer& tokenizer_;
  const ModelConfig config_;
  SchedulerOptions options_;
  Metrics& metrics_;
  int64_t reserved_tokens_ = 0;  // scheduler thread only

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> waiting_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace dsv4::server

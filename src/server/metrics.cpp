#include "metrics.h"

#include <fmt/format.h>

namespace dsv4::server {

void Histogram::observe(double value) {
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, count_);
  out += fmt::format("{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, labels, sum_, name, labels, count_);
}

// vLLM's bucket boundaries (seconds).
Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
             80.0, 160.0, 640.0, 2560.0}),
      itl_({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}),
      e2e_({0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
            960.0, 1920.0, 7680.0}) {}

void Metrics::set_model_name(const std::string& name) {
  std::lock_guard lock(mutex_);
  model_name_ = name;
}

void Metrics::set_state(int running, int waiting, double kv_usage) {
  std::lock_guard lock(mutex_);
  running_ = running;
  waiting_ = waiting;
  kv_usage_ = kv_usage;
}

void Metrics::add_prompt_tokens(int64_t n) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += n;
}

void Metrics::add_generation_tokens(int64_t n) {
  std::lock_guard lock(mutex_);
  generation_tokens_ += n;
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::observe_inter_token_latency(double seconds) {
  std::lock_guard lock(mutex_);
  itl_.observe(seconds);
}

void Metrics::observe_request_latency(double seconds) {
  std::lock_guard lock(mutex_);
  e2e_.observe(seconds);
}

void Metrics::count_finished(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++finished_[reason];
}

void Metrics::count_rejected(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++rejected_[reason];
}

std::string Metrics::render() const {
  std::lock_guard lock(mutex_);
  const std::string labels = fmt::format("model_name=\"{}\"", model_name_);
  std::string out;
  auto gauge = [&](const char* name, const char* help, double value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{}{{{}}} {}\n", name, help, name, name, labels, value);
  };
  auto counter = [&](const char* name, const char* help, double value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{}{{{}}} {}\n", name, help, name, name, labels, value);
  };
  gauge("vllm:num_requests_running", "Requests in the running batch.", running_);
  gauge("vllm:num_requests_waiting", "Requests waiting for admission (queue depth).", waiting_);
  gauge("vllm:kv_cache_usage_perc", "Fraction of the KV token budget reserved by running requests (0-1).", kv_usage_);
  counter("vllm:prompt_tokens_total", "Prefilled prompt tokens.", static_cast<double>(prompt_tokens_));
  counter("vllm:generation_tokens_total", "Generated tokens.", static_cast<double>(generation_tokens_));
  out += "# HELP vllm:request_success_total Finished requests by finish reason.\n"
         "# TYPE vllm:request_success_total counter\n";
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    const auto it = finished_.find(reason);
    out += fmt::format("vllm:request_success_total{{{},finished_reason=\"{}\"}} {}\n", labels, reason,
                       it == finished_.end() ? 0 : it->second);
  }
  out += "# HELP dsv4:requests_rejected_total Requests refused at admission (429 queue_full, 503 too_large).\n"
         "# TYPE dsv4:requests_rejected_total counter\n";
  for (const char* reason : {"queue_full", "too_large"}) {
    const auto it = rejected_.find(reason);
    out += fmt::format("dsv4:requests_rejected_total{{{},reason=\"{}\"}} {}\n", labels, reason,
                       it == rejected_.end() ? 0 : it->second);
  }
  auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    h.render(out, name, labels);
  };
  histogram("vllm:time_to_first_token_seconds", "Time from arrival to the first generated token.", ttft_);
  histogram("vllm:inter_token_latency_seconds", "Time between successive tokens of a request.", itl_);
  histogram("vllm:e2e_request_latency_seconds", "Time from arrival to the last token.", e2e_);
  return out;
}

}  // namespace dsv4::server

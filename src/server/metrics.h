// Prometheus metrics with vLLM's names (vllm:num_requests_running, ...), so existing
// dashboards work; dsv4-only figures use the dsv4: prefix. Thread-safe.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace dsv4::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
  void observe(double value);
  // Prometheus text lines for `name` with `labels` ("model_name=\"x\"").
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void set_model_name(const std::string& name);
  void set_state(int running, int waiting, double kv_usage);
  void add_prompt_tokens(int64_t n);
  void add_generation_tokens(int64_t n);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  void observe_request_latency(double seconds);
  void count_finished(const std::string& reason);  // stop, length, abort, error
  void count_rejected(const std::string& reason);  // queue_full, too_large
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::string model_name_;
  int running_ = 0, waiting_ = 0;
  double kv_usage_ = 0;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, itl_, e2e_;
  std::map<std::string, uint64_t> finished_, rejected_;
};

}  // namespace dsv4::server

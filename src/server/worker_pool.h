// A fixed set of worker threads that run `fn(i)` for i in [0, n) and return when all are
// done: the scheduler samples every running sequence of a decode step in parallel (at
// temperature > 0 one sample over V4's 129280 logits takes ~0.1-1.7 ms on one core, so a
// batch of 64 sequentially would take longer than the GPU step). Each index is independent
// (every request has its own Sampler), so results do not depend on the thread count.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv4::server {

class WorkerPool {
 public:
  // threads: workers besides the calling thread (0: run() runs everything inline).
  explicit WorkerPool(unsigned threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs fn(0) .. fn(n - 1), the calling thread taking part; returns when every call has
  // returned. fn must not throw (catch inside: the scheduler records errors per request).
  void run(size_t n, const std::function<void(size_t)>& fn);

 private:
  void work();
  void drain();

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  const std::function<void(size_t)>* fn_ = nullptr;
  size_t n_ = 0, next_ = 0, finished_ = 0;
  unsigned generation_ = 0;
  bool stopping_ = false;
};

}  // namespace dsv4::server

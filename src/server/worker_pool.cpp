#include "worker_pool.h"

namespace dsv4::server {

WorkerPool::WorkerPool(unsigned threads) {
  threads_.reserve(threads);
  for (unsigned t = 0; t < threads; ++t) threads_.emplace_back([this] { work(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  start_.notify_all();
  for (auto& thread : threads_) thread.join();
}

// Takes indices of the current run until none are left; counts each finished call. A
// worker that wakes after the run ended finds next_ == n_ and does nothing.
void WorkerPool::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (fn_ != nullptr && next_ < n_) {
    const std::function<void(size_t)>& fn = *fn_;
    const size_t i = next_++;
    lock.unlock();
    fn(i);
    lock.lock();
    if (++finished_ == n_) done_.notify_all();
  }
}

void WorkerPool::work() {
  unsigned seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    drain();
  }
}

void WorkerPool::run(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (threads_.empty() || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    n_ = n;
    next_ = 0;
    finished_ = 0;
    ++generation_;
  }
  start_.notify_all();
  drain();
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return finished_ == n_; });
  fn_ = nullptr;
}

}  // namespace dsv4::server

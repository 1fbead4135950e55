// WorkerPool (src/server/worker_pool.h): every index runs exactly once per run, runs of
// different sizes back to back (including 0 and 1), inline with no workers, and the pool
// shuts down cleanly.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "worker_pool.h"

namespace dsv4::server {
namespace {

TEST(WorkerPool, EveryIndexOnceAcrossManyRuns) {
  for (unsigned threads : {0u, 1u, 3u, 8u}) {
    WorkerPool pool(threads);
    for (int round = 0; round < 200; ++round) {
      const size_t n = static_cast<size_t>((round * 37) % 70);
      std::vector<std::atomic<int>> hits(n);
      pool.run(n, [&](size_t i) { hits[i].fetch_add(1); });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " threads, run " << round << ", index " << i;
    }
  }
}

TEST(WorkerPool, ResultsDoNotDependOnTheThreadCount) {
  auto run = [](unsigned threads) {
    WorkerPool pool(threads);
    std::vector<uint64_t> out(64);
    pool.run(out.size(), [&](size_t i) {
      uint64_t x = i + 1;
      for (int k = 0; k < 1000; ++k) x = x * 6364136223846793005ull + 1442695040888963407ull;
      out[i] = x;
    });
    return out;
  };
  EXPECT_EQ(run(0), run(7));
}

}  // namespace
}  // namespace dsv4::server

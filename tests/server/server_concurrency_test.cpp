// 200 concurrent mixed requests through the continuous-batching scheduler, each
// checked for shape and compared with the same request run alone (greedy).
#include <gtest/gtest.h>

#include "mixed_requests.h"
#include "test_server.h"

namespace dsv4 {
namespace {

TEST(ServerConcurrency, TwoHundredMixedRequestsEqualTheirSoloRuns) {
  server::ServerOptions options;
  options.max_running = 12;
  test::FakeServer fake("gpt2_style", options, 512, /*eos_every=*/30);
  fake.engine->step_delay = std::chrono::microseconds(500);  // lets batches form
  const auto requests = test::mixed_requests(200, 40);

  std::vector<test::Outcome> alone;
  for (const auto& r : requests) alone.push_back(test::run_mixed(fake.port, r));
  EXPECT_EQ(fake.engine->max_batch_seen, 1);

  const std::vector<test::Outcome> together = test::run_concurrently(fake.port, requests, /*threads=*/24);
  int stopped = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(together[i], alone[i]) << "request " << i << ": " << requests[i].body();
    stopped += alone[i].finish_reason == "stop";
  }
  EXPECT_GT(stopped, 0) << "the mix should include requests that end at EOS";
  EXPECT_GT(fake.engine->max_batch_seen, 4) << "requests should have shared decode steps";
  EXPECT_LE(fake.engine->max_batch_seen, options.max_running);
  EXPECT_TRUE(test::eventually([&] { return fake.engine->live_sequences() == 0; }, 2.0));
}

}  // namespace
}  // namespace dsv4

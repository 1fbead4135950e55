// The mixed request set of the concurrency tests: completions and chat, streamed or
// not, with and without usage, several prompts (one of them non-ASCII) and lengths.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "http_test_client.h"

namespace dsv4::test {

struct MixedRequest {
  bool chat = false, stream = false, include_usage = false;
  std::string prompt;
  int max_tokens = 1;
  std::string path() const { return chat ? "/v1/chat/completions" : "/v1/completions"; }
  std::string body() const {
    nlohmann::json json = {{"max_tokens", max_tokens}, {"temperature", 0}, {"stream", stream}};
    if (chat) {
      json["messages"] = {{{"role", "user"}, {"content", prompt}}};
    } else {
      json["prompt"] = prompt;
    }
    if (include_usage) json["stream_options"] = {{"include_usage", true}};
    return json.dump();
  }
};

inline std::vector<MixedRequest> mixed_requests(int count, int max_tokens_limit) {
  const std::vector<std::string> prompts = {
      "In the beginning", "And God said, Let there be light", "The LORD is my shepherd; I shall not want.",
      "Blessed are the meek:", "Jesus wept.", "For God so loved the world, that he gave",
      "起初，神创造天地。", "x", "Vanity of vanities, saith the Preacher", "And it came to pass"};
  std::vector<MixedRequest> requests;
  for (int i = 0; i < count; ++i) {
    MixedRequest r;
    r.chat = i % 3 == 1;
    r.stream = i % 2 == 0;
    r.include_usage = r.stream && i % 4 == 0;
    r.prompt = prompts[(i * 7) % prompts.size()];
    r.max_tokens = 1 + (i * 13) % max_tokens_limit;
    requests.push_back(r);
  }
  return requests;
}

// Runs one request and checks its shape; a non-200 answer is a failure.
inline Outcome run_mixed(int port, const MixedRequest& r) {
  const HttpReply reply = http_request(port, "POST", r.path(), r.body());
  if (reply.status != 200) {
    ADD_FAILURE() << "status " << reply.status << " for " << r.body() << ": " << reply.body;
    return {};
  }
  Outcome o = r.stream ? parse_stream(reply.body, r.chat, r.include_usage) : parse_full(reply.body, r.chat);
  if (o.finish_reason == "length" && o.completion_tokens >= 0) {
    EXPECT_EQ(o.completion_tokens, r.max_tokens);
  }
  return o;
}

// `threads` clients share the list; returns outcomes in request order.
inline std::vector<Outcome> run_concurrently(int port, const std::vector<MixedRequest>& requests, int threads) {
  std::vector<Outcome> outcomes(requests.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < requests.size(); i = next++) outcomes[i] = run_mixed(port, requests[i]);
    });
  }
  for (auto& thread : pool) thread.join();
  return outcomes;
}

}  // namespace dsv4::test

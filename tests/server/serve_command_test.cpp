// End to end: starts `dsv4 serve --port 0` (the bundled model, CPU engine) as a child
// process on 127.0.0.1, then 200 concurrent mixed requests equal to their solo runs,
// bad requests answered with OpenAI errors, and a client that disconnects mid-stream.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>

#include <gtest/gtest.h>

#include "mixed_requests.h"

extern char** environ;

namespace dsv4 {
namespace {

// The child process and the port it printed.
class ServeProcess {
 public:
  ServeProcess() {
    int out[2];
    if (pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::vector<std::string> args = {DSV4_BINARY, "serve", "--host", "127.0.0.1", "--port", "0", "--max-running", "16",
                                     "--max-model-len", "4096"};  // the bundled model allows 1M; the 5000-byte prompt below must exceed it
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, DSV4_BINARY, &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    FILE* stream = fdopen(out[0], "r");
    char line[512];
    // "dsv4 serve: listening on http://127.0.0.1:PORT (...)"
    if (pid_ > 0 && stream && std::fgets(line, sizeof(line), stream)) {
      const std::string text(line);
      const size_t at = text.find("127.0.0.1:");
      if (at != std::string::npos) port_ = std::atoi(text.c_str() + at + 10);
    }
    if (stream) std::fclose(stream);
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  int port() const { return port_; }
  // SIGTERM and the exit status (0 for a clean stop).
  int stop() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

TEST(ServeCommand, BundledModelUnderConcurrentLoad) {
  ServeProcess serve;
  ASSERT_GT(serve.port(), 0) << "dsv4 serve did not print its port";
  const int port = serve.port();
  ASSERT_TRUE(test::eventually([&] { return test::http_request(port, "GET", "/health").status == 200; }, 60.0));

  const auto requests = test::mixed_requests(200, 12);
  std::vector<test::Outcome> alone;
  for (const auto& r : requests) alone.push_back(test::run_mixed(port, r));
  const auto together = test::run_concurrently(port, requests, /*threads=*/16);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(together[i], alone[i]) << "request " << i << ": " << requests[i].body();
    EXPECT_FALSE(alone[i].text.empty() && requests[i].max_tokens > 2) << "request " << i;
  }

  // Bad requests: OpenAI error bodies, and the server keeps serving.
  const std::vector<std::pair<std::string, int>> bad = {
      {R"({"prompt": "x", )", 400},
      {R"({"prompt": "x", "max_tokens": "many"})", 400},
      {R"({"prompt": "x", "model": "no-such-model"})", 404},
      {R"({"prompt": "x", "max_tokens": -5})", 400},
      {R"({"prompt": ")" + std::string(5000, 'a') + R"("})", 400},
      {R"({"prompt": ")" + std::string(10 << 20, 'a') + R"("})", 413},
  };
  for (const auto& [body, status] : bad) {
    const auto reply = test::http_request(port, "POST", "/v1/completions", body);
    EXPECT_EQ(reply.status, status) << body.substr(0, 80) << " -> " << reply.body;
    EXPECT_TRUE(nlohmann::json::parse(reply.body, nullptr, false).contains("error")) << reply.body;
  }
  ASSERT_TRUE(test::start_stream_and_disconnect(
      port, "/v1/completions", R"({"prompt": "And", "max_tokens": 4000, "temperature": 0, "stream": true})"));
  EXPECT_TRUE(test::eventually([&] {
    const std::string metrics = test::http_request(port, "GET", "/metrics").body;
    return test::metric_value(metrics, "vllm:request_success_total{model_name=\"default\",finished_reason=\"abort\"}") == 1 &&
           test::metric_value(metrics, "vllm:num_requests_running{model_name=\"default\"}") == 0;
  }, 10.0));
  EXPECT_EQ(test::run_mixed(port, requests[3]), alone[3]);
  EXPECT_EQ(serve.stop(), 0);
}

}  // namespace
}  // namespace dsv4

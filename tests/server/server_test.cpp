// Endpoints, streaming format, sampling, stop sequences, reasoning, error answers,
// admission control, disconnects and the loading state, against the FakeEngine.
#include <future>

#include <gtest/gtest.h>

#include "http_test_client.h"
#include "test_server.h"

namespace dsv4 {
namespace {

using nlohmann::json;
using test::FakeServer;
using test::http_request;

// The error shape every 4xx/5xx must have; returns error.code.
std::string expect_error_shape(const test::HttpReply& reply, int status) {
  EXPECT_EQ(reply.status, status) << reply.body;
  const json body = json::parse(reply.body, nullptr, false);
  if (body.is_discarded() || !body.contains("error")) {
    ADD_FAILURE() << "not an OpenAI error body: " << reply.body;
    return {};
  }
  const json& error = body.at("error");
  EXPECT_TRUE(error.at("message").is_string() && !error.at("message").get<std::string>().empty());
  EXPECT_TRUE(error.at("type").is_string());
  EXPECT_TRUE(error.contains("param"));
  EXPECT_TRUE(error.contains("code"));
  return error.at("code").is_string() ? error.at("code").get<std::string>() : std::string();
}

TEST(Server, ModelsHealthAndMetrics) {
  FakeServer fake("gpt2_style", {});
  const auto health = http_request(fake.port, "GET", "/health");
  EXPECT_EQ(health.status, 200);
  const auto models = json::parse(http_request(fake.port, "GET", "/v1/models").body);
  EXPECT_EQ(models.at("object"), "list");
  EXPECT_EQ(models.at("data").at(0).at("id"), "fake-model");
  EXPECT_EQ(models.at("data").at(0).at("max_model_len"), 512);
  http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "In the beginning", "max_tokens": 5, "temperature": 0})");
  const auto metrics = http_request(fake.port, "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  for (const char* name : {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                           "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                           "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                           "vllm:e2e_request_latency_seconds_count", "vllm:request_success_total"}) {
    EXPECT_NE(metrics.body.find(name), std::string::npos) << name;
  }
  EXPECT_EQ(test::metric_value(metrics.body, "vllm:time_to_first_token_seconds_count{model_name=\"fake-model\"}"), 1);
  EXPECT_GE(test::metric_value(metrics.body, "vllm:generation_tokens_total{model_name=\"fake-model\"}"), 1);
}

TEST(Server, CompletionStreamEqualsNonStream) {
  FakeServer fake("gpt2_style", {});
  const std::string request = R"({"model": "fake-model", "prompt": "And God said", "max_tokens": 30, "temperature": 0)";
  const auto full = http_request(fake.port, "POST", "/v1/completions", request + "}");
  ASSERT_EQ(full.status, 200) << full.body;
  const test::Outcome a = test::parse_full(full.body, false);
  EXPECT_EQ(a.prompt_tokens, static_cast<int64_t>(fake.tokenizer->encode("And God said", true).size()));
  const auto streamed = http_request(fake.port, "POST", "/v1/completions",
                                     request + R"(, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_EQ(streamed.status, 200);
  EXPECT_NE(streamed.content_type.find("text/event-stream"), std::string::npos);
  EXPECT_EQ(test::parse_stream(streamed.body, false, true), a);
  // Prompt as token ids gives the same completion as its text.
  const auto ids = json(fake.tokenizer->encode("And God said", true)).dump();
  const auto by_ids = http_request(fake.port, "POST", "/v1/completions",
                                   R"({"prompt": )" + ids + R"(, "max_tokens": 30, "temperature": 0})");
  EXPECT_EQ(test::parse_full(by_ids.body, false), a);
}

TEST(Server, ChatStreamFormat) {
  FakeServer fake("gpt2_style", {});
  const std::string request =
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
          "max_tokens": 20, "temperature": 0)";
  const auto full = http_request(fake.port, "POST", "/v1/chat/completions", request + "}");
  ASSERT_EQ(full.status, 200) << full.body;
  const test::Outcome a = test::parse_full(full.body, true);
  const auto streamed = http_request(fake.port, "POST", "/v1/chat/completions", request + R"(, "stream": true})");
  test::Outcome b = test::parse_stream(streamed.body, true, false);
  b.prompt_tokens = a.prompt_tokens;  // no usage chunk without include_usage
  b.completion_tokens = a.completion_tokens;
  EXPECT_EQ(b, a);
  // The plain chat format (the fixture has no DeepSeek tokens) reached the engine, after
  // the config's BOS (id 0 in the fake).
  std::vector<int32_t> expected = {0};
  for (int32_t id : fake.tokenizer->encode("System: Be brief.\nUser: Hello\nAssistant: ")) expected.push_back(id);
  EXPECT_EQ(fake.engine->last_prompt(), expected);
}

TEST(Server, SeededSamplingIsReproducible) {
  FakeServer fake("gpt2_style", {});
  const std::string request = R"({"prompt": "Let there be light", "max_tokens": 25, "temperature": 1.5, "top_p": 0.95, "top_k": 50, "seed": )";
  const auto a = http_request(fake.port, "POST", "/v1/completions", request + "7}");
  const auto b = http_request(fake.port, "POST", "/v1/completions", request + "7}");
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(test::parse_full(a.body, false), test::parse_full(b.body, false));
  const auto greedy = http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "Let there be light", "max_tokens": 25, "temperature": 0})");
  const auto top1 = http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "Let there be light", "max_tokens": 25, "top_k": 1, "seed": 3})");
  EXPECT_EQ(test::parse_full(greedy.body, false), test::parse_full(top1.body, false));
}

TEST(Server, StopSequencesCutTextInStreamsToo) {
  FakeServer fake("gpt2_style", {});
  std::vector<int32_t> script = fake.tokenizer->encode("Hello world! Goodbye world!");
  script.push_back(0);  // <|endoftext|>
  fake.engine->script = script;
  for (const bool stream : {false, true}) {
    const std::string body = std::string(R"({"prompt": "x", "max_tokens": 50, "temperature": 0, "stop": ["wor", "zzz"], "stream": )") +
                             (stream ? "true" : "false") + "}";
    const auto reply = http_request(fake.port, "POST", "/v1/completions", body);
    const test::Outcome o = stream ? test::parse_stream(reply.body, false, false) : test::parse_full(reply.body, false);
    EXPECT_EQ(o.text, "Hello ") << reply.body;
    EXPECT_EQ(o.finish_reason, "stop");
  }
  // Without a stop string: end at <|endoftext|>, which is not part of the text.
  const auto reply = http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 50, "temperature": 0})");
  const test::Outcome o = test::parse_full(reply.body, false);
  EXPECT_EQ(o.text, "Hello world! Goodbye world!");
  EXPECT_EQ(o.finish_reason, "stop");
  EXPECT_EQ(o.completion_tokens, static_cast<int64_t>(script.size()));
}

TEST(Server, DeepSeekThinkingSplitsReasoningFromAnswer) {
  FakeServer fake("deepseek_style", {});
  const int32_t think_end = *fake.tokenizer->token_to_id("</think>");
  const int32_t eos = *fake.tokenizer->token_to_id("<｜end▁of▁sentence｜>");
  std::vector<int32_t> script = fake.tokenizer->encode("Twelve plus thirty.");
  script.push_back(think_end);
  for (int32_t id : fake.tokenizer->encode("It is 42.")) script.push_back(id);
  script.push_back(eos);
  fake.engine->script = script;
  const std::string request = R"({"messages": [{"role": "user", "content": "What is 12+30?"}], "temperature": 0,
                                  "chat_template_kwargs": {"thinking": true})";
  const auto full = http_request(fake.port, "POST", "/v1/chat/completions", request + "}");
  const test::Outcome a = test::parse_full(full.body, true);
  EXPECT_EQ(a.reasoning, "Twelve plus thirty.");
  EXPECT_EQ(a.text, "It is 42.");
  EXPECT_EQ(a.finish_reason, "stop");
  const auto prompt = fake.engine->last_prompt();
  ASSERT_GE(prompt.size(), 2u);
  EXPECT_EQ(prompt.back(), *fake.tokenizer->token_to_id("<think>"));
  EXPECT_EQ(prompt[prompt.size() - 2], *fake.tokenizer->token_to_id("<｜Assistant｜>"));
  const auto streamed = http_request(fake.port, "POST", "/v1/chat/completions", request + R"(, "stream": true, "stream_options": {"include_usage": true}})");
  EXPECT_EQ(test::parse_stream(streamed.body, true, true), a);
}

TEST(Server, BadRequestsGetOpenAIErrorsAndTheServerKeepsServing) {
  server::ServerOptions options;
  options.max_body_bytes = 1 << 20;
  FakeServer fake("gpt2_style", options);
  const int port = fake.port;
  struct Case {
    std::string path, body;
    int status;
    std::string code;
  };
  const std::string long_prompt(3000, 'x');  // > 512 tokens of context
  const std::vector<Case> cases = {
      {"/v1/completions", R"({"prompt": "x", )", 400, "invalid_json"},
      {"/v1/completions", R"([1, 2, 3])", 400, "invalid_json"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": "ten"})", 400, "invalid_type"},
      {"/v1/completions", R"({"prompt": "x", "temperature": "hot"})", 400, "invalid_type"},
      {"/v1/completions", R"({"prompt": "x", "stream": 1})", 400, "invalid_type"},
      {"/v1/completions", R"({"prompt": {"text": "x"}})", 400, "invalid_type"},
      {"/v1/completions", R"({"max_tokens": 3})", 400, "missing_required_parameter"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": -1})", 400, "invalid_value"},
      {"/v1/completions", R"({"prompt": "x", "top_p": 0})", 400, "invalid_value"},
      {"/v1/completions", R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", 400, "invalid_value"},
      {"/v1/completions", R"({"prompt": "x", "n": 2})", 400, "invalid_value"},
      {"/v1/completions", R"({"prompt": [1, 999999]})", 400, "invalid_value"},
      {"/v1/completions", R"({"prompt": "x", "model": "gpt-4"})", 404, "model_not_found"},
      {"/v1/completions", R"({"prompt": ")" + long_prompt + R"("})", 400, "context_length_exceeded"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": 600})", 400, "context_length_exceeded"},
      {"/v1/chat/completions", R"({"messages": []})", 400, "invalid_type"},
      {"/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "x"}]})", 400, "invalid_value"},
      {"/v1/chat/completions", R"({"messages": [{"content": "x"}]})", 400, "missing_required_parameter"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 5}]})", 400, "invalid_type"},
      {"/v1/chat/completions", R"({"messages": "hi"})", 400, "invalid_type"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", 400, "unsupported_parameter"},
      {"/v1/nothing", "{}", 404, "not_found"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path + " " + c.body.substr(0, 120));
    EXPECT_EQ(expect_error_shape(http_request(port, "POST", c.path, c.body), c.status), c.code);
  }
  // Invalid UTF-8 inside JSON is malformed JSON.
  EXPECT_EQ(expect_error_shape(http_request(port, "POST", "/v1/completions", "{\"prompt\": \"\xff\"}"), 400), "invalid_json");
  // A 10 MB body is refused before it is parsed.
  const std::string huge = R"({"prompt": ")" + std::string(10 << 20, 'a') + R"("})";
  EXPECT_EQ(expect_error_shape(http_request(port, "POST", "/v1/completions", huge), 413), "payload_too_large");
  // Still serving.
  const auto ok = http_request(port, "POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 3, "temperature": 0})");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(Server, DisconnectMidStreamCancelsTheRequest) {
  FakeServer fake("gpt2_style", {}, 4096, /*eos_every=*/0);
  fake.engine->step_delay = std::chrono::milliseconds(2);
  ASSERT_TRUE(test::start_stream_and_disconnect(
      fake.port, "/v1/completions", R"({"prompt": "x", "max_tokens": 3000, "temperature": 0, "stream": true})"));
  // Cancelled well before its 3000 tokens (about 6 s) would be done.
  EXPECT_TRUE(test::eventually([&] {
    const std::string metrics = http_request(fake.port, "GET", "/metrics").body;
    return test::metric_value(metrics, "vllm:request_success_total{model_name=\"fake-model\",finished_reason=\"abort\"}") == 1;
  }, 4.0));
  EXPECT_TRUE(test::eventually([&] { return fake.engine->live_sequences() == 0; }, 2.0));
  const auto ok = http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 3, "temperature": 0})");
  EXPECT_EQ(ok.status, 200);
}

TEST(Server, QueueFullGets429AndTooLargeGets503) {
  server::ServerOptions options;
  options.max_running = 1;
  options.max_waiting = 1;
  options.kv_budget_tokens = 100;
  FakeServer fake("gpt2_style", options, 512, /*eos_every=*/0);
  fake.engine->step_delay = std::chrono::milliseconds(20);
  EXPECT_EQ(expect_error_shape(http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 200})"), 503),
            "kv_budget_exceeded");
  // One request runs (wait until it is admitted), one more fits the queue, the rest get 429.
  auto post = [&] {
    return http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 10, "temperature": 0})");
  };
  std::vector<std::future<test::HttpReply>> replies;
  replies.push_back(std::async(std::launch::async, [&] {  // about 0.8 s of decode steps
    return http_request(fake.port, "POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 40, "temperature": 0})");
  }));
  ASSERT_TRUE(test::eventually([&] {
    return test::metric_value(http_request(fake.port, "GET", "/metrics").body,
                              "vllm:num_requests_running{model_name=\"fake-model\"}") == 1;
  }));
  for (int i = 0; i < 5; ++i) replies.push_back(std::async(std::launch::async, post));
  int ok = 0, rejected = 0;
  for (auto& reply : replies) {
    const test::HttpReply r = reply.get();
    if (r.status == 200) {
      ++ok;
    } else {
      EXPECT_EQ(expect_error_shape(r, 429), "queue_full");
      ++rejected;
    }
  }
  EXPECT_EQ(ok, 2);
  EXPECT_EQ(rejected, 4);
  const std::string metrics = http_request(fake.port, "GET", "/metrics").body;
  EXPECT_EQ(test::metric_value(metrics, "dsv4:requests_rejected_total{model_name=\"fake-model\",reason=\"queue_full\"}"), rejected);
}

TEST(Server, HealthIs503WhileLoadingAndAfterAFailedLoad) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  server::ServerOptions options;
  options.port = 0;
  server::Server slow(options, [released] {
    released.wait();
    auto tokenizer = Tokenizer::from_file(test::server_tokenizer_fixture("gpt2_style"));
    server::LoadedModel loaded;
    loaded.engine = std::make_unique<test::FakeEngine>(tokenizer->vocab_size(), 64, 0, std::vector<int32_t>{5}, 0);
    loaded.tokenizer = std::move(tokenizer);
    loaded.model_id = "slow";
    return loaded;
  });
  const int port = slow.start();
  EXPECT_EQ(expect_error_shape(http_request(port, "GET", "/health"), 503), "model_loading");
  EXPECT_EQ(expect_error_shape(http_request(port, "POST", "/v1/completions", R"({"prompt": "x"})"), 503), "model_loading");
  EXPECT_EQ(http_request(port, "GET", "/metrics").status, 200);
  release.set_value();
  EXPECT_TRUE(slow.wait_until_loaded());
  EXPECT_EQ(http_request(port, "GET", "/health").status, 200);

  server::Server broken(options, []() -> server::LoadedModel { throw Error("weights are missing"); });
  const int broken_port = broken.start();
  EXPECT_FALSE(broken.wait_until_loaded());
  const auto health = http_request(broken_port, "GET", "/health");
  EXPECT_EQ(expect_error_shape(health, 503), "model_load_failed");
  EXPECT_NE(health.body.find("weights are missing"), std::string::npos);
}

}  // namespace
}  // namespace dsv4

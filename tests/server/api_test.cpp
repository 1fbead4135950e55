// Request parsing at the edge: defaults, aliases and the DeepSeek thinking switches.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "api.h"

namespace dsv4::server {
namespace {

TEST(Api, CompletionDefaultsAndAliases) {
  const CompletionRequest r = parse_completion_request(R"({"prompt": ["hi"], "max_completion_tokens": 7, "top_k": -1, "stop": "\n"})");
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(r.params.max_tokens, 7);
  EXPECT_EQ(r.params.top_k, 0);
  EXPECT_EQ(r.params.temperature, 1.0f);
  EXPECT_EQ(r.params.stop, std::vector<std::string>{"\n"});
  EXPECT_FALSE(r.params.stream);
  const CompletionRequest ids = parse_completion_request(R"({"prompt": [5, 6.0, 7]})");
  EXPECT_TRUE(ids.prompt_is_ids);
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_THROW(parse_completion_request(R"({"prompt": [5, 6.5]})"), ApiError);
}

TEST(Api, ChatThinkingSwitches) {
  const ChatRequest a = parse_chat_request(
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
          "chat_template_kwargs": {"thinking": true}, "reasoning_effort": "medium"})");
  EXPECT_EQ(a.messages.at(0).content, "ab");
  EXPECT_TRUE(a.options.thinking);
  EXPECT_EQ(a.options.reasoning_effort, "high");
  const ChatRequest b = parse_chat_request(R"({"messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"}})");
  EXPECT_TRUE(b.options.thinking);
  const ChatRequest c = parse_chat_request(
      R"({"messages": [{"role": "assistant", "content": null, "reasoning_content": "r"}]})");
  EXPECT_EQ(c.messages.at(0).reasoning_content, "r");
  EXPECT_FALSE(c.options.thinking);
}

TEST(Api, ErrorJsonShape) {
  const auto body = nlohmann::json::parse(error_json(invalid_request("bad", "top_p")));
  EXPECT_EQ(body.at("error").at("message"), "bad");
  EXPECT_EQ(body.at("error").at("type"), "invalid_request_error");
  EXPECT_EQ(body.at("error").at("param"), "top_p");
  EXPECT_EQ(body.at("error").at("code"), "invalid_value");
}

}  // namespace
}  // namespace dsv4::server

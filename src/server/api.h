// The OpenAI request bodies as native structs, parsed and validated at the edge, and
// the OpenAI error shape {"error": {"message", "type", "param", "code"}}.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dsv4/tokenizer.h"

namespace dsv4::server {

struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string type, std::string param, std::string code)
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string type, param, code;
};

// 400 invalid_request_error naming the offending parameter.
ApiError invalid_request(const std::string& message, const std::string& param, const std::string& code = "invalid_value");
std::string error_json(const ApiError& error);

// Fields shared by both endpoints.
struct GenerationParams {
  std::string model;                   // empty: not given
  std::optional<int64_t> max_tokens;   // max_tokens or max_completion_tokens
  float temperature = 1.0f;            // OpenAI's default; 0 is greedy
  float top_p = 1.0f;
  int top_k = 0;                       // 0 or -1: off
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;       // at most 4, as OpenAI
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
  bool ignore_eos = false;             // vLLM extension
};

struct CompletionRequest {
  GenerationParams params;
  std::string prompt;                  // text, or
  std::vector<int32_t> prompt_ids;     // token ids (prompt given as an array of integers)
  bool prompt_is_ids = false;
};

struct ChatRequest {
  GenerationParams params;
  std::vector<ChatMessage> messages;
  ChatOptions options;  // thinking from chat_template_kwargs.thinking / enable_thinking
};

// Throw ApiError (400) for malformed JSON, wrong types and out-of-range values.
CompletionRequest parse_completion_request(const std::string& body);
ChatRequest parse_chat_request(const std::string& body);

}  // namespace dsv4::server

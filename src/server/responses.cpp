#include "responses.h"

#include <nlohmann/json.hpp>

namespace dsv4::server {

using nlohmann::json;

namespace {

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

json envelope(const ResponseHeader& header, bool chunk) {
  const bool chat = header.endpoint == Endpoint::kChat;
  return {{"id", header.id},
          {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", header.created},
          {"model", header.model}};
}

// One streamed choice: chat puts text in "delta", completions in "text".
json chunk_choice(const ResponseHeader& header, json delta, const std::string& text, const json& finish_reason) {
  if (header.endpoint == Endpoint::kChat) {
    return {{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  }
  return {{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
}

}  // namespace

std::string full_response(const ResponseHeader& header, const std::string& content, const std::string& reasoning,
                          bool reasoning_field, const std::string& finish_reason, const Usage& usage) {
  json body = envelope(header, false);
  json choice;
  if (header.endpoint == Endpoint::kChat) {
    json message = {{"role", "assistant"}, {"content", content}};
    if (reasoning_field) message["reasoning_content"] = reasoning;
    choice = {{"index", 0}, {"message", message}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  } else {
    choice = {{"index", 0}, {"text", content}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  }
  body["choices"] = json::array({choice});
  body["usage"] = usage_json(usage);
  return dump(body);
}

std::string sse_event(const std::string& json_text) { return "data: " + json_text + "\n\n"; }

std::string sse_role_chunk(const ResponseHeader& header) {
  json body = envelope(header, true);
  body["choices"] = json::array({chunk_choice(header, {{"role", "assistant"}, {"content", ""}}, "", nullptr)});
  return sse_event(dump(body));
}

std::string sse_delta_chunk(const ResponseHeader& header, const std::string& content, const std::string& reasoning) {
  json delta = json::object();
  if (!reasoning.empty()) delta["reasoning_content"] = reasoning;
  if (!content.empty()) delta["content"] = content;
  json body = envelope(header, true);
  body["choices"] = json::array({chunk_choice(header, delta, content, nullptr)});
  return sse_event(dump(body));
}

std::string sse_finish_chunk(const ResponseHeader& header, const std::string& finish_reason) {
  json body = envelope(header, true);
  body["choices"] = json::array({chunk_choice(header, json::object(), "", finish_reason)});
  return sse_event(dump(body));
}

std::string sse_usage_chunk(const ResponseHeader& header, const Usage& usage) {
  json body = envelope(header, true);
  body["choices"] = json::array();
  body["usage"] = usage_json(usage);
  return sse_event(dump(body));
}

}  // namespace dsv4::server

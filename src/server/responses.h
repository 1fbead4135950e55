// OpenAI response bodies and SSE chunks for both endpoints. Text in them is valid UTF-8
// (the stream decoder only releases whole code points); dumps replace anything else.
#pragma once
#include <cstdint>
#include <string>

namespace dsv4::server {

enum class Endpoint { kCompletions, kChat };

// What every chunk of one response shares.
struct ResponseHeader {
  Endpoint endpoint;
  std::string id;       // cmpl-... / chatcmpl-...
  int64_t created = 0;  // unix seconds
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

std::string full_response(const ResponseHeader& header, const std::string& content, const std::string& reasoning,
                          bool reasoning_field, const std::string& finish_reason, const Usage& usage);

// "data: {...}\n\n" events.
std::string sse_role_chunk(const ResponseHeader& header);  // chat: the first delta
std::string sse_delta_chunk(const ResponseHeader& header, const std::string& content, const std::string& reasoning);
std::string sse_finish_chunk(const ResponseHeader& header, const std::string& finish_reason);
std::string sse_usage_chunk(const ResponseHeader& header, const Usage& usage);
std::string sse_event(const std::string& json_text);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace dsv4::server

// Loopback HTTP helpers for the server tests: requests with httplib's client, an SSE
// parser that checks the OpenAI streaming rules while it collects the text, and a raw
// socket client that walks away in the middle of a stream.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

namespace dsv4::test {

struct HttpReply {
  int status = 0;  // 0: no reply (connection error)
  std::string body;
  std::string content_type;
};

inline HttpReply http_request(int port, const std::string& method, const std::string& path, const std::string& body = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  client.set_write_timeout(60, 0);
  httplib::Result result = method == "GET" ? client.Get(path.c_str()) : client.Post(path.c_str(), body, "application/json");
  if (!result) return {0, "connection error: " + httplib::to_string(result.error()), ""};
  return {result->status, result->body, result->get_header_value("Content-Type")};
}

// What a completion produced, whichever way it was delivered.
struct Outcome {
  std::string text, reasoning, finish_reason;
  int64_t prompt_tokens = -1, completion_tokens = -1;
  bool operator==(const Outcome&) const = default;
};

inline std::ostream& operator<<(std::ostream& out, const Outcome& o) {
  return out << "{text='" << o.text << "', reasoning='" << o.reasoning << "', finish=" << o.finish_reason
             << ", prompt_tokens=" << o.prompt_tokens << ", completion_tokens=" << o.completion_tokens << "}";
}

// Checks a non-streamed body's shape; `chat` selects chat.completion vs text_completion.
inline Outcome parse_full(const std::string& body, bool chat) {
  Outcome o;
  const auto json = nlohmann::json::parse(body);
  EXPECT_EQ(json.at("object"), chat ? "chat.completion" : "text_completion") << body;
  EXPECT_EQ(json.at("id").get<std::string>().rfind(chat ? "chatcmpl-" : "cmpl-", 0), 0u) << body;
  EXPECT_TRUE(json.at("created").is_number_integer());
  const auto& choice = json.at("choices").at(0);
  o.text = chat ? choice.at("message").at("content").get<std::string>() : choice.at("text").get<std::string>();
  if (chat) {
    EXPECT_EQ(choice.at("message").at("role"), "assistant");
    o.reasoning = choice.at("message").value("reasoning_content", std::string());
  }
  o.finish_reason = choice.at("finish_reason").get<std::string>();
  const auto& usage = json.at("usage");
  o.prompt_tokens = usage.at("prompt_tokens");
  o.completion_tokens = usage.at("completion_tokens");
  EXPECT_EQ(usage.at("total_tokens").get<int64_t>(), o.prompt_tokens + o.completion_tokens);
  return o;
}

// Checks the SSE rules: every event is "data: ...", the same id/created/model in every
// chunk, chat starts with the assistant role, finish_reason only in the last choice
// chunk, an optional usage chunk with no choices, then [DONE] and nothing after.
inline Outcome parse_stream(const std::string& body, bool chat, bool expect_usage) {
  Outcome o;
  std::vector<std::string> events;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      ADD_FAILURE() << "unterminated SSE event: " << body.substr(pos);
      break;
    }
    std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event.rfind(":", 0) == 0) continue;  // comment (keep-alive)
    if (event.rfind("data: ", 0) != 0) {
      ADD_FAILURE() << "SSE event without 'data: ': " << event;
      continue;
    }
    events.push_back(event.substr(6));
  }
  if (events.empty() || events.back() != "[DONE]") {
    ADD_FAILURE() << "stream does not end with data: [DONE]:\n" << body;
    return o;
  }
  events.pop_back();
  nlohmann::json first;
  bool finished = false, saw_usage = false;
  for (size_t i = 0; i < events.size(); ++i) {
    const auto chunk = nlohmann::json::parse(events[i]);
    if (chunk.contains("error")) {
      ADD_FAILURE() << "error event: " << events[i];
      continue;
    }
    if (i == 0) first = chunk;
    EXPECT_EQ(chunk.at("object"), chat ? "chat.completion.chunk" : "text_completion") << events[i];
    EXPECT_EQ(chunk.at("id"), first.at("id"));
    EXPECT_EQ(chunk.at("created"), first.at("created"));
    EXPECT_EQ(chunk.at("model"), first.at("model"));
    if (chunk.at("choices").empty()) {
      EXPECT_TRUE(finished) << "usage chunk before the finish chunk";
      EXPECT_EQ(i + 1, events.size()) << "usage chunk is not the last before [DONE]";
      saw_usage = true;
      o.prompt_tokens = chunk.at("usage").at("prompt_tokens");
      o.completion_tokens = chunk.at("usage").at("completion_tokens");
      continue;
    }
    EXPECT_FALSE(finished) << "choice chunk after the finish_reason chunk: " << events[i];
    const auto& choice = chunk.at("choices").at(0);
    if (chat) {
      const auto& delta = choice.at("delta");
      if (i == 0) {
        EXPECT_EQ(delta.value("role", std::string()), "assistant") << "first chat chunk must carry the role";
      }
      o.text += delta.value("content", std::string());
      o.reasoning += delta.value("reasoning_content", std::string());
    } else {
      o.text += choice.at("text").get<std::string>();
    }
    if (!choice.at("finish_reason").is_null()) {
      finished = true;
      o.finish_reason = choice.at("finish_reason").get<std::string>();
    }
  }
  EXPECT_TRUE(finished) << "no chunk with a finish_reason";
  EXPECT_EQ(saw_usage, expect_usage);
  return o;
}

// Sends a streaming request over a raw socket, reads until the first "data:" arrives,
// then closes the connection: a client that disconnects mid-stream.
inline bool start_stream_and_disconnect(int port, const std::string& path, const std::string& body) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return false;
  }
  const std::string request = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string received;
  char buffer[4096];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (received.find("data: ") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    received.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return received.find("data: ") != std::string::npos;
}

// Polls `condition` until it holds or `seconds` pass.
template <typename Condition>
bool eventually(Condition condition, double seconds = 10.0) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

// The value of a metric line "name{labels} value" ( -1 when absent).
inline double metric_value(const std::string& metrics, const std::string& name_and_labels) {
  const size_t at = metrics.find("\n" + name_and_labels + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + name_and_labels.size() + 2));
}

}  // namespace dsv4::test

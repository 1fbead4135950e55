#include "api.h"

#include <cmath>

#include <nlohmann/json.hpp>

namespace dsv4::server {

using nlohmann::json;

ApiError invalid_request(const std::string& message, const std::string& param, const std::string& code) {
  return ApiError(400, message, "invalid_request_error", param, code);
}

std::string error_json(const ApiError& error) {
  json body = {{"error",
                {{"message", error.what()},
                 {"type", error.type},
                 {"param", error.param.empty() ? json(nullptr) : json(error.param)},
                 {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

const char* type_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::string: return "string";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    case json::value_t::number_float: return "number";
    default: return "integer";
  }
}

ApiError wrong_type(const std::string& param, const char* expected, const json& value) {
  return invalid_request("'" + param + "' must be " + expected + ", got " + type_name(value), param, "invalid_type");
}

json parse_object(const std::string& body) {
  json root;
  try {
    root = json::parse(body);
  } catch (const json::parse_error& error) {
    throw invalid_request(std::string("request body is not valid JSON: ") + error.what(), "", "invalid_json");
  }
  if (!root.is_object()) throw invalid_request("request body must be a JSON object", "", "invalid_json");
  return root;
}

// Present and not null.
const json* field(const json& root, const char* key) {
  const auto it = root.find(key);
  return it == root.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& value, const std::string& param) {
  if (!value.is_number()) throw wrong_type(param, "a number", value);
  const double x = value.get<double>();
  if (!std::isfinite(x)) throw invalid_request("'" + param + "' must be finite", param);
  return x;
}

int64_t integer(const json& value, const std::string& param) {
  if (value.is_number_float()) {
    const double x = value.get<double>();
    if (x != std::floor(x) || std::abs(x) > 9.0e15) throw wrong_type(param, "an integer", value);
    return static_cast<int64_t>(x);
  }
  if (!value.is_number_integer()) throw wrong_type(param, "an integer", value);
  if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    throw invalid_request("'" + param + "' is too large", param);
  }
  return value.get<int64_t>();
}

bool boolean(const json& value, const std::string& param) {
  if (!value.is_boolean()) throw wrong_type(param, "a boolean", value);
  return value.get<bool>();
}

std::string string(const json& value, const std::string& param) {
  if (!value.is_string()) throw wrong_type(param, "a string", value);
  return value.get<std::string>();
}

GenerationParams parse_params(const json& root) {
  GenerationParams p;
  if (const json* v = field(root, "model")) p.model = string(*v, "model");
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (const json* v = field(root, key)) {
      const int64_t n = integer(*v, key);
      if (n < 0) throw invalid_request(std::string("'") + key + "' must be >= 0, got " + std::to_string(n), key);
      p.max_tokens = n;
    }
  }
  if (const json* v = field(root, "temperature")) {
    p.temperature = static_cast<float>(number(*v, "temperature"));
    if (p.temperature < 0 || p.temperature > 2) throw invalid_request("'temperature' must be in [0, 2]", "temperature");
  }
  if (const json* v = field(root, "top_p")) {
    p.top_p = static_cast<float>(number(*v, "top_p"));
    if (!(p.top_p > 0 && p.top_p <= 1)) throw invalid_request("'top_p' must be in (0, 1]", "top_p");
  }
  if (const json* v = field(root, "top_k")) {
    const int64_t k = integer(*v, "top_k");
    if (k < -1 || k > INT32_MAX) throw invalid_request("'top_k' must be -1, 0 (off) or a positive integer", "top_k");
    p.top_k = k < 0 ? 0 : static_cast<int>(k);
  }
  if (const json* v = field(root, "seed")) p.seed = static_cast<uint64_t>(integer(*v, "seed"));
  if (const json* v = field(root, "stop")) {
    if (v->is_string()) {
      p.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& item : *v) p.stop.push_back(string(item, "stop"));
    } else {
      throw wrong_type("stop", "a string or an array of strings", *v);
    }
    if (p.stop.size() > 4) throw invalid_request("'stop' holds at most 4 sequences", "stop");
    for (const std::string& s : p.stop) {
      if (s.empty()) throw invalid_request("'stop' sequences must not be empty", "stop");
    }
  }
  if (const json* v = field(root, "stream")) p.stream = boolean(*v, "stream");
  if (const json* v = field(root, "stream_options")) {
    if (!v->is_object()) throw wrong_type("stream_options", "an object", *v);
    if (const json* u = field(*v, "include_usage")) p.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (const json* v = field(root, "ignore_eos")) p.ignore_eos = boolean(*v, "ignore_eos");
  if (const json* v = field(root, "n"); v && integer(*v, "n") != 1) throw invalid_request("only n = 1 is supported", "n");
  if (const json* v = field(root, "best_of"); v && integer(*v, "best_of") != 1) {
    throw invalid_request("only best_of = 1 is supported", "best_of");
  }
  for (const char* key : {"logprobs", "top_logprobs", "tools", "functions", "response_format"}) {
    const json* v = field(root, key);
    if (v && !(v->is_boolean() && !v->get<bool>())) {
      throw invalid_request(std::string("'") + key + "' is not supported by this server", key, "unsupported_parameter");
    }
  }
  return p;
}

std::string message_content(const json& message, size_t index) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  const json* content = field(message, "content");
  if (!content) return {};
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) throw wrong_type(param, "a string or an array of text parts", *content);
  std::string text;
  for (const json& part : *content) {
    if (!part.is_object() || part.value("type", std::string()) != "text" || !part.contains("text")) {
      throw invalid_request(param + ": only {\"type\": \"text\", \"text\": ...} parts are supported", param);
    }
    text += string(part.at("text"), param + ".text");
  }
  return text;
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body) {
  const json root = parse_object(body);
  CompletionRequest request;
  request.params = parse_params(root);
  const json* prompt = field(root, "prompt");
  if (!prompt) throw invalid_request("'prompt' is required", "prompt", "missing_required_parameter");
  if (prompt->is_string()) {
    request.prompt = prompt->get<std::string>();
  } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    request.prompt = (*prompt)[0].get<std::string>();
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
    request.prompt_is_ids = true;
    for (const json& id : *prompt) {
      const int64_t value = integer(id, "prompt");
      if (value < 0 || value > INT32_MAX) throw invalid_request("'prompt' token ids must be non-negative", "prompt");
      request.prompt_ids.push_back(static_cast<int32_t>(value));
    }
  } else {
    throw invalid_request("'prompt' must be a string, a one-string array or an array of token ids", "prompt",
                          "invalid_type");
  }
  if (const json* v = field(root, "echo"); v && boolean(*v, "echo")) {
    throw invalid_request("'echo' is not supported", "echo", "unsupported_parameter");
  }
  return request;
}

ChatRequest parse_chat_request(const std::string& body) {
  const json root = parse_object(body);
  ChatRequest request;
  request.params = parse_params(root);
  const json* messages = field(root, "messages");
  if (!messages) throw invalid_request("'messages' is required", "messages", "missing_required_parameter");
  if (!messages->is_array() || messages->empty()) {
    throw invalid_request("'messages' must be a non-empty array", "messages", "invalid_type");
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw wrong_type(where, "an object", m);
    const json* role = field(m, "role");
    if (!role) throw invalid_request(where + ".role is required", where + ".role", "missing_required_parameter");
    ChatMessage message{string(*role, where + ".role"), message_content(m, i), ""};
    if (message.role != "system" && message.role != "user" && message.role != "assistant" &&
        message.role != "developer") {
      throw invalid_request(where + ".role '" + message.role + "' is not supported (system, developer, user, assistant)",
                            where + ".role");
    }
    for (const char* key : {"reasoning_content", "reasoning"}) {
      if (const json* r = field(m, key)) message.reasoning_content = string(*r, where + "." + key);
    }
    request.messages.push_back(std::move(message));
  }
  // DeepSeek / vLLM conventions for thinking mode.
  if (const json* kwargs = field(root, "chat_template_kwargs")) {
    if (!kwargs->is_object()) throw wrong_type("chat_template_kwargs", "an object", *kwargs);
    for (const char* key : {"thinking", "enable_thinking"}) {
      if (const json* v = field(*kwargs, key)) request.options.thinking = boolean(*v, std::string("chat_template_kwargs.") + key);
    }
  }
  if (const json* v = field(root, "thinking")) {  // DeepSeek API: {"type": "enabled" | "disabled"}
    if (!v->is_object()) throw wrong_type("thinking", "an object", *v);
    request.options.thinking = v->value("type", std::string()) == "enabled";
  }
  if (const json* v = field(root, "reasoning_effort")) {
    request.options.reasoning_effort = string(*v, "reasoning_effort");
    if (request.options.reasoning_effort == "low" || request.options.reasoning_effort == "medium") {
      request.options.reasoning_effort = "high";  // DeepSeek-V4 distinguishes only high and max
    }
    if (request.options.reasoning_effort != "high" && request.options.reasoning_effort != "max") {
      throw invalid_request("'reasoning_effort' must be low, medium, high or max", "reasoning_effort");
    }
  }
  return request;
}

}  // namespace dsv4::server

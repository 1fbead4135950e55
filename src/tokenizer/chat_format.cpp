// Conversation formats.
//
// DeepSeek-V4 (the layout of DeepSeek's encoding/encoding_dsv4.py, without tools):
//   <｜begin▁of▁sentence｜>[effort prompt][system text]
//   <｜User｜>{user}<｜Assistant｜></think>{answer}<｜end▁of▁sentence｜>      (chat mode)
//   <｜User｜>{user}<｜Assistant｜><think>                                   (thinking, last turn)
// In thinking mode earlier turns drop their reasoning and read like chat-mode turns;
// an assistant turn after the last user message keeps {reasoning}</think>{answer}.
// Plain (models without those tokens, like the bundled one):
//   [BOS]System: {system}\nUser: {user}\nAssistant: {answer}\n ... Assistant: 
#include "dsv4/error.h"
#include "dsv4/tokenizer.h"

namespace dsv4 {

namespace {
constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
constexpr const char* kEos = "<｜end▁of▁sentence｜>";
constexpr const char* kUser = "<｜User｜>";
constexpr const char* kAssistant = "<｜Assistant｜>";
constexpr const char* kThinkStart = "<think>";
constexpr const char* kThinkEnd = "</think>";
// DeepSeek's prompt for reasoning_effort "max" in thinking mode, before the first message.
constexpr const char* kEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

bool is_user_role(const std::string& role) { return role == "user" || role == "developer"; }

void check_role(const std::string& role) {
  if (role != "system" && role != "user" && role != "developer" && role != "assistant") {
    fail("unsupported message role '{}' (expected system, user, developer or assistant)", role);
  }
}
}  // namespace

ChatFormat::ChatFormat(const Tokenizer& tokenizer, int32_t bos_id, int32_t eos_id)
    : tokenizer_(tokenizer), style_(ChatStyle::kPlain), bos_(bos_id), eos_(eos_id) {
  const auto bos = tokenizer.token_to_id(kBos), eos = tokenizer.token_to_id(kEos);
  const auto user = tokenizer.token_to_id(kUser), assistant = tokenizer.token_to_id(kAssistant);
  const auto think_start = tokenizer.token_to_id(kThinkStart), think_end = tokenizer.token_to_id(kThinkEnd);
  if (bos && eos && user && assistant && think_start && think_end) {
    style_ = ChatStyle::kDeepSeekV4;
    bos_ = *bos;
    eos_ = *eos;
    think_end_ = *think_end;
  }
}

std::vector<ChatFormat::Segment> ChatFormat::segments(std::span<const ChatMessage> messages,
                                                      const ChatOptions& options) const {
  if (messages.empty()) fail("messages must not be empty");
  for (const ChatMessage& message : messages) check_role(message.role);
  if (!options.reasoning_effort.empty() && options.reasoning_effort != "high" && options.reasoning_effort != "max") {
    fail("reasoning_effort must be 'high' or 'max', got '{}'", options.reasoning_effort);
  }
  std::vector<Segment> out;
  auto special = [&](const char* token) { out.push_back({*tokenizer_.token_to_id(token), {}}); };
  auto text = [&](const std::string& value) {
    if (value.empty()) return;
    if (!out.empty() && out.back().id < 0) {
      out.back().text += value;  // adjacent text is one piece, as in the rendered string
    } else {
      out.push_back({-1, value});
    }
  };
  const size_t n = messages.size();
  const bool continue_last = options.continue_final_message && messages.back().role == "assistant";

  if (style_ == ChatStyle::kPlain) {
    if (bos_ >= 0) out.push_back({bos_, {}});
    for (size_t i = 0; i < n; ++i) {
      const ChatMessage& m = messages[i];
      const char* label = m.role == "system" ? "System: " : m.role == "assistant" ? "Assistant: " : "User: ";
      text(label + m.content + (i + 1 == n && continue_last ? "" : "\n"));
    }
    if (!continue_last) text("Assistant: ");
    return out;
  }

  size_t last_user = n;  // n: none
  for (size_t i = 0; i < n; ++i) {
    if (is_user_role(messages[i].role)) last_user = i;
  }
  special(kBos);
  if (options.thinking && options.reasoning_effort == "max") text(kEffortMax);
  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      text(m.content);
    } else if (is_user_role(m.role)) {
      special(kUser);
      text(m.content);
      const bool next_is_assistant = i + 1 < n && messages[i + 1].role == "assistant";
      if (i + 1 == n || next_is_assistant) {
        special(kAssistant);
        // Thinking opens only for the turn being answered; history turns read as chat turns.
        special(options.thinking && last_user != n && i >= last_user ? kThinkStart : kThinkEnd);
      }
    } else {  // assistant
      if (options.thinking && (last_user == n || i > last_user)) {
        text(m.reasoning_content);
        special(kThinkEnd);
      }
      text(m.content);
      if (!(i + 1 == n && continue_last)) special(kEos);
    }
  }
  return out;
}

std::vector<int32_t> ChatFormat::encode(std::span<const ChatMessage> messages, const ChatOptions& options) const {
  std::vector<int32_t> ids;
  for (const Segment& segment : segments(messages, options)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else {
      const std::vector<int32_t> piece = tokenizer_.encode(segment.text, false, /*parse_special=*/false);
      ids.insert(ids.end(), piece.begin(), piece.end());
    }
  }
  return ids;
}

std::string ChatFormat::render(std::span<const ChatMessage> messages, const ChatOptions& options) const {
  std::string out;
  for (const Segment& segment : segments(messages, options)) {
    out += segment.id >= 0 ? tokenizer_.id_to_token(segment.id).value_or("<special>") : segment.text;
  }
  return out;
}

std::vector<int32_t> ChatFormat::stop_ids() const {
  if (eos_ >= 0) return {eos_};
  return {};
}

std::vector<std::string> ChatFormat::stop_strings() const {
  if (style_ == ChatStyle::kPlain) return {"\nUser:"};
  return {};
}

}  // namespace dsv4

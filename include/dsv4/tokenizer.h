// Text <-> token ids for the checkpoints dsv4 runs: Hugging Face `tokenizer.json`
// byte-level BPE (what DeepSeek ships) read data-driven (normalizer, pre-tokenizer
// Split regexes, merges, added and special tokens, byte fallback, post-processor,
// decoder), and the bundled model's byte vocabulary (`byte_tokenizer.json`).
// Ids and decoded text equal the Python `tokenizers` library's (tests/tokenizer).
//
// Chat formatting: the DeepSeek-V4 conversation format (thinking and non-thinking)
// when the tokenizer has its special tokens, else a plain documented format
// (docs/SERVER.md).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

class Tokenizer {
 public:
  // Reads a tokenizer.json, or a byte_tokenizer.json ({"type": "bytes", ...}).
  static std::unique_ptr<Tokenizer> from_file(const std::filesystem::path& path);
  // The model directory's tokenizer.json, else its byte_tokenizer.json; nullptr if neither.
  static std::unique_ptr<Tokenizer> from_model_dir(const std::filesystem::path& dir);
  ~Tokenizer();

  // `text` may hold invalid UTF-8: each invalid maximal subpart is encoded as U+FFFD.
  // add_special_tokens: apply the post-processor (e.g. prepend BOS).
  // parse_special: match special-token text in `text` as the special token; off, such
  // text is plain text (added tokens that are not special are always matched).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false,
                              bool parse_special = false) const;
  // Ids outside the vocabulary are skipped, as `tokenizers` does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // A <0xXX> byte token under a ByteFallback decoder: its text depends on the byte tokens
  // around it (an invalid run decodes to one U+FFFD per byte), so streams hold it back.
  bool is_fallback_byte(int32_t id) const;
  // One past the largest id.
  int32_t vocab_size() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Incremental decoding for streaming: push ids one at a time and get the text they
// complete. Text is released only when it does not end in U+FFFD (a code point cut
// across tokens is held back until its last byte arrives); the concatenation of all
// pieces plus finish() equals Tokenizer::decode of all the ids. (The algorithm of
// `tokenizers`' DecodeStream: decode a small window and emit the new suffix.)
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string push(int32_t id);
  // Whatever is held back (cut-off sequences become U+FFFD).
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> window_;  // ids from prefix_start_ on
  size_t read_index_ = 0;        // window_[0, read_index_) decoded to prefix_
  std::string prefix_;
};

// ---------------------------------------------------------------------------- chat

struct ChatMessage {
  std::string role;               // system, user, assistant (developer is treated as user)
  std::string content;
  std::string reasoning_content;  // assistant turns in thinking mode
};

struct ChatOptions {
  bool thinking = false;          // DeepSeek-V4 thinking mode: the reply starts after <think>
  std::string reasoning_effort;   // "", "high" or "max" ("max" adds DeepSeek's effort prompt)
  // When the last message is the assistant's: true continues that message (no end of
  // turn after it); false closes it.
  bool continue_final_message = true;
};

enum class ChatStyle {
  kDeepSeekV4,  // <｜begin▁of▁sentence｜>, <｜User｜>, <｜Assistant｜>, <think>, </think>, <｜end▁of▁sentence｜>
  kPlain,       // "User: ...\n" lines, for models whose tokenizer lacks those tokens
};

class ChatFormat {
 public:
  // bos/eos: the model config's ids (the plain style uses them; -1 = none).
  ChatFormat(const Tokenizer& tokenizer, int32_t bos_id, int32_t eos_id);
  ChatStyle style() const { return style_; }
  // Message text is always plain text: special-token spellings inside it are not
  // special. Throws dsv4::Error for unknown roles.
  std::vector<int32_t> encode(std::span<const ChatMessage> messages, const ChatOptions& options) const;
  // The same conversation as text, with special tokens spelled out (for logs and docs).
  std::string render(std::span<const ChatMessage> messages, const ChatOptions& options) const;
  // Ids that end an assistant turn.
  std::vector<int32_t> stop_ids() const;
  // Text that ends an assistant turn (the plain style's next "User:" line).
  std::vector<std::string> stop_strings() const;
  // The </think> id in kDeepSeekV4 style (splits reasoning from the answer), else -1.
  int32_t think_end_id() const { return think_end_; }

 private:
  struct Segment {
    int32_t id;        // >= 0: one special token; else `text`, encoded as plain text
    std::string text;
  };
  std::vector<Segment> segments(std::span<const ChatMessage> messages, const ChatOptions& options) const;

  const Tokenizer& tokenizer_;
  ChatStyle style_;
  int32_t bos_ = -1, eos_ = -1, think_end_ = -1;
};

}  // namespace dsv4

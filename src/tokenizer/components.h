// The pipeline stages of a tokenizer.json, each built from its JSON object. Only the
// kinds byte-level BPE checkpoints use are implemented; any other kind fails at load
// time with its name, never silently.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4::tokenizer {

// NormalizedString without offsets: the text is all the engine needs.
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& json);  // null json -> nullptr

// Splits each piece further (a PreTokenizedString is a list of pieces).
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<std::string>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& json);

// The vocabulary model: one pre-tokenized piece -> ids.
class Model {
 public:
  virtual ~Model() = default;
  virtual void tokenize(std::string_view piece, std::vector<int32_t>& ids) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;  // one past the largest id
};
std::unique_ptr<Model> make_bpe_model(const nlohmann::json& json);

// decode_chain of `tokenizers`: token strings -> text pieces, joined by the caller.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& json);  // null json -> nullptr
// The bundled byte model's decoder: token strings are raw bytes, lossy UTF-8 at the end.
std::unique_ptr<Decoder> make_raw_bytes_decoder();

// Post-processor for one sequence (add_special_tokens=True).
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual std::vector<int32_t> process(std::vector<int32_t> ids) const = 0;
};
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& json);
std::unique_ptr<PostProcessor> make_prepend_processor(int32_t id);

// Field helpers that name the field in their errors.
std::string json_string(const nlohmann::json& object, const char* key, const char* where);
bool json_bool(const nlohmann::json& object, const char* key, bool fallback);
// Replaces every occurrence of `from` (non-empty) in `text` with `to`, left to right.
void replace_all(std::string& text, const std::string& from, const std::string& to);

}  // namespace dsv4::tokenizer

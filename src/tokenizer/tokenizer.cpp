// Tokenizer: loads the pipeline from tokenizer.json (or the bundled byte vocabulary)
// and runs it the way `tokenizers` does:
//   text -> split at non-normalized added tokens -> normalize each remaining piece ->
//   split at normalized added tokens -> pre-tokenize -> BPE -> (post-process).
#include <fstream>
#include <unordered_map>
#include <unordered_set>

#include "added_tokens.h"
#include "components.h"
#include "dsv4/error.h"
#include "dsv4/tokenizer.h"
#include "utf8.h"

namespace dsv4 {

using namespace tokenizer;

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Model> model;
  std::unique_ptr<Decoder> decoder;
  std::unique_ptr<PostProcessor> post_processor;
  AddedTokenMatcher raw_matcher;         // tokens with normalized=false, matched on the input
  AddedTokenMatcher normalized_matcher;  // normalized=true, matched after normalization
  std::unordered_map<int32_t, std::string> added_content;  // id -> content as written
  std::unordered_map<std::string, int32_t> added_ids;
  std::unordered_set<int32_t> special_ids;
  std::unordered_set<int32_t> fallback_byte_ids;  // <0xXX> tokens when the decoder has ByteFallback
  int32_t vocab_size = 0;

  void add_token(AddedToken token) {
    added_content[token.id] = token.content;
    added_ids[token.content] = token.id;
    if (token.special) special_ids.insert(token.id);
    vocab_size = std::max(vocab_size, token.id + 1);
    if (token.normalized && normalizer) normalizer->normalize(token.content);
    (token.normalized ? normalized_matcher : raw_matcher).add(std::move(token));
  }
};

namespace {

// The bundled model's vocabulary: id = byte_offset + byte; ids below the offset are
// control tokens (BOS, EOS) with no spelling in text.
class ByteVocabModel final : public Model {
 public:
  explicit ByteVocabModel(int32_t offset) : offset_(offset) {}
  void tokenize(std::string_view piece, std::vector<int32_t>& ids) const override {
    for (unsigned char byte : piece) ids.push_back(offset_ + byte);
  }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    if (token.size() != 1) return std::nullopt;
    return offset_ + static_cast<unsigned char>(token[0]);
  }
  std::optional<std::string> id_to_token(int32_t id) const override {
    if (id < offset_ || id >= offset_ + 256) return std::nullopt;
    return std::string(1, static_cast<char>(id - offset_));
  }
  int32_t vocab_size() const override { return offset_ + 256; }

 private:
  int32_t offset_;
};

std::unique_ptr<Tokenizer::Impl> load_byte_vocabulary(const nlohmann::json& json, const std::string& where) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  const auto offset = json.at("byte_offset").get<int32_t>();
  const auto bos = json.value("bos_token_id", -1), eos = json.value("eos_token_id", -1);
  if (offset < 0 || bos >= offset || eos >= offset) {
    fail("{}: byte vocabulary needs bos/eos ids below byte_offset {}", where, offset);
  }
  impl->model = std::make_unique<ByteVocabModel>(offset);
  impl->decoder = make_raw_bytes_decoder();
  impl->vocab_size = offset + 256;
  for (int32_t id = 0; id < offset; ++id) {
    const std::string name = id == bos ? "<bos>" : id == eos ? "<eos>" : "<special_" + std::to_string(id) + ">";
    impl->add_token({id, name, /*special=*/true, false, false, false, false});
  }
  if (bos >= 0) impl->post_processor = make_prepend_processor(bos);
  return impl;
}

std::unique_ptr<Tokenizer::Impl> load_tokenizer_json(const nlohmann::json& json) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  impl->normalizer = make_normalizer(json.value("normalizer", nlohmann::json()));
  impl->pre_tokenizer = make_pre_tokenizer(json.value("pre_tokenizer", nlohmann::json()));
  impl->model = make_bpe_model(json.at("model"));
  impl->decoder = make_decoder(json.value("decoder", nlohmann::json()));
  impl->post_processor = make_post_processor(json.value("post_processor", nlohmann::json()));
  impl->vocab_size = impl->model->vocab_size();
  if (json.value("decoder", nlohmann::json()).dump().find("\"ByteFallback\"") != std::string::npos) {
    for (int byte = 0; byte < 256; ++byte) {
      if (const auto id = impl->model->token_to_id(fmt::format("<0x{:02X}>", byte))) impl->fallback_byte_ids.insert(*id);
    }
  }
  for (const auto& item : json.value("added_tokens", nlohmann::json::array())) {
    AddedToken token;
    token.id = item.at("id").get<int32_t>();
    token.content = item.at("content").get<std::string>();
    token.special = item.value("special", false);
    token.normalized = item.value("normalized", !token.special);
    token.lstrip = item.value("lstrip", false);
    token.rstrip = item.value("rstrip", false);
    token.single_word = item.value("single_word", false);
    impl->add_token(std::move(token));
  }
  return impl;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open tokenizer file '{}'", path.string());
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
    if (json.value("type", std::string()) == "bytes") {
      return std::unique_ptr<Tokenizer>(new Tokenizer(load_byte_vocabulary(json, path.string())));
    }
    return std::unique_ptr<Tokenizer>(new Tokenizer(load_tokenizer_json(json)));
  } catch (const Error& error) {
    fail("{}: {}", path.string(), error.what());
  } catch (const std::exception& error) {
    fail("{}: invalid tokenizer description: {}", path.string(), error.what());
  }
}

std::unique_ptr<Tokenizer> Tokenizer::from_model_dir(const std::filesystem::path& dir) {
  for (const char* name : {"tokenizer.json", "byte_tokenizer.json"}) {
    if (std::filesystem::exists(dir / name)) return from_file(dir / name);
  }
  return nullptr;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens, bool parse_special) const {
  const std::string clean = utf8::is_valid(text) ? std::string(text) : utf8::sanitize(text);
  std::vector<int32_t> ids;
  for (TextSplit& outer : impl_->raw_matcher.split(clean, parse_special)) {
    if (outer.id >= 0) {
      ids.push_back(outer.id);
      continue;
    }
    if (impl_->normalizer) impl_->normalizer->normalize(outer.text);
    for (TextSplit& inner : impl_->normalized_matcher.split(outer.text, parse_special)) {
      if (inner.id >= 0) {
        ids.push_back(inner.id);
        continue;
      }
      if (inner.text.empty()) continue;
      std::vector<std::string> pieces = {std::move(inner.text)};
      if (impl_->pre_tokenizer) impl_->pre_tokenizer->pre_tokenize(pieces);
      for (const std::string& piece : pieces) impl_->model->tokenize(piece, ids);
    }
  }
  if (add_special_tokens && impl_->post_processor) ids = impl_->post_processor->process(std::move(ids));
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (const auto added = impl_->added_content.find(id); added != impl_->added_content.end()) {
      if (!(skip_special_tokens && impl_->special_ids.count(id))) tokens.push_back(added->second);
    } else if (auto token = impl_->model->id_to_token(id)) {
      tokens.push_back(std::move(*token));
    }
  }
  if (!impl_->decoder) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  std::string text;
  for (const std::string& piece : impl_->decoder->decode_chain(std::move(tokens))) text += piece;
  return text;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_ids.find(std::string(token)); it != impl_->added_ids.end()) return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const auto it = impl_->added_content.find(id); it != impl_->added_content.end()) return it->second;
  return impl_->model->id_to_token(id);
}

bool Tokenizer::is_special(int32_t id) const { return impl_->special_ids.count(id) != 0; }

bool Tokenizer::is_fallback_byte(int32_t id) const { return impl_->fallback_byte_ids.count(id) != 0; }

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

// ---------------------------------------------------------------------------- streaming

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::push(int32_t id) {
  window_.push_back(id);
  if (tokenizer_.is_fallback_byte(id)) return {};  // the byte run may go on
  std::string text = tokenizer_.decode(window_, skip_special_);
  const bool ends_replaced = text.size() >= 3 && text.compare(text.size() - 3, 3, utf8::kReplacement) == 0;
  if (text.size() <= prefix_.size() || ends_replaced) return {};
  if (text.compare(0, prefix_.size(), prefix_) != 0) {
    // A decoder that rewrites earlier text (never byte-level): emit from the first change.
    size_t common = 0;
    while (common < prefix_.size() && text[common] == prefix_[common]) ++common;
    prefix_.resize(common);
  }
  std::string fresh = text.substr(prefix_.size());
  // Keep only the ids after read_index_ plus the ones just decoded as the next prefix,
  // so each push decodes a short window (as DecodeStream's prefix/read indices).
  window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(read_index_));
  read_index_ = window_.size();
  prefix_ = tokenizer_.decode(window_, skip_special_);
  return fresh;
}

std::string StreamDecoder::finish() {
  std::string text = tokenizer_.decode(window_, skip_special_);
  std::string rest = text.size() > prefix_.size() ? text.substr(prefix_.size()) : std::string();
  window_.clear();
  read_index_ = 0;
  prefix_.clear();
  return rest;
}

}  // namespace dsv4

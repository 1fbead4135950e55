// Normalizers: Sequence, Prepend, Replace (string or regex), Strip. Unicode
// normalization forms and case folding need tables the engine does not carry: they fail
// at load time instead of encoding differently from `tokenizers`.
#include "components.h"
#include "dsv4/error.h"
#include "unicode_regex.h"
#include "utf8.h"

namespace dsv4::tokenizer {

std::string json_string(const nlohmann::json& object, const char* key, const char* where) {
  if (!object.is_object() || !object.contains(key) || !object.at(key).is_string()) {
    fail("tokenizer.json: {} needs a string field '{}'", where, key);
  }
  return object.at(key).get<std::string>();
}

bool json_bool(const nlohmann::json& object, const char* key, bool fallback) {
  if (!object.is_object() || !object.contains(key) || object.at(key).is_null()) return fallback;
  return object.at(key).get<bool>();
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t hit = text.find(from); hit != std::string::npos; hit = text.find(from, pos)) {
    out.append(text, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(text, pos);
  text = std::move(out);
}

namespace {

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(const nlohmann::json& json) : prefix_(json_string(json, "prepend", "Prepend normalizer")) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  explicit ReplaceNormalizer(const nlohmann::json& json) : content_(json_string(json, "content", "Replace normalizer")) {
    const nlohmann::json& pattern = json.at("pattern");
    if (pattern.contains("Regex")) {
      regex_ = std::make_unique<Regex>(pattern.at("Regex").get<std::string>());
    } else {
      literal_ = json_string(pattern, "String", "Replace pattern");
    }
  }
  void normalize(std::string& text) const override {
    if (!regex_) return replace_all(text, literal_, content_);
    std::string out;
    size_t pos = 0;
    for (const auto& [begin, end] : regex_->find_all(text)) {
      out.append(text, pos, begin - pos);
      out += content_;
      pos = end;
    }
    out.append(text, pos);
    text = std::move(out);
  }

 private:
  std::string content_, literal_;
  std::unique_ptr<Regex> regex_;
};

class StripNormalizer final : public Normalizer {
 public:
  explicit StripNormalizer(const nlohmann::json& json)
      : left_(json_bool(json, "strip_left", true)), right_(json_bool(json, "strip_right", true)) {}
  void normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t pos = begin;
        if (!utf8::is_whitespace(utf8::next(text, pos))) break;
        begin = pos;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
        size_t pos = start;
        if (!utf8::is_whitespace(utf8::next(text, pos))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(const nlohmann::json& json) {
    for (const auto& item : json.at("normalizers")) steps_.push_back(make_normalizer(item));
  }
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) {
      if (step) step->normalize(text);
    }
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& json) {
  if (json.is_null()) return nullptr;
  const std::string type = json_string(json, "type", "normalizer");
  if (type == "Sequence") return std::make_unique<SequenceNormalizer>(json);
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(json);
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(json);
  if (type == "Strip") return std::make_unique<StripNormalizer>(json);
  fail("tokenizer.json: normalizer type '{}' is not supported (supported: Sequence, Prepend, Replace, Strip)", type);
}

}  // namespace dsv4::tokenizer

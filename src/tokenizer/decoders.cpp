// Decoders, with the decode_chain semantics of `tokenizers`: ByteLevel (a token whose
// characters are all in the byte alphabet becomes those bytes, any other token its own
// UTF-8; lossy UTF-8 over the whole), ByteFallback (<0xXX> runs; an invalid run gives
// one U+FFFD per byte), Replace, Fuse, Strip, Sequence.
#include "components.h"
#include "dsv4/error.h"
#include "utf8.h"

namespace dsv4::tokenizer {

namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      std::string mapped;
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size();) {
        const int byte = utf8::valid_sequence_length(token, pos) ? utf8::char_to_byte(utf8::next(token, pos)) : -1;
        if (byte < 0) {
          all_mapped = false;
          break;
        }
        mapped.push_back(static_cast<char>(byte));
      }
      bytes += all_mapped ? mapped : token;
    }
    return {utf8::sanitize(bytes)};
  }
};

class RawBytesDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) bytes += token;
    return {utf8::sanitize(bytes)};
  }
};

class ByteFallbackDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (utf8::is_valid(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(utf8::kReplacement);
      }
      run.clear();
    };
    for (std::string& token : tokens) {
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' && std::isxdigit(static_cast<unsigned char>(token[3])) &&
          std::isxdigit(static_cast<unsigned char>(token[4]))) {
        run.push_back(static_cast<char>(std::stoi(token.substr(3, 2), nullptr, 16)));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    return out;
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  explicit ReplaceDecoder(const nlohmann::json& json)
      : from_(json_string(json.at("pattern"), "String", "Replace decoder pattern")),
        to_(json_string(json, "content", "Replace decoder")) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) replace_all(token, from_, to_);
    return tokens;
  }

 private:
  std::string from_, to_;
};

class FuseDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string all;
    for (const std::string& token : tokens) all += token;
    return {all};
  }
};

// Strips up to `start` leading and `stop` trailing copies of one character per token.
class StripDecoder final : public Decoder {
 public:
  explicit StripDecoder(const nlohmann::json& json)
      : content_(json_string(json, "content", "Strip decoder")),
        start_(json.value("start", 0)),
        stop_(json.value("stop", 0)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) {
      for (int i = 0; i < start_ && token.compare(0, content_.size(), content_) == 0 && !token.empty(); ++i) {
        token.erase(0, content_.size());
      }
      for (int i = 0; i < stop_ && token.size() >= content_.size() &&
                      token.compare(token.size() - content_.size(), content_.size(), content_) == 0 && !token.empty();
           ++i) {
        token.erase(token.size() - content_.size());
      }
    }
    return tokens;
  }

 private:
  std::string content_;
  int start_, stop_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(const nlohmann::json& json) {
    for (const auto& item : json.at("decoders")) steps_.push_back(make_decoder(item));
  }
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& step : steps_) {
      if (step) tokens = step->decode_chain(std::move(tokens));
    }
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& json) {
  if (json.is_null()) return nullptr;
  const std::string type = json_string(json, "type", "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(json);
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") return std::make_unique<StripDecoder>(json);
  if (type == "Sequence") return std::make_unique<SequenceDecoder>(json);
  fail("tokenizer.json: decoder type '{}' is not supported (supported: ByteLevel, ByteFallback, Replace, Fuse, "
       "Strip, Sequence)", type);
}

std::unique_ptr<Decoder> make_raw_bytes_decoder() { return std::make_unique<RawBytesDecoder>(); }

}  // namespace dsv4::tokenizer

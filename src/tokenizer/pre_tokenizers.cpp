// Pre-tokenizers: Sequence, Split (regex or string; all five behaviors and invert),
// ByteLevel (optional GPT-2 regex, prefix space, byte -> character mapping), Digits.
#include <functional>
#include <utility>

#include "components.h"
#include "dsv4/error.h"
#include "unicode_regex.h"
#include "utf8.h"

namespace dsv4::tokenizer {

namespace {

using Ranges = std::vector<std::pair<std::pair<size_t, size_t>, bool>>;  // ((begin, end), is_match)

enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const std::string& name) {
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  fail("tokenizer.json: Split behavior '{}' is not one of Isolated, Removed, MergedWithPrevious, "
       "MergedWithNext, Contiguous", name);
}

// Pattern::find_matches of `tokenizers`: matches and the gaps between them, in order.
Ranges with_gaps(const std::vector<std::pair<size_t, size_t>>& matches, size_t size) {
  Ranges ranges;
  if (size == 0) return {{{0, 0}, false}};
  size_t previous = 0;
  for (const auto& [begin, end] : matches) {
    if (previous != begin) ranges.push_back({{previous, begin}, false});
    ranges.push_back({{begin, end}, true});
    previous = end;
  }
  if (previous != size) ranges.push_back({{previous, size}, false});
  return ranges;
}

// NormalizedString::split: applies the behavior; the bool of the result means "remove".
Ranges apply_behavior(Ranges matches, Behavior behavior) {
  Ranges out;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated:
      for (auto& [range, is_match] : matches) out.push_back({range, false});
      return out;
    case Behavior::kRemoved:
      return matches;
    case Behavior::kMergedWithPrevious:
      for (auto& [range, is_match] : matches) {
        if (is_match && !previous_match && !out.empty()) {
          out.back().first.second = range.second;
        } else {
          out.push_back({range, false});
        }
        previous_match = is_match;
      }
      return out;
    case Behavior::kMergedWithNext:
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->second && !previous_match && !out.empty()) {
          out.back().first.first = it->first.first;
        } else {
          out.push_back({it->first, false});
        }
        previous_match = it->second;
      }
      return Ranges(out.rbegin(), out.rend());
    case Behavior::kContiguous:
      for (auto& [range, is_match] : matches) {
        if (is_match == previous_match && !out.empty()) {
          out.back().first.second = range.second;
        } else {
          out.push_back({range, false});
        }
        previous_match = is_match;
      }
      return out;
  }
  return out;
}

void split_pieces(std::vector<std::string>& pieces, Behavior behavior, bool invert,
                  const std::function<std::vector<std::pair<size_t, size_t>>(std::string_view)>& find) {
  std::vector<std::string> result;
  for (const std::string& piece : pieces) {
    Ranges ranges = with_gaps(find(piece), piece.size());
    if (invert) {
      for (auto& range : ranges) range.second = !range.second;
    }
    for (const auto& [range, remove] : apply_behavior(std::move(ranges), behavior)) {
      if (!remove && range.second > range.first) result.push_back(piece.substr(range.first, range.second - range.first));
    }
  }
  pieces = std::move(result);
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  explicit SplitPreTokenizer(const nlohmann::json& json)
      : behavior_(parse_behavior(json_string(json, "behavior", "Split pre-tokenizer"))),
        invert_(json_bool(json, "invert", false)) {
    const nlohmann::json& pattern = json.at("pattern");
    if (pattern.contains("Regex")) {
      regex_ = std::make_unique<Regex>(pattern.at("Regex").get<std::string>());
    } else {
      literal_ = json_string(pattern, "String", "Split pattern");
    }
  }
  void pre_tokenize(std::vector<std::string>& pieces) const override {
    split_pieces(pieces, behavior_, invert_, [this](std::string_view text) {
      if (regex_) return regex_->find_all(text);
      std::vector<std::pair<size_t, size_t>> found;
      if (literal_.empty()) return found;
      for (size_t pos = text.find(literal_); pos != std::string_view::npos; pos = text.find(literal_, pos + literal_.size())) {
        found.emplace_back(pos, pos + literal_.size());
      }
      return found;
    });
  }

 private:
  Behavior behavior_;
  bool invert_;
  std::unique_ptr<Regex> regex_;
  std::string literal_;
};

// GPT-2's pattern, which ByteLevel(use_regex=True) applies.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  explicit ByteLevelPreTokenizer(const nlohmann::json& json)
      : add_prefix_space_(json_bool(json, "add_prefix_space", true)), use_regex_(json_bool(json, "use_regex", true)) {
    if (use_regex_) regex_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  void pre_tokenize(std::vector<std::string>& pieces) const override {
    if (add_prefix_space_) {
      for (std::string& piece : pieces) {
        if (piece.empty() || piece[0] != ' ') piece.insert(0, 1, ' ');
      }
    }
    if (use_regex_) {
      split_pieces(pieces, Behavior::kIsolated, false, [this](std::string_view text) { return regex_->find_all(text); });
    }
    for (std::string& piece : pieces) {
      std::string mapped;
      mapped.reserve(piece.size() * 2);
      for (unsigned char byte : piece) utf8::append(mapped, utf8::byte_to_char(byte));
      piece = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_, use_regex_;
  std::unique_ptr<Regex> regex_;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(const nlohmann::json& json)
      : individual_(json_bool(json, "individual_digits", false)), regex_(individual_ ? R"(\p{N})" : R"(\p{N}+)") {}
  void pre_tokenize(std::vector<std::string>& pieces) const override {
    split_pieces(pieces, Behavior::kIsolated, false, [this](std::string_view text) { return regex_.find_all(text); });
  }

 private:
  bool individual_;
  Regex regex_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(const nlohmann::json& json) {
    for (const auto& item : json.at("pretokenizers")) steps_.push_back(make_pre_tokenizer(item));
  }
  void pre_tokenize(std::vector<std::string>& pieces) const override {
    for (const auto& step : steps_) {
      if (step) step->pre_tokenize(pieces);
    }
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& json) {
  if (json.is_null()) return nullptr;
  const std::string type = json_string(json, "type", "pre_tokenizer");
  if (type == "Sequence") return std::make_unique<SequencePreTokenizer>(json);
  if (type == "Split") return std::make_unique<SplitPreTokenizer>(json);
  if (type == "ByteLevel") return std::make_unique<ByteLevelPreTokenizer>(json);
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(json);
  fail("tokenizer.json: pre-tokenizer type '{}' is not supported (supported: Sequence, Split, ByteLevel, Digits)", type);
}

}  // namespace dsv4::tokenizer

// Added tokens of a tokenizer.json (AddedVocabulary in `tokenizers`): matched in the
// text before the model sees it, leftmost-longest, honouring lstrip/rstrip/single_word.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dsv4::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;  // as matched: normalized for normalized tokens
  bool special = false, normalized = false, lstrip = false, rstrip = false, single_word = false;
};

// A run of the text: either an added token's id, or text (id < 0) left for the model.
struct TextSplit {
  int32_t id = -1;
  std::string text;
};

class AddedTokenMatcher {
 public:
  void add(AddedToken token);
  bool empty() const { return tokens_.empty(); }
  // Splits `text` at matches; special tokens are skipped (kept as text) unless parse_special.
  std::vector<TextSplit> split(std::string_view text, bool parse_special) const;

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<unsigned char, std::vector<size_t>> by_first_byte_;  // longest first
};

}  // namespace dsv4::tokenizer

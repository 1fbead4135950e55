#include "added_tokens.h"

#include <algorithm>

#include "utf8.h"

namespace dsv4::tokenizer {

namespace {
bool is_word_byte(unsigned char c) { return std::isalnum(c) || c == '_'; }

// Byte offset where the run of whitespace ending at `end` starts.
size_t whitespace_run_start(std::string_view text, size_t end) {
  size_t start = end;
  while (start > 0) {
    size_t lead = start - 1;
    while (lead > 0 && (static_cast<uint8_t>(text[lead]) & 0xC0) == 0x80) --lead;
    size_t pos = lead;
    if (!utf8::valid_sequence_length(text, lead) || !utf8::is_whitespace(utf8::next(text, pos))) break;
    start = lead;
  }
  return start;
}

size_t whitespace_run_end(std::string_view text, size_t begin) {
  size_t pos = begin;
  while (pos < text.size() && utf8::valid_sequence_length(text, pos)) {
    size_t after = pos;
    if (!utf8::is_whitespace(utf8::next(text, after))) break;
    pos = after;
  }
  return pos;
}
}  // namespace

void AddedTokenMatcher::add(AddedToken token) {
  if (token.content.empty()) return;
  tokens_.push_back(std::move(token));
  auto& bucket = by_first_byte_[static_cast<unsigned char>(tokens_.back().content[0])];
  bucket.push_back(tokens_.size() - 1);
  std::stable_sort(bucket.begin(), bucket.end(),
                   [&](size_t a, size_t b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
}

std::vector<TextSplit> AddedTokenMatcher::split(std::string_view text, bool parse_special) const {
  std::vector<TextSplit> splits;
  size_t emitted = 0;  // text before this offset is in `splits`
  size_t pos = 0;
  while (pos < text.size()) {
    const auto bucket = by_first_byte_.find(static_cast<unsigned char>(text[pos]));
    const AddedToken* match = nullptr;
    if (bucket != by_first_byte_.end()) {
      for (size_t index : bucket->second) {
        const std::string& content = tokens_[index].content;
        if (text.compare(pos, content.size(), content) == 0) {
          match = &tokens_[index];
          break;
        }
      }
    }
    if (!match) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + match->content.size();
    pos = stop;  // the automaton moves past a match even when it is then ignored
    if (match->special && !parse_special) continue;
    if (match->single_word) {
      const bool word_before = start > 0 && is_word_byte(static_cast<unsigned char>(text[start - 1]));
      const bool word_after = stop < text.size() && is_word_byte(static_cast<unsigned char>(text[stop]));
      if (word_before || word_after) continue;
    }
    if (match->lstrip) start = std::max(whitespace_run_start(text, start), emitted);
    if (match->rstrip) stop = whitespace_run_end(text, stop);
    if (emitted < start) splits.push_back({-1, std::string(text.substr(emitted, start - emitted))});
    splits.push_back({match->id, std::string(text.substr(start, stop - start))});
    emitted = stop;
    pos = stop;
  }
  if (emitted < text.size()) splits.push_back({-1, std::string(text.substr(emitted))});
  return splits;
}

}  // namespace dsv4::tokenizer

// PCRE2 (UTF + UCP) regex with the match iteration of the Oniguruma crate that
// `tokenizers` uses, so Split pre-tokenizers give the same pieces.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsv4::tokenizer {

class Regex {
 public:
  // `pattern` in the Oniguruma dialect tokenizer.json files hold; see regex.cpp for
  // the one rewrite it needs.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of successive matches in `text` (valid UTF-8). Empty
  // matches are reported too, except right after the previous match, as onig's
  // find_iter does.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Oniguruma -> PCRE2: `\s` (and the `\s` inside `\S`, `[^\s...]`) is made to cover
// U+0085 explicitly: it is White_Space for onig, while PCRE2 has changed across versions
// on whether its UCP `\s` includes it.
std::string onig_to_pcre2(const std::string& pattern);

}  // namespace dsv4::tokenizer

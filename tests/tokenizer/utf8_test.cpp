// UTF-8 helpers against the maximal-subpart rule (Unicode 15, section 3.9) that Rust's
// from_utf8_lossy and Python's errors="replace" follow, and the byte-level alphabet.
#include <gtest/gtest.h>

#include "unicode_regex.h"
#include "utf8.h"

namespace dsv4 {
namespace {

const std::string kR = "\xEF\xBF\xBD";

TEST(Utf8, SanitizeReplacesMaximalSubparts) {
  EXPECT_EQ(utf8::sanitize("abc"), "abc");
  EXPECT_EQ(utf8::sanitize("\xE2\x82\x41"), kR + "A");  // cut 3-byte sequence: one U+FFFD
  EXPECT_EQ(utf8::sanitize("\xF0\x80\x80"), kR + kR + kR);  // F0 80: 80 is not a valid second byte
  EXPECT_EQ(utf8::sanitize("\xED\xA0\x80"), kR + kR + kR);  // surrogate
  EXPECT_EQ(utf8::sanitize("\xC0\xAF"), kR + kR);           // overlong
  EXPECT_EQ(utf8::sanitize("\xF4\x90\x80\x80"), kR + kR + kR + kR);
  EXPECT_EQ(utf8::sanitize("\xF0\x9F\x98"), kR);  // cut emoji at the end
  EXPECT_EQ(utf8::sanitize("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(Utf8, ByteAlphabetRoundTrips) {
  for (int b = 0; b < 256; ++b) EXPECT_EQ(utf8::char_to_byte(utf8::byte_to_char(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(utf8::byte_to_char(' '), U'\u0120');  // 'Ġ'
  EXPECT_EQ(utf8::byte_to_char('\n'), U'\u010A');  // 'Ċ'
  EXPECT_EQ(utf8::char_to_byte(U'\u0144'), -1);
}

TEST(Regex, OnigWhitespaceIncludesNextLine) {
  EXPECT_EQ(tokenizer::onig_to_pcre2(R"(\s+(?!\S)|[^\s\p{L}])"), R"([\s\x{85}]+(?![^\s\x{85}])|[^\s\x{85}\p{L}])");
  tokenizer::Regex regex(R"(\s+)");
  const auto matches = regex.find_all("a\xC2\x85 b");
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0], std::make_pair(size_t{1}, size_t{4}));
}

TEST(Regex, EmptyMatchesAdvanceLikeOniguruma) {
  tokenizer::Regex regex("x*");
  const auto matches = regex.find_all("axxb");
  // onig: (0,0) at 'a', then "xx" (1,3), then (4,4) at the end; the empty match right
  // after "xx" at 3 is skipped.
  std::vector<std::pair<size_t, size_t>> expected = {{0, 0}, {1, 3}, {4, 4}};
  EXPECT_EQ(matches, expected);
}

}  // namespace
}  // namespace dsv4

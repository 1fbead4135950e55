#include "utf8.h"

#include <array>

namespace dsv4::utf8 {

namespace {
// Valid second-byte range for each lead byte (Unicode Table 3-7); later bytes are 80..BF.
struct LeadInfo {
  uint8_t length = 0;  // 0: not a valid lead byte
  uint8_t second_low = 0x80, second_high = 0xBF;
};

LeadInfo lead_info(uint8_t lead) {
  if (lead < 0x80) return {1};
  if (lead >= 0xC2 && lead <= 0xDF) return {2};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};  // excludes surrogates
  if (lead >= 0xE1 && lead <= 0xEF) return {3};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};  // up to U+10FFFF
  if (lead >= 0xF1 && lead <= 0xF3) return {4};
  return {};
}

// Bytes that match a valid sequence's prefix starting at pos (1..length), plus the length.
std::pair<size_t, size_t> matched_prefix(std::string_view text, size_t pos) {
  const LeadInfo info = lead_info(static_cast<uint8_t>(text[pos]));
  if (info.length == 0) return {0, 0};
  size_t matched = 1;
  while (matched < info.length && pos + matched < text.size()) {
    const auto byte = static_cast<uint8_t>(text[pos + matched]);
    const uint8_t low = matched == 1 ? info.second_low : 0x80;
    const uint8_t high = matched == 1 ? info.second_high : 0xBF;
    if (byte < low || byte > high) break;
    ++matched;
  }
  return {matched, info.length};
}
}  // namespace

size_t valid_sequence_length(std::string_view text, size_t pos, size_t* maximal_subpart) {
  const auto [matched, length] = matched_prefix(text, pos);
  if (length != 0 && matched == length) return length;
  if (maximal_subpart) *maximal_subpart = matched == 0 ? 1 : matched;
  return 0;
}

bool is_incomplete_tail(std::string_view text, size_t pos) {
  const auto [matched, length] = matched_prefix(text, pos);
  return length != 0 && matched < length && pos + matched == text.size();
}

std::string sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t bad = 0;
    if (const size_t n = valid_sequence_length(bytes, pos, &bad)) {
      out.append(bytes.substr(pos, n));
      pos += n;
    } else {
      out.append(kReplacement);
      pos += bad;
    }
  }
  return out;
}

bool is_valid(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t n = valid_sequence_length(bytes, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t next(std::string_view text, size_t& pos) {
  const auto lead = static_cast<uint8_t>(text[pos]);
  const size_t length = lead_info(lead).length;
  char32_t cp = length == 1 ? lead : lead & (0x7F >> length);
  for (size_t i = 1; i < length; ++i) cp = (cp << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
  pos += length;
  return cp;
}

bool is_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

namespace {
struct ByteMaps {
  std::array<char32_t, 256> to_char{};
  ByteMaps() {
    char32_t extra = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : extra++;
    }
  }
};
const ByteMaps& byte_maps() {
  static const ByteMaps maps;
  return maps;
}
}  // namespace

char32_t byte_to_char(uint8_t byte) { return byte_maps().to_char[byte]; }

int char_to_byte(char32_t cp) {
  if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return static_cast<int>(cp);
  if (cp < 0x100 || cp >= 0x100 + 68) return -1;
  // The 68 remapped bytes in order: 0x00-0x20, 0x7F-0xA0, 0xAD.
  const int index = static_cast<int>(cp - 0x100);
  if (index <= 0x20) return index;
  if (index <= 0x20 + 34) return 0x7F + (index - 0x21);
  return 0xAD;
}

}  // namespace dsv4::utf8

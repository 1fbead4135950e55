// UTF-8 helpers shared by the tokenizer and the server: code-point iteration, the
// lossy decoding `tokenizers` uses (Rust's String::from_utf8_lossy: each maximal
// invalid subpart becomes one U+FFFD, the rule Python's errors="replace" follows too),
// and the GPT-2 byte <-> printable-character map of byte-level BPE.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence at text[pos], or 0 when the bytes there are not
// a complete valid sequence. `*maximal_subpart` (if given) receives, for an invalid
// position, how many bytes form the maximal subpart that one U+FFFD replaces (>= 1);
// it is also set when the sequence is a valid but cut-off prefix at the end of text.
size_t valid_sequence_length(std::string_view text, size_t pos, size_t* maximal_subpart = nullptr);

// True when the bytes from `pos` to the end are a proper prefix of some valid sequence
// (more bytes could complete it).
bool is_incomplete_tail(std::string_view text, size_t pos);

// from_utf8_lossy: invalid maximal subparts -> U+FFFD.
std::string sanitize(std::string_view bytes);
bool is_valid(std::string_view bytes);

// Appends the UTF-8 encoding of code point `cp`.
void append(std::string& out, char32_t cp);
// Decodes the valid sequence at text[pos] (caller guarantees validity), advancing pos.
char32_t next(std::string_view text, size_t& pos);

// Unicode White_Space property (what Rust's char::is_whitespace tests).
bool is_whitespace(char32_t cp);

// Byte-level BPE alphabet: printable bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order.
char32_t byte_to_char(uint8_t byte);
// -1 when `cp` is not one of the 256 alphabet characters.
int char_to_byte(char32_t cp);

}  // namespace dsv4::utf8

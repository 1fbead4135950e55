#include "generate_text.h"

namespace dsv4::cli {

// Placeholder until the tokenizer library lands: no text support.
struct TextCodec::Impl {};
TextCodec::TextCodec(const std::string&) {}
TextCodec::~TextCodec() = default;
bool TextCodec::available() const { return false; }
std::vector<int32_t> TextCodec::encode_prompt(const std::string&) { return {}; }
std::string TextCodec::decode_stream(int32_t) { return {}; }
std::string TextCodec::flush_stream() { return {}; }

}  // namespace dsv4::cli

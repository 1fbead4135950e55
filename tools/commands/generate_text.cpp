#include "generate_text.h"

#include "dsv4/tokenizer.h"

namespace dsv4::cli {

// The model directory's tokenizer (tokenizer.json, else the byte vocabulary's
// byte_tokenizer.json, see dsv4/tokenizer.h). Prompts get the tokenizer's special
// tokens (its post-processor prepends BOS); the output streams through StreamDecoder,
// which holds back code points cut across tokens. Special tokens produce no text.
struct TextCodec::Impl {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<StreamDecoder> stream;
};

TextCodec::TextCodec(const std::string& model_dir) {
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::from_model_dir(model_dir);
  if (!tokenizer) return;
  impl_ = std::make_unique<Impl>();
  impl_->tokenizer = std::move(tokenizer);
  impl_->stream = std::make_unique<StreamDecoder>(*impl_->tokenizer, /*skip_special_tokens=*/true);
}

TextCodec::~TextCodec() = default;

bool TextCodec::available() const { return impl_ != nullptr; }

std::vector<int32_t> TextCodec::encode_prompt(const std::string& text) {
  return impl_->tokenizer->encode(text, /*add_special_tokens=*/true);
}

std::string TextCodec::decode_stream(int32_t token) { return impl_->stream->push(token); }

std::string TextCodec::flush_stream() { return impl_->stream->finish(); }

}  // namespace dsv4::cli

#include "generate_text.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "dsv4/error.h"

namespace dsv4::cli {

// Byte-level vocabulary of the bundled model (byte_tokenizer.json): id = offset + byte,
// BOS prepended to prompts. Decode streams whole UTF-8 code points only.
// (Hugging Face tokenizer.json BPE support is issue 7's tokenizer library.)
struct TextCodec::Impl {
  int32_t bos = 0;
  int32_t offset = 2;
  std::string pending;  // bytes of an incomplete UTF-8 sequence
};

TextCodec::TextCodec(const std::string& model_dir) {
  const std::filesystem::path path = std::filesystem::path(model_dir) / "byte_tokenizer.json";
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
    impl_ = std::make_unique<Impl>();
    impl_->bos = json.at("bos_token_id").get<int32_t>();
    impl_->offset = json.at("byte_offset").get<int32_t>();
  } catch (const std::exception& error) {
    fail("{}: invalid byte tokenizer description: {}", path.string(), error.what());
  }
}

TextCodec::~TextCodec() = default;

bool TextCodec::available() const { return impl_ != nullptr; }

std::vector<int32_t> TextCodec::encode_prompt(const std::string& text) {
  std::vector<int32_t> ids = {impl_->bos};
  for (unsigned char byte : text) ids.push_back(impl_->offset + byte);
  return ids;
}

namespace {
// Length of the UTF-8 sequence a lead byte starts (1 for invalid leads: emitted as is).
size_t sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xe0) == 0xc0) return 2;
  if ((lead & 0xf0) == 0xe0) return 3;
  if ((lead & 0xf8) == 0xf0) return 4;
  return 1;
}
}  // namespace

std::string TextCodec::decode_stream(int32_t token) {
  const int32_t byte = token - impl_->offset;
  if (byte < 0 || byte > 255) return {};  // special tokens produce no text
  impl_->pending.push_back(static_cast<char>(byte));
  std::string ready;
  while (!impl_->pending.empty()) {
    const size_t need = sequence_length(static_cast<unsigned char>(impl_->pending[0]));
    if (impl_->pending.size() < need) break;
    ready += impl_->pending.substr(0, need);
    impl_->pending.erase(0, need);
  }
  return ready;
}

std::string TextCodec::flush_stream() {
  std::string rest;
  if (!impl_->pending.empty()) rest = "\xEF\xBF\xBD";  // U+FFFD for a cut-off sequence
  impl_->pending.clear();
  return rest;
}

}  // namespace dsv4::cli

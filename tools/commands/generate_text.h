// Text side of `dsv4 generate`: prompt encoding and streaming decode through the
// model's tokenizer (tokenizer.json, else byte_tokenizer.json), when the checkpoint
// ships one.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsv4::cli {

class TextCodec {
 public:
  explicit TextCodec(const std::string& model_dir);
  ~TextCodec();
  bool available() const;
  std::vector<int32_t> encode_prompt(const std::string& text);
  // Text completed by `token` (holds back partial UTF-8 sequences).
  std::string decode_stream(int32_t token);
  std::string flush_stream();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::cli

// Streaming decode: pieces are valid UTF-8 and add up to the full decode, on the
// fixtures' decode cases (which cut characters across tokens and hold invalid bytes).
#include <random>

#include <gtest/gtest.h>

#include "dsv4/tokenizer.h"
#include "fixture.h"
#include "utf8.h"

namespace dsv4 {
namespace {

using test::escaped;

class StreamDecode : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamDecode, PiecesAreValidAndConcatenateToDecode) {
  auto tokenizer = Tokenizer::from_file(test::tokenizer_fixture(GetParam() + ".tokenizer.json"));
  const auto expected = test::read_json(test::tokenizer_fixture(GetParam() + ".expected.json"));
  for (const auto& item : expected.at("decode")) {
    const auto ids = item.at("ids").get<std::vector<int32_t>>();
    for (const bool skip : {false, true}) {
      StreamDecoder stream(*tokenizer, skip);
      std::string all;
      for (const int32_t id : ids) {
        const std::string piece = stream.push(id);
        EXPECT_TRUE(utf8::is_valid(piece)) << escaped(piece);
        all += piece;
      }
      all += stream.finish();
      EXPECT_EQ(escaped(item.at(skip ? "text_skip_special" : "text").get<std::string>()), escaped(all))
          << "ids " << nlohmann::json(ids).dump() << " skip_special " << skip;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StreamDecode, ::testing::ValuesIn(test::fixture_names()),
                         [](const auto& info) { return info.param; });

TEST(StreamDecoder, HoldsBackACutCharacterUntilItCompletes) {
  auto tokenizer = Tokenizer::from_file(test::tokenizer_fixture("gpt2_style.tokenizer.json"));
  // "中" is E4 B8 AD: three single-byte tokens in the byte-level alphabet.
  std::vector<int32_t> bytes;
  for (const unsigned char b : std::string("中")) {
    std::string token;
    utf8::append(token, utf8::byte_to_char(b));
    bytes.push_back(*tokenizer->token_to_id(token));
  }
  StreamDecoder stream(*tokenizer);
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.push(bytes[1]), "");
  EXPECT_EQ(stream.push(bytes[2]), "中");
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");  // a cut-off sequence at the end is U+FFFD
}

TEST(StreamDecoder, RandomSequencesMatchDecode) {
  auto tokenizer = Tokenizer::from_file(test::tokenizer_fixture("deepseek_style.tokenizer.json"));
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> ids(1 + rng() % 30);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % tokenizer->vocab_size());
    StreamDecoder stream(*tokenizer, true);
    std::string all;
    for (const int32_t id : ids) all += stream.push(id);
    all += stream.finish();
    ASSERT_EQ(escaped(tokenizer->decode(ids, true)), escaped(all)) << nlohmann::json(ids).dump();
  }
}

}  // namespace
}  // namespace dsv4

// Ids and decoded text equal those of Python `tokenizers` on the committed fixtures:
// a DeepSeek-V3-style pre-tokenizer, GPT-2's, and a byte-fallback BPE.
#include <algorithm>

#include <gtest/gtest.h>

#include "dsv4/error.h"
#include "dsv4/tokenizer.h"
#include "fixture.h"

namespace dsv4 {
namespace {

using test::escaped;

std::string describe_ids(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, size_t around) {
  std::string out;
  const size_t begin = around > 3 ? around - 3 : 0;
  for (size_t i = begin; i < ids.size() && i < around + 4; ++i) {
    out += fmt::format("{}[{}]={}('{}') ", i == around ? ">" : "", i, ids[i],
                       escaped(tokenizer.id_to_token(ids[i]).value_or("?")));
  }
  return out;
}

// Names the first differing position and the tokens around it on both sides.
void expect_same_ids(const Tokenizer& tokenizer, const std::vector<int32_t>& expected,
                     const std::vector<int32_t>& actual, const std::string& what) {
  if (expected == actual) return;
  size_t first = 0;
  while (first < expected.size() && first < actual.size() && expected[first] == actual[first]) ++first;
  ADD_FAILURE() << what << ": ids differ at position " << first << " (expected " << expected.size()
                << " ids, got " << actual.size() << ")\n  expected: " << describe_ids(tokenizer, expected, first)
                << "\n  actual:   " << describe_ids(tokenizer, actual, first);
}

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

class TokenizerParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tokenizer_ = Tokenizer::from_file(test::tokenizer_fixture(GetParam() + ".tokenizer.json"));
    expected_ = test::read_json(test::tokenizer_fixture(GetParam() + ".expected.json"));
  }
  std::unique_ptr<Tokenizer> tokenizer_;
  nlohmann::json expected_;
};

TEST_P(TokenizerParity, EncodeMatchesTokenizersLibrary) {
  int checked = 0;
  for (const auto& item : expected_.at("encode")) {
    const auto text = item.at("text").get<std::string>();
    for (const bool add : {false, true}) {
      for (const bool parse : {false, true}) {
        const std::string key = std::string("ids") + (add ? "_add" : "") + (parse ? "_parse" : "");
        expect_same_ids(*tokenizer_, item.at(key).get<std::vector<int32_t>>(), tokenizer_->encode(text, add, parse),
                        fmt::format("encode('{}', add_special_tokens={}, parse_special={})", escaped(text), add, parse));
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST_P(TokenizerParity, InvalidUtf8EncodesAsReplacementCharacters) {
  for (const auto& item : expected_.at("encode_bytes")) {
    const std::vector<uint8_t> bytes = from_hex(item.at("bytes_hex").get<std::string>());
    const std::string text(bytes.begin(), bytes.end());
    expect_same_ids(*tokenizer_, item.at("ids").get<std::vector<int32_t>>(), tokenizer_->encode(text),
                    "encode(bytes " + escaped(text) + ")");
  }
}

TEST_P(TokenizerParity, DecodeMatchesTokenizersLibrary) {
  for (const auto& item : expected_.at("decode")) {
    const auto ids = item.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(escaped(item.at("text").get<std::string>()), escaped(tokenizer_->decode(ids, false)))
        << "decode of " << nlohmann::json(ids).dump();
    EXPECT_EQ(escaped(item.at("text_skip_special").get<std::string>()), escaped(tokenizer_->decode(ids, true)))
        << "decode (skip_special_tokens) of " << nlohmann::json(ids).dump();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerParity, ::testing::ValuesIn(test::fixture_names()),
                         [](const auto& info) { return info.param; });

TEST(Tokenizer, SpecialTokenTextIsPlainUnlessParsed) {
  auto tokenizer = Tokenizer::from_file(test::tokenizer_fixture("deepseek_style.tokenizer.json"));
  const int32_t user = *tokenizer->token_to_id("<｜User｜>");
  EXPECT_TRUE(tokenizer->is_special(user));
  const auto plain = tokenizer->encode("a<｜User｜>b");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), user), 0);
  const auto parsed = tokenizer->encode("a<｜User｜>b", false, true);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), user), 1);
  // <think> is an added token that is not special: always matched.
  const int32_t think = *tokenizer->token_to_id("<think>");
  EXPECT_FALSE(tokenizer->is_special(think));
  const auto with_think = tokenizer->encode("x<think>y");
  EXPECT_EQ(std::count(with_think.begin(), with_think.end(), think), 1);
}

// The byte-vocabulary model that was bundled before the BPE one (kept as a test fixture).
TEST(Tokenizer, TrainedByteModelVocabulary) {
  const auto dir = std::filesystem::path(DSV4_FIXTURES_DIR) / "trained_byte_model";
  ASSERT_TRUE(std::filesystem::exists(dir / "byte_tokenizer.json")) << dir;
  auto tokenizer = Tokenizer::from_file(dir / "byte_tokenizer.json");
  const auto ids = tokenizer->encode("Hé", true);
  ASSERT_EQ(ids.size(), 4u);  // BOS + 3 bytes
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 2 + 'H');
  EXPECT_EQ(tokenizer->decode(ids, true), "Hé");
  EXPECT_EQ(tokenizer->decode(std::vector<int32_t>{2 + 0xC3}, true), "\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer->vocab_size(), 258);
}

TEST(Tokenizer, LoadErrorsNameTheFileAndThePart) {
  const auto dir = std::filesystem::temp_directory_path() / "dsv4_tokenizer_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "tokenizer.json";
  std::ofstream(path) << R"({"model": {"type": "BPE", "vocab": {}, "merges": [], "dropout": null},
                            "normalizer": {"type": "NFKC"}})";
  try {
    Tokenizer::from_file(path);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("NFKC"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << error.what();
  }
  EXPECT_EQ(Tokenizer::from_model_dir(dir / "missing"), nullptr);
}

}  // namespace
}  // namespace dsv4

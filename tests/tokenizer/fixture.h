// Paths and readers for tests/fixtures/tokenizer (made by scripts/make_tokenizer_fixtures.py).
#pragma once
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4::test {

inline std::filesystem::path tokenizer_fixture(const std::string& name) {
  return std::filesystem::path(DSV4_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" / name;
}

inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

inline const std::vector<std::string>& fixture_names() {
  static const std::vector<std::string> names = {"deepseek_style", "gpt2_style", "byte_fallback"};
  return names;
}

// Printable form of text for failure messages: control and non-ASCII bytes as \xNN.
inline std::string escaped(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\x%02X", c);
      out += buffer;
    }
  }
  return out;
}

}  // namespace dsv4::test

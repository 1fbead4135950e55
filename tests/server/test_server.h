// A dsv4::server::Server on 127.0.0.1 with an ephemeral port over the FakeEngine and a
// fixture tokenizer.
#pragma once
#include <memory>
#include <string>

#include "dsv4/server.h"
#include "dsv4/tokenizer.h"
#include "fake_engine.h"

namespace dsv4::test {

inline std::filesystem::path server_tokenizer_fixture(const std::string& name) {
  return std::filesystem::path(DSV4_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer" / (name + ".tokenizer.json");
}

// Word-like ids of the GPT-2-style fixture ("Ġword"), plus the two byte tokens of "é"
// so that random picks also cut and complete UTF-8 sequences.
inline std::vector<int32_t> word_ids(const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < tokenizer.vocab_size() && ids.size() < 200; ++id) {
    const std::string token = tokenizer.id_to_token(id).value_or("");
    if (token.size() > 3 && token.rfind("\xC4\xA0", 0) == 0 &&
        std::all_of(token.begin() + 2, token.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); })) {
      ids.push_back(id);
    }
  }
  for (const char* byte_char : {"\xC3\x83", "\xC2\xA9"}) ids.push_back(*tokenizer.token_to_id(byte_char));  // 'Ã' 0xC3, '©' 0xA9
  return ids;
}

struct FakeServer {
  FakeServer(const std::string& tokenizer_name, server::ServerOptions options, int64_t context = 512,
             int eos_every = 25) {
    tokenizer = Tokenizer::from_file(server_tokenizer_fixture(tokenizer_name));
    const int32_t eos = tokenizer_name == "deepseek_style" ? *tokenizer->token_to_id("<｜end▁of▁sentence｜>")
                                                           : *tokenizer->token_to_id("<|endoftext|>");
    auto fake = std::make_unique<FakeEngine>(tokenizer->vocab_size(), context, eos, word_ids(*tokenizer), eos_every);
    engine = fake.get();
    options.host = "127.0.0.1";
    options.port = 0;
    server = std::make_unique<server::Server>(options, [name = tokenizer_name, moved = std::make_shared<std::unique_ptr<Engine>>(std::move(fake))] {
      server::LoadedModel loaded;
      loaded.engine = std::move(*moved);
      loaded.tokenizer = Tokenizer::from_file(server_tokenizer_fixture(name));
      loaded.model_id = "fake-model";
      return loaded;
    });
    port = server->start();
    EXPECT_TRUE(server->wait_until_loaded());
  }
  std::unique_ptr<Tokenizer> tokenizer;  // a copy for the test's own encoding
  FakeEngine* engine = nullptr;           // owned by the server's scheduler
  std::unique_ptr<server::Server> server;
  int port = 0;
};

}  // namespace dsv4::test

// `dsv4 perplexity --model DIR --text FILE [--max-tokens N] [--context N]`: held-out
// perplexity of a text under the model, with the model's own tokenizer.
//
// The text is encoded whole (special-token spellings such as <|end_of_text|> in it
// are read as those tokens, unless --no-special) and cut into windows of --context
// tokens. Each window is a fresh sequence: BOS (the config's bos_token_id), then the
// window's tokens; every token is scored once, the first of each window given BOS
// alone. This is what scripts/train_default_model.py's evaluate() does, so with the
// same --context the two agree up to arithmetic (BF16 weights, FP32 compute).
//
// Printed: tokens scored, mean NLL per token (nats), perplexity per token = exp(mean
// NLL), and bits per byte = total NLL / ln 2 / the UTF-8 bytes of the text the tokens
// spell (special tokens excluded), which compares models with different tokenizers.
// --json prints one JSON object instead.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "dsv4/tokenizer.h"

namespace dsv4::cli {

namespace {

struct PerplexityFlags {
  std::string model;
  std::string text;
  int64_t max_tokens = 0;
  int64_t context = 512;
  std::string device = "cpu";
  bool no_special = false;
  bool json = false;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK(in.good(), "cannot read --text file '{}'", path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// -log softmax(logits)[target], in double.
double token_nll(const float* logits, int64_t vocab, int32_t target) {
  float max_logit = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  return std::log(sum) + max_logit - static_cast<double>(logits[target]);
}

void run_perplexity(const PerplexityFlags& flags) {
  const std::string model_dir = flags.model.empty() ? default_model_dir() : flags.model;
  DSV4_CHECK(std::filesystem::is_directory(model_dir), "model directory '{}' does not exist", model_dir);
  DSV4_CHECK(flags.context >= 1, "--context must be >= 1, got {}", flags.context);
  DSV4_CHECK(flags.max_tokens >= 0, "--max-tokens must be >= 0, got {}", flags.max_tokens);
  DSV4_CHECK(flags.device == "cpu" || flags.device == "cuda", "--device must be cpu or cuda, got '{}'", flags.device);
  const std::unique_ptr<Tokenizer> tokenizer = Tokenizer::from_model_dir(model_dir);
  DSV4_CHECK(tokenizer != nullptr, "model '{}' has no tokenizer.json (or byte_tokenizer.json)", model_dir);

  std::vector<int32_t> ids =
      tokenizer->encode(read_file(flags.text), /*add_special_tokens=*/false, /*parse_special=*/!flags.no_special);
  if (flags.max_tokens > 0 && static_cast<int64_t>(ids.size()) > flags.max_tokens) ids.resize(flags.max_tokens);
  DSV4_CHECK(ids.size() >= 2, "--text '{}' has {} tokens; need at least 2", flags.text, ids.size());

  EngineOptions options;
  options.model_dir = model_dir;
  options.device = flags.device == "cuda" ? Device::kCuda : Device::kCpu;
  options.max_batch = 1;
  options.max_context = flags.context + 1;
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Engine> engine = Engine::create(options);
  const ModelConfig& config = engine->config();
  DSV4_CHECK(flags.context < config.max_position_embeddings, "--context {} must be below the model's context of {}",
             flags.context, config.max_position_embeddings);
  DSV4_CHECK(tokenizer->vocab_size() <= config.vocab_size, "tokenizer has {} ids but the model's vocab_size is {}",
             tokenizer->vocab_size(), config.vocab_size);
  const int32_t bos = static_cast<int32_t>(config.bos_token_id);
  const int64_t vocab = config.vocab_size;

  double total_nll = 0;
  int64_t scored = 0, windows = 0;
  const int64_t n = static_cast<int64_t>(ids.size());
  for (int64_t begin = 0; begin < n; begin += flags.context) {
    const int64_t end = std::min(n, begin + flags.context);
    // Input: BOS + window[0, len - 1); targets: window. Without BOS the first token is context only.
    std::vector<int32_t> input;
    int64_t first_target = begin;
    if (bos >= 0) {
      input.push_back(bos);
    } else {
      first_target = begin + 1;
    }
    input.insert(input.end(), ids.begin() + begin, ids.begin() + end - 1);
    if (first_target >= end) continue;  // a 1-token window without BOS scores nothing
    const SequenceId sequence = engine->add_sequence();
    const std::vector<float> logits = engine->prefill(sequence, input, /*all_logits=*/true);
    engine->remove_sequence(sequence);
    const int64_t offset = bos >= 0 ? 0 : 1;  // logits row r predicts input position r + 1
    for (int64_t t = first_target; t < end; ++t) {
      const int64_t row = t - begin - offset;
      const double nll = token_nll(logits.data() + row * vocab, vocab, ids[t]);
      DSV4_CHECK(std::isfinite(nll), "non-finite NLL at token {} (id {})", t, ids[t]);
      total_nll += nll;
      ++scored;
    }
    ++windows;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const size_t bytes = tokenizer->decode(ids, /*skip_special_tokens=*/true).size();
  const double mean_nll = total_nll / static_cast<double>(scored);
  const double perplexity = std::exp(mean_nll);
  const double bits_per_byte = bytes ? total_nll / std::log(2.0) / static_cast<double>(bytes) : 0.0;

  if (flags.json) {
    nlohmann::json out = {{"model", model_dir},         {"text", flags.text},
                          {"tokens", n},                {"scored_tokens", scored},
                          {"bytes", bytes},             {"context", flags.context},
                          {"windows", windows},         {"nll_per_token", mean_nll},
                          {"perplexity", perplexity},   {"bits_per_byte", bits_per_byte},
                          {"seconds", seconds}};
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  std::printf("%s", fmt::format("model {}\ntext {}: {} tokens ({} bytes), {} windows of <= {} tokens\n", model_dir,
                                flags.text, n, bytes, windows, flags.context)
                        .c_str());
  std::printf("%s", fmt::format("nll per token {:.5f}\nperplexity {:.4f} per token\nbits per byte {:.5f}\n", mean_nll,
                                perplexity, bits_per_byte)
                        .c_str());
  std::fprintf(stderr, "dsv4 perplexity: %lld tokens scored in %.2f s (%.1f tok/s), device %s\n",
               static_cast<long long>(scored), seconds, scored / std::max(seconds, 1e-9), flags.device.c_str());
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto flags = std::make_shared<PerplexityFlags>();
  auto* command = app.add_subcommand("perplexity", "Perplexity (per token) and bits per byte of a text");
  command->add_option("--model", flags->model, "Checkpoint directory (default: the bundled model)");
  command->add_option("--text", flags->text, "Text file to score (UTF-8)")->required();
  command->add_option("--max-tokens", flags->max_tokens, "Score only the first N tokens (0 = all)")
      ->capture_default_str();
  command->add_option("--context", flags->context, "Tokens per window (each window starts after BOS)")
      ->capture_default_str();
  command->add_option("--device", flags->device, "cpu or cuda")->capture_default_str();
  command->add_flag("--no-special", flags->no_special, "Read special-token spellings in the text as plain text");
  command->add_flag("--json", flags->json, "Print one JSON object");
  command->callback([flags] { run_perplexity(*flags); });
}

}  // namespace dsv4::cli

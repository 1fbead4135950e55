// `dsv4 generate`: prompt in, tokens (and text when the model has a tokenizer) out,
// with prefill and decode tokens/s. With --print-ids (or no tokenizer) the last line
// of stdout is the generated ids, comma-separated, nothing else on it.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "generate_text.h"

namespace dsv4::cli {

namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  bool prompt_given = false;
  std::string prompt_ids;
  int max_new_tokens = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  bool print_ids = false;
  std::string device = "cpu";
  std::string kv_cache = "bf16";
  bool ignore_eos = false;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DSV4_CHECK(used == item.size() && !item.empty() && value >= 0 && value <= INT32_MAX,
               "--prompt-ids: '{}' is not a non-negative integer (expected a list like 5,17,3)", item);
    ids.push_back(static_cast<int32_t>(value));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void run_generate(const GenerateFlags& flags) {
  const std::string model_dir = flags.model.empty() ? default_model_dir() : flags.model;
  DSV4_CHECK(std::filesystem::is_directory(model_dir), "model directory '{}' does not exist", model_dir);
  DSV4_CHECK(flags.prompt.empty() || flags.prompt_ids.empty(), "give either --prompt or --prompt-ids, not both");
  DSV4_CHECK(flags.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got {}", flags.max_new_tokens);

  EngineOptions options;
  options.model_dir = model_dir;
  DSV4_CHECK(flags.device == "cpu" || flags.device == "cuda", "--device must be cpu or cuda, got '{}'", flags.device);
  options.device = flags.device == "cuda" ? Device::kCuda : Device::kCpu;
  options.kv_cache = parse_kv_cache_format(flags.kv_cache);
  const auto load_start = std::chrono::steady_clock::now();
  std::unique_ptr<Engine> engine = Engine::create(options);
  TextCodec codec(model_dir);
  const double load_seconds = seconds_since(load_start);

  std::vector<int32_t> prompt;
  if (!flags.prompt_ids.empty()) {
    prompt = parse_ids(flags.prompt_ids);
  } else {
    DSV4_CHECK(codec.available() || flags.prompt.empty(),
               "model '{}' has no tokenizer.json (or byte_tokenizer.json): give the prompt as --prompt-ids", model_dir);
    prompt = codec.available() ? codec.encode_prompt(flags.prompt) : std::vector<int32_t>{};
  }
  if (prompt.empty()) prompt.push_back(static_cast<int32_t>(engine->config().bos_token_id));
  DSV4_CHECK(static_cast<int64_t>(prompt.size()) + flags.max_new_tokens <= engine->config().max_position_embeddings,
             "prompt ({} tokens) + --max-new-tokens {} exceeds the model's context of {} tokens", prompt.size(),
             flags.max_new_tokens, engine->config().max_position_embeddings);

  Sampler sampler(SamplingParams{flags.temperature, flags.top_p, flags.top_k, flags.seed});
  const SequenceId sequence = engine->add_sequence();
  const bool stream_text = codec.available() && !flags.print_ids;
  if (stream_text) std::printf("%s", flags.prompt.c_str());
  std::fflush(stdout);

  const auto prefill_start = std::chrono::steady_clock::now();
  std::vector<float> logits = engine->prefill(sequence, prompt);
  const double prefill_seconds = seconds_since(prefill_start);

  std::vector<int32_t> generated;
  // Greedy decoding takes the next token from the engine (decode_greedy: on the device for
  // CUDA, no logits copied back); the first one comes from the prefill's logits (the
  // sampler's greedy rule is greedy_token).
  const bool greedy = flags.temperature == 0.0f;
  int32_t next_token = sampler.sample(logits);
  const auto decode_start = std::chrono::steady_clock::now();
  for (int step = 0; step < flags.max_new_tokens; ++step) {
    const int32_t token = next_token;
    generated.push_back(token);
    if (stream_text) {
      std::printf("%s", codec.decode_stream(token).c_str());
      std::fflush(stdout);
    }
    if (!flags.ignore_eos && token == engine->config().eos_token_id) break;
    if (step + 1 == flags.max_new_tokens) break;
    const SequenceId ids[] = {sequence};
    const int32_t tokens[] = {token};
    if (greedy) {
      next_token = engine->decode_greedy(ids, tokens)[0];
    } else {
      logits = engine->decode(ids, tokens);
      next_token = sampler.sample(logits);
    }
  }
  const double decode_seconds = seconds_since(decode_start);
  if (stream_text) std::printf("%s\n", codec.flush_stream().c_str());

  const double decode_steps = generated.size() > 1 ? static_cast<double>(generated.size() - 1) : 0.0;
  std::fprintf(stderr,
               "dsv4 generate: model %s, device %s, load %.2f s | prompt %zu tokens, %.1f tok/s | "
               "generated %zu tokens, %.1f tok/s\n",
               model_dir.c_str(), flags.device.c_str(), load_seconds, prompt.size(),
               prompt.size() / std::max(prefill_seconds, 1e-9), generated.size(),
               decode_steps / std::max(decode_seconds, 1e-9));
  if (!stream_text) {
    std::string line;
    for (size_t i = 0; i < generated.size(); ++i) line += (i ? "," : "") + std::to_string(generated[i]);
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  auto* command = app.add_subcommand("generate", "Generate tokens from a prompt");
  command->add_option("prompt_text", flags->prompt, "Prompt text (same as --prompt)");
  command->add_option("--model", flags->model, "Checkpoint directory (default: the bundled model)");
  command->add_option("--prompt", flags->prompt, "Prompt text (needs the model's tokenizer.json)");
  command->add_option("--prompt-ids", flags->prompt_ids, "Prompt token ids, comma-separated (e.g. 5,17,3)");
  command->add_option("--max-new-tokens", flags->max_new_tokens, "Tokens to generate")->capture_default_str();
  command->add_option("--temperature", flags->temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
  command->add_option("--top-p", flags->top_p, "Nucleus sampling mass")->capture_default_str();
  command->add_option("--top-k", flags->top_k, "Keep the k most likely tokens (0 = all)")->capture_default_str();
  command->add_option("--seed", flags->seed, "Sampling seed")->capture_default_str();
  command->add_option("--device", flags->device, "cpu or cuda")->capture_default_str();
  command->add_option("--kv-cache", flags->kv_cache,
                      "CUDA KV cache: bf16, or fp8 (DeepSeek's 584-byte rows, head_dim 512; not yet "
                      "GPU-verified; compressed entries keep a BF16 staging copy, so no memory saving yet)")
      ->capture_default_str();
  command->add_flag("--print-ids", flags->print_ids, "Print generated token ids as the last stdout line");
  command->add_flag("--ignore-eos", flags->ignore_eos, "Do not stop at the end-of-sequence token");
  command->callback([flags] { run_generate(*flags); });
}

}  // namespace dsv4::cli

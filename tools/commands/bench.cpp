// `dsv4 bench`: prefill and decode tokens/s of the engine for chosen batch sizes and
// context, each op group's share of the time (CUDA events), and the device memory the
// engine holds. Without --model it builds a random-weight model of V4-Flash's shapes
// with --layers layers (no checkpoint needed). Results print as a table and, with
// --json FILE, append one JSON line per measurement.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "dsv4/synthetic.h"
#include "dsv4/weights.h"

namespace dsv4::cli {

namespace {

struct BenchFlags {
  std::string device = "cuda";
  std::string model;
  int layers = 8;
  std::string experts = "nvfp4";
  std::string batches = "1,8,64";
  int64_t context = 4096;
  int decode_steps = 32;
  int64_t prefill = 8192;
  int prefill_chunk = 4096;
  bool no_graphs = false;
  std::string kv_cache = "bf16";
  std::string json;
  uint64_t seed = 1;
};

std::vector<int> parse_list(const std::string& text, const char* flag) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      const int v = std::stoi(item, &used);
      DSV4_CHECK(used == item.size() && v > 0, "{}: '{}' is not a positive integer", flag, item);
      out.push_back(v);
    } catch (const std::logic_error&) {
      fail("{}: '{}' is not a positive integer (expected e.g. 1,8,64)", flag, item);
    }
  }
  DSV4_CHECK(!out.empty(), "{} is empty (expected e.g. 1,8,64)", flag);
  return out;
}

WeightFormat expert_format(const std::string& name) {
  if (name == "nvfp4") return WeightFormat::kNVFP4;
  if (name == "mxfp4") return WeightFormat::kMXFP4;
  if (name == "fp8") return WeightFormat::kFP8Block;
  if (name == "bf16") return WeightFormat::kBF16;
  fail("--experts must be nvfp4, mxfp4, fp8 or bf16, got '{}'", name);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return text;
}

// Shares of each op group, as JSON and as one printed line.
std::string op_json(const std::vector<OpTime>& times) {
  double total = 0;
  for (const OpTime& t : times) total += t.milliseconds;
  std::string out = "{";
  for (size_t i = 0; i < times.size(); ++i)
    out += fmt::format("{}\"{}\":{{\"ms\":{:.4f},\"share\":{:.4f}}}", i ? "," : "", times[i].op, times[i].milliseconds,
                       total > 0 ? times[i].milliseconds / total : 0.0);
  return out + "}";
}
std::string op_line(const std::vector<OpTime>& times) {
  double total = 0;
  for (const OpTime& t : times) total += t.milliseconds;
  std::vector<OpTime> sorted = times;
  std::sort(sorted.begin(), sorted.end(), [](const OpTime& a, const OpTime& b) { return a.milliseconds > b.milliseconds; });
  std::string out;
  for (const OpTime& t : sorted) out += fmt::format(" {} {:.1f}%", t.op, total > 0 ? 100.0 * t.milliseconds / total : 0.0);
  return out;
}

void run_bench(const BenchFlags& flags) {
  DSV4_CHECK(flags.device == "cuda" || flags.device == "cpu", "--device must be cpu or cuda, got '{}'", flags.device);
  const std::vector<int> batches = parse_list(flags.batches, "--batch");
  DSV4_CHECK(flags.context >= 1 && flags.decode_steps >= 1, "--context and --decode-steps must be >= 1");
  const int max_batch = *std::max_element(batches.begin(), batches.end());

  std::shared_ptr<const ModelWeights> weights;
  std::string model_name;
  if (!flags.model.empty()) {
    weights = std::make_shared<const ModelWeights>(load_model(flags.model));
    model_name = flags.model;
  } else {
    SyntheticOptions synthetic;
    synthetic.experts = expert_format(flags.experts);
    synthetic.seed = flags.seed;
    weights = std::make_shared<const ModelWeights>(make_synthetic_weights(v4_flash_config(flags.layers), synthetic));
    model_name = fmt::format("v4-flash-width-{}L-random", flags.layers);
  }
  const ModelConfig& config = weights->config;
  EngineOptions options;
  options.device = flags.device == "cuda" ? Device::kCuda : Device::kCpu;
  // The long-prefill sequence is removed before the context fill, so max_batch slots
  // suffice. Sequence 0 is in every decode batch: it grows by (warm-up 3 + timed steps
  // with logits + warm-up 1 + timed greedy steps + profiled 2) per batch size.
  options.max_batch = max_batch;
  const int64_t decode_growth = static_cast<int64_t>(batches.size()) * (2 * flags.decode_steps + 6);
  options.max_context = std::max<int64_t>(flags.context + decode_growth + 8, flags.prefill + 8);
  options.max_context = std::min<int64_t>(options.max_context, config.max_position_embeddings);
  options.prefill_chunk = flags.prefill_chunk;
  options.cuda_graphs = !flags.no_graphs;
  options.kv_cache = parse_kv_cache_format(flags.kv_cache);
  auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Engine> engine = create_engine(weights, options);
  const double load_seconds = seconds_since(start);
  const std::string device = engine->device_name();
  const double arena_gib = engine->device_memory_bytes() / 1073741824.0;
  std::printf("dsv4 bench: %s on %s (%s experts), arena %.2f GiB, setup %.1f s\n", model_name.c_str(), device.c_str(),
              flags.model.empty() ? flags.experts.c_str() : "checkpoint", arena_gib, load_seconds);

  std::ofstream json;
  if (!flags.json.empty()) {
    json.open(flags.json, std::ios::app);
    DSV4_CHECK(json.good(), "--json: cannot open {} for appending", flags.json);
  }
  const std::string common =
      fmt::format("\"bench\":\"engine\",\"device\":\"{}\",\"date\":\"{}\",\"model\":\"{}\",\"experts\":\"{}\","
                  "\"layers\":{},\"arena_gib\":{:.3f},\"kv_cache\":\"{}\"",
                  device, utc_now(), model_name, flags.model.empty() ? flags.experts : "checkpoint",
                  config.num_hidden_layers, arena_gib, flags.kv_cache);
  auto emit = [&](const std::string& fields) {
    if (json.is_open()) json << "{" << common << "," << fields << "}\n" << std::flush;
  };

  std::mt19937 rng(static_cast<uint32_t>(flags.seed));
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(config.vocab_size - 1));
  auto random_tokens = [&](int64_t count) {
    std::vector<int32_t> ids(static_cast<size_t>(count));
    for (auto& id : ids) id = token(rng);
    return ids;
  };

  // Long prefill: tokens/s of one sequence, then one profiled chunk for the op shares.
  if (flags.prefill > 0) {
    const std::vector<int32_t> prompt = random_tokens(flags.prefill);
    SequenceId warm = engine->add_sequence();
    engine->prefill(warm, std::span<const int32_t>(prompt.data(), std::min<size_t>(prompt.size(), 256)));
    engine->remove_sequence(warm);
    SequenceId seq = engine->add_sequence();
    start = std::chrono::steady_clock::now();
    engine->prefill(seq, prompt);
    const double seconds = seconds_since(start);
    engine->remove_sequence(seq);
    const double tps = flags.prefill / seconds;
    engine->reset_op_times();
    engine->set_profiling(true);
    seq = engine->add_sequence();
    engine->prefill(seq, std::span<const int32_t>(prompt.data(), std::min<int64_t>(flags.prefill, flags.prefill_chunk)));
    engine->set_profiling(false);
    engine->remove_sequence(seq);
    const std::vector<OpTime> ops = engine->op_times();
    std::printf("prefill  %6lld tokens: %10.1f tok/s  (%.3f s) |%s\n", static_cast<long long>(flags.prefill), tps,
                seconds, op_line(ops).c_str());
    emit(fmt::format("\"phase\":\"prefill\",\"tokens\":{},\"seconds\":{:.4f},\"tokens_per_s\":{:.1f},\"ops\":{}",
                     flags.prefill, seconds, tps, op_json(ops)));
  }

  // Contexts: max_batch sequences prefilled to --context tokens; decode batches use the first B.
  std::vector<SequenceId> sequences;
  start = std::chrono::steady_clock::now();
  for (int b = 0; b < max_batch; ++b) {
    sequences.push_back(engine->add_sequence());
    engine->prefill(sequences.back(), random_tokens(flags.context));
  }
  const double fill_seconds = seconds_since(start);
  std::printf("context fill: %d x %lld tokens in %.2f s (%.1f tok/s)\n", max_batch,
              static_cast<long long>(flags.context), fill_seconds, max_batch * flags.context / fill_seconds);

  for (int batch : batches) {
    const std::span<const SequenceId> group(sequences.data(), batch);
    std::vector<int32_t> next(static_cast<size_t>(batch));
    // Two ways to run a step: decode (the logits [batch, vocab] copied to the host, what a
    // sampler with temperature > 0 needs) and decode_greedy (argmax on the device, only
    // the ids copied back).
    auto step = [&](bool greedy) {
      for (auto& id : next) id = token(rng);
      if (greedy)
        engine->decode_greedy(group, next);
      else
        engine->decode(group, next);
    };
    // Seconds of flags.decode_steps timed steps after `warmup` untimed ones.
    auto time_steps = [&](bool greedy, int warmup) {
      for (int w = 0; w < warmup; ++w) step(greedy);
      const auto begin = std::chrono::steady_clock::now();
      for (int s = 0; s < flags.decode_steps; ++s) step(greedy);
      return seconds_since(begin);
    };
    const double seconds = time_steps(/*greedy=*/false, /*warmup=*/3);  // the first warm-up step captures the graph
    const double ms_per_step = 1000.0 * seconds / flags.decode_steps;
    const double tps = batch * flags.decode_steps / seconds;
    const double greedy_seconds = time_steps(/*greedy=*/true, /*warmup=*/1);
    const double greedy_ms_per_step = 1000.0 * greedy_seconds / flags.decode_steps;
    const double greedy_tps = batch * flags.decode_steps / greedy_seconds;
    engine->reset_op_times();
    engine->set_profiling(true);
    for (int s = 0; s < 2; ++s) step(/*greedy=*/false);
    engine->set_profiling(false);
    const std::vector<OpTime> ops = engine->op_times();
    std::printf("decode batch %3d ctx %6lld: %10.1f tok/s  %8.3f ms/step (logits to host); greedy on device: %10.1f "
                "tok/s  %8.3f ms/step |%s\n",
                batch, static_cast<long long>(flags.context), tps, ms_per_step, greedy_tps, greedy_ms_per_step,
                op_line(ops).c_str());
    emit(fmt::format("\"phase\":\"decode\",\"batch\":{},\"context\":{},\"steps\":{},\"graphs\":{},\"ms_per_step\":{:.4f},"
                     "\"tokens_per_s\":{:.1f},\"ms_per_step_greedy\":{:.4f},\"tokens_per_s_greedy\":{:.1f},\"ops\":{}",
                     batch, flags.context, flags.decode_steps, flags.no_graphs ? "false" : "true", ms_per_step, tps,
                     greedy_ms_per_step, greedy_tps, op_json(ops)));
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto flags = std::make_shared<BenchFlags>();
  auto* command = app.add_subcommand(
      "bench", "prefill/decode tokens/s, per-op time shares and device memory (random V4-Flash-width model by default)");
  command->add_option("--device", flags->device, "cuda or cpu")->capture_default_str();
  command->add_option("--model", flags->model, "checkpoint directory (default: random weights, V4-Flash shapes)");
  command->add_option("--layers", flags->layers, "layers of the random model")->capture_default_str();
  command->add_option("--experts", flags->experts, "random model's routed experts: nvfp4, mxfp4, fp8, bf16")
      ->capture_default_str();
  command->add_option("--batch", flags->batches, "decode batch sizes, comma-separated")->capture_default_str();
  command->add_option("--context", flags->context, "tokens in each sequence before decoding")->capture_default_str();
  command->add_option("--decode-steps", flags->decode_steps, "timed decode steps per batch size")->capture_default_str();
  command->add_option("--prefill", flags->prefill, "tokens of the timed long prefill (0: skip)")->capture_default_str();
  command->add_option("--prefill-chunk", flags->prefill_chunk, "tokens per prefill step")->capture_default_str();
  command->add_flag("--no-graphs", flags->no_graphs, "decode eagerly instead of replaying CUDA graphs");
  command->add_option("--kv-cache", flags->kv_cache,
                      "CUDA KV cache: bf16, or fp8 (DeepSeek's 584-byte rows, head_dim 512; not yet "
                      "GPU-verified; compressed entries keep a BF16 staging copy, so no memory saving yet)")
      ->capture_default_str();
  command->add_option("--json", flags->json, "append one JSON line per measurement to this file");
  command->add_option("--seed", flags->seed, "seed of the random weights and tokens")->capture_default_str();
  command->callback([flags] { run_bench(*flags); });
}

}  // namespace dsv4::cli

// `dsv4 serve`: OpenAI-compatible HTTP server (docs/SERVER.md) over the bundled model or
// --model DIR. Listens on loopback by default; /health answers 503 until the model is
// loaded. Ctrl-C (SIGINT) or SIGTERM stops it.
#include <pthread.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "dsv4/server.h"
#include "dsv4/tokenizer.h"

namespace dsv4::cli {

namespace {

struct ServeFlags {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_model_name;
  std::string device = "cpu";
  server::ServerOptions options;
};

void run_serve(const ServeFlags& flags) {
  const std::string model_dir = flags.model.empty() ? default_model_dir() : flags.model;
  DSV4_CHECK(std::filesystem::is_directory(model_dir), "model directory '{}' does not exist", model_dir);
  DSV4_CHECK(flags.device == "cpu" || flags.device == "cuda", "--device must be cpu or cuda, got '{}'", flags.device);
  std::string model_id = flags.served_model_name;
  if (model_id.empty()) model_id = std::filesystem::path(model_dir).lexically_normal().filename().string();
  if (model_id.empty()) model_id = std::filesystem::path(model_dir).lexically_normal().parent_path().filename().string();

  server::ServerOptions options = flags.options;
  options.host = flags.host;
  options.port = flags.port;
  const Device device = flags.device == "cuda" ? Device::kCuda : Device::kCpu;
  server::Server http(options, [model_dir, model_id, device, max_batch = options.max_running] {
    server::LoadedModel loaded;
    loaded.tokenizer = Tokenizer::from_model_dir(model_dir);
    DSV4_CHECK(loaded.tokenizer, "model '{}' has neither tokenizer.json nor byte_tokenizer.json", model_dir);
    EngineOptions engine_options;
    engine_options.model_dir = model_dir;
    engine_options.device = device;
    engine_options.max_batch = max_batch;
    loaded.engine = Engine::create(engine_options);
    loaded.model_id = model_id;
    return loaded;
  });
  // Block the stop signals before any server thread exists (threads inherit the mask);
  // a dedicated thread takes them with sigwait and stops the server cleanly.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const int port = http.start();
  // Tests and scripts read this line to find an ephemeral port (--port 0).
  std::printf("dsv4 serve: listening on http://%s:%d (model '%s' from %s)\n", flags.host.c_str(), port,
              model_id.c_str(), model_dir.c_str());
  std::fflush(stdout);
  std::atomic<bool> signalled{false};
  std::thread signal_thread([&] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    signalled = true;
    http.stop();
  });

  if (http.wait_until_loaded()) {
    std::fprintf(stderr, "dsv4 serve: model loaded, ready\n");
  } else {
    std::fprintf(stderr, "dsv4 serve: the model failed to load; /health reports why\n");
  }
  http.wait();
  if (!signalled) pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
}

}  // namespace

void register_serve(CLI::App& app) {
  auto flags = std::make_shared<ServeFlags>();
  auto* command = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)");
  command->add_option("--model", flags->model, "Checkpoint directory (default: the bundled model)");
  command->add_option("--host", flags->host, "Address to listen on")->capture_default_str();
  command->add_option("--port", flags->port, "Port (0: any free port, printed at start)")->capture_default_str();
  command->add_option("--served-model-name", flags->served_model_name,
                      "Model id in /v1/models and requests (default: the directory name)");
  command->add_option("--device", flags->device, "cpu or cuda")->capture_default_str();
  command->add_option("--max-running", flags->options.max_running, "Sequences decoded together")->capture_default_str();
  command->add_option("--max-waiting", flags->options.max_waiting, "Queued requests before 429")->capture_default_str();
  command->add_option("--kv-budget-tokens", flags->options.kv_budget_tokens,
                      "Prompt + max_tokens summed over running requests (0: max-running x context)")
      ->capture_default_str();
  command->add_option("--max-model-len", flags->options.context_length, "Context length (0: the model's)")
      ->capture_default_str();
  command->add_option("--default-max-tokens", flags->options.default_max_tokens,
                      "max_tokens when a request gives none")->capture_default_str();
  command->add_option("--max-body-bytes", flags->options.max_body_bytes, "Larger request bodies get 413")
      ->capture_default_str();
  command->callback([flags] { run_serve(*flags); });
}

}  // namespace dsv4::cli

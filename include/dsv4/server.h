// OpenAI-compatible HTTP server over one Engine (docs/SERVER.md):
//   /v1/completions, /v1/chat/completions (SSE streaming), /v1/models, /health, /metrics.
// One scheduler thread owns the engine and runs continuous batching: between decode
// steps it admits waiting requests (prefill) and drops finished or cancelled ones.
// Admission control works on a token budget (prompt + max_tokens per request, a
// proxy for KV-cache space): 429 when the waiting queue is full, 503 for a request
// that could never fit. No device code here: the engine comes from a loader.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dsv4/engine.h"
#include "dsv4/tokenizer.h"

namespace dsv4::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                    // 0: an ephemeral port (see Server::port)
  int max_running = 16;               // sequences in the running batch
  int max_waiting = 256;              // queued requests beyond the batch; more -> 429
  int64_t kv_budget_tokens = 0;       // prompt + max_tokens summed over running requests;
                                      // 0: max_running * context length
  int64_t context_length = 0;         // 0: the model's max_position_embeddings
  int default_max_tokens = 256;       // when a request gives none (capped by the context)
  size_t max_body_bytes = 1 << 20;    // larger request bodies -> 413
  int http_threads = 64;              // connections served at once (streams hold one each)
};

// What the loader hands over: the engine moves to the scheduler thread.
struct LoadedModel {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string model_id;  // the name /v1/models lists and requests must use
};

class Server {
 public:
  // `load` runs on a background thread after start(); until it returns, /health and
  // the generation endpoints answer 503. An exception from it is reported there too.
  Server(ServerOptions options, std::function<LoadedModel()> load);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving in background threads; throws dsv4::Error if the address
  // cannot be bound. Returns the bound port.
  int start();
  int port() const;
  // Blocks until the model is loaded (true) or failed to load (false).
  bool wait_until_loaded();
  // Blocks until stop() (from another thread or a signal handler's thread).
  void wait();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::server

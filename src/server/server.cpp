// HTTP side: routes, request -> Job translation, SSE streaming, lifecycle.
#include "dsv4/server.h"

#include <atomic>
#include <chrono>
#include <random>

#include <sys/socket.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "api.h"
#include "dsv4/error.h"
#include "metrics.h"
#include "responses.h"
#include "scheduler.h"

namespace dsv4::server {

namespace {

enum class State { kLoading, kReady, kFailed };

constexpr const char* kJson = "application/json";

void send_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status;
  res.set_content(error_json(error), kJson);
}

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  std::function<LoadedModel()> load;
  httplib::Server http;
  Metrics metrics;
  int bound_port = 0;
  std::atomic<int> listen_socket{-1};
  std::thread listen_thread, load_thread;

  std::atomic<State> state{State::kLoading};
  std::mutex state_mutex;
  std::condition_variable state_changed;
  std::string load_error;
  // Set once before state becomes kReady; read-only afterwards.
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatFormat> chat_format;
  std::string model_id;
  int64_t created = unix_seconds();
  std::unique_ptr<Scheduler> scheduler;

  std::atomic<uint64_t> next_request{1};
  uint64_t id_salt = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();

  void load_model();
  void routes();
  bool ready(httplib::Response& res);
  std::shared_ptr<Job> make_job(const GenerationParams& params, std::vector<int32_t> prompt, bool chat,
                                const ChatOptions* chat_options);
  void respond(Endpoint endpoint, const GenerationParams& params, std::shared_ptr<Job> job, bool reasoning_field,
               httplib::Response& res);
  std::string new_id(const char* prefix) {
    return fmt::format("{}-{:016x}{:06x}", prefix, id_salt, next_request.fetch_add(1));
  }
};

void Server::Impl::load_model() {
  try {
    LoadedModel model = load();
    DSV4_CHECK(model.engine && model.tokenizer, "the model loader returned no engine or no tokenizer");
    const ModelConfig& config = model.engine->config();
    tokenizer = std::move(model.tokenizer);
    chat_format = std::make_unique<ChatFormat>(*tokenizer, static_cast<int32_t>(config.bos_token_id),
                                               static_cast<int32_t>(config.eos_token_id));
    model_id = model.model_id;
    metrics.set_model_name(model_id);
    SchedulerOptions scheduler_options{options.max_running, options.max_waiting, options.kv_budget_tokens,
                                       options.context_length};
    scheduler = std::make_unique<Scheduler>(std::move(model.engine), *tokenizer, scheduler_options, metrics);
    std::lock_guard lock(state_mutex);
    state = State::kReady;
  } catch (const std::exception& error) {
    std::lock_guard lock(state_mutex);
    load_error = error.what();
    state = State::kFailed;
  }
  state_changed.notify_all();
}

bool Server::Impl::ready(httplib::Response& res) {
  const State s = state.load();
  if (s == State::kReady) return true;
  if (s == State::kLoading) {
    send_error(res, ApiError(503, "the model is still loading", "service_unavailable", "", "model_loading"));
  } else {
    std::lock_guard lock(state_mutex);
    send_error(res, ApiError(503, "the model failed to load: " + load_error, "service_unavailable", "", "model_load_failed"));
  }
  return false;
}

std::shared_ptr<Job> Server::Impl::make_job(const GenerationParams& params, std::vector<int32_t> prompt, bool chat,
                                            const ChatOptions* chat_options) {
  if (!params.model.empty() && params.model != model_id) {
    throw ApiError(404, "model '" + params.model + "' does not exist; this server serves '" + model_id + "'",
                   "invalid_request_error", "model", "model_not_found");
  }
  const ModelConfig& config = scheduler->config();
  const int64_t context = scheduler->context_length();
  if (prompt.empty()) {
    if (config.bos_token_id < 0) throw invalid_request("the prompt is empty", "prompt");
    prompt.push_back(static_cast<int32_t>(config.bos_token_id));
  }
  for (const int32_t id : prompt) {
    if (id >= config.vocab_size) {
      throw invalid_request(fmt::format("token id {} is outside the vocabulary of {}", id, config.vocab_size), "prompt");
    }
  }
  const auto prompt_tokens = static_cast<int64_t>(prompt.size());
  if (prompt_tokens >= context) {
    throw invalid_request(fmt::format("the prompt is {} tokens; this model's context is {} tokens (prompt plus at "
                                      "least one generated token must fit)", prompt_tokens, context),
                          chat ? "messages" : "prompt", "context_length_exceeded");
  }
  auto job = std::make_shared<Job>();
  if (params.max_tokens) {
    if (prompt_tokens + *params.max_tokens > context) {
      throw invalid_request(fmt::format("prompt ({} tokens) + max_tokens ({}) exceeds this model's context of {} "
                                        "tokens", prompt_tokens, *params.max_tokens, context),
                            "max_tokens", "context_length_exceeded");
    }
    job->max_tokens = *params.max_tokens;
  } else {
    job->max_tokens = std::min<int64_t>(options.default_max_tokens, context - prompt_tokens);
  }
  job->prompt = std::move(prompt);
  job->sampling.temperature = params.temperature;
  job->sampling.top_p = params.top_p;
  job->sampling.top_k = params.top_k;
  job->sampling.seed = params.seed ? *params.seed : std::random_device{}() ^ (id_salt << 20) ^ next_request.load();
  job->stop_strings = params.stop;
  if (!params.ignore_eos) {
    for (const int64_t id : config.eos_token_ids) job->stop_ids.push_back(static_cast<int32_t>(id));
    if (chat) {
      for (const int32_t id : chat_format->stop_ids()) job->stop_ids.push_back(id);
    }
  }
  if (chat) {
    for (const std::string& s : chat_format->stop_strings()) job->stop_strings.push_back(s);
    if (chat_options && chat_options->thinking) job->think_end_id = chat_format->think_end_id();
  }
  return job;
}

// Non-streaming: wait and send one JSON body. Streaming: SSE chunks as text arrives;
// a failed write (client gone) cancels the job.
void Server::Impl::respond(Endpoint endpoint, const GenerationParams& params, std::shared_ptr<Job> job,
                           bool reasoning_field, httplib::Response& res) {
  ResponseHeader header{endpoint, new_id(endpoint == Endpoint::kChat ? "chatcmpl" : "cmpl"), unix_seconds(), model_id};
  const auto prompt_tokens = static_cast<int64_t>(job->prompt.size());
  scheduler->submit(job);  // throws 429 / 503
  if (!params.stream) {
    job->wait_finished();
    if (job->finish_reason == "error") {
      send_error(res, ApiError(500, "generation failed: " + job->error, "server_error", "", "engine_error"));
      return;
    }
    res.set_content(full_response(header, job->content, job->reasoning, reasoning_field, job->finish_reason,
                                  {prompt_tokens, job->completion_tokens}),
                    kJson);
    return;
  }
  struct StreamState {
    bool sent_role = false, done = false;
    Clock::time_point last_write = Clock::now();
  };
  auto stream = std::make_shared<StreamState>();
  const bool include_usage = params.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, stream, header, include_usage, prompt_tokens](size_t, httplib::DataSink& sink) {
        if (stream->done) {
          sink.done();
          return true;
        }
        const Job::Update update = job->take(std::chrono::milliseconds(250));
        std::string out;
        if (header.endpoint == Endpoint::kChat && !stream->sent_role) {
          out += sse_role_chunk(header);
          stream->sent_role = true;
        }
        if (!update.content.empty() || !update.reasoning.empty()) {
          out += sse_delta_chunk(header, update.content, update.reasoning);
        }
        if (update.finished) {
          if (job->finish_reason == "error") {
            out += sse_event(error_json(ApiError(500, "generation failed: " + job->error, "server_error", "", "engine_error")));
          } else {
            out += sse_finish_chunk(header, job->finish_reason);
            if (include_usage) out += sse_usage_chunk(header, {prompt_tokens, job->completion_tokens});
          }
          out += kSseDone;
          stream->done = true;
        } else if (out.empty() && Clock::now() - stream->last_write > std::chrono::seconds(2)) {
          out = ": keep-alive\n\n";  // an SSE comment: lets a long queue wait notice a gone client
        }
        if (!out.empty()) {
          if (!sink.write(out.data(), out.size())) {
            job->cancel();
            return false;
          }
          stream->last_write = Clock::now();
        }
        if (stream->done) sink.done();
        return true;
      },
      [job](bool success) {
        if (!success) job->cancel();
      });
}

void Server::Impl::routes() {
  // cpp-httplib 0.11 listens with a backlog of 5 and sets SO_REUSEPORT. Under a burst of
  // new connections the full accept queue drops handshakes; a client whose request then
  // arrives after the 5 s keep-alive wait is closed unanswered. Keep the socket to widen
  // the backlog after bind, and leave out SO_REUSEPORT so a second server on the same
  // port fails instead of sharing it.
  http.set_socket_options([this](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_socket = static_cast<int>(sock);
  });
  http.set_payload_max_length(options.max_body_bytes);
  http.new_task_queue = [threads = options.http_threads] { return new httplib::ThreadPool(threads); };
  http.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      send_error(res, ApiError(413, fmt::format("the request body exceeds {} bytes", options.max_body_bytes),
                               "invalid_request_error", "", "payload_too_large"));
    } else if (res.status == 404) {
      send_error(res, ApiError(404, "no such endpoint", "invalid_request_error", "", "not_found"));
    } else {
      send_error(res, ApiError(res.status, "the request could not be served", "invalid_request_error", "", ""));
    }
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, message, "server_error", "", "internal_error"));
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (!ready(res)) return;
    res.set_content(nlohmann::json{{"status", "ok"}, {"model", model_id}}.dump(), kJson);
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(), "text/plain; version=0.0.4");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    if (!ready(res)) return;
    nlohmann::json model = {{"id", model_id},
                            {"object", "model"},
                            {"created", created},
                            {"owned_by", "dsv4"},
                            {"max_model_len", scheduler->context_length()}};
    res.set_content(nlohmann::json{{"object", "list"}, {"data", nlohmann::json::array({model})}}.dump(), kJson);
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    if (!ready(res)) return;
    try {
      CompletionRequest request = parse_completion_request(req.body);
      std::vector<int32_t> prompt =
          request.prompt_is_ids ? request.prompt_ids : tokenizer->encode(request.prompt, /*add_special_tokens=*/true);
      respond(Endpoint::kCompletions, request.params, make_job(request.params, std::move(prompt), false, nullptr),
              false, res);
    } catch (const ApiError& error) {
      send_error(res, error);
    }
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    if (!ready(res)) return;
    try {
      ChatRequest request = parse_chat_request(req.body);
      std::vector<int32_t> prompt;
      try {
        prompt = chat_format->encode(request.messages, request.options);
      } catch (const Error& error) {
        throw invalid_request(error.what(), "messages");
      }
      const bool thinking = request.options.thinking && chat_format->style() == ChatStyle::kDeepSeekV4;
      respond(Endpoint::kChat, request.params, make_job(request.params, std::move(prompt), true, &request.options),
              thinking, res);
    } catch (const ApiError& error) {
      send_error(res, error);
    }
  });
}

Server::Server(ServerOptions options, std::function<LoadedModel()> load) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->load = std::move(load);
}

Server::~Server() {
  stop();
  if (impl_->listen_thread.joinable()) impl_->listen_thread.join();
  if (impl_->load_thread.joinable()) impl_->load_thread.join();
}

int Server::start() {
  impl_->routes();
  const auto& o = impl_->options;
  if (o.port == 0) {
    impl_->bound_port = impl_->http.bind_to_any_port(o.host);
  } else {
    impl_->bound_port = impl_->http.bind_to_port(o.host, o.port) ? o.port : -1;
  }
  DSV4_CHECK(impl_->bound_port > 0, "cannot listen on {}:{} (address in use or not local?)", o.host, o.port);
  if (impl_->listen_socket >= 0) ::listen(impl_->listen_socket, SOMAXCONN);  // re-listen only resizes the queue
  impl_->listen_thread = std::thread([this] { impl_->http.listen_after_bind(); });
  impl_->load_thread = std::thread([this] { impl_->load_model(); });
  return impl_->bound_port;
}

int Server::port() const { return impl_->bound_port; }

bool Server::wait_until_loaded() {
  std::unique_lock lock(impl_->state_mutex);
  impl_->state_changed.wait(lock, [&] { return impl_->state.load() != State::kLoading; });
  return impl_->state.load() == State::kReady;
}

void Server::wait() {
  if (impl_->listen_thread.joinable()) impl_->listen_thread.join();
}

void Server::stop() { impl_->http.stop(); }

}  // namespace dsv4::server

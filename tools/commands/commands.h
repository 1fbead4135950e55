// Each `dsv4` subcommand lives in its own file and registers itself on the app.
// Commands are thin: they parse flags, call the library, print results.
#pragma once
#include <CLI/CLI.hpp>

namespace dsv4::cli {

void register_generate(CLI::App& app);
void register_serve(CLI::App& app);
void register_bench(CLI::App& app);
void register_quantize(CLI::App& app);
void register_inspect(CLI::App& app);
void register_perplexity(CLI::App& app);

// Default model shipped with the repo (models/default), found next to the binary's
// source tree or the install prefix.
std::string default_model_dir();

}  // namespace dsv4::cli

// dsv4: command-line entry point.
#include <cstdio>

#include "commands/commands.h"
#include "dsv4/error.h"

int main(int argc, char** argv) {
  CLI::App app{"dsv4: DeepSeek-V4 inference engine (NVFP4/MXFP4/FP8 weights; CPU reference and CUDA backends)"};
  app.require_subcommand(1);
  dsv4::cli::register_generate(app);
  dsv4::cli::register_serve(app);
  dsv4::cli::register_bench(app);
  dsv4::cli::register_quantize(app);
  dsv4::cli::register_inspect(app);
  dsv4::cli::register_perplexity(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  } catch (const dsv4::Error& error) {
    std::fprintf(stderr, "dsv4: error: %s\n", error.what());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "dsv4: internal error: %s\n", error.what());
    return 2;
  }
  return 0;
}

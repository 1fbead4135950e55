// `dsv4 bench`: placeholder until its issue lands; says so instead of pretending.
#include "commands.h"
#include "dsv4/error.h"

namespace dsv4::cli {

void register_bench(CLI::App& app) {
  auto* command = app.add_subcommand("bench", "bench (not implemented yet)");
  command->callback([] { fail("'dsv4 bench' is not implemented yet"); });
}

}  // namespace dsv4::cli

// `dsv4 serve`: placeholder until its issue lands; says so instead of pretending.
#include "commands.h"
#include "dsv4/error.h"

namespace dsv4::cli {

void register_serve(CLI::App& app) {
  auto* command = app.add_subcommand("serve", "serve (not implemented yet)");
  command->callback([] { fail("'dsv4 serve' is not implemented yet"); });
}

}  // namespace dsv4::cli

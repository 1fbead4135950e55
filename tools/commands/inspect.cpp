// `dsv4 inspect`: placeholder until its issue lands; says so instead of pretending.
#include "commands.h"
#include "dsv4/error.h"

namespace dsv4::cli {

void register_inspect(CLI::App& app) {
  auto* command = app.add_subcommand("inspect", "inspect (not implemented yet)");
  command->callback([] { fail("'dsv4 inspect' is not implemented yet"); });
}

}  // namespace dsv4::cli

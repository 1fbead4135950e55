// `dsv4 quantize`: placeholder until its issue lands; says so instead of pretending.
#include "commands.h"
#include "dsv4/error.h"

namespace dsv4::cli {

void register_quantize(CLI::App& app) {
  auto* command = app.add_subcommand("quantize", "quantize (not implemented yet)");
  command->callback([] { fail("'dsv4 quantize' is not implemented yet"); });
}

}  // namespace dsv4::cli

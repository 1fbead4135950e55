#include <cstdlib>
#include <filesystem>

#include "commands.h"

namespace dsv4::cli {

// The bundled model: $DSV4_DEFAULT_MODEL, else models/default of the source tree
// this binary was built from.
std::string default_model_dir() {
  if (const char* env = std::getenv("DSV4_DEFAULT_MODEL"); env && *env) return env;
  return (std::filesystem::path(DSV4_SOURCE_DIR) / "models" / "default").string();
}

}  // namespace dsv4::cli

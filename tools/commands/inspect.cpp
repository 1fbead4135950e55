// `dsv4 inspect DIR`: config summary, per-layer types, bytes per storage format and
// per layer, every tensor with --tensors, and a GPU memory estimate (weights + KV
// cache for --context tokens x --batch sequences). Report: src/formats/checkpoint_inspector.h.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "dsv4/error.h"
#include "formats/checkpoint_inspector.h"

namespace dsv4::cli {

namespace {

struct InspectFlags {
  std::string directory;
  formats::InspectOptions options;
  std::string kv_dtype = "bf16";
};

}  // namespace

void register_inspect(CLI::App& app) {
  auto flags = std::make_shared<InspectFlags>();
  auto* command = app.add_subcommand("inspect", "show a checkpoint's config, storage formats, sizes and memory needs");
  command->add_option("dir", flags->directory, "checkpoint directory")->required();
  command->add_flag("--tensors", flags->options.list_tensors, "list every tensor with its format, shape and bytes");
  command->add_option("--context", flags->options.context, "tokens per sequence for the KV cache estimate (default 4096)");
  command->add_option("--batch", flags->options.batch, "sequences for the KV cache estimate (default 1)");
  command->add_option("--kv-dtype", flags->kv_dtype, "KV cache element type for the estimate: bf16 | fp8 | f32 (default bf16)");
  command->callback([flags] {
    const std::string& kv = flags->kv_dtype;
    DSV4_CHECK(kv == "bf16" || kv == "fp8" || kv == "f32", "--kv-dtype '{}' is not one of bf16, fp8, f32", kv);
    flags->options.kv_element_bytes = kv == "bf16" ? 2 : kv == "fp8" ? 1 : 4;
    std::fputs(formats::inspect_checkpoint(flags->directory, flags->options).c_str(), stdout);
  });
}

}  // namespace dsv4::cli

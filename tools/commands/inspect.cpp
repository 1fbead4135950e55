// `dsv4 inspect DIR`: config summary, per-layer types, bytes per storage format and
// per layer, every tensor with --tensors, and a GPU memory estimate (weights + KV
// cache for --context tokens x --batch sequences). Report: src/formats/checkpoint_inspector.h.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "dsv4/error.h"
#include "dsv4/engine.h"
#include "dsv4/weights.h"
#include "formats/checkpoint_inspector.h"
#if defined(DSV4_HAVE_CUDA)
#include "cuda/engine/cuda_engine.h"
#endif

namespace dsv4::cli {

namespace {

struct InspectFlags {
  std::string directory;
  formats::InspectOptions options;
  std::string kv_dtype = "bf16";
  bool plan = false;
  int plan_batch = 64;
  int64_t plan_context = 0;
  int plan_chunk = 0;
};

// The CUDA engine's device arena for this checkpoint: computed without a GPU.
void print_plan(const InspectFlags& flags) {
#if defined(DSV4_HAVE_CUDA)
  const ModelWeights weights = load_model(flags.directory);
  EngineOptions options;
  options.device = Device::kCuda;
  options.max_batch = flags.plan_batch;
  options.max_context = flags.plan_context;
  options.prefill_chunk = flags.plan_chunk;
  const cuda::MemoryPlan plan = cuda::plan_cuda_engine(weights, options);
  std::printf("CUDA engine plan for --max-batch %d --max-context %lld --prefill-chunk %d (0 = engine default):\n%s",
              flags.plan_batch, static_cast<long long>(flags.plan_context), flags.plan_chunk,
              plan.describe(true).c_str());
#else
  (void)flags;
  fail("--plan describes the CUDA engine's memory, but this dsv4 was built without the CUDA backend");
#endif
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto flags = std::make_shared<InspectFlags>();
  auto* command = app.add_subcommand("inspect", "show a checkpoint's config, storage formats, sizes and memory needs");
  command->add_option("dir", flags->directory, "checkpoint directory")->required();
  command->add_flag("--tensors", flags->options.list_tensors, "list every tensor with its format, shape and bytes");
  command->add_option("--context", flags->options.context, "tokens per sequence for the KV cache estimate (default 4096)");
  command->add_option("--batch", flags->options.batch, "sequences for the KV cache estimate (default 1)");
  command->add_option("--kv-dtype", flags->kv_dtype, "KV cache element type for the estimate: bf16 | fp8 | f32 (default bf16)");
  command->add_flag("--plan", flags->plan, "print the CUDA engine's device memory plan (one arena, per region)");
  command->add_option("--max-batch", flags->plan_batch, "with --plan: cache slots (default 64)");
  command->add_option("--max-context", flags->plan_context, "with --plan: tokens per sequence (default: engine's)");
  command->add_option("--prefill-chunk", flags->plan_chunk, "with --plan: tokens per prefill step (default: engine's)");
  command->callback([flags] {
    if (flags->plan) {
      print_plan(*flags);
      return;
    }
    const std::string& kv = flags->kv_dtype;
    DSV4_CHECK(kv == "bf16" || kv == "fp8" || kv == "f32", "--kv-dtype '{}' is not one of bf16, fp8, f32", kv);
    flags->options.kv_element_bytes = kv == "bf16" ? 2 : kv == "fp8" ? 1 : 4;
    std::fputs(formats::inspect_checkpoint(flags->directory, flags->options).c_str(), stdout);
  });
}

}  // namespace dsv4::cli

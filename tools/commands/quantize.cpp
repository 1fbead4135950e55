// `dsv4 quantize --in DIR --out DIR --experts nvfp4|mxfp4|fp8 --dense fp8|bf16`:
// converts a checkpoint tensor by tensor (src/formats/checkpoint_quantizer.h says what
// becomes what and how the output is named), prints the per-tensor error summary and
// writes the full report to OUT/quantize_report.json. A progress bar on stderr only
// when stderr is a terminal.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "dsv4/error.h"
#include "formats/checkpoint_quantizer.h"

namespace dsv4::cli {

namespace {

struct QuantizeFlags {
  std::string input, output, experts, dense;
  double shard_gib = 4.0;
  int worst = 10;
};

void draw_progress(int64_t done, int64_t total, const std::string& name) {
  constexpr int kWidth = 30;
  const int filled = total ? static_cast<int>(kWidth * done / total) : kWidth;
  std::string label = name.size() > 60 ? "..." + name.substr(name.size() - 57) : name;
  std::fprintf(stderr, "\r[%s%s] %lld/%lld %-60s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, ' ').c_str(), static_cast<long long>(done), static_cast<long long>(total),
               label.c_str());
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

void run(const QuantizeFlags& flags) {
  formats::QuantizeOptions options;
  options.input = flags.input;
  options.output = flags.output;
  options.experts = formats::parse_expert_format(flags.experts);
  options.dense = formats::parse_dense_format(flags.dense);
  DSV4_CHECK(flags.shard_gib > 0, "--shard-gib must be positive, got {}", flags.shard_gib);
  options.max_shard_bytes = static_cast<int64_t>(flags.shard_gib * (1 << 30));
  formats::ProgressCallback progress;
  if (::isatty(STDERR_FILENO)) progress = draw_progress;
  const formats::QuantizeReport report = formats::quantize_checkpoint(options, progress);
  std::fputs(report.table(flags.worst).c_str(), stdout);
  std::fputs(fmt::format("\nwrote {} ({} shard{}, report quantize_report.json)\n", flags.output, report.shards,
                         report.shards == 1 ? "" : "s")
                 .c_str(),
             stdout);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto flags = std::make_shared<QuantizeFlags>();
  auto* command = app.add_subcommand(
      "quantize", "convert a checkpoint: routed experts to NVFP4/MXFP4/FP8, dense projections to FP8/BF16, the rest kept");
  command->add_option("--in", flags->input, "input checkpoint directory (official or transformers names)")->required();
  command->add_option("--out", flags->output, "output directory (new or empty)")->required();
  command->add_option("--experts", flags->experts, "routed experts: nvfp4 | mxfp4 | fp8")->required();
  command->add_option("--dense", flags->dense, "dense projections (attention, indexer wq_b, shared experts): fp8 | bf16")
      ->required();
  command->add_option("--shard-gib", flags->shard_gib, "largest output shard in GiB (default 4)");
  command->add_option("--worst", flags->worst, "how many of the largest-error tensors to print (default 10)");
  command->callback([flags] { run(*flags); });
}

}  // namespace dsv4::cli

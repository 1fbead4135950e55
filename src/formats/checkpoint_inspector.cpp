// The inspect report (see checkpoint_inspector.h).
#include "formats/checkpoint_inspector.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <optional>

#include "dsv4/error.h"
#include "dsv4/safetensors.h"
#include "formats/checkpoint_survey.h"

namespace dsv4::formats {

namespace fs = std::filesystem;

namespace {

std::string human(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

std::string config_summary(const ModelConfig& c) {
  std::string out;
  out += fmt::format("  hidden {}, layers {} (+{} MTP), vocab {}, tie_word_embeddings {}\n", c.hidden_size,
                     c.num_hidden_layers, c.num_nextn_predict_layers, c.vocab_size, c.tie_word_embeddings);
  out += fmt::format("  attention: {} heads x head_dim {} (rope {}), q_lora_rank {}, o_groups {} x o_lora_rank {}, "
                     "sliding_window {}\n",
                     c.num_attention_heads, c.head_dim, c.qk_rope_head_dim, c.q_lora_rank, c.o_groups, c.o_lora_rank,
                     c.sliding_window);
  out += fmt::format("  compression: CSA rate {}, HCA rate {}; indexer {} heads x {} dim, top-k {}\n",
                     c.compress_rate_csa, c.compress_rate_hca, c.index_n_heads, c.index_head_dim, c.index_topk);
  out += fmt::format("  moe: {} routed experts (top {}, intermediate {}, {}, scale {}) + {} shared; mHC hc_mult {}\n",
                     c.n_routed_experts, c.num_experts_per_tok, c.moe_intermediate_size, c.scoring_func,
                     c.routed_scaling_factor, c.n_shared_experts, c.hc_mult);
  const QuantizationConfig& q = c.quantization;
  if (q.quant_method.empty() && q.expert_dtype.empty()) {
    out += "  quantization_config: none\n";
  } else {
    out += fmt::format("  quantization_config: quant_method {}", q.quant_method.empty() ? "-" : q.quant_method);
    if (!q.fmt.empty()) out += fmt::format(", fmt {}", q.fmt);
    if (!q.scale_fmt.empty()) out += fmt::format(", scale_fmt {}", q.scale_fmt);
    if (!q.weight_block_size.empty()) out += fmt::format(", weight_block_size [{}]", fmt::join(q.weight_block_size, ", "));
    if (!q.quant_algo.empty()) out += fmt::format(", quant_algo {}", q.quant_algo);
    if (q.group_size) out += fmt::format(", group_size {}", q.group_size);
    if (!q.expert_dtype.empty()) out += fmt::format(", expert_dtype {}", q.expert_dtype);
    out += "\n";
  }
  return out;
}

}  // namespace

KvCacheElements kv_cache_elements(const ModelConfig& c, int64_t context) {
  KvCacheElements kv;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    kv.sliding += std::min(context, c.sliding_window) * c.head_dim;
    const AttentionType type = c.layer_types[l];
    if (type == AttentionType::kSliding) continue;
    const bool csa = type == AttentionType::kCompressedSparse;
    const int64_t rate = c.compress_rate(l), coff = csa ? 2 : 1;
    kv.compressed += context / rate * c.head_dim;
    kv.buffers += 2 * rate * coff * c.head_dim + (csa ? 2 * rate * c.head_dim : 0);
    if (csa) {
      kv.indexer += context / c.compress_rate_csa * c.index_head_dim;
      kv.buffers += 2 * c.compress_rate_csa * 2 * c.index_head_dim + 2 * c.compress_rate_csa * c.index_head_dim;
    }
  }
  return kv;
}

std::string inspect_checkpoint(const fs::path& directory, const InspectOptions& options) {
  DSV4_CHECK(fs::is_directory(directory), "{} is not a directory", directory.string());
  DSV4_CHECK(options.context > 0 && options.batch > 0, "--context and --batch must be positive (got {} and {})",
             options.context, options.batch);
  std::string out = fmt::format("checkpoint {}\n", directory.string());
  std::optional<ModelConfig> config;
  if (fs::exists(directory / "config.json")) {
    try {
      config = load_model_config(directory / "config.json");
      out += "config:\n" + config_summary(*config);
    } catch (const Error& e) {
      out += fmt::format("config.json: {}\n", e.what());
    }
  } else {
    out += "config.json: missing (tensors only)\n";
  }

  const Checkpoint checkpoint(directory);
  const std::vector<SurveyEntry> entries = survey_checkpoint(checkpoint);
  out += fmt::format("files: {}, tensors: {} stored, {} entries (weights grouped with their scales)\n",
                     checkpoint.files().size(), checkpoint.names().size(), entries.size());

  // Per format.
  struct Total {
    int64_t count = 0, bytes = 0;
  };
  std::map<std::string, Total> per_format;
  std::map<int64_t, std::map<std::string, int64_t>> per_layer;  // layer -> format -> bytes
  int64_t total_bytes = 0, mtp_bytes = 0;
  for (const SurveyEntry& e : entries) {
    Total& t = per_format[e.format];
    ++t.count;
    t.bytes += e.bytes;
    per_layer[e.layer][e.format] += e.bytes;
    total_bytes += e.bytes;
    if (e.layer == -2) mtp_bytes += e.bytes;
  }
  out += fmt::format("\n{:<28} {:>8} {:>12} {:>7}\n", "format", "tensors", "bytes", "share");
  std::vector<std::pair<std::string, Total>> formats(per_format.begin(), per_format.end());
  std::sort(formats.begin(), formats.end(), [](const auto& a, const auto& b) { return a.second.bytes > b.second.bytes; });
  for (const auto& [format, t] : formats)
    out += fmt::format("{:<28} {:>8} {:>12} {:>6.1f}%\n", format, t.count, human(t.bytes),
                       total_bytes ? 100.0 * t.bytes / total_bytes : 0.0);
  out += fmt::format("{:<28} {:>8} {:>12}\n", "total", entries.size(), human(total_bytes));

  // Per layer.
  out += fmt::format("\n{:<6} {:<30} {:<9} {:>12}  {}\n", "layer", "attention", "mlp", "bytes", "formats");
  for (const auto& [layer, formats_of_layer] : per_layer) {
    int64_t bytes = 0;
    std::vector<std::pair<int64_t, std::string>> parts;
    for (const auto& [format, b] : formats_of_layer) {
      bytes += b;
      parts.push_back({b, format});
    }
    std::sort(parts.rbegin(), parts.rend());
    std::string list;
    for (const auto& [b, format] : parts) list += fmt::format("{}{} {}", list.empty() ? "" : ", ", format, human(b));
    std::string name = layer == -1 ? "top" : layer == -2 ? "mtp" : std::to_string(layer);
    std::string attention = "-", mlp = "-";
    if (config && layer >= 0 && layer < config->num_hidden_layers) {
      attention = attention_type_name(config->layer_types[layer]);
      mlp = mlp_type_name(config->mlp_layer_types[layer]);
    }
    out += fmt::format("{:<6} {:<30} {:<9} {:>12}  {}\n", name, attention, mlp, human(bytes), list);
  }

  if (options.list_tensors) {
    out += fmt::format("\n{:<64} {:<24} {:<16} {:>12}\n", "tensor", "format", "shape [out, in]", "bytes");
    for (const SurveyEntry& e : entries) {
      const std::string shape = e.is_matrix ? fmt::format("[{}, {}]", e.matrix.rows, e.matrix.cols)
                                            : e.parts.front()->shape_string();
      out += fmt::format("{:<64} {:<24} {:<16} {:>12}\n", e.name, e.format, shape, e.bytes);
      for (size_t p = 1; p < e.parts.size(); ++p)
        out += fmt::format("  + {:<60} {:<24} {:<16} {:>12}\n", e.parts[p]->name, dtype_name(e.parts[p]->dtype),
                           e.parts[p]->shape_string(), e.parts[p]->nbytes);
    }
  }

  // GPU memory estimate.
  const int64_t weights = total_bytes - mtp_bytes;
  out += fmt::format("\nGPU memory estimate (context {}, batch {}, KV cache {} bytes per element):\n", options.context,
                     options.batch, options.kv_element_bytes);
  out += fmt::format("  weights      {:>12}{}\n", human(weights),
                     mtp_bytes ? fmt::format("  (mtp.* not counted: {}, unused by the engine)", human(mtp_bytes)) : "");
  if (config) {
    const KvCacheElements kv = kv_cache_elements(*config, options.context);
    const int64_t per_sequence = kv.total() * options.kv_element_bytes;
    const int64_t kv_total = per_sequence * options.batch;
    out += fmt::format("  KV cache     {:>12}  ({} per sequence: sliding {}, compressed {}, indexer {}, buffers {})\n",
                       human(kv_total), human(per_sequence), human(kv.sliding * options.kv_element_bytes),
                       human(kv.compressed * options.kv_element_bytes), human(kv.indexer * options.kv_element_bytes),
                       human(kv.buffers * options.kv_element_bytes));
    out += fmt::format("  total        {:>12}  (+ activations and workspace, not estimated)\n", human(weights + kv_total));
  } else {
    out += "  KV cache     needs config.json\n";
  }
  return out;
}

}  // namespace dsv4::formats

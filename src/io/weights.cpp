// Binds every tensor the config requires to ModelWeights, after validating presence,
// dtype and shape of all of them. Matrices stay in the mapped files (QuantMatrix
// views); small vectors become owned FP32. Every problem is collected, then reported
// together (a mis-converted checkpoint usually has many).
//
// Matrices: format detection and validation in io/stored_matrix.h (shared with the
// checkpoint survey); here only the config's [rows, cols] and the fused-expert views.
#include "dsv4/weights.h"

#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "dsv4/error.h"
#include "io/key_names.h"
#include "io/stored_matrix.h"

namespace dsv4 {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

class Binder {
 public:
  Binder(const Checkpoint& checkpoint, const ModelConfig& config) : checkpoint_(checkpoint), config_(config) {}

  // Each binder below records its first problem and returns an empty value, so that
  // the loader goes on and reports every problem of the checkpoint at once.
  template <typename Bind>
  auto attempt(Bind&& bind) const -> decltype(bind()) {
    try {
      return bind();
    } catch (const Error& error) {
      problems_.push_back(error.what());
      return {};
    }
  }
  const std::vector<std::string>& problems() const { return problems_; }

  // The stored tensor for an official name, or nullptr.
  const TensorView* find(const std::string& official) const {
    for (const auto& name : candidate_names(official))
      if (const TensorView* view = checkpoint_.find(name)) return view;
    return nullptr;
  }

  const TensorView& require(const std::string& official, const std::string& why) const {
    const TensorView* view = find(official);
    DSV4_CHECK(view != nullptr, "missing tensor {} ({}) in checkpoint {}", official, why,
               checkpoint_.directory().string());
    return *view;
  }

  // A small FP32 vector/matrix from F32, BF16 or F16 storage.
  FloatTensor vector(const std::string& official, std::vector<int64_t> shape, const std::string& why) const {
    return attempt([&] {
      const TensorView& view = require(official, why);
      const bool scalar_as_1 = view.shape.empty() && shape == std::vector<int64_t>{1};
      DSV4_CHECK(view.shape == shape || scalar_as_1, "tensor {} in {}: shape {} but config expects {} ({})", view.name,
                 view.file, view.shape_string(), shape_text(shape), why);
      FloatTensor tensor;
      tensor.shape = shape;
      tensor.values.resize(static_cast<size_t>(view.numel()));
      for (size_t i = 0; i < tensor.values.size(); ++i) {
        uint16_t half;
        switch (view.dtype) {
          case DType::kF32: std::memcpy(&tensor.values[i], view.data + 4 * i, 4); break;
          case DType::kBF16:
            std::memcpy(&half, view.data + 2 * i, 2);
            tensor.values[i] = bf16_to_float(half);
            break;
          case DType::kF16:
            std::memcpy(&half, view.data + 2 * i, 2);
            tensor.values[i] = f16_to_float(half);
            break;
          default:
            fail("tensor {} in {}: dtype {} but expected F32, BF16 or F16 ({})", view.name, view.file,
                 dtype_name(view.dtype), why);
        }
      }
      return tensor;
    });
  }

  // A weight matrix [rows, cols] stored as `official_base`.weight in any supported format.
  QuantMatrix matrix(const std::string& official_base, int64_t rows, int64_t cols, const std::string& why) const {
    return attempt([&] { return bind_matrix(official_base, rows, cols, why); });
  }

  // Routed expert e of a layer: the official per-expert tensors, or views into
  // transformers' fused state-dict tensors.
  ExpertWeights expert(int64_t layer, int64_t e) const {
    return attempt([&] {
      const std::string base = fmt::format("layers.{}.ffn.experts.{}.", layer, e);
      const int64_t hidden = config_.hidden_size, inter = config_.moe_intermediate_size;
      const std::string why = fmt::format("routed expert {} of layer {}", e, layer);
      if (find(base + "w1.weight") || !find_fused(layer, "gate_up_proj")) {
        return ExpertWeights{bind_matrix(base + "w1", inter, hidden, why + ", gate [moe_intermediate_size, hidden_size]"),
                             bind_matrix(base + "w2", hidden, inter, why + ", down [hidden_size, moe_intermediate_size]"),
                             bind_matrix(base + "w3", inter, hidden, why + ", up [moe_intermediate_size, hidden_size]")};
      }
      return fused_expert(layer, e);
    });
  }

  // Hash routing table [vocab, top_k], stored I64 (transformers) or I32 (reference).
  std::vector<int32_t> tid2eid(const std::string& official, const std::string& why) const {
    return attempt([&] {
      const TensorView& view = require(official, why);
      const int64_t vocab = config_.vocab_size, top_k = config_.num_experts_per_tok;
      DSV4_CHECK(view.dtype == DType::kI64 || view.dtype == DType::kI32,
                 "tensor {} in {}: dtype {} but expected I64 or I32 ({})", view.name, view.file, dtype_name(view.dtype),
                 why);
      DSV4_CHECK(view.shape == (std::vector<int64_t>{vocab, top_k}), "tensor {} in {}: shape {} but config expects {} ({})",
                 view.name, view.file, view.shape_string(), shape_text({vocab, top_k}), why);
      std::vector<int32_t> table(static_cast<size_t>(view.numel()));
      for (size_t i = 0; i < table.size(); ++i) {
        int64_t value;
        if (view.dtype == DType::kI64) {
          std::memcpy(&value, view.data + 8 * i, 8);
        } else {
          int32_t narrow;
          std::memcpy(&narrow, view.data + 4 * i, 4);
          value = narrow;
        }
        DSV4_CHECK(value >= 0 && value < config_.n_routed_experts,
                   "tensor {} in {}: entry [{}, {}] = {} is not an expert id in [0, n_routed_experts = {})", view.name,
                   view.file, static_cast<int64_t>(i) / top_k, static_cast<int64_t>(i) % top_k, value,
                   config_.n_routed_experts);
        table[i] = static_cast<int32_t>(value);
      }
      return table;
    });
  }

 private:
  // The stored matrix, its format read off its dtypes and companions, every stored
  // shape checked against the config's [rows, cols] (io/stored_matrix.h).
  QuantMatrix bind_matrix(const std::string& official_base, int64_t rows, int64_t cols, const std::string& why) const {
    const TensorView& weight = require(official_base + ".weight", why);
    const std::string stored_base = weight.name.substr(0, weight.name.size() - std::string(".weight").size());
    const ExpectedMatrix expected{rows, cols, why};
    return bind_stored_matrix(weight, find_matrix_companions(checkpoint_, stored_base), &expected);
  }

  const TensorView* find_fused(int64_t layer, const char* which) const {
    for (const char* prefix : {"model.layers.", "layers."})
      if (const TensorView* view = checkpoint_.find(fmt::format("{}{}.mlp.experts.{}", prefix, layer, which)))
        return view;
    return nullptr;
  }

  // transformers' fused experts: gate_up_proj [E, 2I, H] (rows [0, I) of expert e are
  // w1, rows [I, 2I) are w3), down_proj [E, H, I]. Views, no copy.
  ExpertWeights fused_expert(int64_t layer, int64_t e) const {
    const int64_t hidden = config_.hidden_size, inter = config_.moe_intermediate_size, experts = config_.n_routed_experts;
    const TensorView* gate_up = find_fused(layer, "gate_up_proj");
    const TensorView* down = find_fused(layer, "down_proj");
    DSV4_CHECK(down != nullptr, "missing tensor model.layers.{}.mlp.experts.down_proj (routed experts of layer {}, "
               "beside {}) in checkpoint {}", layer, layer, gate_up->name, checkpoint_.directory().string());
    auto check = [&](const TensorView& view, const std::vector<int64_t>& shape, const char* meaning) {
      DSV4_CHECK(dense_weight_format(view.dtype).has_value(),
                 "tensor {} in {}: dtype {} but fused experts must be F32, BF16 or F16", view.name, view.file,
                 dtype_name(view.dtype));
      DSV4_CHECK(view.shape == shape, "tensor {} in {}: shape {} but config expects {} ({})", view.name, view.file,
                 view.shape_string(), shape_text(shape), meaning);
    };
    check(*gate_up, {experts, 2 * inter, hidden}, "n_routed_experts, 2*moe_intermediate_size, hidden_size");
    check(*down, {experts, hidden, inter}, "n_routed_experts, hidden_size, moe_intermediate_size");
    auto view = [&](const TensorView& t, int64_t first_row, int64_t rows, int64_t cols, const std::string& name) {
      QuantMatrix m;
      m.name = name;
      m.format = *dense_weight_format(t.dtype);  // checked above
      m.rows = rows;
      m.cols = cols;
      m.data = t.data + first_row * cols * dtype_storage_bytes(t.dtype, 1);
      return m;
    };
    return {view(*gate_up, e * 2 * inter, inter, hidden, fmt::format("{}[{}, :{}]", gate_up->name, e, inter)),
            view(*down, e * hidden, hidden, inter, fmt::format("{}[{}]", down->name, e)),
            view(*gate_up, e * 2 * inter + inter, inter, hidden, fmt::format("{}[{}, {}:]", gate_up->name, e, inter))};
  }

  const Checkpoint& checkpoint_;
  const ModelConfig& config_;
  mutable std::vector<std::string> problems_;
};

HyperConnectionWeights bind_hc(const Binder& b, const std::string& base, int64_t mix, int64_t flat, int64_t scales,
                               const std::string& why) {
  return {b.vector(base + "fn", {mix, flat}, why + " fn [mix, hc_mult*hidden_size]"), b.vector(base + "base", {mix}, why + " base"),
          b.vector(base + "scale", {scales}, why + " scale")};
}

// coff = 2 for CSA (the overlapping Ca | Cb halves), 1 for HCA.
CompressorWeights bind_compressor(const Binder& b, const std::string& base, int64_t rate, int64_t dim, int64_t coff,
                                  int64_t hidden, const std::string& why) {
  CompressorWeights c;
  c.wkv = b.matrix(base + "wkv", coff * dim, hidden, why + " kv projection");
  c.wgate = b.matrix(base + "wgate", coff * dim, hidden, why + " gate projection");
  c.ape = b.vector(base + "ape", {rate, coff * dim}, why + " position bias [compress rate, coff*dim]");
  c.norm = b.vector(base + "norm.weight", {dim}, why + " norm");
  return c;
}

LayerWeights bind_layer(const Binder& b, const ModelConfig& config, int64_t l) {
  const std::string p = fmt::format("layers.{}.", l);
  const std::string why = fmt::format("layer {}", l);
  const int64_t hidden = config.hidden_size, n = config.hc_mult;
  const int64_t heads = config.num_attention_heads, head_dim = config.head_dim;
  LayerWeights layer;
  layer.attention_type = config.layer_types[l];
  layer.mlp_type = config.mlp_layer_types[l];
  layer.attn_norm = b.vector(p + "attn_norm.weight", {hidden}, why + " attention norm");
  layer.ffn_norm = b.vector(p + "ffn_norm.weight", {hidden}, why + " ffn norm");
  layer.hc_attn = bind_hc(b, p + "hc_attn_", config.hc_mix_width(), n * hidden, 3, why + " attention mHC");
  layer.hc_ffn = bind_hc(b, p + "hc_ffn_", config.hc_mix_width(), n * hidden, 3, why + " ffn mHC");

  AttentionWeights& a = layer.attn;
  a.wq_a = b.matrix(p + "attn.wq_a", config.q_lora_rank, hidden, why + " wq_a (q_lora_rank, hidden_size)");
  a.q_norm = b.vector(p + "attn.q_norm.weight", {config.q_lora_rank}, why + " q_norm");
  a.wq_b = b.matrix(p + "attn.wq_b", heads * head_dim, config.q_lora_rank,
                    why + " wq_b (num_attention_heads*head_dim, q_lora_rank)");
  a.wkv = b.matrix(p + "attn.wkv", head_dim, hidden, why + " wkv (head_dim, hidden_size)");
  a.kv_norm = b.vector(p + "attn.kv_norm.weight", {head_dim}, why + " kv_norm");
  a.wo_a = b.matrix(p + "attn.wo_a", config.o_groups * config.o_lora_rank, heads * head_dim / config.o_groups,
                    why + " wo_a (o_groups*o_lora_rank, num_attention_heads*head_dim/o_groups)");
  a.wo_b = b.matrix(p + "attn.wo_b", hidden, config.o_groups * config.o_lora_rank,
                    why + " wo_b (hidden_size, o_groups*o_lora_rank)");
  a.attn_sink = b.vector(p + "attn.attn_sink", {heads}, why + " attention sinks");
  if (layer.attention_type != AttentionType::kSliding) {
    const bool csa = layer.attention_type == AttentionType::kCompressedSparse;
    a.has_compressor = true;
    a.compressor = bind_compressor(b, p + "attn.compressor.", config.compress_rate(l), head_dim, csa ? 2 : 1, hidden,
                                   why + " compressor");
    if (csa) {
      a.has_indexer = true;
      a.indexer.wq_b = b.matrix(p + "attn.indexer.wq_b", config.index_n_heads * config.index_head_dim,
                                config.q_lora_rank, why + " indexer wq_b (index_n_heads*index_head_dim, q_lora_rank)");
      a.indexer.weights_proj = b.matrix(p + "attn.indexer.weights_proj", config.index_n_heads, hidden,
                                        why + " indexer weights_proj (index_n_heads, hidden_size)");
      a.indexer.compressor = bind_compressor(b, p + "attn.indexer.compressor.", config.compress_rate_csa,
                                             config.index_head_dim, 2, hidden, why + " indexer compressor");
    }
  }

  MoEWeights& f = layer.ffn;
  f.gate = b.matrix(p + "ffn.gate", config.n_routed_experts, hidden, why + " router (n_routed_experts, hidden_size)");
  if (layer.mlp_type == MlpType::kHashMoE) {
    f.tid2eid = b.tid2eid(p + "ffn.gate.tid2eid", why + " hash routing table (vocab_size, num_experts_per_tok)");
  } else {
    f.gate_bias = b.vector(p + "ffn.gate.bias", {config.n_routed_experts}, why + " router correction bias");
  }
  for (int64_t e = 0; e < config.n_routed_experts; ++e) f.experts.push_back(b.expert(l, e));
  const int64_t inter = config.moe_intermediate_size;
  f.shared = {b.matrix(p + "ffn.shared_experts.w1", inter, hidden, why + " shared expert gate"),
              b.matrix(p + "ffn.shared_experts.w2", hidden, inter, why + " shared expert down"),
              b.matrix(p + "ffn.shared_experts.w3", inter, hidden, why + " shared expert up")};
  return layer;
}

}  // namespace

ModelWeights load_model_weights(std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config) {
  DSV4_CHECK(checkpoint != nullptr, "load_model_weights: no checkpoint");
  DSV4_CHECK(static_cast<int64_t>(config.layer_types.size()) == config.num_hidden_layers &&
                 static_cast<int64_t>(config.mlp_layer_types.size()) == config.num_hidden_layers,
             "load_model_weights: config has {} layer types and {} mlp layer types for {} layers",
             config.layer_types.size(), config.mlp_layer_types.size(), config.num_hidden_layers);
  const Binder b(*checkpoint, config);
  ModelWeights w;
  w.config = config;
  w.checkpoint = checkpoint;
  const int64_t hidden = config.hidden_size, vocab = config.vocab_size, n = config.hc_mult;
  w.embed = b.matrix("embed", vocab, hidden, "embedding (vocab_size, hidden_size)");
  if (config.tie_word_embeddings) {
    w.head = w.embed;  // transformers ties lm_head to the embedding (a stored head is unused)
  } else {
    w.head = b.matrix("head", vocab, hidden, "lm_head (vocab_size, hidden_size)");
  }
  w.norm = b.vector("norm.weight", {hidden}, "final norm");
  w.hc_head = bind_hc(b, "hc_head_", n, n * hidden, 1, "HyperHead");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) w.layers.push_back(bind_layer(b, config, l));

  const std::vector<std::string>& problems = b.problems();
  if (!problems.empty()) {
    constexpr size_t kShown = 20;
    std::string message = fmt::format("checkpoint {} does not fit its config ({} problem{}):",
                                      checkpoint->directory().string(), problems.size(), problems.size() == 1 ? "" : "s");
    for (size_t i = 0; i < problems.size() && i < kShown; ++i) message += "\n  " + problems[i];
    if (problems.size() > kShown) message += fmt::format("\n  ... and {} more", problems.size() - kShown);
    throw Error(message);
  }
  return w;
}

ModelWeights load_model(const std::filesystem::path& directory) {
  DSV4_CHECK(std::filesystem::is_directory(directory), "model directory {} does not exist", directory.string());
  const std::filesystem::path config_json = directory / "config.json";
  DSV4_CHECK(std::filesystem::exists(config_json),
             "model directory {} has no config.json: dsv4 reads the model's shape from the config.json that comes "
             "with the checkpoint (DeepSeek's official one or transformers' save_pretrained output)",
             directory.string());
  const ModelConfig config = load_model_config(config_json);
  auto checkpoint = std::make_shared<const Checkpoint>(directory);
  return load_model_weights(checkpoint, config);
}

}  // namespace dsv4

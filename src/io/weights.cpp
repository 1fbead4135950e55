// Binds every tensor the config requires to ModelWeights, after validating presence,
// dtype and shape of all of them. Matrices stay in the mapped files (QuantMatrix
// views); small vectors become owned FP32. Every problem is collected, then reported
// together (a mis-converted checkpoint usually has many).
//
// Storage formats of a matrix W[out, in] stored under X (= X.weight):
//   dense     X.weight F32/BF16/F16 [out, in]
//   FP8 block X.weight F8_E4M3 [out, in] + X.scale (or transformers' X.weight_scale_inv)
//             E8M0 or F32 [ceil(out/128), ceil(in/128)]
//   MXFP4     X.weight I8/U8 [out, in/2] or F4 [out, in] + X.scale E8M0 (or U8) [out, in/32]
//   NVFP4     X.weight U8/I8 [out, in/2] + X.weight_scale E4M3 [out, in/16]
//             + X.weight_scale_2 F32 scalar (+ X.input_scale, ignored)
// Packed E2M1: low nibble = even column.
#include "dsv4/weights.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "dsv4/error.h"
#include "io/key_names.h"

namespace dsv4 {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

WeightFormat dense_format(DType dtype, bool* ok) {
  *ok = true;
  switch (dtype) {
    case DType::kF32: return WeightFormat::kF32;
    case DType::kBF16: return WeightFormat::kBF16;
    case DType::kF16: return WeightFormat::kF16;
    default: *ok = false; return WeightFormat::kF32;
  }
}

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
  const TensorView* companion(const std::string& stored_base, std::initializer_list<const char*> suffixes) const {
    for (const char* suffix : suffixes)
      if (const TensorView* view = checkpoint_.find(stored_base + suffix)) return view;
    return nullptr;
  }

  QuantMatrix bind_matrix(const std::string& official_base, int64_t rows, int64_t cols, const std::string& why) const {
    const TensorView& weight = require(official_base + ".weight", why);
    const std::string stored_base = weight.name.substr(0, weight.name.size() - std::string(".weight").size());
    auto expect_shape = [&](const TensorView& view, const std::vector<int64_t>& shape, const char* layout) {
      DSV4_CHECK(view.shape == shape, "tensor {} in {}: shape {} but config expects {} ({}; {})", view.name, view.file,
                 view.shape_string(), shape_text(shape), why, layout);
    };
    QuantMatrix m;
    m.name = weight.name;
    m.rows = rows;
    m.cols = cols;
    m.data = weight.data;
    const TensorView* scale = companion(stored_base, {".scale", ".weight_scale_inv"});
    const TensorView* nv_scale = companion(stored_base, {".weight_scale"});
    if (nv_scale) {  // ModelOpt NVFP4
      DSV4_CHECK(weight.dtype == DType::kU8 || weight.dtype == DType::kI8,
                 "tensor {} in {}: dtype {} but an NVFP4 weight (it has {}) must be U8 packed E2M1 ({})", weight.name,
                 weight.file, dtype_name(weight.dtype), nv_scale->name, why);
      DSV4_CHECK(cols % 16 == 0, "tensor {} in {}: NVFP4 needs in_features divisible by 16, config gives {} ({})",
                 weight.name, weight.file, cols, why);
      expect_shape(weight, {rows, cols / 2}, "NVFP4: packed E2M1, two per byte");
      DSV4_CHECK(nv_scale->dtype == DType::kF8_E4M3, "tensor {} in {}: dtype {} but NVFP4 block scales must be F8_E4M3",
                 nv_scale->name, nv_scale->file, dtype_name(nv_scale->dtype));
      expect_shape(*nv_scale, {rows, cols / 16}, "NVFP4: one E4M3 scale per 16 inputs");
      const TensorView* global = companion(stored_base, {".weight_scale_2"});
      DSV4_CHECK(global && global->dtype == DType::kF32 && global->numel() == 1,
                 "tensor {}.weight_scale_2 (the F32 per-tensor scale of NVFP4 weight {} in {}) is missing or not a F32 "
                 "scalar", stored_base, weight.name, weight.file);
      std::memcpy(&m.tensor_scale, global->data, 4);
      DSV4_CHECK(std::isfinite(m.tensor_scale) && m.tensor_scale > 0.0f,
                 "tensor {} in {}: NVFP4 per-tensor scale {} must be positive and finite", global->name, global->file,
                 m.tensor_scale);
      m.format = WeightFormat::kNVFP4;
      m.scales = nv_scale->data;
      m.scale_dtype = DType::kF8_E4M3;
      m.scale_rows = rows;
      m.scale_cols = cols / 16;
    } else if (scale && weight.dtype == DType::kF8_E4M3) {  // official FP8, 128x128 blocks
      expect_shape(weight, {rows, cols}, "FP8 E4M3");
      const int64_t scale_rows = (rows + 127) / 128, scale_cols = (cols + 127) / 128;
      DSV4_CHECK(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kF32,
                 "tensor {} in {}: dtype {} but FP8 block scales must be F8_E8M0 or F32", scale->name, scale->file,
                 dtype_name(scale->dtype));
      expect_shape(*scale, {scale_rows, scale_cols}, "one scale per 128x128 block");
      m.format = WeightFormat::kFP8Block;
      m.scales = scale->data;
      m.scale_dtype = scale->dtype;
      m.scale_rows = scale_rows;
      m.scale_cols = scale_cols;
    } else if (scale && (weight.dtype == DType::kI8 || weight.dtype == DType::kU8 || weight.dtype == DType::kF4)) {
      DSV4_CHECK(cols % 32 == 0, "tensor {} in {}: MXFP4 needs in_features divisible by 32, config gives {} ({})",
                 weight.name, weight.file, cols, why);
      // F4 headers count E2M1 elements; I8/U8 headers count bytes.
      expect_shape(weight, weight.dtype == DType::kF4 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows, cols / 2},
                   "MXFP4: packed E2M1, two per byte");
      DSV4_CHECK(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kU8,
                 "tensor {} in {}: dtype {} but MXFP4 scales must be F8_E8M0", scale->name, scale->file,
                 dtype_name(scale->dtype));
      expect_shape(*scale, {rows, cols / 32}, "MXFP4: one E8M0 scale per 32 inputs");
      m.format = WeightFormat::kMXFP4;
      m.scales = scale->data;
      m.scale_dtype = DType::kF8_E8M0;
      m.scale_rows = rows;
      m.scale_cols = cols / 32;
    } else if (scale) {
      fail("tensor {} in {}: dtype {} with scale companion {} (expected F8_E4M3 for FP8 blocks or I8/U8/F4 for "
           "MXFP4) ({})", weight.name, weight.file, dtype_name(weight.dtype), scale->name, why);
    } else {
      bool dense = false;
      m.format = dense_format(weight.dtype, &dense);
      DSV4_CHECK(dense, "tensor {} in {}: dtype {} but expected F32, BF16 or F16, or quantized data with a .scale "
                 "(FP8/MXFP4) or .weight_scale + .weight_scale_2 (NVFP4) companion ({})",
                 weight.name, weight.file, dtype_name(weight.dtype), why);
      expect_shape(weight, {rows, cols}, "dense");
    }
    return m;
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
      bool dense = false;
      dense_format(view.dtype, &dense);
      DSV4_CHECK(dense, "tensor {} in {}: dtype {} but fused experts must be F32, BF16 or F16", view.name, view.file,
                 dtype_name(view.dtype));
      DSV4_CHECK(view.shape == shape, "tensor {} in {}: shape {} but config expects {} ({})", view.name, view.file,
                 view.shape_string(), shape_text(shape), meaning);
    };
    check(*gate_up, {experts, 2 * inter, hidden}, "n_routed_experts, 2*moe_intermediate_size, hidden_size");
    check(*down, {experts, hidden, inter}, "n_routed_experts, hidden_size, moe_intermediate_size");
    auto view = [&](const TensorView& t, int64_t first_row, int64_t rows, int64_t cols, const std::string& name) {
      bool dense = false;
      QuantMatrix m;
      m.name = name;
      m.format = dense_format(t.dtype, &dense);
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

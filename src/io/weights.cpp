// Binds every tensor the config requires to ModelWeights, after validating presence,
// dtype and shape of all of them. Matrices stay in the mapped files (QuantMatrix
// views); small vectors become owned FP32.
#include "dsv4/weights.h"

#include <cstring>

#include <fmt/format.h>

#include "dsv4/error.h"
#include "io/key_names.h"

namespace dsv4 {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

class Binder {
 public:
  Binder(const Checkpoint& checkpoint, const ModelConfig& config) : checkpoint_(checkpoint), config_(config) {}

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

  FloatTensor vector(const std::string& official, std::vector<int64_t> shape, const std::string& why) const {
    const TensorView& view = require(official, why);
    DSV4_CHECK(view.shape == shape || (view.numel() == 1 && shape.size() == 1 && shape[0] == 1),
               "tensor {} in {}: shape {} but config expects {} ({})", view.name, view.file, view.shape_string(),
               shape_text(shape), why);
    FloatTensor tensor;
    tensor.shape = shape;
    tensor.values.resize(static_cast<size_t>(view.numel()));
    for (size_t i = 0; i < tensor.values.size(); ++i) {
      switch (view.dtype) {
        case DType::kF32: std::memcpy(&tensor.values[i], view.data + 4 * i, 4); break;
        case DType::kBF16: {
          uint16_t bits;
          std::memcpy(&bits, view.data + 2 * i, 2);
          tensor.values[i] = bf16_to_float(bits);
          break;
        }
        case DType::kF16: {
          uint16_t bits;
          std::memcpy(&bits, view.data + 2 * i, 2);
          tensor.values[i] = f16_to_float(bits);
          break;
        }
        default:
          fail("tensor {} in {}: dtype {} but expected F32, BF16 or F16 ({})", view.name, view.file,
               dtype_name(view.dtype), why);
      }
    }
    return tensor;
  }

  // A weight matrix [rows, cols] under `official_base`.weight, in any supported format.
  QuantMatrix matrix(const std::string& official_base, int64_t rows, int64_t cols, const std::string& why) const {
    const TensorView& weight = require(official_base + ".weight", why);
    const std::string stored_base = weight.name.substr(0, weight.name.size() - std::string(".weight").size());
    QuantMatrix m;
    m.name = weight.name;
    m.rows = rows;
    m.cols = cols;
    m.data = weight.data;
    auto expect_shape = [&](const TensorView& view, std::vector<int64_t> shape, const char* what) {
      DSV4_CHECK(view.shape == shape, "tensor {} in {}: shape {} but config expects {} ({}, {})", view.name, view.file,
                 view.shape_string(), shape_text(shape), why, what);
    };
    const TensorView* scale = checkpoint_.find(stored_base + ".scale");
    const TensorView* weight_scale = checkpoint_.find(stored_base + ".weight_scale");
    const TensorView* weight_scale_2 = checkpoint_.find(stored_base + ".weight_scale_2");
    if (weight_scale) {  // ModelOpt NVFP4
      DSV4_CHECK(weight.dtype == DType::kU8 || weight.dtype == DType::kI8,
                 "tensor {} in {}: NVFP4 weight must be U8 (packed E2M1), got {}", weight.name, weight.file,
                 dtype_name(weight.dtype));
      DSV4_CHECK(cols % 16 == 0, "tensor {}: NVFP4 needs in_features divisible by 16, got {}", weight.name, cols);
      expect_shape(weight, {rows, cols / 2}, "packed E2M1, two per byte");
      DSV4_CHECK(weight_scale->dtype == DType::kF8_E4M3, "tensor {}: NVFP4 block scales must be F8_E4M3, got {}",
                 weight_scale->name, dtype_name(weight_scale->dtype));
      expect_shape(*weight_scale, {rows, cols / 16}, "E4M3 scale per 16 inputs");
      DSV4_CHECK(weight_scale_2 && weight_scale_2->dtype == DType::kF32 && weight_scale_2->numel() == 1,
                 "tensor {}.weight_scale_2 (FP32 per-tensor scale of NVFP4) is missing or not a F32 scalar", stored_base);
      m.format = WeightFormat::kNVFP4;
      m.scales = weight_scale->data;
      m.scale_dtype = DType::kF8_E4M3;
      m.scale_rows = rows;
      m.scale_cols = cols / 16;
      std::memcpy(&m.tensor_scale, weight_scale_2->data, 4);
    } else if (scale) {  // official: FP8 128x128 blocks or MXFP4 experts
      if (weight.dtype == DType::kF8_E4M3) {
        expect_shape(weight, {rows, cols}, "FP8 E4M3");
        const int64_t scale_rows = (rows + 127) / 128, scale_cols = (cols + 127) / 128;
        DSV4_CHECK(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kF32,
                   "tensor {}: FP8 block scales must be F8_E8M0 or F32, got {}", scale->name, dtype_name(scale->dtype));
        expect_shape(*scale, {scale_rows, scale_cols}, "one scale per 128x128 block");
        m.format = WeightFormat::kFP8Block;
        m.scale_rows = scale_rows;
        m.scale_cols = scale_cols;
      } else if (weight.dtype == DType::kI8 || weight.dtype == DType::kU8 || weight.dtype == DType::kF4) {
        DSV4_CHECK(cols % 32 == 0, "tensor {}: MXFP4 needs in_features divisible by 32, got {}", weight.name, cols);
        expect_shape(weight, weight.dtype == DType::kF4 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows, cols / 2},
                     "packed E2M1");
        DSV4_CHECK(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kU8,
                   "tensor {}: MXFP4 scales must be F8_E8M0, got {}", scale->name, dtype_name(scale->dtype));
        expect_shape(*scale, {rows, cols / 32}, "one E8M0 scale per 32 inputs");
        m.format = WeightFormat::kMXFP4;
        m.scale_rows = rows;
        m.scale_cols = cols / 32;
      } else {
        fail("tensor {} in {}: has a .scale companion but dtype {} (expected F8_E4M3 for FP8 blocks or I8/U8/F4 for MXFP4)",
             weight.name, weight.file, dtype_name(weight.dtype));
      }
      m.scales = scale->data;
      m.scale_dtype = scale->dtype == DType::kU8 ? DType::kF8_E8M0 : scale->dtype;
    } else {
      switch (weight.dtype) {
        case DType::kF32: m.format = WeightFormat::kF32; break;
        case DType::kBF16: m.format = WeightFormat::kBF16; break;
        case DType::kF16: m.format = WeightFormat::kF16; break;
        default:
          fail("tensor {} in {}: dtype {} without scale tensors (expected F32/BF16/F16, or quantized data with "
               ".scale or .weight_scale/.weight_scale_2 companions)", weight.name, weight.file, dtype_name(weight.dtype));
      }
      expect_shape(weight, {rows, cols}, "dense");
    }
    return m;
  }

  // Expert e of layer: per-expert official tensors, or transformers' fused
  // mlp.experts.gate_up_proj [E, 2I, H] / down_proj [E, H, I] (dense dtypes only).
  ExpertWeights expert(int64_t layer, int64_t e) const {
    const std::string base = fmt::format("layers.{}.ffn.experts.{}.", layer, e);
    const int64_t hidden = config_.hidden_size, inter = config_.moe_intermediate_size, experts = config_.n_routed_experts;
    const std::string why = fmt::format("routed expert {} of layer {}", e, layer);
    if (find(base + "w1.weight")) {
      return {matrix(base + "w1", inter, hidden, why + " gate"), matrix(base + "w2", hidden, inter, why + " down"),
              matrix(base + "w3", inter, hidden, why + " up")};
    }
    const std::string fused_prefix = fmt::format("model.layers.{}.mlp.experts.", layer);
    const TensorView* gate_up = checkpoint_.find(fused_prefix + "gate_up_proj");
    const TensorView* down = checkpoint_.find(fused_prefix + "down_proj");
    DSV4_CHECK(gate_up && down, "missing tensor {}w1.weight ({}) in checkpoint {}", base, why,
               checkpoint_.directory().string());
    DSV4_CHECK(gate_up->shape == (std::vector<int64_t>{experts, 2 * inter, hidden}),
               "tensor {} in {}: shape {} but config expects {}", gate_up->name, gate_up->file, gate_up->shape_string(),
               shape_text({experts, 2 * inter, hidden}));
    DSV4_CHECK(down->shape == (std::vector<int64_t>{experts, hidden, inter}),
               "tensor {} in {}: shape {} but config expects {}", down->name, down->file, down->shape_string(),
               shape_text({experts, hidden, inter}));
    auto view = [&](const TensorView& t, int64_t offset_rows, int64_t rows, int64_t cols, const std::string& name) {
      QuantMatrix m;
      m.name = name;
      m.rows = rows;
      m.cols = cols;
      const int64_t element = dtype_storage_bytes(t.dtype, 1);
      switch (t.dtype) {
        case DType::kF32: m.format = WeightFormat::kF32; break;
        case DType::kBF16: m.format = WeightFormat::kBF16; break;
        case DType::kF16: m.format = WeightFormat::kF16; break;
        default: fail("tensor {}: fused experts must be F32/BF16/F16, got {}", t.name, dtype_name(t.dtype));
      }
      m.data = t.data + offset_rows * cols * element;
      return m;
    };
    return {view(*gate_up, e * 2 * inter, inter, hidden, gate_up->name + fmt::format("[{}].gate", e)),
            view(*down, e * hidden, hidden, inter, down->name + fmt::format("[{}]", e)),
            view(*gate_up, e * 2 * inter + inter, inter, hidden, gate_up->name + fmt::format("[{}].up", e))};
  }

  std::vector<int32_t> tid2eid(const std::string& official, const std::string& why) const {
    const TensorView& view = require(official, why);
    const int64_t vocab = config_.vocab_size, top_k = config_.num_experts_per_tok;
    DSV4_CHECK(view.shape == (std::vector<int64_t>{vocab, top_k}), "tensor {} in {}: shape {} but config expects {} ({})",
               view.name, view.file, view.shape_string(), shape_text({vocab, top_k}), why);
    DSV4_CHECK(view.dtype == DType::kI64 || view.dtype == DType::kI32,
               "tensor {} in {}: dtype {} but expected I64 or I32 ({})", view.name, view.file, dtype_name(view.dtype), why);
    std::vector<int32_t> table(static_cast<size_t>(view.numel()));
    for (size_t i = 0; i < table.size(); ++i) {
      int64_t value;
      if (view.dtype == DType::kI64) {
        std::memcpy(&value, view.data + 8 * i, 8);
      } else {
        int32_t v32;
        std::memcpy(&v32, view.data + 4 * i, 4);
        value = v32;
      }
      DSV4_CHECK(value >= 0 && value < config_.n_routed_experts,
                 "tensor {}: entry {} = {} is not an expert id in [0, {})", view.name, i, value, config_.n_routed_experts);
      table[i] = static_cast<int32_t>(value);
    }
    return table;
  }

 private:
  const Checkpoint& checkpoint_;
  const ModelConfig& config_;
};

HyperConnectionWeights bind_hc(const Binder& b, const std::string& base, int64_t mix, int64_t flat, int64_t scales,
                               const std::string& why) {
  return {b.vector(base + "fn", {mix, flat}, why), b.vector(base + "base", {mix}, why),
          b.vector(base + "scale", {scales}, why)};
}

CompressorWeights bind_compressor(const Binder& b, const std::string& base, int64_t rate, int64_t dim, int64_t coff,
                                  int64_t hidden, const std::string& why) {
  CompressorWeights c;
  c.wkv = b.matrix(base + "wkv", coff * dim, hidden, why + " kv projection");
  c.wgate = b.matrix(base + "wgate", coff * dim, hidden, why + " gate projection");
  c.ape = b.vector(base + "ape", {rate, coff * dim}, why + " position bias");
  c.norm = b.vector(base + "norm.weight", {dim}, why + " norm");
  return c;
}

}  // namespace

ModelWeights load_model_weights(std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config) {
  const Binder b(*checkpoint, config);
  ModelWeights w;
  w.config = config;
  w.checkpoint = checkpoint;
  const int64_t hidden = config.hidden_size, vocab = config.vocab_size, n = config.hc_mult;
  const int64_t heads = config.num_attention_heads, head_dim = config.head_dim;
  w.embed = b.matrix("embed", vocab, hidden, "embedding [vocab_size, hidden_size]");
  w.head = b.matrix("head", vocab, hidden, "lm_head [vocab_size, hidden_size]");
  w.norm = b.vector("norm.weight", {hidden}, "final norm");
  w.hc_head = bind_hc(b, "hc_head_", n, n * hidden, 1, "HyperHead");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = fmt::format("layers.{}.", l);
    const std::string why = fmt::format("layer {}", l);
    LayerWeights layer;
    layer.attention_type = config.layer_types[l];
    layer.mlp_type = config.mlp_layer_types[l];
    layer.attn_norm = b.vector(p + "attn_norm.weight", {hidden}, why + " attention norm");
    layer.ffn_norm = b.vector(p + "ffn_norm.weight", {hidden}, why + " ffn norm");
    layer.hc_attn = bind_hc(b, p + "hc_attn_", config.hc_mix_width(), n * hidden, 3, why + " attention mHC");
    layer.hc_ffn = bind_hc(b, p + "hc_ffn_", config.hc_mix_width(), n * hidden, 3, why + " ffn mHC");
    AttentionWeights& a = layer.attn;
    a.wq_a = b.matrix(p + "attn.wq_a", config.q_lora_rank, hidden, why + " wq_a [q_lora_rank, hidden_size]");
    a.q_norm = b.vector(p + "attn.q_norm.weight", {config.q_lora_rank}, why + " q_norm");
    a.wq_b = b.matrix(p + "attn.wq_b", heads * head_dim, config.q_lora_rank,
                      why + " wq_b [num_attention_heads*head_dim, q_lora_rank]");
    a.wkv = b.matrix(p + "attn.wkv", head_dim, hidden, why + " wkv [head_dim, hidden_size]");
    a.kv_norm = b.vector(p + "attn.kv_norm.weight", {head_dim}, why + " kv_norm");
    a.wo_a = b.matrix(p + "attn.wo_a", config.o_groups * config.o_lora_rank, heads * head_dim / config.o_groups,
                      why + " wo_a [o_groups*o_lora_rank, heads*head_dim/o_groups]");
    a.wo_b = b.matrix(p + "attn.wo_b", hidden, config.o_groups * config.o_lora_rank,
                      why + " wo_b [hidden_size, o_groups*o_lora_rank]");
    a.attn_sink = b.vector(p + "attn.attn_sink", {heads}, why + " attention sinks");
    if (layer.attention_type != AttentionType::kSliding) {
      const bool csa = layer.attention_type == AttentionType::kCompressedSparse;
      a.has_compressor = true;
      a.compressor = bind_compressor(b, p + "attn.compressor.", config.compress_rate(l), head_dim, csa ? 2 : 1, hidden,
                                     why + " compressor");
      if (csa) {
        a.has_indexer = true;
        a.indexer.wq_b = b.matrix(p + "attn.indexer.wq_b", config.index_n_heads * config.index_head_dim,
                                  config.q_lora_rank, why + " indexer wq_b");
        a.indexer.weights_proj =
            b.matrix(p + "attn.indexer.weights_proj", config.index_n_heads, hidden, why + " indexer weights_proj");
        a.indexer.compressor = bind_compressor(b, p + "attn.indexer.compressor.", config.compress_rate_csa,
                                               config.index_head_dim, 2, hidden, why + " indexer compressor");
      }
    }
    MoEWeights& f = layer.ffn;
    f.gate = b.matrix(p + "ffn.gate", config.n_routed_experts, hidden, why + " router [n_routed_experts, hidden_size]");
    if (layer.mlp_type == MlpType::kHashMoE) {
      f.tid2eid = b.tid2eid(p + "ffn.gate.tid2eid", why + " hash routing table [vocab_size, num_experts_per_tok]");
    } else {
      f.gate_bias = b.vector(p + "ffn.gate.bias", {config.n_routed_experts}, why + " router correction bias");
    }
    for (int64_t e = 0; e < config.n_routed_experts; ++e) f.experts.push_back(b.expert(l, e));
    const int64_t inter = config.moe_intermediate_size;
    f.shared = {b.matrix(p + "ffn.shared_experts.w1", inter, hidden, why + " shared expert gate"),
                b.matrix(p + "ffn.shared_experts.w2", hidden, inter, why + " shared expert down"),
                b.matrix(p + "ffn.shared_experts.w3", inter, hidden, why + " shared expert up")};
    w.layers.push_back(std::move(layer));
  }
  return w;
}

ModelWeights load_model(const std::filesystem::path& directory) {
  DSV4_CHECK(std::filesystem::is_directory(directory), "model directory {} does not exist", directory.string());
  const ModelConfig config = load_model_config(directory / "config.json");
  auto checkpoint = std::make_shared<const Checkpoint>(directory);
  return load_model_weights(checkpoint, config);
}

}  // namespace dsv4

#include <algorithm>
#include <random>
#include <string>

#include "dsv4/error.h"
#include "dsv4/synthetic.h"

namespace dsv4 {

namespace {

QuantMatrix view(const std::string& name, WeightFormat format, int64_t rows, int64_t cols) {
  QuantMatrix m;
  m.name = name;
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  switch (format) {
    case WeightFormat::kFP8Block:
      m.scale_dtype = DType::kF8_E8M0;
      m.scale_rows = (rows + 127) / 128;
      m.scale_cols = (cols + 127) / 128;
      break;
    case WeightFormat::kMXFP4:
      DSV4_CHECK(cols % 32 == 0, "synthetic {}: MXFP4 needs cols % 32 == 0 (cols {})", name, cols);
      m.scale_dtype = DType::kF8_E8M0;
      m.scale_rows = rows;
      m.scale_cols = cols / 32;
      break;
    case WeightFormat::kNVFP4:
      DSV4_CHECK(cols % 16 == 0, "synthetic {}: NVFP4 needs cols % 16 == 0 (cols {})", name, cols);
      m.scale_dtype = DType::kF8_E4M3;
      m.scale_rows = rows;
      m.scale_cols = cols / 16;
      break;
    default:
      break;
  }
  return m;
}

struct Filler {
  std::mt19937_64 rng;
  FloatTensor constant(std::vector<int64_t> shape, float value) {
    FloatTensor t;
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    t.shape = std::move(shape);
    t.values.assign(static_cast<size_t>(count), value);
    return t;
  }
  FloatTensor normal(std::vector<int64_t> shape, float stddev) {
    FloatTensor t = constant(std::move(shape), 0.0f);
    std::normal_distribution<float> dist(0.0f, stddev);
    for (float& v : t.values) v = dist(rng);
    return t;
  }
  HyperConnectionWeights hyper(int64_t mix, int64_t flat, int64_t scales) {
    HyperConnectionWeights h;
    h.fn = normal({mix, flat}, 0.02f);
    h.base = normal({mix}, 0.1f);
    h.scale = constant({scales}, 1.0f);
    return h;
  }
};

}  // namespace

ModelWeights make_synthetic_weights(const ModelConfig& c, const SyntheticOptions& o) {
  ModelWeights w;
  w.config = c;
  Filler f{std::mt19937_64(o.seed)};
  const int64_t H = c.hidden_size, n = c.hc_mult, hd = c.head_dim, heads = c.num_attention_heads;
  w.embed = view("embed", WeightFormat::kBF16, c.vocab_size, H);
  w.head = view("head", WeightFormat::kBF16, c.vocab_size, H);
  w.norm = f.constant({H}, 1.0f);
  w.hc_head = f.hyper(n, n * H, 1);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights layer;
    layer.attention_type = c.layer_types[l];
    layer.mlp_type = c.mlp_layer_types[l];
    layer.attn_norm = f.constant({H}, 1.0f);
    layer.ffn_norm = f.constant({H}, 1.0f);
    layer.hc_attn = f.hyper(c.hc_mix_width(), n * H, 3);
    layer.hc_ffn = f.hyper(c.hc_mix_width(), n * H, 3);
    AttentionWeights& a = layer.attn;
    const std::string p = "layers." + std::to_string(l) + ".";
    a.wq_a = view(p + "attn.wq_a", o.dense, c.q_lora_rank, H);
    a.q_norm = f.constant({c.q_lora_rank}, 1.0f);
    a.wq_b = view(p + "attn.wq_b", o.dense, heads * hd, c.q_lora_rank);
    a.wkv = view(p + "attn.wkv", o.dense, hd, H);
    a.kv_norm = f.constant({hd}, 1.0f);
    a.wo_a = view(p + "attn.wo_a", o.dense, c.o_groups * c.o_lora_rank, heads * hd / c.o_groups);
    a.wo_b = view(p + "attn.wo_b", o.dense, H, c.o_groups * c.o_lora_rank);
    a.attn_sink = f.normal({heads}, 0.5f);
    const int64_t rate = c.compress_rate(l);
    auto compressor = [&](const std::string& name, int64_t dim, bool overlapping) {
      CompressorWeights cw;
      const int64_t width = (overlapping ? 2 : 1) * dim;
      cw.wkv = view(name + ".wkv", WeightFormat::kBF16, width, H);
      cw.wgate = view(name + ".wgate", WeightFormat::kBF16, width, H);
      cw.ape = f.normal({rate, width}, 0.1f);
      cw.norm = f.constant({dim}, 1.0f);
      return cw;
    };
    if (layer.attention_type != AttentionType::kSliding) {
      const bool csa = layer.attention_type == AttentionType::kCompressedSparse;
      a.has_compressor = true;
      a.compressor = compressor(p + "attn.compressor", hd, csa);
      if (csa) {
        a.has_indexer = true;
        a.indexer.wq_b = view(p + "attn.indexer.wq_b", o.dense, c.index_n_heads * c.index_head_dim, c.q_lora_rank);
        a.indexer.weights_proj = view(p + "attn.indexer.weights_proj", WeightFormat::kBF16, c.index_n_heads, H);
        a.indexer.compressor = compressor(p + "attn.indexer.compressor", c.index_head_dim, true);
      }
    }
    MoEWeights& m = layer.ffn;
    m.gate = view(p + "ffn.gate", WeightFormat::kF32, c.n_routed_experts, H);
    if (layer.mlp_type == MlpType::kMoE) {
      m.gate_bias = f.normal({c.n_routed_experts}, 0.01f);
    } else {
      // Each token id gets top_k distinct experts.
      m.tid2eid.resize(static_cast<size_t>(c.vocab_size * c.num_experts_per_tok));
      std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.n_routed_experts - 1));
      for (int64_t t = 0; t < c.vocab_size; ++t) {
        int32_t* row = m.tid2eid.data() + t * c.num_experts_per_tok;
        for (int64_t k = 0; k < c.num_experts_per_tok; ++k) {
          int32_t e;
          do e = pick(f.rng);
          while (std::find(row, row + k, e) != row + k);
          row[k] = e;
        }
      }
    }
    const int64_t I = c.moe_intermediate_size;
    m.experts.resize(static_cast<size_t>(c.n_routed_experts));
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const std::string ep = p + "ffn.experts." + std::to_string(e) + ".";
      m.experts[e].w1 = view(ep + "w1", o.experts, I, H);
      m.experts[e].w2 = view(ep + "w2", o.experts, H, I);
      m.experts[e].w3 = view(ep + "w3", o.experts, I, H);
    }
    m.shared.w1 = view(p + "ffn.shared_experts.w1", o.shared_expert, I, H);
    m.shared.w2 = view(p + "ffn.shared_experts.w2", o.shared_expert, H, I);
    m.shared.w3 = view(p + "ffn.shared_experts.w3", o.shared_expert, I, H);
    w.layers.push_back(std::move(layer));
  }
  return w;
}

ModelConfig v4_flash_config(int layers) {
  DSV4_CHECK(layers >= 1, "layers must be >= 1 (got {})", layers);
  ModelConfig c;  // the defaults are V4-Flash's shapes
  c.vocab_size = 129280;
  c.num_hidden_layers = layers;
  c.layer_types.clear();
  c.mlp_layer_types.clear();
  for (int l = 0; l < layers; ++l) {
    // The release's pattern: two sliding layers, then CSA / HCA alternating; hash MoE first 3.
    c.layer_types.push_back(l < 2 ? AttentionType::kSliding
                                  : (l % 2 == 0 ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed));
    c.mlp_layer_types.push_back(l < 3 ? MlpType::kHashMoE : MlpType::kMoE);
  }
  c.max_position_embeddings = 1048576;
  return c;
}

}  // namespace dsv4

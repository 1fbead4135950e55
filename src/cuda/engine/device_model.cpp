#include "cuda/engine/device_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/engine/synthetic_fill.h"
#include "cuda/moe/moe_pack.h"
#include "dsv4/error.h"

namespace dsv4::cuda {

namespace {

int64_t data_bytes(const QuantMatrix& m) {
  switch (m.format) {
    case WeightFormat::kF32: return m.rows * m.cols * 4;
    case WeightFormat::kBF16:
    case WeightFormat::kF16: return m.rows * m.cols * 2;
    case WeightFormat::kFP8Block: return m.rows * m.cols;
    case WeightFormat::kMXFP4:
    case WeightFormat::kNVFP4: return m.rows * m.cols / 2;
  }
  return 0;
}

int64_t scale_bytes(const QuantMatrix& m) {
  switch (m.format) {
    case WeightFormat::kFP8Block: return m.scale_rows * m.scale_cols * (m.scale_dtype == DType::kF32 ? 4 : 1);
    case WeightFormat::kMXFP4:
    case WeightFormat::kNVFP4: return m.scale_rows * m.scale_cols;
    default: return 0;
  }
}

// Everything the builder needs besides the carver: the stream, the seed sequence for
// synthetic tensors, and the running statistics.
struct Builder {
  Carver& carver;
  cudaStream_t stream;
  uint64_t seed;
  DeviceModel& model;

  uint64_t next_seed() { return seed = seed * 6364136223846793005ull + 1442695040888963407ull; }

  template <typename T>
  T* upload(const std::string& name, const T* host, size_t count, RegionKind kind = RegionKind::kWeights) {
    T* device = carver.take<T>(name, kind, count);
    if (!carver.sizing() && count > 0 && host != nullptr)
      DSV4_CUDA_CHECK(cudaMemcpy(device, host, count * sizeof(T), cudaMemcpyHostToDevice));
    return device;
  }

  const float* floats(const std::string& name, const FloatTensor& t) {
    return upload<float>(name, t.values.data(), t.values.size());
  }

  ops::HyperWeights hyper(const std::string& name, const HyperConnectionWeights& w) {
    ops::HyperWeights h;
    h.fn = floats(name + ".fn", w.fn);
    h.base = floats(name + ".base", w.base);
    h.scale = floats(name + ".scale", w.scale);
    return h;
  }

  // A dense matrix in its stored format; synthetic ones (no data) get random values.
  // through_linear: the engine multiplies it with ops::linear, so its width sizes the
  // activation scratch and, unless stored BF16 or F32 (both read as stored), its size
  // the BF16 dequantization scratch. The embedding and the generic-MoE experts are read
  // by their own kernels and need neither.
  DeviceMatrix matrix(const std::string& name, const QuantMatrix& m, bool through_linear = true) {
    DeviceMatrix d;
    d.format = static_cast<int>(m.format);
    d.rows = m.rows;
    d.cols = m.cols;
    d.scale_is_f32 = m.scale_dtype == DType::kF32 ? 1 : 0;
    d.scale_cols = m.scale_cols;
    d.tensor_scale = m.tensor_scale;
    const int64_t bytes = data_bytes(m), sbytes = scale_bytes(m);
    uint8_t* data = carver.take<uint8_t>(name, RegionKind::kWeights, static_cast<size_t>(bytes));
    uint8_t* scales = sbytes > 0 ? carver.take<uint8_t>(name + ".scales", RegionKind::kWeights, static_cast<size_t>(sbytes))
                                 : nullptr;
    d.data = data;
    d.scales = scales;
    if (through_linear) {
      if (m.format != WeightFormat::kBF16 && m.format != WeightFormat::kF32)
        model.max_dequantized_elements = std::max(model.max_dequantized_elements, m.rows * m.cols);
      model.max_linear_cols = std::max(model.max_linear_cols, m.cols);
    }
    if (carver.sizing()) return d;
    if (m.data != nullptr) {
      DSV4_CUDA_CHECK(cudaMemcpy(data, m.data, bytes, cudaMemcpyHostToDevice));
      if (sbytes > 0) {
        DSV4_CHECK(m.scales != nullptr, "weight {} has no scale tensor", m.name);
        DSV4_CUDA_CHECK(cudaMemcpy(scales, m.scales, sbytes, cudaMemcpyHostToDevice));
      }
      return d;
    }
    fill_synthetic(m, data, scales, sbytes, &d);
    return d;
  }

  // Random values of magnitude ~1/sqrt(cols) per element, so outputs have unit scale.
  void fill_synthetic(const QuantMatrix& m, uint8_t* data, uint8_t* scales, int64_t sbytes, DeviceMatrix* d) {
    const float amplitude = std::sqrt(3.0f / static_cast<float>(std::max<int64_t>(1, m.cols)));
    const size_t count = static_cast<size_t>(m.rows * m.cols);
    switch (m.format) {
      case WeightFormat::kF32:
        DSV4_CUDA_CHECK(fill_uniform_f32(reinterpret_cast<float*>(data), count, amplitude, next_seed(), stream));
        break;
      case WeightFormat::kBF16:
      case WeightFormat::kF16:
        DSV4_CHECK(m.format == WeightFormat::kBF16, "synthetic F16 weights are not supported ({})", m.name);
        DSV4_CUDA_CHECK(fill_uniform_bf16(reinterpret_cast<uint16_t*>(data), count, amplitude, next_seed(), stream));
        break;
      case WeightFormat::kFP8Block: {
        // E4M3 codes with the top exponent bit cleared: |v| < 2, no NaN; E8M0 scale ~ amplitude / 2.
        DSV4_CUDA_CHECK(fill_random_bytes(data, count, 0xBF, 0x00, next_seed(), stream));
        DSV4_CHECK(m.scale_dtype != DType::kF32, "synthetic FP8 weights use E8M0 scales ({})", m.name);
        const int exponent = static_cast<int>(std::floor(std::log2(amplitude / 2.0f)));
        DSV4_CUDA_CHECK(cudaMemsetAsync(scales, 127 + exponent, sbytes, stream));
        break;
      }
      case WeightFormat::kNVFP4:
        // E2M1 codes up to 6, E4M3 block scales 0.5..0.94, tensor scale brings |v| to ~amplitude.
        DSV4_CUDA_CHECK(fill_random_bytes(data, count / 2, 0xFF, 0x00, next_seed(), stream));
        DSV4_CUDA_CHECK(fill_random_bytes(scales, static_cast<size_t>(sbytes), 0x0F, 0x30, next_seed(), stream));
        d->tensor_scale = amplitude / 2.5f;
        break;
      case WeightFormat::kMXFP4: {
        DSV4_CUDA_CHECK(fill_random_bytes(data, count / 2, 0xFF, 0x00, next_seed(), stream));
        const int exponent = static_cast<int>(std::floor(std::log2(amplitude / 2.5f)));
        DSV4_CUDA_CHECK(cudaMemsetAsync(scales, 127 + exponent, sbytes, stream));
        break;
      }
    }
  }

  // Router gate as FP32 [experts, hidden].
  const float* gate_f32(const std::string& name, const QuantMatrix& gate) {
    const size_t count = static_cast<size_t>(gate.rows * gate.cols);
    float* device = carver.take<float>(name, RegionKind::kWeights, count);
    if (carver.sizing()) return device;
    if (gate.data == nullptr) {
      DSV4_CUDA_CHECK(fill_uniform_f32(device, count, std::sqrt(3.0f / static_cast<float>(gate.cols)), next_seed(), stream));
      return device;
    }
    std::vector<float> host(count);
    dequantize_rows(gate, 0, gate.rows, host.data());
    DSV4_CUDA_CHECK(cudaMemcpy(device, host.data(), count * sizeof(float), cudaMemcpyHostToDevice));
    return device;
  }

  DeviceCompressor compressor(const std::string& name, const CompressorWeights& w) {
    DeviceCompressor c;
    c.wkv = matrix(name + ".wkv", w.wkv);
    c.wgate = matrix(name + ".wgate", w.wgate);
    c.ape = floats(name + ".ape", w.ape);
    c.norm = floats(name + ".norm", w.norm);
    return c;
  }

  DeviceAttention attention(const AttentionWeights& w) {
    DeviceAttention a;
    a.wq_a = matrix("attn.wq_a", w.wq_a);
    a.q_norm = floats("attn.q_norm", w.q_norm);
    a.wq_b = matrix("attn.wq_b", w.wq_b);
    a.wkv = matrix("attn.wkv", w.wkv);
    a.kv_norm = floats("attn.kv_norm", w.kv_norm);
    a.wo_a = matrix("attn.wo_a", w.wo_a);
    a.wo_b = matrix("attn.wo_b", w.wo_b);
    a.sinks = floats("attn.sinks", w.attn_sink);
    a.has_compressor = w.has_compressor;
    a.has_indexer = w.has_indexer;
    if (w.has_compressor) a.compressor = compressor("attn.compressor", w.compressor);
    if (w.has_indexer) {
      a.index_wq_b = matrix("attn.indexer.wq_b", w.indexer.wq_b);
      a.index_weights_proj = matrix("attn.indexer.weights_proj", w.indexer.weights_proj);
      a.index_compressor = compressor("attn.indexer.compressor", w.indexer.compressor);
    }
    return a;
  }

  // Routed experts (and the shared one when it is 4-bit too) in the fragment layout.
  void fast_moe(const ModelConfig& config, const MoEWeights& w, MlpType type, DeviceMoeLayer* out) {
    const QuantMatrix& first = w.experts[0].w1;
    const moe::ExpertFormat format = moe::expert_format_of(first.format);
    const int H = static_cast<int>(config.hidden_size), I = static_cast<int>(config.moe_intermediate_size);
    const int E = static_cast<int>(config.n_routed_experts);
    const bool shared_fast = w.shared.w1.format == first.format && w.shared.w2.format == first.format &&
                             w.shared.w3.format == first.format;
    const int groups = E + (shared_fast ? 1 : 0);
    const int64_t w13_bytes = moe::packed_data_bytes(2 * I, H), w13_scale = moe::packed_scale_bytes(format, 2 * I, H);
    const int64_t w2_bytes = moe::packed_data_bytes(H, I), w2_scale = moe::packed_scale_bytes(format, H, I);
    moe::MoeLayerWeights& f = out->fast_weights;
    f.format = format;
    f.hidden = H;
    f.intermediate = I;
    f.experts = E;
    f.top_k = static_cast<int>(config.num_experts_per_tok);
    f.has_shared = shared_fast;
    f.vocab_size = config.vocab_size;
    f.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
    f.swiglu_limit = static_cast<float>(config.swiglu_limit);
    uint8_t* w13 = carver.take<uint8_t>("ffn.experts.w13", RegionKind::kWeights, groups * w13_bytes);
    uint8_t* w13s = carver.take<uint8_t>("ffn.experts.w13.scales", RegionKind::kWeights, groups * w13_scale);
    uint8_t* w2 = carver.take<uint8_t>("ffn.experts.w2", RegionKind::kWeights, groups * w2_bytes);
    uint8_t* w2s = carver.take<uint8_t>("ffn.experts.w2.scales", RegionKind::kWeights, groups * w2_scale);
    float* factors = carver.take<float>("ffn.experts.factors", RegionKind::kWeights, 3 * groups);
    f.w13 = w13;
    f.w13_scales = w13s;
    f.w2 = w2;
    f.w2_scales = w2s;
    f.gate_factor = factors;
    f.up_factor = factors ? factors + groups : nullptr;
    f.down_factor = factors ? factors + 2 * groups : nullptr;
    f.router_weight = gate_f32("ffn.gate", w.gate);
    f.router_bias = type == MlpType::kMoE ? floats("ffn.gate_bias", w.gate_bias) : nullptr;
    f.tid2eid = type == MlpType::kHashMoE ? upload<int32_t>("ffn.tid2eid", w.tid2eid.data(), w.tid2eid.size()) : nullptr;
    if (!shared_fast) {
      out->dense_shared = true;
      out->shared_w1 = matrix("ffn.shared.w1", w.shared.w1);
      out->shared_w2 = matrix("ffn.shared.w2", w.shared.w2);
      out->shared_w3 = matrix("ffn.shared.w3", w.shared.w3);
    }
    if (carver.sizing()) return;

    std::vector<float> host_factors(3 * groups);
    std::vector<uint8_t> b13(w13_bytes), b13s(w13_scale), b2(w2_bytes), b2s(w2_scale);
    moe::PackStats stats;
    const bool synthetic = first.data == nullptr;
    for (int e = 0; e < groups; ++e) {
      const ExpertWeights& expert = e < E ? w.experts[e] : w.shared;
      if (synthetic) {
        // Data random per expert on the device; scales from one packed random expert.
        DSV4_CUDA_CHECK(fill_random_bytes(w13 + e * w13_bytes, w13_bytes, 0xFF, 0, next_seed(), stream));
        DSV4_CUDA_CHECK(fill_random_bytes(w2 + e * w2_bytes, w2_bytes, 0xFF, 0, next_seed(), stream));
        if (e == 0) pack_synthetic_scales(format, H, I, b13s, b2s, host_factors.data(), groups);
        DSV4_CUDA_CHECK(cudaMemcpy(w13s + e * w13_scale, b13s.data(), w13_scale, cudaMemcpyHostToDevice));
        DSV4_CUDA_CHECK(cudaMemcpy(w2s + e * w2_scale, b2s.data(), w2_scale, cudaMemcpyHostToDevice));
        host_factors[e] = host_factors[0];
        host_factors[groups + e] = host_factors[groups];
        host_factors[2 * groups + e] = host_factors[2 * groups];
        continue;
      }
      moe::pack_w13(expert.w1, expert.w3, b13.data(), b13s.data(), &host_factors[e], &host_factors[groups + e], &stats);
      moe::pack_w2(expert.w2, b2.data(), b2s.data(), &host_factors[2 * groups + e], &stats);
      DSV4_CUDA_CHECK(cudaMemcpy(w13 + e * w13_bytes, b13.data(), w13_bytes, cudaMemcpyHostToDevice));
      DSV4_CUDA_CHECK(cudaMemcpy(w13s + e * w13_scale, b13s.data(), w13_scale, cudaMemcpyHostToDevice));
      DSV4_CUDA_CHECK(cudaMemcpy(w2 + e * w2_bytes, b2.data(), w2_bytes, cudaMemcpyHostToDevice));
      DSV4_CUDA_CHECK(cudaMemcpy(w2s + e * w2_scale, b2s.data(), w2_scale, cudaMemcpyHostToDevice));
    }
    DSV4_CUDA_CHECK(cudaMemcpy(factors, host_factors.data(), host_factors.size() * sizeof(float), cudaMemcpyHostToDevice));
    model.fast_moe_flushed_blocks += stats.flushed_blocks;
    model.fast_moe_zero_blocks += stats.zero_blocks;
  }

  // One random expert in checkpoint format (scales of realistic magnitude), packed:
  // its kernel scale codes and epilogue factors serve every synthetic expert.
  void pack_synthetic_scales(moe::ExpertFormat format, int H, int I, std::vector<uint8_t>& b13s,
                             std::vector<uint8_t>& b2s, float* factors, int groups) {
    const bool nv = format == moe::ExpertFormat::kNVFP4;
    const int block = nv ? 16 : 32;
    auto make = [&](int64_t rows, int64_t cols, std::vector<uint8_t>& data, std::vector<uint8_t>& scales) {
      QuantMatrix m;
      m.format = nv ? WeightFormat::kNVFP4 : WeightFormat::kMXFP4;
      m.rows = rows;
      m.cols = cols;
      data.assign(static_cast<size_t>(rows * cols / 2), 0x3B);
      scales.resize(static_cast<size_t>(rows * cols / block));
      uint64_t state = seed;
      for (auto& s : scales) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        s = nv ? static_cast<uint8_t>(0x30 + ((state >> 33) & 0x0F)) : static_cast<uint8_t>(119 + ((state >> 33) % 3));
      }
      m.data = data.data();
      m.scales = scales.data();
      m.scale_dtype = nv ? DType::kF8_E4M3 : DType::kF8_E8M0;
      m.scale_rows = rows;
      m.scale_cols = cols / block;
      m.tensor_scale = nv ? std::sqrt(3.0f / static_cast<float>(cols)) / 2.5f : 1.0f;
      return m;
    };
    std::vector<uint8_t> d1, s1, d3, s3, d2, s2, p13(moe::packed_data_bytes(2 * I, H)), p2(moe::packed_data_bytes(H, I));
    const QuantMatrix w1 = make(I, H, d1, s1), w3 = make(I, H, d3, s3), w2 = make(H, I, d2, s2);
    moe::PackStats stats;
    moe::pack_w13(w1, w3, p13.data(), b13s.data(), &factors[0], &factors[groups], &stats);
    moe::pack_w2(w2, p2.data(), b2s.data(), &factors[2 * groups], &stats);
  }

  void generic_moe(const ModelConfig& config, const MoEWeights& w, MlpType type, DeviceMoeLayer* out) {
    ops::GenericMoeWeights& g = out->generic;
    g.hidden = static_cast<int>(config.hidden_size);
    g.intermediate = static_cast<int>(config.moe_intermediate_size);
    g.experts = static_cast<int>(config.n_routed_experts);
    g.top_k = static_cast<int>(config.num_experts_per_tok);
    g.vocab_size = config.vocab_size;
    g.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
    g.swiglu_limit = static_cast<float>(config.swiglu_limit);
    std::vector<DeviceMatrix> w1(g.experts), w2(g.experts), w3(g.experts);
    for (int e = 0; e < g.experts; ++e) {
      w1[e] = matrix("ffn.experts.w1", w.experts[e].w1, /*through_linear=*/false);
      w2[e] = matrix("ffn.experts.w2", w.experts[e].w2, /*through_linear=*/false);
      w3[e] = matrix("ffn.experts.w3", w.experts[e].w3, /*through_linear=*/false);
    }
    g.w1 = upload<DeviceMatrix>("ffn.experts.views", w1.data(), w1.size());
    g.w2 = upload<DeviceMatrix>("ffn.experts.views", w2.data(), w2.size());
    g.w3 = upload<DeviceMatrix>("ffn.experts.views", w3.data(), w3.size());
    g.has_shared = true;
    g.shared_w1 = matrix("ffn.shared.w1", w.shared.w1, /*through_linear=*/false);
    g.shared_w2 = matrix("ffn.shared.w2", w.shared.w2, /*through_linear=*/false);
    g.shared_w3 = matrix("ffn.shared.w3", w.shared.w3, /*through_linear=*/false);
    g.gate_weight = gate_f32("ffn.gate", w.gate);
    g.gate_bias = type == MlpType::kMoE ? floats("ffn.gate_bias", w.gate_bias) : nullptr;
    g.tid2eid = type == MlpType::kHashMoE ? upload<int32_t>("ffn.tid2eid", w.tid2eid.data(), w.tid2eid.size()) : nullptr;
    model.any_generic_moe = true;
  }
};

}  // namespace

bool fast_moe_applies(const ModelWeights& weights, const LayerWeights& layer) {
  const ModelConfig& c = weights.config;
  if (layer.ffn.experts.empty()) return false;
  const WeightFormat f = layer.ffn.experts[0].w1.format;
  if (f != WeightFormat::kNVFP4 && f != WeightFormat::kMXFP4) return false;
  for (const ExpertWeights& e : layer.ffn.experts)
    if (e.w1.format != f || e.w2.format != f || e.w3.format != f) return false;
  return c.hidden_size % 128 == 0 && c.moe_intermediate_size % 128 == 0 && c.n_routed_experts <= 256 &&
         c.num_experts_per_tok <= 8 && c.hidden_size <= 16384;
}

DeviceModel build_device_model(const ModelWeights& weights, Carver& carver, uint64_t seed, cudaStream_t stream) {
  const ModelConfig& config = weights.config;
  DeviceModel model;
  Builder b{carver, stream, seed, model};
  model.embed = b.matrix("embed", weights.embed, /*through_linear=*/false);
  model.head = b.matrix("head", weights.head);
  model.norm = b.floats("norm", weights.norm);
  model.hc_head = b.hyper("hc_head", weights.hc_head);
  const std::vector<float> inv_main = rope_inv_freq(config.rope_main);
  const std::vector<float> inv_compress = rope_inv_freq(config.rope_compress);
  model.inv_freq_main = b.upload<float>("rope.inv_freq_main", inv_main.data(), inv_main.size());
  model.inv_freq_compress = b.upload<float>("rope.inv_freq_compress", inv_compress.data(), inv_compress.size());
  for (const LayerWeights& lw : weights.layers) {
    DeviceLayer layer;
    layer.attention_type = lw.attention_type;
    layer.mlp_type = lw.mlp_type;
    layer.attn_norm = b.floats("attn_norm", lw.attn_norm);
    layer.ffn_norm = b.floats("ffn_norm", lw.ffn_norm);
    layer.hc_attn = b.hyper("hc_attn", lw.hc_attn);
    layer.hc_ffn = b.hyper("hc_ffn", lw.hc_ffn);
    layer.attn = b.attention(lw.attn);
    layer.moe.fast = fast_moe_applies(weights, lw);
    if (layer.moe.fast)
      b.fast_moe(config, lw.ffn, lw.mlp_type, &layer.moe);
    else
      b.generic_moe(config, lw.ffn, lw.mlp_type, &layer.moe);
    model.layers.push_back(layer);
  }
  if (!carver.sizing()) DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  return model;
}

}  // namespace dsv4::cuda

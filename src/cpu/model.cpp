#include "cpu/model.h"

#include "cpu/cpu_ops.h"
#include "cpu/hyper_connection.h"
#include "cpu/moe.h"
#include "dsv4/error.h"

namespace dsv4::cpu {

CpuModel::CpuModel(std::shared_ptr<const ModelWeights> weights, const CpuRounding& rounding)
    : weights_(std::move(weights)), rounding_(rounding) {
  ropes_.main = RopeTable(weights_->config.rope_main);
  ropes_.compress = RopeTable(weights_->config.rope_compress);
}

SequenceCache CpuModel::new_cache() const {
  SequenceCache cache;
  cache.layers.resize(weights_->layers.size());
  for (size_t i = 0; i < weights_->layers.size(); ++i)
    init_layer_cache(cache.layers[i], config(), weights_->layers[i].attention_type, rounding_.kv_cache,
                     rounding_.kv_cache_fp8);
  return cache;
}

std::vector<float> CpuModel::forward(SequenceCache& cache, std::span<const int32_t> tokens, bool all_logits,
                                     const ActivationObserver& observer) const {
  const ModelConfig& cfg = config();
  const int64_t count = static_cast<int64_t>(tokens.size());
  const int64_t hidden = cfg.hidden_size, n = cfg.hc_mult, vocab = cfg.vocab_size;
  DSV4_CHECK(count > 0, "forward called with no tokens");
  for (int64_t t = 0; t < count; ++t)
    DSV4_CHECK(tokens[t] >= 0 && tokens[t] < vocab, "token id {} at index {} is outside the vocabulary [0, {})",
               tokens[t], t, vocab);
  const int64_t start = cache.length;
  auto observe = [&](const std::string& name, const std::vector<float>& data, std::vector<int64_t> shape) {
    if (observer) observer(name, data, shape);
  };

  // Embedding, copied into every stream: streams [tokens, n, hidden].
  std::vector<float> embedded(static_cast<size_t>(hidden));
  std::vector<float> streams(static_cast<size_t>(count * n * hidden));
  for (int64_t t = 0; t < count; ++t) {
    dequantize_rows(weights_->embed, tokens[t], 1, embedded.data());
    for (int64_t i = 0; i < n; ++i) std::copy(embedded.begin(), embedded.end(), streams.begin() + (t * n + i) * hidden);
  }
  observe("embed", streams, {count, n, hidden});

  for (size_t l = 0; l < weights_->layers.size(); ++l) {
    const LayerWeights& layer = weights_->layers[l];
    const std::string prefix = "layer" + std::to_string(l);
    HyperMix mix;
    std::vector<float> x = hyper_collapse(layer.hc_attn, cfg, streams.data(), count, &mix);
    rms_norm(x.data(), count, hidden, layer.attn_norm.values.data(), cfg.rms_norm_eps);
    const std::vector<float> attended =
        attention_forward(layer.attn, layer.attention_type, cfg, ropes_, cache.layers[l], x.data(), count, start);
    observe(prefix + ".attn_out", attended, {count, hidden});
    hyper_expand(mix, cfg, attended.data(), count, streams.data());

    x = hyper_collapse(layer.hc_ffn, cfg, streams.data(), count, &mix);
    rms_norm(x.data(), count, hidden, layer.ffn_norm.values.data(), cfg.rms_norm_eps);
    const std::vector<float> mlp = moe_forward(layer.ffn, layer.mlp_type, cfg, x.data(), count, tokens,
                                               rounding_.expert_operands);
    observe(prefix + ".mlp_out", mlp, {count, hidden});
    hyper_expand(mix, cfg, mlp.data(), count, streams.data());
    observe(prefix + ".out", streams, {count, n, hidden});
  }
  cache.length += count;

  const int64_t first_logit_row = all_logits ? 0 : count - 1;
  const int64_t logit_rows = count - first_logit_row;
  std::vector<float> x =
      hyper_head(weights_->hc_head, cfg, streams.data() + first_logit_row * n * hidden, logit_rows);
  rms_norm(x.data(), logit_rows, hidden, weights_->norm.values.data(), cfg.rms_norm_eps);
  std::vector<float> logits = linear(weights_->head, x, logit_rows);
  observe("logits", logits, {logit_rows, vocab});
  return logits;
}

}  // namespace dsv4::cpu

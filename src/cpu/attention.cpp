#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "cpu/cpu_ops.h"
#include "cpu/kv_fp8.h"
#include "dsv4/error.h"

namespace dsv4::cpu {

void init_layer_cache(LayerCache& cache, const ModelConfig& config, AttentionType type, bool round_kv_bf16,
                      bool round_kv_fp8) {
  DSV4_CHECK(!round_kv_fp8 || config.head_dim == kKvFp8HeadDim,
             "the FP8 KV cache codec stores head_dim {} rows; this model has head_dim {}", kKvFp8HeadDim,
             config.head_dim);
  cache.first_row_position = 0;
  cache.kv_rows.clear();
  cache.round_kv_bf16 = round_kv_bf16;
  cache.round_kv_fp8 = round_kv_fp8;
  if (type == AttentionType::kCompressedSparse) {
    cache.compressor.init(config.compress_rate_csa, config.head_dim, /*overlapping=*/true);
    cache.indexer.init(config.compress_rate_csa, config.index_head_dim, /*overlapping=*/true);
  } else if (type == AttentionType::kHeavilyCompressed) {
    cache.compressor.init(config.compress_rate_hca, config.head_dim, /*overlapping=*/false);
  }
  cache.compressor.round_entries_bf16 = round_kv_bf16;
  cache.compressor.round_entries_fp8 = round_kv_fp8;
}

std::vector<int64_t> indexer_select(const float* scores, int64_t visible, int64_t top_k) {
  std::vector<int64_t> order(static_cast<size_t>(visible));
  std::iota(order.begin(), order.end(), 0);
  if (visible <= top_k) return order;
  std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int64_t a, int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  order.resize(static_cast<size_t>(top_k));
  std::sort(order.begin(), order.end());
  return order;
}

namespace {

// For each query t: the CSA entries its indexer picks. q_residual: [tokens, q_lora_rank].
std::vector<std::vector<int64_t>> run_indexer(const IndexerWeights& weights, const ModelConfig& config,
                                              const RopeTable& rope, const CompressorState& index_entries,
                                              const float* x, const float* q_residual, int64_t tokens,
                                              int64_t start) {
  const int64_t heads = config.index_n_heads, dim = config.index_head_dim;
  std::vector<float> queries = linear(weights.wq_b, std::span<const float>(q_residual, tokens * weights.wq_b.cols), tokens);
  const std::vector<float> head_weights =
      linear(weights.weights_proj, std::span<const float>(x, tokens * weights.weights_proj.cols), tokens);
  const float score_scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const float weight_scale = 1.0f / std::sqrt(static_cast<float>(heads));
  std::vector<std::vector<int64_t>> selected(static_cast<size_t>(tokens));
#pragma omp parallel if (tokens > 1)
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t position = start + t;
      float* q = queries.data() + t * heads * dim;  // [heads, dim]
      rope.apply(q, heads, dim, position);
      const int64_t visible = std::min<int64_t>((position + 1) / index_entries.rate, index_entries.entry_count);
      scores.assign(static_cast<size_t>(visible), 0.0f);
      for (int64_t w = 0; w < visible; ++w) {
        const float* key = index_entries.entries.data() + w * dim;
        float total = 0;
        for (int64_t h = 0; h < heads; ++h) {
          const float relu = std::max(dot(q + h * dim, key, dim), 0.0f) * score_scale;
          total += relu * (head_weights[t * heads + h] * weight_scale);
        }
        scores[w] = total;
      }
      selected[t] = indexer_select(scores.data(), visible, config.index_topk);
    }
  }
  return selected;
}

}  // namespace

std::vector<float> attention_forward(const AttentionWeights& weights, AttentionType type, const ModelConfig& config,
                                     const RopeTables& ropes, LayerCache& cache, const float* x, int64_t tokens,
                                     int64_t start) {
  const int64_t hidden = config.hidden_size, heads = config.num_attention_heads, head_dim = config.head_dim;
  const int64_t window = config.sliding_window;
  const RopeTable& rope = type == AttentionType::kSliding ? ropes.main : ropes.compress;
  const std::span<const float> input(x, tokens * hidden);

  // q path: q_residual = rmsnorm(wq_a x); q = per-head unweighted rmsnorm(wq_b q_residual), RoPE.
  std::vector<float> q_residual = linear(weights.wq_a, input, tokens);  // [tokens, q_lora_rank]
  rms_norm(q_residual.data(), tokens, config.q_lora_rank, weights.q_norm.values.data(), config.rms_norm_eps);
  std::vector<float> q = linear(weights.wq_b, q_residual, tokens);      // [tokens, heads, head_dim]
  rms_norm_unweighted(q.data(), tokens * heads, head_dim, config.rms_norm_eps);
  for (int64_t t = 0; t < tokens; ++t) rope.apply(q.data() + t * heads * head_dim, heads, head_dim, start + t);

  // One K=V row per token: rmsnorm(wkv x), RoPE.
  std::vector<float> kv = linear(weights.wkv, input, tokens);  // [tokens, head_dim]
  rms_norm(kv.data(), tokens, head_dim, weights.kv_norm.values.data(), config.rms_norm_eps);
  for (int64_t t = 0; t < tokens; ++t) rope.apply(kv.data() + t * head_dim, 1, head_dim, start + t);
  if (cache.round_kv_fp8)
    kv_fp8_round_trip(kv.data(), tokens);
  else if (cache.round_kv_bf16)
    round_to_bf16(kv.data(), static_cast<int64_t>(kv.size()));
  DSV4_CHECK(cache.first_row_position + static_cast<int64_t>(cache.kv_rows.size()) / head_dim == start,
             "attention cache holds positions up to {} but the chunk starts at {}",
             cache.first_row_position + static_cast<int64_t>(cache.kv_rows.size()) / head_dim, start);
  cache.kv_rows.insert(cache.kv_rows.end(), kv.begin(), kv.end());

  std::vector<std::vector<int64_t>> selected;  // CSA: per query, entries picked by the indexer
  if (weights.has_compressor) {
    compressor_append(cache.compressor, weights.compressor, ropes.compress, config.rms_norm_eps, x, tokens);
  }
  if (weights.has_indexer) {
    compressor_append(cache.indexer, weights.indexer.compressor, ropes.compress, config.rms_norm_eps, x, tokens);
    selected = run_indexer(weights.indexer, config, ropes.compress, cache.indexer, x, q_residual.data(), tokens, start);
  }

  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> output(static_cast<size_t>(tokens * heads * head_dim), 0.0f);  // [tokens, heads, head_dim]
#pragma omp parallel if (tokens > 1)
  {
    std::vector<const float*> keys;
    std::vector<float> logits;
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t position = start + t;
      keys.clear();
      // Sliding part: positions (position - window, position], all cached.
      const int64_t first = std::max<int64_t>(0, position - window + 1);
      for (int64_t p = first; p <= position; ++p)
        keys.push_back(cache.kv_rows.data() + (p - cache.first_row_position) * head_dim);
      // Compressed part: entry w visible iff its whole window is at or before t.
      if (weights.has_compressor) {
        const CompressorState& entries = cache.compressor;
        const int64_t visible = std::min<int64_t>((position + 1) / entries.rate, entries.entry_count);
        if (type == AttentionType::kHeavilyCompressed) {
          for (int64_t w = 0; w < visible; ++w) keys.push_back(entries.entries.data() + w * head_dim);
        } else {
          for (int64_t w : selected[t]) {
            DSV4_CHECK(w < visible, "indexer picked entry {} but only {} are visible", w, visible);
            keys.push_back(entries.entries.data() + w * head_dim);
          }
        }
      }
      const int64_t key_count = static_cast<int64_t>(keys.size());
      logits.resize(static_cast<size_t>(key_count + 1));
      for (int64_t h = 0; h < heads; ++h) {
        const float* qh = q.data() + (t * heads + h) * head_dim;
        for (int64_t k = 0; k < key_count; ++k) logits[k] = dot(qh, keys[k], head_dim) * scale;
        logits[key_count] = weights.attn_sink.values[h];  // sink: denominator only
        softmax(logits.data(), key_count + 1);
        float* oh = output.data() + (t * heads + h) * head_dim;
        for (int64_t k = 0; k < key_count; ++k) {
          const float p = logits[k];
          const float* key = keys[k];
          for (int64_t d = 0; d < head_dim; ++d) oh[d] += p * key[d];
        }
      }
    }
  }
  // V carried RoPE (K = V): rotate the output back by -angle at the query position.
  for (int64_t t = 0; t < tokens; ++t) rope.apply(output.data() + t * heads * head_dim, heads, head_dim, start + t, true);

  // Keep only the last window-1 rows for the next call.
  const int64_t rows = static_cast<int64_t>(cache.kv_rows.size()) / head_dim;
  const int64_t keep = std::min<int64_t>(rows, window - 1);
  if (keep < rows) {
    cache.kv_rows.erase(cache.kv_rows.begin(), cache.kv_rows.begin() + (rows - keep) * head_dim);
    cache.first_row_position += rows - keep;
  }

  // Grouped output projection: group g = heads [g*H/G, (g+1)*H/G) flattened ->
  // o_lora_rank with rows [g*R, (g+1)*R) of wo_a; then wo_b over the concat.
  const int64_t groups = config.o_groups, rank = config.o_lora_rank;
  const int64_t group_width = heads * head_dim / groups;
  std::vector<float> grouped(static_cast<size_t>(tokens * groups * rank));  // [tokens, groups, rank]
  std::vector<float> group_in(static_cast<size_t>(tokens * group_width));
  std::vector<float> group_out(static_cast<size_t>(tokens * rank));
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t t = 0; t < tokens; ++t)
      std::copy_n(output.data() + t * heads * head_dim + g * group_width, group_width,
                  group_in.data() + t * group_width);
    linear_rows(weights.wo_a, g * rank, rank, group_in.data(), tokens, group_out.data());
    for (int64_t t = 0; t < tokens; ++t)
      std::copy_n(group_out.data() + t * rank, rank, grouped.data() + (t * groups + g) * rank);
  }
  return linear(weights.wo_b, grouped, tokens);
}

}  // namespace dsv4::cpu

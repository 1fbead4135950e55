#include "cpu/hyper_connection.h"

#include <algorithm>
#include <cmath>

#include "cpu/cpu_ops.h"

namespace dsv4::cpu {

namespace {

// flat = unweighted_rmsnorm(concat streams) (FP32); mixes = flat @ fn^T.
// fn: [mix_width, n*hidden]. Returns [mix_width].
void stream_mixes(const FloatTensor& fn, const float* token_streams, int64_t flat_width, double eps,
                  float* normalized, float* mixes) {
  const int64_t mix_width = fn.shape[0];
  for (int64_t i = 0; i < flat_width; ++i) normalized[i] = token_streams[i];
  rms_norm_unweighted(normalized, 1, flat_width, eps);
  for (int64_t m = 0; m < mix_width; ++m) mixes[m] = dot(normalized, fn.values.data() + m * flat_width, flat_width);
}

// out[d] = sum_i pre[i] * streams[i, d] (FP32): the weighted collapse of n streams.
void collapse_streams(const float* pre, const float* token_streams, int64_t n, int64_t hidden, float* out) {
  for (int64_t d = 0; d < hidden; ++d) {
    float sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += pre[i] * token_streams[i * hidden + d];
    out[d] = sum;
  }
}

}  // namespace

std::vector<float> hyper_collapse(const HyperConnectionWeights& weights, const ModelConfig& config,
                                  const float* streams, int64_t tokens, HyperMix* mix) {
  const int64_t n = config.hc_mult, hidden = config.hidden_size, flat_width = n * hidden;
  const float eps = static_cast<float>(config.hc_eps);
  const float* base = weights.base.values.data();
  const float* scale = weights.scale.values.data();
  std::vector<float> collapsed(static_cast<size_t>(tokens * hidden));
  mix->post.assign(static_cast<size_t>(tokens * n), 0.0f);
  mix->comb.assign(static_cast<size_t>(tokens * n * n), 0.0f);
#pragma omp parallel if (tokens * config.hc_mult * config.hidden_size >= (1 << 16))
  {
    std::vector<float> normalized(static_cast<size_t>(flat_width));
    std::vector<float> mixes(static_cast<size_t>(config.hc_mix_width()));
#pragma omp for
    for (int64_t t = 0; t < tokens; ++t) {
      const float* token_streams = streams + t * flat_width;
      stream_mixes(weights.fn, token_streams, flat_width, config.rms_norm_eps, normalized.data(), mixes.data());
      // mix layout: [pre(n) | post(n) | comb(n*n, row-major (j,k))]
      std::vector<float> pre(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        pre[i] = sigmoid(mixes[i] * scale[0] + base[i]) + eps;
        mix->post[t * n + i] = 2.0f * sigmoid(mixes[n + i] * scale[1] + base[n + i]);
      }
      float* comb = mix->comb.data() + t * n * n;
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t k = 0; k < n; ++k) comb[j * n + k] = mixes[2 * n + j * n + k] * scale[2] + base[2 * n + j * n + k];
        softmax(comb + j * n, n);  // row softmax over k
        for (int64_t k = 0; k < n; ++k) comb[j * n + k] += eps;
      }
      auto normalize_columns = [&] {
        for (int64_t k = 0; k < n; ++k) {
          float sum = 0;
          for (int64_t j = 0; j < n; ++j) sum += comb[j * n + k];
          for (int64_t j = 0; j < n; ++j) comb[j * n + k] /= (sum + eps);
        }
      };
      auto normalize_rows = [&] {
        for (int64_t j = 0; j < n; ++j) {
          float sum = 0;
          for (int64_t k = 0; k < n; ++k) sum += comb[j * n + k];
          for (int64_t k = 0; k < n; ++k) comb[j * n + k] /= (sum + eps);
        }
      };
      normalize_columns();
      for (int64_t iter = 0; iter + 1 < config.hc_sinkhorn_iters; ++iter) {
        normalize_rows();
        normalize_columns();
      }
      collapse_streams(pre.data(), token_streams, n, hidden, collapsed.data() + t * hidden);
    }
  }
  return collapsed;
}

void hyper_expand(const HyperMix& mix, const ModelConfig& config, const float* output, int64_t tokens,
                  float* streams) {
  const int64_t n = config.hc_mult, hidden = config.hidden_size;
#pragma omp parallel if (tokens * config.hc_mult * config.hidden_size >= (1 << 16))
  {
    std::vector<float> old_streams(static_cast<size_t>(n * hidden));
#pragma omp for
    for (int64_t t = 0; t < tokens; ++t) {
      float* token_streams = streams + t * n * hidden;
      std::copy(token_streams, token_streams + n * hidden, old_streams.begin());
      const float* comb = mix.comb.data() + t * n * n;
      const float* post = mix.post.data() + t * n;
      const float* out = output + t * hidden;
      for (int64_t k = 0; k < n; ++k) {
        float* stream = token_streams + k * hidden;
        for (int64_t d = 0; d < hidden; ++d) {
          float sum = 0;
          for (int64_t j = 0; j < n; ++j) sum += comb[j * n + k] * old_streams[j * hidden + d];
          stream[d] = post[k] * out[d] + sum;
        }
      }
    }
  }
}

std::vector<float> hyper_head(const HyperConnectionWeights& weights, const ModelConfig& config,
                              const float* streams, int64_t tokens) {
  const int64_t n = config.hc_mult, hidden = config.hidden_size, flat_width = n * hidden;
  const float eps = static_cast<float>(config.hc_eps);
  std::vector<float> collapsed(static_cast<size_t>(tokens * hidden));
#pragma omp parallel if (tokens * config.hc_mult * config.hidden_size >= (1 << 16))
  {
    std::vector<float> normalized(static_cast<size_t>(flat_width));
    std::vector<float> mixes(static_cast<size_t>(n));
#pragma omp for
    for (int64_t t = 0; t < tokens; ++t) {
      const float* token_streams = streams + t * flat_width;
      stream_mixes(weights.fn, token_streams, flat_width, config.rms_norm_eps, normalized.data(), mixes.data());
      std::vector<float> pre(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        pre[i] = sigmoid(mixes[i] * weights.scale.values[0] + weights.base.values[i]) + eps;
      collapse_streams(pre.data(), token_streams, n, hidden, collapsed.data() + t * hidden);
    }
  }
  return collapsed;
}

}  // namespace dsv4::cpu

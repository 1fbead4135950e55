// mHC hyper-connections (transformers' DeepseekV4HyperConnection / HyperHead).
// Residual state per token: streams[hc_mult, hidden].
#pragma once
#include <cstdint>
#include <vector>

#include "dsv4/config.h"
#include "dsv4/weights.h"

namespace dsv4::cpu {

// Per-token mixing weights of one sublayer site.
struct HyperMix {
  std::vector<float> post;  // [tokens, n]
  std::vector<float> comb;  // [tokens, n, n] (j, k): new stream k gets comb[j,k] * old stream j
};

// streams: [tokens, n, hidden]. Returns the collapsed sublayer input [tokens, hidden]
// and fills `mix` (Sinkhorn-normalised comb).
std::vector<float> hyper_collapse(const HyperConnectionWeights& weights, const ModelConfig& config,
                                  const float* streams, int64_t tokens, HyperMix* mix);

// streams[t, k, :] = post[t, k] * output[t, :] + sum_j comb[t, j, k] * streams[t, j, :]
void hyper_expand(const HyperMix& mix, const ModelConfig& config, const float* output, int64_t tokens,
                  float* streams);

// Final HyperHead collapse: [tokens, n, hidden] -> [tokens, hidden].
std::vector<float> hyper_head(const HyperConnectionWeights& weights, const ModelConfig& config,
                              const float* streams, int64_t tokens);

}  // namespace dsv4::cpu

#include <cmath>
#include <memory>
#include <span>
#include <vector>

#include "dsv4/engine.h"
#include "dsv4/error.h"
#include "dsv4/weights.h"
#include "engine/cpu_engine.h"
#if defined(DSV4_HAVE_CUDA)
#include "cuda/engine/cuda_engine.h"
#endif

namespace dsv4 {

KvCacheFormat parse_kv_cache_format(const std::string& name) {
  if (name == "bf16") return KvCacheFormat::kBF16;
  if (name == "fp8") return KvCacheFormat::kFP8;
  fail("--kv-cache must be bf16 or fp8, got '{}'", name);
}

int32_t greedy_token(std::span<const float> logits) {
  DSV4_CHECK(!logits.empty(), "greedy_token: empty logits");
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v)) continue;
    if (best < 0 || v > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

std::vector<int32_t> Engine::decode_greedy(std::span<const SequenceId> sequences, std::span<const int32_t> tokens) {
  const std::vector<float> logits = decode(sequences, tokens);
  const size_t rows = sequences.size(), vocab = rows == 0 ? 0 : logits.size() / rows;
  std::vector<int32_t> ids(rows);
  for (size_t r = 0; r < rows; ++r) ids[r] = greedy_token(std::span<const float>(logits).subspan(r * vocab, vocab));
  return ids;
}

std::unique_ptr<Engine> create_engine(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options) {
  switch (options.device) {
    case Device::kCpu:
      DSV4_CHECK(options.kv_cache == KvCacheFormat::kBF16,
                 "the FP8 KV cache (--kv-cache fp8) is a CUDA-engine option; the CPU engine keeps FP32 caches "
                 "(EngineOptions::cpu_rounding.kv_cache_fp8 emulates the FP8 cache's values)");
      DSV4_CHECK(weights->embed.data != nullptr,
                 "the CPU engine needs real weights (synthetic random-weight models run on --device cuda)");
      return std::make_unique<CpuEngine>(std::move(weights), options.cpu_rounding);
    case Device::kCuda:
#if defined(DSV4_HAVE_CUDA)
      return cuda::create_cuda_engine(std::move(weights), options);
#else
      fail("this dsv4 was built without the CUDA backend (nvcc was not found at configure time); use --device cpu");
#endif
  }
  fail("unknown device");
}

std::unique_ptr<Engine> Engine::create(const EngineOptions& options) {
  return create_engine(std::make_shared<const ModelWeights>(load_model(options.model_dir)), options);
}

}  // namespace dsv4

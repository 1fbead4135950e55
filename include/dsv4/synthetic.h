// Random-weight models of any DeepSeek-V4 config, without a checkpoint (dsv4 bench).
// Matrices are QuantMatrix views with no data: the CUDA engine fills them on the
// device with seeded random values of the chosen format. Small tensors (norms, mHC,
// sinks, position biases, routing tables) are real host values.
#pragma once
#include <cstdint>

#include "dsv4/weights.h"

namespace dsv4 {

struct SyntheticOptions {
  WeightFormat experts = WeightFormat::kNVFP4;  // routed experts (nvfp4, mxfp4, fp8_block, bf16)
  WeightFormat shared_expert = WeightFormat::kBF16;
  WeightFormat dense = WeightFormat::kBF16;     // attention, compressors, indexer (bf16 or fp8_block)
  uint64_t seed = 1;
};

ModelWeights make_synthetic_weights(const ModelConfig& config, const SyntheticOptions& options);

// V4-Flash's shapes (hidden 4096, 64 heads x 512, 256 experts top-6, ...) with
// `layers` layers in the release's layer-type pattern.
ModelConfig v4_flash_config(int layers);

}  // namespace dsv4

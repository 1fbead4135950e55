// The CUDA backend's Engine: the whole DeepSeek-V4 forward on the GPU (src/cuda/ops,
// src/cuda/attention, src/cuda/moe), one device arena sized at creation, sequences in
// cache slots, chunked prefill, batched decode with each decode batch size captured
// once as a CUDA graph and replayed.
#pragma once
#include <memory>

#include "cuda/engine/arena.h"
#include "dsv4/engine.h"
#include "dsv4/weights.h"

namespace dsv4::cuda {

std::unique_ptr<Engine> create_cuda_engine(std::shared_ptr<const ModelWeights> weights, const EngineOptions& options);

// The arena plan the engine would allocate for these weights and options (no GPU needed).
MemoryPlan plan_cuda_engine(const ModelWeights& weights, const EngineOptions& options);

}  // namespace dsv4::cuda

// The clamped SwiGLU of a dense (non-4-bit) shared expert next to the fast MoE path:
// gate[i] = silu(min(gate[i], limit)) * clamp(up[i], -limit, limit), in place over
// `count` FP32 elements (cpu: expert_forward).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda {

cudaError_t clamped_swiglu_inplace(float* gate, const float* up, int64_t count, float limit, cudaStream_t stream);

}  // namespace dsv4::cuda

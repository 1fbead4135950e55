// Kernels only (no fmt / dsv4::Error in .cu files: nvcc rejects fmt's consteval
// format strings); callers check the returned launch error.
// Seeded random fills of device buffers for synthetic (random-weight) models: values of
// a realistic magnitude in every stored format, so a random model's activations stay
// finite and its kernels see real-looking data (never zeros).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::cuda {

// Uniform in [-amplitude, amplitude]: FP32 or BF16 elements.
cudaError_t fill_uniform_f32(float* out, size_t count, float amplitude, uint64_t seed, cudaStream_t stream);
cudaError_t fill_uniform_bf16(uint16_t* out, size_t count, float amplitude, uint64_t seed, cudaStream_t stream);
// Random bytes: (hash & and_mask) | or_mask, e.g. E2M1 pairs (0xFF, 0), finite E4M3
// values below 2 (0xBF, 0), E4M3 block scales 0.5..1 (0x0F, 0x30).
cudaError_t fill_random_bytes(uint8_t* out, size_t count, uint8_t and_mask, uint8_t or_mask, uint64_t seed,
                       cudaStream_t stream);

}  // namespace dsv4::cuda

// CUDA quantizers: the weight formats (NVFP4, MXFP4, FP8 128x128 blocks) and the
// FP8 1x128 activation blocks, producing exactly the bytes of the CPU quantizers in
// include/dsv4/formats.h (same recipes, same FP32 operations in the same order, and
// the host's NaN signs; tests/cuda/formats/quantize_test.cu compares byte for byte).
//
// Input x: [rows, cols] row-major, F32 or BF16 (BF16 widens exactly to F32 first, as
// the CPU path does with bf16_to_float). Outputs (device memory, caller-allocated):
//   MXFP4     packed E2M1 [rows, cols/2] (low nibble = even column), E8M0 [rows, cols/32]
//   NVFP4     packed E2M1 [rows, cols/2] (low nibble = even column), E4M3 [rows, cols/16],
//             with the FP32 tensor scale given (host value or device pointer)
//   FP8 block E4M3 [rows, cols], E8M0 [ceil(rows/128), ceil(cols/128)] (ragged last
//             block row / column cover the remainder)
//   FP8 act   E4M3 [rows, cols], F32 [rows, ceil(cols/128)] (one scale per token and
//             128 columns; ragged last block)
// Every function launches on `stream` and returns cudaErrorInvalidValue, launching
// nothing, for an input dtype other than F32/BF16, a null pointer, negative sizes or
// (FP4 formats) cols not a whole number of blocks; otherwise the launch error.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "dsv4/dtype.h"

namespace dsv4::cuda {

struct QuantizeInput {
  DType dtype = DType::kF32;  // kF32 or kBF16
  const void* data = nullptr; // [rows, cols]
  int64_t rows = 0, cols = 0;
};

// amax = max |x| over `count` elements into *device_amax (one float in device memory),
// NaN ignored (as std::max(amax, |x|) on the CPU ignores it). Order-free, hence exact.
cudaError_t abs_max(DType dtype, const void* x, int64_t count, float* device_amax, cudaStream_t stream);

// NVFP4 tensor scale into *device_tensor_scale: amax(x) / 2688, or 1 for amax 0
// (= dsv4::nvfp4_tensor_scale and the checkpoint quantizer's weight_scale_2).
cudaError_t nvfp4_tensor_scale(const QuantizeInput& x, float* device_tensor_scale, cudaStream_t stream);

// packed [rows, cols/2], scales E4M3 [rows, cols/16]. The tensor scale is read from
// device_tensor_scale when it is not null (e.g. nvfp4_tensor_scale's output, no host
// round trip), else `tensor_scale`.
cudaError_t quantize_nvfp4(const QuantizeInput& x, float tensor_scale, const float* device_tensor_scale,
                           uint8_t* packed, uint8_t* scales, cudaStream_t stream);

// packed [rows, cols/2], scales E8M0 [rows, cols/32].
cudaError_t quantize_mxfp4(const QuantizeInput& x, uint8_t* packed, uint8_t* scales, cudaStream_t stream);

// q E4M3 [rows, cols], scales E8M0 [ceil(rows/128), ceil(cols/128)] (the CPU writes E8M0;
// decode 2^(code-127) where an F32 scale grid is wanted).
cudaError_t quantize_fp8_block(const QuantizeInput& x, uint8_t* q, uint8_t* scales, cudaStream_t stream);

// q E4M3 [rows, cols], scales F32 [rows, ceil(cols/128)]. power_of_two_scales: the
// UE8M0 rule s = 2^ceil(log2(max(amax, 1e-4) / 448)) (DeepSeek V4 / DeepGEMM); else
// s = max(amax, 1e-4) / 448. q = E4M3(x / s), saturating.
cudaError_t quantize_fp8_activation(const QuantizeInput& x, bool power_of_two_scales, uint8_t* q, float* scales,
                                    cudaStream_t stream);

}  // namespace dsv4::cuda

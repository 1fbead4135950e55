// CUDA dequantization of stored weight matrices to BF16 (correctness-first path of
// the CUDA backend; the fast GEMMs dequantize in registers instead).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda {

// Everything the kernel reads, as raw device pointers (no host structs cross over).
struct DequantizeParams {
  int format;                 // dsv4::WeightFormat value
  int64_t rows, cols;         // logical [out, in]
  const uint8_t* data;        // F32/BF16/F16 [rows, cols]; E4M3 [rows, cols]; packed E2M1 [rows, cols/2]
  const uint8_t* scales;      // FP8: [ceil(rows/128), ceil(cols/128)]; MXFP4: E8M0 [rows, cols/32]; NVFP4: E4M3 [rows, cols/16]
  int scale_is_f32;           // FP8 block scales stored as F32 instead of E8M0
  int64_t scale_cols;
  float tensor_scale;         // NVFP4 global scale
  uint16_t* out;              // BF16 bits [row_count, cols]: out row i = matrix row row_begin + i
  cudaStream_t stream;
  // Row slice (added last so positional initialisers of the fields above keep working):
  // dequantize rows [row_begin, row_begin + row_count) of the [rows, cols] matrix;
  // row_count < 0 means every row from row_begin. Any row_begin (FP8 picks the scale
  // row of each absolute row).
  int64_t row_begin = 0;
  int64_t row_count = -1;
};

// Launches one thread per output element pair; returns the launch error
// (cudaErrorInvalidValue for odd cols or a slice outside the matrix).
cudaError_t dequantize_to_bf16(const DequantizeParams& params);

}  // namespace dsv4::cuda

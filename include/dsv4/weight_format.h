// How one weight matrix W[out, in] is stored, and blockwise dequantization on the CPU.
// y = x @ W^T everywhere (nn.Linear convention).
#pragma once
#include <cstdint>
#include <string>

#include "dsv4/dtype.h"

namespace dsv4 {

enum class WeightFormat : uint8_t {
  kF32,        // data: f32 [out, in]
  kBF16,       // data: bf16 [out, in]
  kF16,        // data: f16 [out, in]
  kFP8Block,   // data: e4m3 [out, in]; scales: [ceil(out/128), ceil(in/128)] E8M0 or F32
  kMXFP4,      // data: packed e2m1 [out, in/2] (low nibble = even column); scales: E8M0 [out, in/32]
  kNVFP4,      // data: packed e2m1 [out, in/2] (low nibble = even column); scales: E4M3 [out, in/16];
               // tensor_scale: f32 (ModelOpt weight_scale_2)
};

const char* weight_format_name(WeightFormat format);  // "f32", "bf16", "fp8_block", "mxfp4", "nvfp4"

// Non-owning view of a stored weight matrix (points into the mapped checkpoint or
// into an owned buffer of the engine).
struct QuantMatrix {
  std::string name;
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0;             // out features
  int64_t cols = 0;             // in features
  const uint8_t* data = nullptr;
  const uint8_t* scales = nullptr;
  DType scale_dtype = DType::kF8_E8M0;  // E8M0 / E4M3 / F32 depending on format
  int64_t scale_rows = 0;       // rows of the scale grid
  int64_t scale_cols = 0;       // columns of the scale grid (row stride, elements)
  float tensor_scale = 1.0f;    // NVFP4 global scale

  int64_t storage_bytes() const;  // data + scales
};

// out[r - row_begin][c] = W[r][c] for r in [row_begin, row_begin + row_count), all c.
// out is row-major [row_count, cols], FP32. Exact for every format.
void dequantize_rows(const QuantMatrix& matrix, int64_t row_begin, int64_t row_count, float* out);

}  // namespace dsv4

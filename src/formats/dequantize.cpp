// dequantize_rows for every stored weight format: table lookups per byte, one scale
// per block. Exact (every product below is representable in FP32).
#include <cstring>
#include <vector>

#include "dsv4/error.h"
#include "dsv4/formats.h"
#include "dsv4/weight_format.h"

namespace dsv4 {

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32: return "f32";
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kF16: return "f16";
    case WeightFormat::kFP8Block: return "fp8_block";
    case WeightFormat::kMXFP4: return "mxfp4";
    case WeightFormat::kNVFP4: return "nvfp4";
  }
  return "?";
}

int64_t QuantMatrix::storage_bytes() const {
  switch (format) {
    case WeightFormat::kF32: return rows * cols * 4;
    case WeightFormat::kBF16:
    case WeightFormat::kF16: return rows * cols * 2;
    case WeightFormat::kFP8Block: return rows * cols + scale_rows * scale_cols * (scale_dtype == DType::kF32 ? 4 : 1);
    case WeightFormat::kMXFP4:
    case WeightFormat::kNVFP4: return rows * cols / 2 + scale_rows * scale_cols;
  }
  return 0;
}

namespace {

struct Tables {
  float e4m3[256];
  float e8m0[256];
  float e2m1_pair[256][2];  // byte -> (low nibble = even column, high nibble = odd column)
  Tables() {
    for (int i = 0; i < 256; ++i) {
      e4m3[i] = e4m3_to_float(static_cast<uint8_t>(i));
      e8m0[i] = e8m0_to_float(static_cast<uint8_t>(i));
      e2m1_pair[i][0] = e2m1_to_float(static_cast<uint8_t>(i & 0xf));
      e2m1_pair[i][1] = e2m1_to_float(static_cast<uint8_t>(i >> 4));
    }
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

// Packed E2M1 row with one scale per `block` columns.
void dequantize_fp4_row(const uint8_t* packed, const float* block_scales, int64_t cols, int64_t block, float* out) {
  const auto& pair = tables().e2m1_pair;
  for (int64_t c = 0; c < cols; c += 2) {
    const float scale = block_scales[c / block];
    const uint8_t byte = packed[c / 2];
    out[c] = pair[byte][0] * scale;
    out[c + 1] = pair[byte][1] * scale;
  }
}

// A row of 16-bit floats (unaligned bytes) through `decode`.
void decode_16bit_row(const uint8_t* src, int64_t cols, float (*decode)(uint16_t), float* out) {
  for (int64_t c = 0; c < cols; ++c) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * c, 2);
    out[c] = decode(bits);
  }
}

}  // namespace

void dequantize_rows(const QuantMatrix& m, int64_t row_begin, int64_t row_count, float* out) {
  DSV4_CHECK(row_begin >= 0 && row_begin + row_count <= m.rows, "dequantize {}: rows [{}, {}) outside {} rows", m.name,
             row_begin, row_begin + row_count, m.rows);
  const Tables& t = tables();
  const int64_t cols = m.cols;
  std::vector<float> block_scales;
  for (int64_t r = row_begin; r < row_begin + row_count; ++r) {
    float* row = out + (r - row_begin) * cols;
    switch (m.format) {
      case WeightFormat::kF32:
        std::memcpy(row, m.data + r * cols * 4, static_cast<size_t>(cols) * 4);
        break;
      case WeightFormat::kBF16:
        decode_16bit_row(m.data + r * cols * 2, cols, bf16_to_float, row);
        break;
      case WeightFormat::kF16:
        decode_16bit_row(m.data + r * cols * 2, cols, f16_to_float, row);
        break;
      case WeightFormat::kFP8Block: {
        // data [rows, cols] E4M3; scales [ceil(rows/128), ceil(cols/128)] E8M0 or F32.
        const uint8_t* src = m.data + r * cols;
        const int64_t scale_row = r / 128;
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t index = scale_row * m.scale_cols + c / 128;
          float scale;
          if (m.scale_dtype == DType::kF32) std::memcpy(&scale, m.scales + 4 * index, 4);
          else scale = t.e8m0[m.scales[index]];
          row[c] = t.e4m3[src[c]] * scale;
        }
        break;
      }
      case WeightFormat::kMXFP4: {
        // data [rows, cols/2] packed E2M1; scales [rows, cols/32] E8M0.
        block_scales.resize(static_cast<size_t>(m.scale_cols));
        for (int64_t b = 0; b < m.scale_cols; ++b) block_scales[b] = t.e8m0[m.scales[r * m.scale_cols + b]];
        dequantize_fp4_row(m.data + r * cols / 2, block_scales.data(), cols, 32, row);
        break;
      }
      case WeightFormat::kNVFP4: {
        // data [rows, cols/2] packed E2M1; scales [rows, cols/16] E4M3; times the FP32 tensor scale.
        block_scales.resize(static_cast<size_t>(m.scale_cols));
        for (int64_t b = 0; b < m.scale_cols; ++b)
          block_scales[b] = t.e4m3[m.scales[r * m.scale_cols + b]] * m.tensor_scale;
        dequantize_fp4_row(m.data + r * cols / 2, block_scales.data(), cols, 16, row);
        break;
      }
    }
  }
}

}  // namespace dsv4

// dequantize_rows for every stored weight format: table lookups per byte, one scale
// per block, no per-element branches. Exact for F32/BF16/F16, MXFP4 and FP8 with
// E8M0 scales (an E4M3 or E2M1 value times a power of two); FP8 with F32 scales rounds
// the product like the reference dequantizers; NVFP4 rounds s_block * s_tensor to FP32 once (see below).
#include <algorithm>
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
    case WeightFormat::kMXFP4: return rows * cols / 2 + scale_rows * scale_cols;
    case WeightFormat::kNVFP4: return rows * cols / 2 + scale_rows * scale_cols + 4;  // + FP32 weight_scale_2
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
  DSV4_CHECK(row_begin >= 0 && row_count >= 0 && row_begin + row_count <= m.rows,
             "dequantize {}: rows [{}, {}) outside {} rows", m.name, row_begin, row_begin + row_count, m.rows);
  const Tables& t = tables();
  const int64_t cols = m.cols;
  std::vector<float> block_scales;
  // Scale element type by format: MXFP4 E8M0, NVFP4 E4M3, FP8 blocks E8M0 or F32 (V3's
  // weight_scale_inv, V4-Base's FP32 container).
  const bool f32_scales = m.format == WeightFormat::kFP8Block && m.scale_dtype == DType::kF32;
  const float* scale_table = m.format == WeightFormat::kNVFP4 ? t.e4m3 : t.e8m0;
  auto load_scales = [&](int64_t scale_row, int64_t count) {
    // One scale row decoded once per matrix row, so the element loops have no branch.
    block_scales.resize(static_cast<size_t>(count));
    const int64_t first = scale_row * m.scale_cols;
    if (f32_scales) {
      std::memcpy(block_scales.data(), m.scales + 4 * first, static_cast<size_t>(count) * 4);
    } else {
      for (int64_t b = 0; b < count; ++b) block_scales[b] = scale_table[m.scales[first + b]];
    }
  };
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
        // data [rows, cols] E4M3; scales [ceil(rows/128), ceil(cols/128)] E8M0 or F32;
        // the last block row/column may be narrower than 128 (ragged).
        if (r == row_begin || r % 128 == 0) load_scales(r / 128, (cols + 127) / 128);
        const uint8_t* src = m.data + r * cols;
        for (int64_t c0 = 0; c0 < cols; c0 += 128) {
          const float scale = block_scales[c0 / 128];
          const int64_t end = std::min(cols, c0 + 128);
          for (int64_t c = c0; c < end; ++c) row[c] = t.e4m3[src[c]] * scale;
        }
        break;
      }
      case WeightFormat::kMXFP4:
        // data [rows, cols/2] packed E2M1; scales [rows, cols/32] E8M0.
        load_scales(r, cols / 32);
        dequantize_fp4_row(m.data + r * cols / 2, block_scales.data(), cols, 32, row);
        break;
      case WeightFormat::kNVFP4:
        // data [rows, cols/2] packed E2M1; scales [rows, cols/16] E4M3. W = e2m1 * fl(s_block * s_tensor):
        // the product is rounded to FP32 once, the same product the quantizer divided by.
        load_scales(r, cols / 16);
        for (float& scale : block_scales) scale *= m.tensor_scale;
        dequantize_fp4_row(m.data + r * cols / 2, block_scales.data(), cols, 16, row);
        break;
    }
  }
}

}  // namespace dsv4

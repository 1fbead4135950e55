// Block quantizers and dequantize_rows: scale rules, zero / denormal / clipping blocks,
// ragged FP8 shapes, clear errors for widths that are not whole blocks, and
// dequantize(quantize(x)) error bounds derived from each format's step sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "dsv4/error.h"
#include "dsv4/formats.h"
#include "dsv4/weight_format.h"

namespace dsv4 {
namespace {

std::vector<float> random_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::exp(normal(rng));  // rows of different magnitude
    for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = normal(rng) * row_scale;
  }
  return w;
}

struct Quantized {
  std::vector<uint8_t> data, scales;
  QuantMatrix matrix;
};

Quantized quantize(WeightFormat format, const std::vector<float>& w, int64_t rows, int64_t cols) {
  Quantized q;
  QuantMatrix& m = q.matrix;
  m.name = "test";
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  switch (format) {
    case WeightFormat::kMXFP4:
      q.data.resize(rows * cols / 2);
      q.scales.resize(rows * cols / 32);
      for (int64_t r = 0; r < rows; ++r)
        quantize_mxfp4_row(&w[r * cols], cols, &q.data[r * cols / 2], &q.scales[r * cols / 32]);
      m.scale_dtype = DType::kF8_E8M0;
      m.scale_rows = rows;
      m.scale_cols = cols / 32;
      break;
    case WeightFormat::kNVFP4:
      q.data.resize(rows * cols / 2);
      q.scales.resize(rows * cols / 16);
      m.tensor_scale = nvfp4_tensor_scale(w.data(), rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        quantize_nvfp4_row(&w[r * cols], cols, m.tensor_scale, &q.data[r * cols / 2], &q.scales[r * cols / 16]);
      m.scale_dtype = DType::kF8_E4M3;
      m.scale_rows = rows;
      m.scale_cols = cols / 16;
      break;
    case WeightFormat::kFP8Block:
      m.scale_rows = (rows + 127) / 128;
      m.scale_cols = (cols + 127) / 128;
      q.data.resize(rows * cols);
      q.scales.resize(m.scale_rows * m.scale_cols);
      quantize_fp8_block(w.data(), rows, cols, q.data.data(), q.scales.data());
      m.scale_dtype = DType::kF8_E8M0;
      break;
    default:
      ADD_FAILURE() << "not a quantized format";
  }
  m.data = q.data.data();
  m.scales = q.scales.data();
  return q;
}

std::vector<float> dequantize(const QuantMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
  dequantize_rows(m, 0, m.rows, out.data());
  return out;
}

TEST(MXFP4, SharedExponentIsFloorLog2MinusTwo) {
  EXPECT_EQ(mxfp4_shared_exponent(0.0f), -127);
  EXPECT_EQ(mxfp4_shared_exponent(1.0f), -2);
  EXPECT_EQ(mxfp4_shared_exponent(std::nextafter(4.0f, 0.0f)), -1);  // log2 would round up to 2
  EXPECT_EQ(mxfp4_shared_exponent(4.0f), 0);
  EXPECT_EQ(mxfp4_shared_exponent(7.99f), 0);
  EXPECT_EQ(mxfp4_shared_exponent(1e-40f), -127);  // floor(log2) = -133, clamped
  EXPECT_EQ(mxfp4_shared_exponent(3e38f), 125);
}

TEST(MXFP4, ZeroDenormalAndClippingBlocks) {
  std::vector<float> row(128, 0.0f);
  for (int i = 32; i < 64; ++i) row[i] = 1e-40f * (i - 40);        // FP32 denormals
  for (int i = 64; i < 96; ++i) row[i] = 7.5f * (i - 80) / 16.0f;  // amax 7.5: exponent 0, 7.5 clips to 6
  for (int i = 96; i < 128; ++i) row[i] = 0.37f * (i - 111);
  std::vector<uint8_t> packed(64), scales(4);
  quantize_mxfp4_row(row.data(), 128, packed.data(), scales.data());
  EXPECT_EQ(scales[0], 0) << "an all-zero block gets the smallest exponent";
  for (int i = 0; i < 16; ++i) EXPECT_EQ(packed[i], 0) << "zeros stay +0";
  EXPECT_EQ(scales[1], 0) << "denormal amax: exponent clamps to -127";
  EXPECT_EQ(scales[2], 127);
  EXPECT_EQ(e2m1_code_at(packed.data(), 64), 15) << "-7.5 clips to -6";
  EXPECT_EQ(e2m1_code_at(packed.data(), 95), 7) << "7.03 clips to 6";
  QuantMatrix m;
  m.format = WeightFormat::kMXFP4;
  m.rows = 1;
  m.cols = 128;
  m.data = packed.data();
  m.scales = scales.data();
  m.scale_rows = 1;
  m.scale_cols = 4;
  std::vector<float> back(128);
  dequantize_rows(m, 0, 1, back.data());
  for (int i = 32; i < 64; ++i) EXPECT_EQ(std::fabs(back[i] - row[i]) <= std::ldexp(1.0f, -127), true) << i;
  EXPECT_EQ(back[64], -6.0f);
}

TEST(MXFP4, RejectsWidthsThatAreNotWholeBlocks) {
  std::vector<float> row(48, 1.0f);
  std::vector<uint8_t> packed(24), scales(2);
  try {
    quantize_mxfp4_row(row.data(), 48, packed.data(), scales.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("divisible by 32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_nvfp4_row(row.data(), 40, 1.0f, packed.data(), scales.data()), Error);
}

TEST(NVFP4, ModelOptScaleRules) {
  const float ts = nvfp4_tensor_scale(std::vector<float>{-2688.0f, 1.0f}.data(), 2);
  EXPECT_EQ(ts, 1.0f);
  EXPECT_EQ(nvfp4_tensor_scale(std::vector<float>(5, 0.0f).data(), 5), 1.0f) << "all-zero tensor";
  EXPECT_EQ(nvfp4_block_scale(0.0f, 0.5f), 0x38) << "amax 0 -> scale 1.0";
  EXPECT_EQ(nvfp4_block_scale(2688.0f, 1.0f), 0x7e) << "the tensor's amax block -> 448";
  EXPECT_EQ(nvfp4_block_scale(1e-9f, 1.0f), 0x00) << "underflow to E4M3 zero";
  // Underflowed block: codes 0 (decode to 0).
  std::vector<float> row(32, 1e-9f);
  row[16] = 2688.0f;
  std::vector<uint8_t> packed(16, 0xff), scales(2);
  quantize_nvfp4_row(row.data(), 32, 1.0f, packed.data(), scales.data());
  EXPECT_EQ(scales[0], 0);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(packed[i], 0);
  EXPECT_EQ(scales[1], 0x7e);
  EXPECT_EQ(e2m1_code_at(packed.data(), 16), 7);
}

TEST(FP8Block, ScaleRuleKeepsAmaxWithin448) {
  EXPECT_EQ(fp8_scale_exponent(448.0f), 0);
  EXPECT_EQ(fp8_scale_exponent(std::nextafter(448.0f, 1e9f)), 1);
  EXPECT_EQ(fp8_scale_exponent(449.0f), 1);
  EXPECT_EQ(fp8_scale_exponent(1.0f), -8);   // 1/448 -> 2^-8 (1 / 2^-8 = 256 <= 448)
  EXPECT_EQ(fp8_scale_exponent(0.0f), -22);  // clamped amax 1e-4
  for (float amax : {1e-3f, 0.1f, 1.0f, 3.3f, 447.0f, 1000.0f, 1e6f, 3e38f}) {
    const float s = std::ldexp(1.0f, fp8_scale_exponent(amax));
    EXPECT_LE(amax / s, 448.0f) << amax;
    EXPECT_GT(amax / s, 224.0f) << amax << ": the smallest such power of two";
  }
}

TEST(FP8Block, ActivationRowScales) {
  std::vector<float> x(200);
  for (int i = 0; i < 200; ++i) x[i] = 0.01f * (i - 100);
  x[150] = 896.0f;
  std::vector<uint8_t> q(200);
  std::vector<float> scales(2);
  quantize_fp8_activation_row(x.data(), 200, true, q.data(), scales.data());
  EXPECT_EQ(scales[0], std::ldexp(1.0f, fp8_scale_exponent(1.0f)));
  EXPECT_EQ(scales[1], 2.0f);
  EXPECT_EQ(q[150], 0x7e);
  quantize_fp8_activation_row(x.data(), 200, false, q.data(), scales.data());
  EXPECT_EQ(scales[1], 2.0f);
  EXPECT_EQ(scales[0], 1.0f / 448.0f);
  EXPECT_EQ(q[0], 0xfe) << "-amax maps to -448";
}

// dequantize(quantize(x)) error bounds, per element, on odd and ragged shapes.
TEST(RoundTrip, ErrorBoundsPerFormat) {
  struct Shape { int64_t rows, cols; };
  for (const Shape s : {Shape{7, 64}, Shape{83, 96}, Shape{130, 160}, Shape{1, 32}}) {
    const std::vector<float> w = random_matrix(s.rows, s.cols, static_cast<uint32_t>(s.rows * 1000 + s.cols));
    {  // MXFP4: |err| <= 2^(e+1) (half the largest step, 2 * 2^e; clipping of [6, 8) * 2^e at most 2 * 2^e)
      Quantized q = quantize(WeightFormat::kMXFP4, w, s.rows, s.cols);
      const std::vector<float> back = dequantize(q.matrix);
      for (int64_t i = 0; i < s.rows * s.cols; ++i) {
        const int64_t r = i / s.cols, c = i % s.cols;
        const float step = e8m0_to_float(q.scales[r * s.cols / 32 + c / 32]);
        ASSERT_LE(std::fabs(back[i] - w[i]), 2 * step) << "MXFP4 [" << r << ", " << c << "]";
        ASSERT_EQ(back[i], e2m1_to_float(e2m1_code_at(&q.data[r * s.cols / 2], c)) * step);
      }
    }
    {  // NVFP4: |err| <= s_block * s_tensor (half the largest step, plus the block scale's rounding)
      Quantized q = quantize(WeightFormat::kNVFP4, w, s.rows, s.cols);
      const std::vector<float> back = dequantize(q.matrix);
      ErrorStats stats;
      stats.add(w.data(), back.data(), static_cast<int64_t>(w.size()));
      for (int64_t i = 0; i < s.rows * s.cols; ++i) {
        const int64_t r = i / s.cols, c = i % s.cols;
        const float eff = e4m3_to_float(q.scales[r * s.cols / 16 + c / 16]) * q.matrix.tensor_scale;
        ASSERT_LE(std::fabs(back[i] - w[i]), eff) << "NVFP4 [" << r << ", " << c << "]";
      }
      EXPECT_GT(stats.cosine(), 0.99) << s.rows << "x" << s.cols;
    }
    {  // FP8 blocks: relative 2^-4 for normals, 2^-10 * s for subnormals; no saturation.
      Quantized q = quantize(WeightFormat::kFP8Block, w, s.rows, s.cols);
      const std::vector<float> back = dequantize(q.matrix);
      for (int64_t i = 0; i < s.rows * s.cols; ++i) {
        const int64_t r = i / s.cols, c = i % s.cols;
        const float scale = e8m0_to_float(q.scales[(r / 128) * q.matrix.scale_cols + c / 128]);
        const float bound = std::max(std::fabs(w[i]) * 0.0625f, std::ldexp(scale, -10));
        ASSERT_LE(std::fabs(back[i] - w[i]), bound) << "FP8 [" << r << ", " << c << "]";
        ASSERT_NE(q.data[i] & 0x7f, 0x7f) << "no NaN codes";
      }
    }
  }
}

TEST(Dequantize, DenseFormatsAndFP8WithF32Scales) {
  const std::vector<float> w = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 65504.0f};
  QuantMatrix m;
  m.rows = 2;
  m.cols = 3;
  m.format = WeightFormat::kF32;
  m.data = reinterpret_cast<const uint8_t*>(w.data());
  std::vector<float> out(6);
  dequantize_rows(m, 0, 2, out.data());
  EXPECT_EQ(out, w);
  std::vector<uint16_t> bf16, f16;
  for (float v : w) {
    bf16.push_back(float_to_bf16(v));
    f16.push_back(float_to_f16(v));
  }
  m.format = WeightFormat::kBF16;
  m.data = reinterpret_cast<const uint8_t*>(bf16.data());
  dequantize_rows(m, 1, 1, out.data());
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[2], 65536.0f) << "65504 rounds to 65536 in BF16";
  m.format = WeightFormat::kF16;
  m.data = reinterpret_cast<const uint8_t*>(f16.data());
  dequantize_rows(m, 0, 2, out.data());
  EXPECT_EQ(out, w);

  // FP8 with FP32 scales (V3 weight_scale_inv / V4-Base container), ragged 130 x 131.
  const int64_t rows = 130, cols = 131;
  std::vector<uint8_t> codes(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) codes[i] = static_cast<uint8_t>(i % 0x7e);
  const std::vector<float> scales = {0.5f, 3.0f, 0.1f, 7.0f};  // [2, 2]
  m.format = WeightFormat::kFP8Block;
  m.rows = rows;
  m.cols = cols;
  m.data = codes.data();
  m.scales = reinterpret_cast<const uint8_t*>(scales.data());
  m.scale_dtype = DType::kF32;
  m.scale_rows = 2;
  m.scale_cols = 2;
  std::vector<float> full(rows * cols);
  dequantize_rows(m, 0, rows, full.data());
  for (int64_t r : {0, 127, 128, 129})
    for (int64_t c : {0, 127, 128, 130})
      EXPECT_EQ(full[r * cols + c], e4m3_to_float(codes[r * cols + c]) * scales[(r / 128) * 2 + c / 128])
          << r << ", " << c;
  // A window of rows starting inside a block row.
  std::vector<float> window(3 * cols);
  dequantize_rows(m, 127, 3, window.data());
  for (int64_t i = 0; i < 3 * cols; ++i) ASSERT_EQ(window[i], full[127 * cols + i]);
  EXPECT_THROW(dequantize_rows(m, 129, 2, window.data()), Error);
}

TEST(StorageBytes, EveryFormat) {
  QuantMatrix m;
  m.rows = 256;
  m.cols = 512;
  m.format = WeightFormat::kBF16;
  EXPECT_EQ(m.storage_bytes(), 256 * 512 * 2);
  m.format = WeightFormat::kMXFP4;
  m.scale_rows = 256;
  m.scale_cols = 16;
  EXPECT_EQ(m.storage_bytes(), 256 * 256 + 256 * 16);
  m.format = WeightFormat::kNVFP4;
  m.scale_cols = 32;
  EXPECT_EQ(m.storage_bytes(), 256 * 256 + 256 * 32 + 4);
  m.format = WeightFormat::kFP8Block;
  m.scale_rows = 2;
  m.scale_cols = 4;
  m.scale_dtype = DType::kF32;
  EXPECT_EQ(m.storage_bytes(), 256 * 512 + 8 * 4);
  EXPECT_STREQ(weight_format_name(WeightFormat::kFP8Block), "fp8_block");
  EXPECT_STREQ(weight_format_name(WeightFormat::kNVFP4), "nvfp4");
}

}  // namespace
}  // namespace dsv4

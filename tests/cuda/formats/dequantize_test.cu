// CUDA dequantization vs the CPU dequantize_rows, bit for bit after BF16 rounding,
// on ragged shapes for every format.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cuda/formats/dequantize.h"
#include "dsv4/dtype.h"
#include "dsv4/weight_format.h"

namespace dsv4 {
namespace {

struct Case {
  WeightFormat format;
  int64_t rows, cols;
};

TEST(CudaDequantize, MatchesCpuBitForBit) {
  std::mt19937 rng(7);
  for (const Case& c : {Case{WeightFormat::kMXFP4, 37, 96}, Case{WeightFormat::kNVFP4, 129, 48},
                        Case{WeightFormat::kFP8Block, 131, 258}, Case{WeightFormat::kBF16, 5, 34}}) {
    SCOPED_TRACE(weight_format_name(c.format));
    QuantMatrix m;
    m.format = c.format;
    m.rows = c.rows;
    m.cols = c.cols;
    std::vector<uint8_t> data, scales;
    switch (c.format) {
      case WeightFormat::kMXFP4: data.resize(c.rows * c.cols / 2); m.scale_cols = c.cols / 32; scales.resize(c.rows * m.scale_cols); break;
      case WeightFormat::kNVFP4: data.resize(c.rows * c.cols / 2); m.scale_cols = c.cols / 16; scales.resize(c.rows * m.scale_cols); m.tensor_scale = 0.0371f; break;
      case WeightFormat::kFP8Block: data.resize(c.rows * c.cols); m.scale_cols = (c.cols + 127) / 128; scales.resize(((c.rows + 127) / 128) * m.scale_cols); break;
      default: data.resize(c.rows * c.cols * 2); break;
    }
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    for (auto& s : scales) s = static_cast<uint8_t>(c.format == WeightFormat::kNVFP4 ? rng() % 0x7e : 110 + rng() % 30);
    if (c.format == WeightFormat::kFP8Block)
      for (auto& b : data) if ((b & 0x7f) == 0x7f) b = 0x10;  // keep NaN codes out of the comparison
    if (c.format == WeightFormat::kBF16)
      for (size_t i = 1; i < data.size(); i += 2) data[i] &= 0x3f;  // finite values
    m.data = data.data();
    m.scales = scales.data();
    m.scale_dtype = c.format == WeightFormat::kNVFP4 ? DType::kF8_E4M3 : DType::kF8_E8M0;
    std::vector<float> expected(c.rows * c.cols);
    dequantize_rows(m, 0, c.rows, expected.data());

    uint8_t *d_data, *d_scales = nullptr;
    uint16_t* d_out;
    ASSERT_EQ(cudaMalloc(&d_data, data.size()), cudaSuccess);
    if (!scales.empty()) ASSERT_EQ(cudaMalloc(&d_scales, scales.size()), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_out, c.rows * c.cols * 2), cudaSuccess);
    cudaMemcpy(d_data, data.data(), data.size(), cudaMemcpyHostToDevice);
    if (d_scales) cudaMemcpy(d_scales, scales.data(), scales.size(), cudaMemcpyHostToDevice);
    cuda::DequantizeParams p{static_cast<int>(c.format), c.rows, c.cols, d_data, d_scales, 0, m.scale_cols,
                             m.tensor_scale, d_out, nullptr};
    ASSERT_EQ(cuda::dequantize_to_bf16(p), cudaSuccess);
    std::vector<uint16_t> out(c.rows * c.cols);
    ASSERT_EQ(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t i = 0; i < c.rows * c.cols; ++i)
      ASSERT_EQ(out[i], float_to_bf16(expected[i])) << "row " << i / c.cols << " col " << i % c.cols
                                                    << " expected " << expected[i];
    cudaFree(d_data);
    cudaFree(d_scales);
    cudaFree(d_out);
  }
}

}  // namespace
}  // namespace dsv4

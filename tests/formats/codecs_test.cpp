// Element codecs: exhaustive over every code, RNE ties, saturation, and a bit-for-bit
// cross-check against PyTorch's float8 dtypes (fixture from scripts/make_format_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "dsv4/formats.h"
#include "dsv4/safetensors.h"
#include "dsv4/weight_format.h"

namespace dsv4 {
namespace {

TEST(E2M1, AllSixteenCodes) {
  const float expected[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int code = 0; code < 16; ++code) {
    EXPECT_EQ(e2m1_to_float(static_cast<uint8_t>(code)), expected[code]) << code;
    EXPECT_EQ(std::signbit(e2m1_to_float(static_cast<uint8_t>(code))), code >= 8) << code;
    EXPECT_EQ(float_to_e2m1(expected[code]), code) << "encode(decode(code)) must round-trip";
  }
}

TEST(E2M1, TiesToEvenAndSaturation) {
  EXPECT_EQ(float_to_e2m1(0.25f), 0);   // between 0 (code 0) and 0.5 (code 1): even code 0
  EXPECT_EQ(float_to_e2m1(0.75f), 2);   // 0.5 | 1.0 -> code 2
  EXPECT_EQ(float_to_e2m1(1.25f), 2);   // 1.0 | 1.5 -> code 2
  EXPECT_EQ(float_to_e2m1(1.75f), 4);   // 1.5 | 2.0 -> code 4
  EXPECT_EQ(float_to_e2m1(2.5f), 4);    // 2 | 3 -> code 4
  EXPECT_EQ(float_to_e2m1(3.5f), 6);    // 3 | 4 -> code 6
  EXPECT_EQ(float_to_e2m1(5.0f), 6);    // 4 | 6 -> code 6
  EXPECT_EQ(float_to_e2m1(5.01f), 7);
  EXPECT_EQ(float_to_e2m1(100.0f), 7);  // saturates to 6
  EXPECT_EQ(float_to_e2m1(-100.0f), 15);
  EXPECT_EQ(float_to_e2m1(-0.1f), 8);   // -0
}

TEST(E4M3, AllCodesAndNaN) {
  int nan_codes = 0;
  for (int code = 0; code < 256; ++code) {
    const float value = e4m3_to_float(static_cast<uint8_t>(code));
    if (std::isnan(value)) {
      ++nan_codes;
      EXPECT_TRUE(code == 0x7f || code == 0xff) << code;
      continue;
    }
    EXPECT_EQ(float_to_e4m3(value), code) << "round trip of code " << code;
  }
  EXPECT_EQ(nan_codes, 2);
  EXPECT_EQ(e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_float(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(float_to_e4m3(1000.0f), 0x7e);  // saturates (quantizers clamp; torch gives NaN)
  EXPECT_EQ(float_to_e4m3(-1e30f), 0xfe);
  EXPECT_EQ(float_to_e4m3(NAN), 0x7f);
}

TEST(E8M0, AllCodes) {
  for (int code = 0; code < 255; ++code)
    EXPECT_EQ(e8m0_to_float(static_cast<uint8_t>(code)), std::ldexp(1.0f, code - 127)) << code;
  EXPECT_TRUE(std::isnan(e8m0_to_float(0xff)));
}

TEST(TorchFloat8, BitForBit) {
  SafetensorsFile file(std::filesystem::path(DSV4_FIXTURES_DIR) / "formats" / "torch_float8.safetensors");
  const auto& t = file.tensors();
  auto floats = [&](const char* name) {
    const TensorView& v = t.at(name);
    std::vector<float> out(static_cast<size_t>(v.numel()));
    std::memcpy(out.data(), v.data, out.size() * 4);
    return out;
  };
  const std::vector<float> e4m3 = floats("e4m3_decode"), e8m0 = floats("e8m0_decode");
  for (int code = 0; code < 256; ++code) {
    const float ours = e4m3_to_float(static_cast<uint8_t>(code));
    if (std::isnan(e4m3[code])) EXPECT_TRUE(std::isnan(ours)) << code;
    else EXPECT_EQ(ours, e4m3[code]) << "E4M3 code " << code;
    const float ours8 = e8m0_to_float(static_cast<uint8_t>(code));
    if (std::isnan(e8m0[code])) EXPECT_TRUE(std::isnan(ours8)) << code;
    else EXPECT_EQ(ours8, e8m0[code]) << "E8M0 code " << code;
  }
  const std::vector<float> inputs = floats("e4m3_inputs");
  const TensorView& encoded = t.at("e4m3_encoded");
  ASSERT_EQ(static_cast<size_t>(encoded.numel()), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    ASSERT_EQ(float_to_e4m3(inputs[i]), encoded.data[i]) << "input " << inputs[i] << " (index " << i << ")";
}

TEST(Dequantize, BlockFormatsUseTheRightScales) {
  // MXFP4 row of 64: bytes 0x21 -> (low nibble 1 = 0.5 at even column, high nibble 2 = 1.0 at odd column).
  std::vector<uint8_t> packed(32, 0x21);
  std::vector<uint8_t> scales = {127, 129};  // 1 for columns 0..31, 4 for 32..63
  QuantMatrix m;
  m.format = WeightFormat::kMXFP4;
  m.rows = 1;
  m.cols = 64;
  m.data = packed.data();
  m.scales = scales.data();
  m.scale_cols = 2;
  std::vector<float> row(64);
  dequantize_rows(m, 0, 1, row.data());
  EXPECT_EQ(row[0], 0.5f);
  EXPECT_EQ(row[1], 1.0f);
  EXPECT_EQ(row[32], 2.0f);
  EXPECT_EQ(row[63], 4.0f);
  // NVFP4: E4M3 block scale 0x38 = 1.0, tensor scale 0.25, block of 16.
  std::vector<uint8_t> nv_scales = {0x38, 0x40};  // 1.0, 2.0
  m.format = WeightFormat::kNVFP4;
  m.cols = 32;
  m.scales = nv_scales.data();
  m.scale_cols = 2;
  m.scale_dtype = DType::kF8_E4M3;
  m.tensor_scale = 0.25f;
  dequantize_rows(m, 0, 1, row.data());
  EXPECT_EQ(row[0], 0.125f);
  EXPECT_EQ(row[17], 0.5f);
}

}  // namespace
}  // namespace dsv4

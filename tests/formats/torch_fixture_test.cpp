// Bit-for-bit comparison with the independent torch references of
// scripts/make_format_fixtures.py (tests/fixtures/formats/torch_formats.safetensors):
// torch's float8_e4m3fn / float8_e8m0fnu casts, ModelOpt's FP4 cast, transformers'
// FP4 unpacking (nibble order), and torch implementations of the MXFP4 / NVFP4 /
// FP8-block / FP8-activation quantizers. A failure prints the input and both codes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "dsv4/formats.h"
#include "dsv4/safetensors.h"
#include "dsv4/weight_format.h"

namespace dsv4 {
namespace {

class TorchFixture : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    file_ = new SafetensorsFile(std::filesystem::path(DSV4_FIXTURES_DIR) / "formats" / "torch_formats.safetensors");
  }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }
  static const TensorView& view(const char* name) {
    auto it = file_->tensors().find(name);
    if (it == file_->tensors().end()) throw std::runtime_error(std::string("fixture lacks ") + name);
    return it->second;
  }
  static std::vector<float> floats(const char* name) {
    const TensorView& v = view(name);
    EXPECT_EQ(v.dtype, DType::kF32) << name;
    std::vector<float> out(static_cast<size_t>(v.numel()));
    std::memcpy(out.data(), v.data, out.size() * 4);
    return out;
  }
  static std::vector<uint8_t> bytes(const char* name) {
    const TensorView& v = view(name);
    EXPECT_EQ(v.dtype, DType::kU8) << name;
    return std::vector<uint8_t>(v.data, v.data + v.numel());
  }
  static std::vector<int64_t> shape(const char* name) { return view(name).shape; }
  static SafetensorsFile* file_;
};
SafetensorsFile* TorchFixture::file_ = nullptr;

void expect_same_float(float ours, float theirs, const std::string& what) {
  if (std::isnan(theirs)) {
    EXPECT_TRUE(std::isnan(ours)) << what;
  } else {
    uint32_t a, b;
    std::memcpy(&a, &ours, 4);
    std::memcpy(&b, &theirs, 4);
    EXPECT_EQ(a, b) << what << ": ours " << ours << ", torch " << theirs;
  }
}

TEST_F(TorchFixture, DecodeEveryE4M3AndE8M0Code) {
  const std::vector<float> e4m3 = floats("e4m3_decode"), e8m0 = floats("e8m0_decode");
  for (int code = 0; code < 256; ++code) {
    expect_same_float(e4m3_to_float(static_cast<uint8_t>(code)), e4m3[code], "E4M3 code " + std::to_string(code));
    expect_same_float(e8m0_to_float(static_cast<uint8_t>(code)), e8m0[code], "E8M0 code " + std::to_string(code));
  }
}

TEST_F(TorchFixture, EncodeE4M3SaturatingAndTorchCast) {
  const std::vector<float> inputs = floats("e4m3_inputs");
  const std::vector<uint8_t> torch_cast = bytes("e4m3_torch"), saturated = bytes("e4m3_saturated");
  ASSERT_EQ(inputs.size(), torch_cast.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_EQ(float_to_e4m3_nonsaturating(inputs[i]), torch_cast[i]) << "x.to(float8_e4m3fn), x = " << inputs[i];
    ASSERT_EQ(float_to_e4m3(inputs[i]), saturated[i]) << "x.clamp(-448, 448).to(float8_e4m3fn), x = " << inputs[i];
  }
}

TEST_F(TorchFixture, EncodeE8M0) {
  const std::vector<float> inputs = floats("e8m0_inputs");
  const std::vector<uint8_t> expected = bytes("e8m0_torch");
  for (size_t i = 0; i < inputs.size(); ++i)
    ASSERT_EQ(float_to_e8m0(inputs[i]), expected[i]) << "x.to(float8_e8m0fnu), x = " << inputs[i];
}

TEST_F(TorchFixture, EncodeE2M1AsModelOptCastFp4) {
  const std::vector<float> inputs = floats("e2m1_inputs");
  const std::vector<uint8_t> expected = bytes("e2m1_codes");
  for (size_t i = 0; i < inputs.size(); ++i)
    ASSERT_EQ(float_to_e2m1(inputs[i]), expected[i]) << "x = " << inputs[i];
}

TEST_F(TorchFixture, NibbleOrderOfTheOfficialConverter) {
  // transformers' Fp8Dequantize._unpack_fp4 (and torch.float4_e2m1fn_x2 when torch can
  // convert it): [byte, 0] is the even column, [byte, 1] the odd one.
  if (!file_->tensors().count("fp4_unpack_transformers"))
    GTEST_SKIP() << "fixture made without transformers (see scripts/make_format_fixtures.py)";
  const std::vector<float> unpacked = floats("fp4_unpack_transformers");
  for (int byte = 0; byte < 256; ++byte) {
    const uint8_t b = static_cast<uint8_t>(byte);
    expect_same_float(e2m1_to_float(e2m1_code_at(&b, 0)), unpacked[2 * byte], "even column of byte " + std::to_string(byte));
    expect_same_float(e2m1_to_float(e2m1_code_at(&b, 1)), unpacked[2 * byte + 1], "odd column of byte " + std::to_string(byte));
  }
  if (file_->tensors().count("fp4_unpack_torch")) {
    const std::vector<float> torch_unpacked = floats("fp4_unpack_torch");
    for (int i = 0; i < 512; ++i) expect_same_float(unpacked[i], torch_unpacked[i], "torch float4 unpack " + std::to_string(i));
  }
}

TEST_F(TorchFixture, MXFP4Quantizer) {
  const std::vector<float> input = floats("mxfp4_input");
  const std::vector<uint8_t> packed = bytes("mxfp4_packed"), scales = bytes("mxfp4_scales");
  const int64_t rows = shape("mxfp4_input")[0], cols = shape("mxfp4_input")[1];
  std::vector<uint8_t> our_packed(rows * cols / 2), our_scales(rows * cols / 32);
  for (int64_t r = 0; r < rows; ++r)
    quantize_mxfp4_row(&input[r * cols], cols, &our_packed[r * cols / 2], &our_scales[r * cols / 32]);
  for (size_t i = 0; i < scales.size(); ++i) ASSERT_EQ(our_scales[i], scales[i]) << "scale " << i;
  for (size_t i = 0; i < packed.size(); ++i)
    ASSERT_EQ(our_packed[i], packed[i]) << "byte " << i << " (row " << i / (cols / 2) << ", inputs "
                                        << input[2 * i] << ", " << input[2 * i + 1] << ")";
}

TEST_F(TorchFixture, NVFP4Quantizer) {
  const std::vector<float> input = floats("nvfp4_input");
  const std::vector<uint8_t> packed = bytes("nvfp4_packed"), scales = bytes("nvfp4_scales");
  const float torch_tensor_scale = floats("nvfp4_tensor_scale")[0];
  const int64_t rows = shape("nvfp4_input")[0], cols = shape("nvfp4_input")[1];
  const float tensor_scale = nvfp4_tensor_scale(input.data(), rows * cols);
  expect_same_float(tensor_scale, torch_tensor_scale, "weight_scale_2");
  std::vector<uint8_t> our_packed(rows * cols / 2), our_scales(rows * cols / 16);
  for (int64_t r = 0; r < rows; ++r)
    quantize_nvfp4_row(&input[r * cols], cols, tensor_scale, &our_packed[r * cols / 2], &our_scales[r * cols / 16]);
  for (size_t i = 0; i < scales.size(); ++i) ASSERT_EQ(our_scales[i], scales[i]) << "block scale " << i;
  for (size_t i = 0; i < packed.size(); ++i)
    ASSERT_EQ(our_packed[i], packed[i]) << "byte " << i << " (inputs " << input[2 * i] << ", " << input[2 * i + 1] << ")";
}

TEST_F(TorchFixture, FP8BlockQuantizerRagged) {
  const std::vector<float> input = floats("fp8_block_input");
  const std::vector<uint8_t> q = bytes("fp8_block_q"), scales = bytes("fp8_block_scales");
  const int64_t rows = shape("fp8_block_input")[0], cols = shape("fp8_block_input")[1];
  std::vector<uint8_t> our_q(rows * cols), our_scales(scales.size());
  quantize_fp8_block(input.data(), rows, cols, our_q.data(), our_scales.data());
  for (size_t i = 0; i < scales.size(); ++i) ASSERT_EQ(our_scales[i], scales[i]) << "block scale " << i;
  for (size_t i = 0; i < q.size(); ++i)
    ASSERT_EQ(our_q[i], q[i]) << "[" << i / cols << ", " << i % cols << "], input " << input[i];
}

TEST_F(TorchFixture, FP8ActivationQuantizer) {
  const std::vector<float> input = floats("act_input");
  const int64_t tokens = shape("act_input")[0], cols = shape("act_input")[1], blocks = (cols + 127) / 128;
  for (bool pow2 : {true, false}) {
    const std::vector<uint8_t> q = bytes(pow2 ? "act_q_pow2" : "act_q_plain");
    const std::vector<float> scales = floats(pow2 ? "act_scales_pow2" : "act_scales_plain");
    std::vector<uint8_t> our_q(cols);
    std::vector<float> our_scales(blocks);
    for (int64_t t = 0; t < tokens; ++t) {
      quantize_fp8_activation_row(&input[t * cols], cols, pow2, our_q.data(), our_scales.data());
      for (int64_t b = 0; b < blocks; ++b)
        expect_same_float(our_scales[b], scales[t * blocks + b], "activation scale token " + std::to_string(t));
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(our_q[c], q[t * cols + c]) << (pow2 ? "pow2" : "plain") << " token " << t << " column " << c
                                             << " input " << input[t * cols + c];
    }
  }
}

}  // namespace
}  // namespace dsv4

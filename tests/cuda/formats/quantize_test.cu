// CUDA quantizers vs the CPU block quantizers (include/dsv4/formats.h), byte for byte:
// random and adversarial matrices (zero and -0 blocks, FP32 denormals, exact E2M1 and
// E4M3 ties, clipping / saturation, outliers, NaN and +-inf), F32 and BF16 inputs,
// ragged shapes, the NVFP4 tensor-scale reduction, invalid arguments, and the round
// trip dequantize_to_bf16(GPU quantize(x)) == BF16(CPU dequantize_rows(CPU quantize(x))).
// A failure names the format, the tensor (data / scales), the first differing byte's
// [row, col] and both values, and the inputs behind it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/formats/dequantize.h"
#include "cuda/formats/quantize.h"
#include "dsv4/dtype.h"
#include "dsv4/formats.h"
#include "dsv4/weight_format.h"

namespace dsv4 {
namespace {

enum class Format { kMXFP4, kNVFP4, kFP8Block, kFP8ActivationPow2, kFP8ActivationPlain };

const char* format_name(Format f) {
  switch (f) {
    case Format::kMXFP4: return "MXFP4";
    case Format::kNVFP4: return "NVFP4";
    case Format::kFP8Block: return "FP8 block";
    case Format::kFP8ActivationPow2: return "FP8 activation (UE8M0 scales)";
    case Format::kFP8ActivationPlain: return "FP8 activation (amax/448 scales)";
  }
  return "?";
}

bool is_fp4(Format f) { return f == Format::kMXFP4 || f == Format::kNVFP4; }
int64_t scale_block(Format f) { return f == Format::kMXFP4 ? 32 : f == Format::kNVFP4 ? 16 : 128; }

float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint32_t float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

// A source matrix [rows, cols]: F32 values, or BF16 bits with their exact F32 widening.
struct Source {
  int64_t rows = 0, cols = 0;
  DType dtype = DType::kF32;
  std::vector<float> values;    // what the CPU quantizes (BF16: widened)
  std::vector<uint16_t> bf16;   // what the GPU reads when dtype == kBF16
};

Source f32_source(int64_t rows, int64_t cols, std::vector<float> values) {
  return Source{rows, cols, DType::kF32, std::move(values), {}};
}

Source bf16_source(const Source& f32) {
  Source s{f32.rows, f32.cols, DType::kBF16, {}, {}};
  for (float v : f32.values) {
    s.bf16.push_back(float_to_bf16(v));
    s.values.push_back(bf16_to_float(s.bf16.back()));
  }
  return s;
}

std::vector<float> random_values(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::exp(2.0f * normal(rng));  // rows of very different magnitude
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = normal(rng) * row_scale;
  }
  return x;
}

// Every midpoint between consecutive positive finite E4M3 codes (exact in FP32), ascending.
std::vector<float> e4m3_midpoints() {
  std::vector<float> mids;
  for (int code = 0; code < 0x7e; ++code)
    mids.push_back((e4m3_to_float(static_cast<uint8_t>(code)) + e4m3_to_float(static_cast<uint8_t>(code + 1))) / 2);
  return mids;
}

// Random rows with special blocks at the start of rows 0..8 (where the shape has them):
//   0: zeros, then a block of -0.0          1: FP32 denormals (~1e-40)
//   2: E2M1 ties x 8 (amax 48: MXFP4 scale 2^3; NVFP4 at tensor scale 1: block scale 8)
//   3: linspace(-7.9, 7.9) x 2^-5 (OCP clipping of [6, 8) x 2^e)
//   4: outliers ~1e4 in the second block    5: E4M3 ties < 256 with amax 300 (FP8 scale 1)
//   6: E4M3 ties with amax 448 (amax/448 scale exactly 1)
//   7: E4M3 subnormal ties (odd multiples of 2^-10) with amax 300
//   8: values just above / below E2M1 and E4M3 midpoints (one ulp away)
std::vector<float> adversarial_values(int64_t rows, int64_t cols, int64_t block, uint32_t seed) {
  std::vector<float> x = random_values(rows, cols, seed);
  auto row = [&](int64_t r) { return r < rows ? &x[r * cols] : nullptr; };
  const int64_t width = std::min(block, cols);
  static const float kE2M1Ties[16] = {4.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f,
                                      -0.25f, -0.75f, -2.5f, -5.0f, 0.5f, 6.0f, -1.25f, -3.5f};
  const std::vector<float> mids = e4m3_midpoints();
  if (float* p = row(0)) {
    for (int64_t c = 0; c < width; ++c) p[c] = 0.0f;
    for (int64_t c = width; c < std::min(2 * width, cols); ++c) p[c] = -0.0f;
  }
  if (float* p = row(1))
    for (int64_t c = 0; c < width; ++c) p[c] = (c % 2 ? -1e-40f : 1e-40f) * static_cast<float>(1 + c % 7);
  if (float* p = row(2))
    for (int64_t c = 0; c < width; ++c) p[c] = kE2M1Ties[c % 16] * 8.0f;
  if (float* p = row(3))
    for (int64_t c = 0; c < width; ++c)
      p[c] = (-7.9f + 15.8f * static_cast<float>(c) / static_cast<float>(std::max<int64_t>(width - 1, 1))) * 0.03125f;
  if (float* p = row(4))
    for (int64_t c = width; c < std::min(2 * width, cols); ++c) p[c] *= 1e4f;
  if (float* p = row(5)) {
    for (int64_t c = 0; c < width; ++c) p[c] = (c % 2 ? -1.0f : 1.0f) * mids[c % 120];  // mids[119] = 248
    p[width - 1] = 300.0f;
  }
  if (float* p = row(6)) {
    for (int64_t c = 0; c < width; ++c) p[c] = (c % 3 ? 1.0f : -1.0f) * mids[(c * 7) % mids.size()];
    p[width - 1] = -448.0f;
  }
  if (float* p = row(7)) {
    for (int64_t c = 0; c < width; ++c) p[c] = (c % 2 ? -1.0f : 1.0f) * std::ldexp(static_cast<float>(2 * (c % 8) + 1), -10);
    p[width - 1] = 300.0f;
  }
  if (float* p = row(8))
    for (int64_t c = 0; c < width; ++c) {
      const float tie = c % 2 ? kE2M1Ties[c % 16] * 8.0f : mids[c % 120];
      p[c] = std::nextafter(tie, c % 4 < 2 ? INFINITY : -INFINITY);
    }
  return x;
}

// ---------------------------------------------------------------------------------
// Quantization on both sides
// ---------------------------------------------------------------------------------
struct Quantized {
  std::vector<uint8_t> data;    // packed E2M1 [rows, cols/2] or E4M3 [rows, cols]
  std::vector<uint8_t> scales;  // E8M0 / E4M3 bytes, or F32 scales' bytes (activations)
  float tensor_scale = 1.0f;    // NVFP4
};

int64_t data_bytes(Format f, int64_t rows, int64_t cols) { return is_fp4(f) ? rows * cols / 2 : rows * cols; }
int64_t scale_count(Format f, int64_t rows, int64_t cols) {
  switch (f) {
    case Format::kMXFP4: return rows * (cols / 32);
    case Format::kNVFP4: return rows * (cols / 16);
    case Format::kFP8Block: return ((rows + 127) / 128) * ((cols + 127) / 128);
    default: return rows * ((cols + 127) / 128);
  }
}
int64_t scale_bytes(Format f, int64_t rows, int64_t cols) {
  return scale_count(f, rows, cols) * (f == Format::kFP8ActivationPow2 || f == Format::kFP8ActivationPlain ? 4 : 1);
}

// NVFP4: tensor_scale <= 0 means "reduce it from the input" (nvfp4_tensor_scale).
Quantized cpu_quantize(Format f, const Source& s, float tensor_scale) {
  const int64_t rows = s.rows, cols = s.cols;
  Quantized q;
  q.data.resize(data_bytes(f, rows, cols));
  q.scales.resize(scale_bytes(f, rows, cols));
  const float* x = s.values.data();
  switch (f) {
    case Format::kMXFP4:
      for (int64_t r = 0; r < rows; ++r)
        quantize_mxfp4_row(x + r * cols, cols, &q.data[r * cols / 2], &q.scales[r * (cols / 32)]);
      break;
    case Format::kNVFP4:
      q.tensor_scale = tensor_scale > 0 ? tensor_scale : nvfp4_tensor_scale(x, rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        quantize_nvfp4_row(x + r * cols, cols, q.tensor_scale, &q.data[r * cols / 2], &q.scales[r * (cols / 16)]);
      break;
    case Format::kFP8Block: quantize_fp8_block(x, rows, cols, q.data.data(), q.scales.data()); break;
    case Format::kFP8ActivationPow2:
    case Format::kFP8ActivationPlain: {
      const int64_t blocks = (cols + 127) / 128;
      std::vector<float> scales(blocks);
      for (int64_t r = 0; r < rows; ++r) {
        quantize_fp8_activation_row(x + r * cols, cols, f == Format::kFP8ActivationPow2, &q.data[r * cols], scales.data());
        std::memcpy(&q.scales[r * blocks * 4], scales.data(), blocks * 4);
      }
      break;
    }
  }
  return q;
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes) EXPECT_EQ(cudaMalloc(&ptr, bytes), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr); }
};

// The GPU result plus the device buffers (kept for the round trip).
struct GpuQuantized {
  Quantized host;
  std::unique_ptr<DeviceBuffer> data, scales, tensor_scale;
};

GpuQuantized gpu_quantize(Format f, const Source& s, float tensor_scale) {
  const int64_t rows = s.rows, cols = s.cols;
  const size_t input_bytes = s.values.size() * (s.dtype == DType::kBF16 ? 2 : 4);
  DeviceBuffer input(input_bytes);
  if (input_bytes)
    EXPECT_EQ(cudaMemcpy(input.ptr, s.dtype == DType::kBF16 ? static_cast<const void*>(s.bf16.data()) : s.values.data(),
                         input_bytes, cudaMemcpyHostToDevice), cudaSuccess);
  GpuQuantized g;
  g.data = std::make_unique<DeviceBuffer>(data_bytes(f, rows, cols));
  g.scales = std::make_unique<DeviceBuffer>(scale_bytes(f, rows, cols));
  g.tensor_scale = std::make_unique<DeviceBuffer>(4);
  const cuda::QuantizeInput x{s.dtype, input.ptr, rows, cols};
  cudaError_t launched = cudaSuccess;
  switch (f) {
    case Format::kMXFP4: launched = cuda::quantize_mxfp4(x, g.data->as<uint8_t>(), g.scales->as<uint8_t>(), nullptr); break;
    case Format::kNVFP4:
      if (tensor_scale > 0) {
        launched = cuda::quantize_nvfp4(x, tensor_scale, nullptr, g.data->as<uint8_t>(), g.scales->as<uint8_t>(), nullptr);
        g.host.tensor_scale = tensor_scale;
      } else {
        EXPECT_EQ(cuda::nvfp4_tensor_scale(x, g.tensor_scale->as<float>(), nullptr), cudaSuccess);
        launched = cuda::quantize_nvfp4(x, -1.0f /* unused */, g.tensor_scale->as<float>(), g.data->as<uint8_t>(),
                                        g.scales->as<uint8_t>(), nullptr);
        EXPECT_EQ(cudaMemcpy(&g.host.tensor_scale, g.tensor_scale->ptr, 4, cudaMemcpyDeviceToHost), cudaSuccess);
      }
      break;
    case Format::kFP8Block: launched = cuda::quantize_fp8_block(x, g.data->as<uint8_t>(), g.scales->as<uint8_t>(), nullptr); break;
    case Format::kFP8ActivationPow2:
    case Format::kFP8ActivationPlain:
      launched = cuda::quantize_fp8_activation(x, f == Format::kFP8ActivationPow2, g.data->as<uint8_t>(),
                                               g.scales->as<float>(), nullptr);
      break;
  }
  EXPECT_EQ(launched, cudaSuccess) << format_name(f);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << format_name(f);
  g.host.data.resize(data_bytes(f, rows, cols));
  g.host.scales.resize(scale_bytes(f, rows, cols));
  if (!g.host.data.empty())
    EXPECT_EQ(cudaMemcpy(g.host.data.data(), g.data->ptr, g.host.data.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  if (!g.host.scales.empty())
    EXPECT_EQ(cudaMemcpy(g.host.scales.data(), g.scales->ptr, g.host.scales.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  return g;
}

// ---------------------------------------------------------------------------------
// Comparison with a pinpointing message
// ---------------------------------------------------------------------------------
std::string hex(uint32_t v, int digits) {
  std::ostringstream out;
  out << "0x" << std::hex << std::uppercase;
  out.width(digits);
  out.fill('0');
  out << v;
  return out.str();
}

std::string describe_data_byte(Format f, const Source& s, int64_t i) {
  std::ostringstream out;
  if (is_fp4(f)) {
    const int64_t r = i / (s.cols / 2), c = 2 * (i % (s.cols / 2));
    out << "packed byte [row " << r << ", cols " << c << ".." << c + 1 << "] inputs " << s.values[r * s.cols + c] << ", "
        << s.values[r * s.cols + c + 1];
  } else {
    out << "E4M3 [row " << i / s.cols << ", col " << i % s.cols << "] input " << s.values[i] << " (bits "
        << hex(float_bits(s.values[i]), 8) << ")";
  }
  return out.str();
}

std::string describe_scale(Format f, const Source& s, int64_t i) {
  std::ostringstream out;
  if (is_fp4(f)) {
    const int64_t per_row = s.cols / scale_block(f);
    out << "scale [row " << i / per_row << ", block " << i % per_row << " = cols " << (i % per_row) * scale_block(f)
        << "..]";
  } else if (f == Format::kFP8Block) {
    const int64_t per_row = (s.cols + 127) / 128;
    out << "scale [block row " << i / per_row << ", block col " << i % per_row << "]";
  } else {
    const int64_t per_row = (s.cols + 127) / 128;
    out << "F32 scale [row " << i / per_row << ", block " << i % per_row << "]";
  }
  return out.str();
}

void expect_same_bytes(Format f, const Source& s, const Quantized& gpu, const Quantized& cpu, const std::string& label) {
  SCOPED_TRACE(std::string(format_name(f)) + ", " + label + ", " + (s.dtype == DType::kBF16 ? "BF16" : "F32") +
               " input [" + std::to_string(s.rows) + ", " + std::to_string(s.cols) + "]");
  if (f == Format::kNVFP4)
    EXPECT_EQ(float_bits(gpu.tensor_scale), float_bits(cpu.tensor_scale))
        << "tensor scale: gpu " << gpu.tensor_scale << ", cpu " << cpu.tensor_scale;
  ASSERT_EQ(gpu.data.size(), cpu.data.size());
  ASSERT_EQ(gpu.scales.size(), cpu.scales.size());
  const bool f32_scales = f == Format::kFP8ActivationPow2 || f == Format::kFP8ActivationPlain;
  int64_t scale_diffs = 0, first_scale = -1;
  for (int64_t i = 0; i < scale_count(f, s.rows, s.cols); ++i) {
    const bool same = f32_scales ? std::memcmp(&gpu.scales[4 * i], &cpu.scales[4 * i], 4) == 0 : gpu.scales[i] == cpu.scales[i];
    if (!same && scale_diffs++ == 0) first_scale = i;
  }
  if (scale_diffs) {
    const int64_t i = first_scale;
    uint32_t g = gpu.scales[i], c = cpu.scales[i];
    if (f32_scales) {
      std::memcpy(&g, &gpu.scales[4 * i], 4);
      std::memcpy(&c, &cpu.scales[4 * i], 4);
    }
    ADD_FAILURE() << scale_diffs << " scales differ; first: " << describe_scale(f, s, i) << ": gpu "
                  << hex(g, f32_scales ? 8 : 2) << ", cpu " << hex(c, f32_scales ? 8 : 2)
                  << (f32_scales ? " (" + std::to_string(bits_to_float(g)) + " vs " + std::to_string(bits_to_float(c)) + ")"
                                 : std::string());
  }
  int64_t data_diffs = 0, first_data = -1;
  for (size_t i = 0; i < cpu.data.size(); ++i)
    if (gpu.data[i] != cpu.data[i] && data_diffs++ == 0) first_data = static_cast<int64_t>(i);
  if (data_diffs)
    ADD_FAILURE() << data_diffs << " data bytes differ; first: " << describe_data_byte(f, s, first_data) << ": gpu "
                  << hex(gpu.data[first_data], 2) << ", cpu " << hex(cpu.data[first_data], 2);
}

void check_format(Format f, const Source& s, float tensor_scale, const std::string& label) {
  const GpuQuantized gpu = gpu_quantize(f, s, tensor_scale);
  const Quantized cpu = cpu_quantize(f, s, tensor_scale);
  expect_same_bytes(f, s, gpu.host, cpu, label);
}

// Every format on `values` (F32 and its BF16 rounding); NVFP4 with the reduced tensor
// scale and with tensor scale 1 (exact E2M1 ties in row 2) and 1e-3 (block scales
// saturating at 448, elements at 6).
void check_all_formats(int64_t rows, int64_t cols, const std::vector<float>& values, const std::string& label) {
  const Source f32 = f32_source(rows, cols, values);
  const Source bf16 = bf16_source(f32);
  for (const Source* s : {&f32, &bf16}) {
    for (Format f : {Format::kFP8Block, Format::kFP8ActivationPow2, Format::kFP8ActivationPlain}) check_format(f, *s, 0, label);
    if (cols % 32 == 0) check_format(Format::kMXFP4, *s, 0, label);
    if (cols % 16 == 0)
      for (float ts : {0.0f, 1.0f, 1e-3f})
        check_format(Format::kNVFP4, *s, ts, label + ", tensor scale " + (ts > 0 ? std::to_string(ts) : "reduced"));
  }
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------
struct Shape {
  int64_t rows, cols;
};

TEST(CudaQuantize, RandomMatricesMatchCpuBytes) {
  // Ragged rows (not multiples of 128), FP4 widths of whole blocks only, ragged FP8
  // widths, one large matrix for many CTAs.
  uint32_t seed = 11;
  for (const Shape& shape : {Shape{1, 32}, Shape{37, 96}, Shape{129, 48}, Shape{131, 256}, Shape{300, 4096}})
    check_all_formats(shape.rows, shape.cols, random_values(shape.rows, shape.cols, seed++), "random");
  for (const Shape& shape : {Shape{1, 1}, Shape{3, 200}, Shape{127, 129}, Shape{131, 258}, Shape{257, 136}})
    check_all_formats(shape.rows, shape.cols, random_values(shape.rows, shape.cols, seed++), "random, ragged width");
}

TEST(CudaQuantize, AdversarialBlocksMatchCpuBytes) {
  // Block sizes 32 (MXFP4; NVFP4's 16 sees two blocks per special run) and 128 (FP8).
  uint32_t seed = 101;
  for (const Shape& shape : {Shape{9, 64}, Shape{12, 96}, Shape{131, 256}})
    check_all_formats(shape.rows, shape.cols, adversarial_values(shape.rows, shape.cols, 32, seed++), "adversarial 1x32");
  for (const Shape& shape : {Shape{9, 128}, Shape{130, 200}, Shape{131, 384}})
    check_all_formats(shape.rows, shape.cols, adversarial_values(shape.rows, shape.cols, 128, seed++), "adversarial 1x128");
}

TEST(CudaQuantize, ZeroMatrixMatchesCpuBytes) {
  // amax 0 everywhere: NVFP4 tensor scale 1 and block scales 0x38, MXFP4 code 0,
  // FP8 scale 2^-22 (amax floor 1e-4). -0.0 inputs keep E4M3's sign bit (0x80).
  std::vector<float> zeros(64 * 160, 0.0f);
  for (size_t i = 1; i < zeros.size(); i += 3) zeros[i] = -0.0f;
  check_all_formats(64, 160, zeros, "zeros and negative zeros");
  const Quantized cpu = cpu_quantize(Format::kNVFP4, f32_source(64, 160, zeros), 0);
  EXPECT_EQ(cpu.tensor_scale, 1.0f);
  EXPECT_EQ(cpu.scales[0], 0x38);
}

TEST(CudaQuantize, NaNAndInfinityMatchCpuBytes) {
  // The CPU defines them: amax ignores NaN; E4M3 keeps a NaN's sign (0x7F / 0xFF) and
  // saturates inf to +-448; E2M1 maps NaN to 0 and inf to +-6; an inf tensor makes the
  // NVFP4 tensor scale inf (its blocks then store 0 codes). The NaN signs of inf/inf
  // follow the host (x86: the default NaN is negative).
  for (const Shape& shape : {Shape{6, 128}, Shape{131, 160}}) {
    std::vector<float> x = random_values(shape.rows, shape.cols, 7);
    const float nan_pos = bits_to_float(0x7fc00001u), nan_neg = bits_to_float(0xffc00002u);
    const int64_t cols = shape.cols;
    for (int64_t c = 0; c < 32; ++c) x[c] = c % 2 ? nan_neg : nan_pos;  // row 0: an all-NaN block
    x[cols + 3] = nan_neg;                                               // row 1: one NaN among values
    x[cols + 40] = nan_pos;
    x[2 * cols + 5] = INFINITY;                                           // row 2: +inf and -inf
    x[2 * cols + 6] = -INFINITY;
    x[2 * cols + 7] = nan_neg;                                            // NaN beside inf (inf/inf vs NaN/inf)
    x[3 * cols + 100] = -INFINITY;                                        // row 3: -inf in the 128 block only
    check_all_formats(shape.rows, shape.cols, x, "NaN and inf");
  }
  // Finite tensor, explicit NVFP4 tensor scale, NaN only: the scales stay finite.
  std::vector<float> x = random_values(4, 64, 8);
  x[5] = bits_to_float(0xffc00000u);
  x[70] = NAN;
  check_all_formats(4, 64, x, "NaN in a finite tensor");
}

TEST(CudaQuantize, BF16SpecialBitPatterns) {
  // BF16 inputs straight from bits: denormals, the largest finite, NaN payloads, +-inf.
  const int64_t rows = 4, cols = 128;
  std::mt19937 rng(5);
  Source s{rows, cols, DType::kBF16, {}, {}};
  const uint16_t specials[] = {0x0001, 0x8001, 0x007f, 0x0080, 0x7f7f, 0xff7f, 0x7fc1, 0xffc1, 0x7f80, 0xff80, 0x8000, 0x0000};
  for (int64_t i = 0; i < rows * cols; ++i) {
    uint16_t bits = static_cast<uint16_t>(rng());
    if ((bits & 0x7f80) == 0x7f80) bits ^= 0x4000;  // random part finite
    if (i % 17 == 0) bits = specials[(i / 17) % 12];
    s.bf16.push_back(bits);
    s.values.push_back(bf16_to_float(bits));
  }
  for (Format f : {Format::kMXFP4, Format::kFP8Block, Format::kFP8ActivationPow2, Format::kFP8ActivationPlain})
    check_format(f, s, 0, "BF16 bit patterns");
  for (float ts : {0.0f, 0.25f}) check_format(Format::kNVFP4, s, ts, "BF16 bit patterns");
}

TEST(CudaQuantize, TensorScaleReductionMatchesCpu) {
  // Odd counts across many CTAs and the grid-stride loop; NaN is ignored as on the CPU.
  for (int64_t count : {int64_t{1}, int64_t{1000}, int64_t{(1 << 20) + 3}, int64_t{(1 << 23) + 17}}) {
    std::vector<float> x = random_values(1, count, static_cast<uint32_t>(count));
    x[count / 2] = bits_to_float(0x7fc00000u);
    x[count - 1] = count > 1000 ? 123456.0f : x[count - 1];  // the maximum in the last element
    const Source f32 = f32_source(1, count, x);
    for (const Source& s : {f32, bf16_source(f32)}) {
      const float expected = nvfp4_tensor_scale(s.values.data(), count);
      DeviceBuffer input(count * (s.dtype == DType::kBF16 ? 2 : 4)), out(4);
      ASSERT_EQ(cudaMemcpy(input.ptr, s.dtype == DType::kBF16 ? static_cast<const void*>(s.bf16.data()) : s.values.data(),
                           count * (s.dtype == DType::kBF16 ? 2 : 4), cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cuda::nvfp4_tensor_scale({s.dtype, input.ptr, 1, count}, out.as<float>(), nullptr), cudaSuccess);
      float got = 0;
      ASSERT_EQ(cudaMemcpy(&got, out.ptr, 4, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(float_bits(got), float_bits(expected)) << "count " << count << ": gpu " << got << ", cpu " << expected;
      ASSERT_EQ(cuda::abs_max(s.dtype, input.ptr, count, out.as<float>(), nullptr), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(&got, out.ptr, 4, cudaMemcpyDeviceToHost), cudaSuccess);
      float amax = 0;
      for (float v : s.values) amax = std::max(amax, std::fabs(v));
      EXPECT_EQ(float_bits(got), float_bits(amax)) << "abs_max of " << count;
    }
  }
  // All zero -> 1 (ModelOpt would give NaN); empty -> 1.
  DeviceBuffer zeros(64 * 4), out(4);
  ASSERT_EQ(cudaMemset(zeros.ptr, 0, 64 * 4), cudaSuccess);
  float got = 0;
  ASSERT_EQ(cuda::nvfp4_tensor_scale({DType::kF32, zeros.ptr, 4, 16}, out.as<float>(), nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&got, out.ptr, 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, 1.0f);
  ASSERT_EQ(cuda::nvfp4_tensor_scale({DType::kF32, nullptr, 0, 16}, out.as<float>(), nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&got, out.ptr, 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, 1.0f);
}

TEST(CudaQuantize, InvalidArgumentsLaunchNothing) {
  DeviceBuffer input(64 * 64 * 4), data(64 * 64), scales(64 * 64 * 4);
  auto* d = data.as<uint8_t>();
  auto* sc = scales.as<uint8_t>();
  const cuda::QuantizeInput ok{DType::kF32, input.ptr, 4, 64};
  EXPECT_EQ(cuda::quantize_mxfp4({DType::kF32, input.ptr, 4, 48}, d, sc, nullptr), cudaErrorInvalidValue);  // 48 % 32
  EXPECT_EQ(cuda::quantize_nvfp4({DType::kF32, input.ptr, 4, 24}, 1.0f, nullptr, d, sc, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::quantize_mxfp4({DType::kF16, input.ptr, 4, 64}, d, sc, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::quantize_fp8_block({DType::kF8_E4M3, input.ptr, 4, 64}, d, sc, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::quantize_fp8_activation({DType::kF16, input.ptr, 4, 64}, true, d, scales.as<float>(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cuda::quantize_fp8_block(ok, nullptr, sc, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::quantize_fp8_activation(ok, false, d, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::quantize_nvfp4({DType::kF32, nullptr, 4, 64}, 1.0f, nullptr, d, sc, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::quantize_fp8_block({DType::kF32, input.ptr, -1, 64}, d, sc, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::abs_max(DType::kF32, input.ptr, 16, nullptr, nullptr), cudaErrorInvalidValue);
  // Empty matrices are valid and touch nothing.
  EXPECT_EQ(cuda::quantize_mxfp4({DType::kF32, nullptr, 0, 64}, nullptr, nullptr, nullptr), cudaSuccess);
  EXPECT_EQ(cuda::quantize_fp8_activation({DType::kBF16, nullptr, 5, 0}, true, nullptr, nullptr, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// dequantize_to_bf16(GPU bytes) == BF16 of CPU dequantize_rows(CPU bytes), element by element.
TEST(CudaQuantize, RoundTripThroughGpuDequantizeMatchesCpu) {
  const int64_t rows = 131, cols = 256;
  const std::vector<float> values = adversarial_values(rows, cols, 32, 77);
  const Source f32 = f32_source(rows, cols, values);
  for (const Source& s : {f32, bf16_source(f32)}) {
    for (Format f : {Format::kMXFP4, Format::kNVFP4, Format::kFP8Block}) {
      SCOPED_TRACE(std::string(format_name(f)) + (s.dtype == DType::kBF16 ? ", BF16 input" : ", F32 input"));
      const GpuQuantized gpu = gpu_quantize(f, s, 0);
      const Quantized cpu = cpu_quantize(f, s, 0);
      QuantMatrix m;
      m.format = f == Format::kMXFP4 ? WeightFormat::kMXFP4 : f == Format::kNVFP4 ? WeightFormat::kNVFP4 : WeightFormat::kFP8Block;
      m.rows = rows;
      m.cols = cols;
      m.data = cpu.data.data();
      m.scales = cpu.scales.data();
      m.scale_dtype = f == Format::kNVFP4 ? DType::kF8_E4M3 : DType::kF8_E8M0;
      m.scale_rows = f == Format::kFP8Block ? (rows + 127) / 128 : rows;
      m.scale_cols = f == Format::kFP8Block ? (cols + 127) / 128 : cols / scale_block(f);
      m.tensor_scale = cpu.tensor_scale;
      std::vector<float> expected(rows * cols);
      dequantize_rows(m, 0, rows, expected.data());

      DeviceBuffer out(rows * cols * 2);
      cuda::DequantizeParams p{};
      p.format = static_cast<int>(m.format);
      p.rows = rows;
      p.cols = cols;
      p.data = gpu.data->as<const uint8_t>();
      p.scales = gpu.scales->as<const uint8_t>();
      p.scale_is_f32 = 0;
      p.scale_cols = m.scale_cols;
      p.tensor_scale = gpu.host.tensor_scale;
      p.out = out.as<uint16_t>();
      p.stream = nullptr;
      ASSERT_EQ(cuda::dequantize_to_bf16(p), cudaSuccess);
      std::vector<uint16_t> got(rows * cols);
      ASSERT_EQ(cudaMemcpy(got.data(), out.ptr, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      for (int64_t i = 0; i < rows * cols; ++i)
        ASSERT_EQ(got[i], float_to_bf16(expected[i])) << "[row " << i / cols << ", col " << i % cols << "] input "
                                                      << s.values[i] << ", cpu dequantized " << expected[i];
    }
  }
}

}  // namespace
}  // namespace dsv4

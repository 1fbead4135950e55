// Shared by the tests of src/cuda/ops: device buffers, random inputs, weights built
// with the formats pipeline (the checkpoint quantizers), a cuBLAS context, and
// comparisons that print the worst element with its coordinates.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/common/device_types.h"
#include "cuda/ops/ops.h"
#include "dsv4/dtype.h"
#include "dsv4/error.h"
#include "dsv4/formats.h"
#include "dsv4/weight_format.h"

namespace dsv4::ops_test {

#define OPS_CUDA_OK(call)                                                                               \
  do {                                                                                                  \
    const cudaError_t err_ = (call);                                                                    \
    DSV4_CHECK(err_ == cudaSuccess, "{}:{}: {} -> {}", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
  } while (0)

// Device array of T; poison() fills it with NaN bytes (0xFF) so unwritten outputs show.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    OPS_CUDA_OK(cudaMalloc(&ptr_, std::max<size_t>(1, count * sizeof(T))));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), count_(other.count_) { other.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    std::swap(count_, other.count_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  void upload(const std::vector<T>& host) {
    DSV4_CHECK(host.size() == count_, "upload: {} values into a buffer of {}", host.size(), count_);
    if (count_) OPS_CUDA_OK(cudaMemcpy(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
    OPS_CUDA_OK(cudaDeviceSynchronize());  // pageable H2D may still be in flight on return
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    OPS_CUDA_OK(cudaDeviceSynchronize());
    if (count_) OPS_CUDA_OK(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  void poison() {
    if (count_) OPS_CUDA_OK(cudaMemset(ptr_, 0xff, count_ * sizeof(T)));
    OPS_CUDA_OK(cudaDeviceSynchronize());  // cudaMemset is asynchronous to the host
  }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// Normal(0, sigma) values, none exactly zero.
inline std::vector<float> random_normal(size_t count, float sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(count);
  for (auto& x : v) {
    do x = dist(rng);
    while (x == 0.0f);
  }
  return v;
}

// ---- weights in every stored format ----------------------------------------------------

// A QuantMatrix (the CPU oracle's view) with its owned bytes, built from FP32 values by
// the checkpoint quantizers, and its upload (the DeviceMatrix the CUDA ops read).
struct TestWeight {
  QuantMatrix matrix;
  std::vector<uint8_t> data, scales;
  DeviceBuffer<uint8_t> device_data, device_scales;

  cuda::DeviceMatrix device() const {
    cuda::DeviceMatrix m;
    m.format = static_cast<int>(matrix.format);
    m.rows = matrix.rows;
    m.cols = matrix.cols;
    m.data = device_data.get();
    m.scales = scales.empty() ? nullptr : device_scales.get();
    m.scale_is_f32 = matrix.scale_dtype == DType::kF32 ? 1 : 0;
    m.scale_cols = matrix.scale_cols;
    m.tensor_scale = matrix.tensor_scale;
    return m;
  }
  // Exact FP32 values of the stored weight [rows, cols] (what the CPU computes with).
  std::vector<float> dequantized() const {
    std::vector<float> out(static_cast<size_t>(matrix.rows * matrix.cols));
    dequantize_rows(matrix, 0, matrix.rows, out.data());
    return out;
  }
};

// fp8_f32_scales: FP8 blocks with the scales stored as F32 (V4-Base's container).
inline TestWeight make_weight(WeightFormat format, int64_t rows, int64_t cols, const std::vector<float>& values,
                              bool fp8_f32_scales = false) {
  DSV4_CHECK(static_cast<int64_t>(values.size()) == rows * cols, "make_weight: {} values for [{}, {}]", values.size(),
             rows, cols);
  TestWeight w;
  QuantMatrix& m = w.matrix;
  m.name = std::string("test.") + weight_format_name(format);
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  const size_t n = values.size();
  switch (format) {
    case WeightFormat::kF32:
      w.data.resize(n * 4);
      std::memcpy(w.data.data(), values.data(), n * 4);
      break;
    case WeightFormat::kBF16:
    case WeightFormat::kF16:
      w.data.resize(n * 2);
      for (size_t i = 0; i < n; ++i) {
        const uint16_t bits = format == WeightFormat::kBF16 ? float_to_bf16(values[i]) : float_to_f16(values[i]);
        std::memcpy(w.data.data() + 2 * i, &bits, 2);
      }
      break;
    case WeightFormat::kFP8Block: {
      m.scale_rows = (rows + 127) / 128;
      m.scale_cols = (cols + 127) / 128;
      w.data.resize(n);
      std::vector<uint8_t> e8m0(static_cast<size_t>(m.scale_rows * m.scale_cols));
      quantize_fp8_block(values.data(), rows, cols, w.data.data(), e8m0.data());
      if (fp8_f32_scales) {
        m.scale_dtype = DType::kF32;
        w.scales.resize(e8m0.size() * 4);
        for (size_t i = 0; i < e8m0.size(); ++i) {
          const float s = e8m0_to_float(e8m0[i]);
          std::memcpy(w.scales.data() + 4 * i, &s, 4);
        }
      } else {
        m.scale_dtype = DType::kF8_E8M0;
        w.scales = std::move(e8m0);
      }
      break;
    }
    case WeightFormat::kMXFP4:
    case WeightFormat::kNVFP4: {
      const int64_t block = format == WeightFormat::kMXFP4 ? kMXFP4BlockSize : kNVFP4BlockSize;
      DSV4_CHECK(cols % block == 0, "make_weight: {} needs cols % {} == 0, got {}", weight_format_name(format), block,
                 cols);
      m.scale_rows = rows;
      m.scale_cols = cols / block;
      m.scale_dtype = format == WeightFormat::kMXFP4 ? DType::kF8_E8M0 : DType::kF8_E4M3;
      w.data.resize(n / 2);
      w.scales.resize(static_cast<size_t>(rows * m.scale_cols));
      if (format == WeightFormat::kNVFP4) m.tensor_scale = nvfp4_tensor_scale(values.data(), rows * cols);
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* packed = w.data.data() + r * cols / 2;
        uint8_t* scales = w.scales.data() + r * m.scale_cols;
        if (format == WeightFormat::kMXFP4)
          quantize_mxfp4_row(values.data() + r * cols, cols, packed, scales);
        else
          quantize_nvfp4_row(values.data() + r * cols, cols, m.tensor_scale, packed, scales);
      }
      break;
    }
  }
  m.data = w.data.data();
  m.scales = w.scales.empty() ? nullptr : w.scales.data();
  w.device_data = DeviceBuffer<uint8_t>(w.data);
  if (!w.scales.empty()) w.device_scales = DeviceBuffer<uint8_t>(w.scales);
  return w;
}

// ---- cuBLAS context ------------------------------------------------------------------------

// A LinearContext as the engine builds one: own stream, handle on it, user workspace.
// The stream is a blocking one so it orders with the legacy-stream copies of the test.
struct TestLinearContext {
  cudaStream_t stream = nullptr;
  cublasHandle_t handle = nullptr;
  DeviceBuffer<uint8_t> cublas_workspace{size_t{32} << 20};
  DeviceBuffer<uint16_t> act, weight;
  cuda::ops::LinearContext ctx;

  TestLinearContext(int64_t act_capacity, int64_t weight_capacity)
      : act(static_cast<size_t>(act_capacity)), weight(static_cast<size_t>(weight_capacity)) {
    OPS_CUDA_OK(cudaStreamCreate(&stream));
    DSV4_CHECK(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS, "cublasCreate failed");
    DSV4_CHECK(cublasSetStream(handle, stream) == CUBLAS_STATUS_SUCCESS, "cublasSetStream failed");
    DSV4_CHECK(cublasSetWorkspace(handle, cublas_workspace.get(), cublas_workspace.size()) == CUBLAS_STATUS_SUCCESS,
               "cublasSetWorkspace failed");
    ctx.cublas = handle;
    ctx.stream = stream;
    ctx.act_bf16 = act.get();
    ctx.act_capacity = act_capacity;
    ctx.weight_bf16 = weight.get();
    ctx.weight_capacity = weight_capacity;
  }
  ~TestLinearContext() {
    cublasDestroy(handle);
    cudaStreamDestroy(stream);
  }
  void sync() const { OPS_CUDA_OK(cudaStreamSynchronize(stream)); }
};

// ---- comparisons ---------------------------------------------------------------------------

// "[t 3, r 17]" for flat index i of an array with dims (row-major) named names.
inline std::string coordinates(size_t index, const std::vector<int64_t>& dims, const std::vector<std::string>& names) {
  std::vector<int64_t> coord(dims.size());
  for (size_t d = dims.size(); d-- > 0;) {
    coord[d] = static_cast<int64_t>(index % static_cast<size_t>(dims[d]));
    index /= static_cast<size_t>(dims[d]);
  }
  std::ostringstream out;
  out << "[";
  for (size_t d = 0; d < dims.size(); ++d) out << (d ? ", " : "") << names[d] << " " << coord[d];
  out << "]";
  return out.str();
}

// Fails (once, with the worst element) where |got - want| > rel * scale[i] + abs, scale
// defaulting to |want|; NaN in got (unwritten, poisoned) always fails.
struct Tolerance {
  double rel = 0, abs = 0;
};
inline void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
                         Tolerance tol, const std::vector<int64_t>& dims, const std::vector<std::string>& names,
                         const std::vector<double>& scale = {}) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double s = scale.empty() ? std::abs(static_cast<double>(want[i])) : scale[i];
    const double bound = tol.rel * s + tol.abs;
    const double diff = std::abs(static_cast<double>(got[i]) - want[i]);
    const bool ok = std::isfinite(got[i]) == std::isfinite(want[i]) && (!std::isfinite(want[i]) || diff <= bound);
    const double excess = std::isfinite(diff) ? diff / (bound > 0 ? bound : 1e-300) : INFINITY;
    if (!ok) ++bad;
    if (!ok && excess > worst_excess) worst_excess = excess, worst = i;
  }
  if (bad) {
    const double s = scale.empty() ? std::abs(static_cast<double>(want[worst])) : scale[worst];
    ADD_FAILURE() << what << ": " << bad << " of " << got.size() << " elements out of tolerance (rel " << tol.rel
                  << " x scale + abs " << tol.abs << "); worst at " << coordinates(worst, dims, names) << ": got "
                  << got[worst] << ", expected " << want[worst] << ", |diff| " << std::abs(got[worst] - want[worst])
                  << ", scale " << s;
  }
}

// Cosine of got vs want over each row of `width` values; fails below `bound`, naming the row.
inline void expect_row_cosine(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
                              int64_t width, double bound) {
  double worst = 2;
  int64_t worst_row = -1;
  for (int64_t r = 0; r * width < static_cast<int64_t>(want.size()); ++r) {
    double dot = 0, ng = 0, nw = 0;
    for (int64_t i = r * width; i < (r + 1) * width; ++i) dot += double(got[i]) * want[i], ng += double(got[i]) * got[i], nw += double(want[i]) * want[i];
    const double cosine = (ng == 0 && nw == 0) ? 1.0 : dot / std::sqrt(ng * nw);
    if (std::isnan(worst)) break;  // keep the first NaN row
    if (std::isnan(cosine) || cosine < worst) worst = cosine, worst_row = r;
  }
  EXPECT_GE(worst, bound) << what << ": lowest cosine " << worst << " at row " << worst_row;
}

}  // namespace dsv4::ops_test

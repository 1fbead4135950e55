// Stacked 4-bit weight matrices as torch tensors, checked once and viewed as the
// library's QuantMatrix (include/dsv4/weight_format.h), matrix by matrix.
//
// Layouts (W[n, k], y = x W^T, the k dimension is blocked; "..." = stacked matrices):
//   NVFP4  data  packed E2M1 [..., n, k/2] (low nibble = even column)
//          scales E4M3 [..., n, k/16]   global_scale FP32 [...] (ModelOpt weight_scale_2)
//   MXFP4  data  packed E2M1 [..., n, k/2]
//          scales E8M0 [..., n, k/32]   (no global scale)
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dsv4/weight_format.h"

namespace dsv4::torch_ops {

struct Fp4Format {
  WeightFormat format = WeightFormat::kNVFP4;
  int64_t block = 16;                 // values per block scale
  const char* name = "nvfp4";
  bool has_global_scale() const { return format == WeightFormat::kNVFP4; }
};
inline constexpr Fp4Format kNvfp4{WeightFormat::kNVFP4, 16, "nvfp4"};
inline constexpr Fp4Format kMxfp4{WeightFormat::kMXFP4, 32, "mxfp4"};
// "nvfp4" / "mxfp4"; anything else fails naming the op and the choices.
Fp4Format parse_fp4_format(const char* op, std::string_view name);

// One argument triple (data, scales, global scale) of `stacked_dims` leading dims, every
// tensor on one device of type `device`. Holds contiguous byte views, so the pointers
// stay valid while this object lives.
class StackedFp4 {
 public:
  struct Names {
    const char* data;
    const char* scales;
    const char* global_scale;
  };
  StackedFp4(const char* op, const Fp4Format& format, Names names, const at::Tensor& data, const at::Tensor& scales,
             const std::optional<at::Tensor>& global_scale, int64_t stacked_dims, c10::DeviceType device = at::kCPU);

  int64_t matrices() const { return matrices_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  at::IntArrayRef stacked_sizes() const { return data_.sizes().slice(0, static_cast<size_t>(stacked_dims_)); }
  const Fp4Format& format() const { return format_; }
  const uint8_t* data_bytes() const { return static_cast<const uint8_t*>(data_.data_ptr()); }      // [..., n, k/2]
  const uint8_t* scale_bytes() const { return static_cast<const uint8_t*>(scales_.data_ptr()); }  // [..., n, k/block]
  const at::Tensor& global_scale() const { return global_scale_; }  // FP32 [...]; undefined for MXFP4
  // Matrix `index` of a CPU stack (flattened leading index); `label` names it in library errors.
  QuantMatrix matrix(int64_t index, std::string label) const;

 private:
  Fp4Format format_;
  int64_t stacked_dims_ = 0, matrices_ = 0, rows_ = 0, cols_ = 0;
  at::Tensor data_, scales_, global_scale_;  // contiguous; data_ / scales_ as uint8
};

// "w1[3]": the label of matrix `index` of a stacked argument in library errors.
std::string indexed_name(const char* name, int64_t index);

// Fails naming the first non-finite element (flat index and value): the library's
// quantizers, as `dsv4 quantize`, refuse NaN / inf weights.
void check_all_finite(const char* op, const char* name, const at::Tensor& values);

}  // namespace dsv4::torch_ops

#include "fp4_tensors.h"

#include "tensor_checks.h"

namespace dsv4::torch_ops {

Fp4Format parse_fp4_format(const char* op, std::string_view name) {
  if (name == kNvfp4.name) return kNvfp4;
  if (name == kMxfp4.name) return kMxfp4;
  TORCH_CHECK(false, op, ": format '", name, "' is not a 4-bit expert format; expected 'nvfp4' or 'mxfp4'");
}

StackedFp4::StackedFp4(const char* op, const Fp4Format& format, Names names, const at::Tensor& data,
                       const at::Tensor& scales, const std::optional<at::Tensor>& global_scale, int64_t stacked_dims,
                       c10::DeviceType device)
    : format_(format), stacked_dims_(stacked_dims) {
  const int64_t dims = stacked_dims + 2;
  TensorArg(op, names.data, data).dtype_in(kPackedFp4Dtypes).dims(dims).device_type(device);
  rows_ = data.size(-2);
  cols_ = 2 * data.size(-1);
  const std::string block_why = std::string("k / ") + std::to_string(format.block) + ": one " + format.name +
                                " block scale per " + std::to_string(format.block) + " values, k = 2 x " + names.data +
                                ".size(-1) = " + std::to_string(cols_);
  if (cols_ % format.block != 0)
    TensorArg(op, names.data, data).fail("2 x size(-1) (the row width k) a multiple of " + std::to_string(format.block) +
                                         " (" + format.name + " blocks)");
  TensorArg(op, names.scales, scales)
      .dtype_in(format.has_global_scale() ? c10::ArrayRef<at::ScalarType>(kNvfp4ScaleDtypes)
                                          : c10::ArrayRef<at::ScalarType>(kMxfp4ScaleDtypes))
      .dims(dims)
      .same_device(data, names.data)
      .same_leading_dims(data, names.data, dims - 1)
      .size(-1, cols_ / format.block, block_why);
  matrices_ = 1;
  for (int64_t d = 0; d < stacked_dims; ++d) matrices_ *= data.size(d);
  data_ = data.view(at::kByte).contiguous();
  scales_ = scales.view(at::kByte).contiguous();
  if (format.has_global_scale()) {
    TORCH_CHECK(global_scale.has_value() && global_scale->defined(), op, ": argument '", names.global_scale,
                      "' is missing; NVFP4 needs one FP32 global scale per matrix, shape ", stacked_sizes());
    TensorArg(op, names.global_scale, *global_scale)
        .dtype_in({at::kFloat})
        .dims(stacked_dims)
        .same_device(data, names.data)
        .same_leading_dims(data, names.data, stacked_dims);
    global_scale_ = global_scale->contiguous();
  } else if (global_scale.has_value() && global_scale->defined()) {
    TensorArg(op, names.global_scale, *global_scale).fail("None: MXFP4 has no global scale (E8M0 block scales only)");
  }
}

QuantMatrix StackedFp4::matrix(int64_t index, std::string label) const {
  TORCH_INTERNAL_ASSERT(data_.is_cpu(), "StackedFp4::matrix reads host memory");
  QuantMatrix m;
  m.name = std::move(label);
  m.format = format_.format;
  m.rows = rows_;
  m.cols = cols_;
  m.data = byte_data(data_) + index * rows_ * (cols_ / 2);
  m.scales = byte_data(scales_) + index * rows_ * (cols_ / format_.block);
  m.scale_dtype = format_.has_global_scale() ? DType::kF8_E4M3 : DType::kF8_E8M0;
  m.scale_rows = rows_;
  m.scale_cols = cols_ / format_.block;
  m.tensor_scale = format_.has_global_scale() ? global_scale_.data_ptr<float>()[index] : 1.0f;
  return m;
}

std::string indexed_name(const char* name, int64_t index) {
  std::string label(name);
  label += '[';
  label += std::to_string(index);
  label += ']';
  return label;
}

void check_all_finite(const char* op, const char* name, const at::Tensor& values) {
  const at::Tensor finite = at::isfinite(values);
  if (finite.all().item<bool>()) return;
  const int64_t first = finite.reshape(-1).logical_not().to(at::kByte).argmax().item<int64_t>();
  TORCH_CHECK(false, op, ": argument '", name, "' (", describe(values), ") has the non-finite value ",
                    values.reshape(-1)[first].item<double>(), " at flat index ", first,
                    "; the quantizers refuse NaN / inf weights (as `dsv4 quantize` does)");
}

}  // namespace dsv4::torch_ops

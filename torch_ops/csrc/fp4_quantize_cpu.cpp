// dsv4::quantize_nvfp4 / quantize_mxfp4 / dequantize_nvfp4 / dequantize_mxfp4 on the
// CPU: the library's row quantizers and dequantize_rows (include/dsv4/formats.h,
// weight_format.h), called the way `dsv4 quantize` calls them (src/formats/
// checkpoint_quantizer.cpp: values widened to FP32, one NVFP4 tensor scale per matrix
// from its amax), so the bytes are the same.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "dsv4/formats.h"
#include "fp4_tensors.h"
#include "tensor_checks.h"

namespace dsv4::torch_ops {

namespace {

constexpr int64_t kRowGrain = 16;  // rows per parallel_for chunk

std::vector<int64_t> with_matrix_dims(at::IntArrayRef stacked, int64_t rows, int64_t cols) {
  std::vector<int64_t> sizes = stacked.vec();
  sizes.push_back(rows);
  sizes.push_back(cols);
  return sizes;
}

// w [..., n, k] BF16 / FP32 on the CPU -> FP32 contiguous, checked for k % block and finiteness.
at::Tensor weights_as_f32(const char* op, const at::Tensor& w, const Fp4Format& format) {
  TensorArg(op, "w", w).dtype_in({at::kBFloat16, at::kFloat}).min_dims(2).device_type(at::kCPU).size_multiple(
      -1, format.block, std::string("k: one ") + format.name + " block scale per " + std::to_string(format.block) +
                            " values");
  at::Tensor values = w.to(at::kFloat).contiguous();  // BF16 widens exactly (bf16_to_float)
  check_all_finite(op, "w", values);
  return values;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_nvfp4_cpu(const at::Tensor& w) {
  constexpr const char* kOp = "dsv4::quantize_nvfp4";
  const at::Tensor values = weights_as_f32(kOp, w, kNvfp4);
  const int64_t rows = w.size(-2), cols = w.size(-1);
  const at::IntArrayRef stacked = w.sizes().slice(0, w.dim() - 2);
  const auto bytes = w.options().dtype(at::kByte);
  at::Tensor packed = at::empty(with_matrix_dims(stacked, rows, cols / 2), bytes);             // [..., n, k/2]
  at::Tensor scales = at::empty(with_matrix_dims(stacked, rows, cols / kNVFP4BlockSize), bytes);  // [..., n, k/16]
  at::Tensor global_scale = at::empty(stacked, w.options().dtype(at::kFloat));                 // [...]
  const int64_t matrices = global_scale.numel();  // product of the stacked dims
  const float* src = values.data_ptr<float>();
  uint8_t* packed_out = packed.data_ptr<uint8_t>();
  uint8_t* scales_out = scales.data_ptr<uint8_t>();
  for (int64_t m = 0; m < matrices; ++m) {
    const float* matrix = src + m * rows * cols;
    const float tensor_scale = nvfp4_tensor_scale(matrix, rows * cols);
    global_scale.data_ptr<float>()[m] = tensor_scale;
    at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t row = m * rows + r;
        quantize_nvfp4_row(matrix + r * cols, cols, tensor_scale, packed_out + row * (cols / 2),
                           scales_out + row * (cols / kNVFP4BlockSize));
      }
    });
  }
  return {packed, scales, global_scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_mxfp4_cpu(const at::Tensor& w) {
  constexpr const char* kOp = "dsv4::quantize_mxfp4";
  const at::Tensor values = weights_as_f32(kOp, w, kMxfp4);
  const int64_t rows = w.size(-2), cols = w.size(-1);
  const at::IntArrayRef stacked = w.sizes().slice(0, w.dim() - 2);
  const auto bytes = w.options().dtype(at::kByte);
  at::Tensor packed = at::empty(with_matrix_dims(stacked, rows, cols / 2), bytes);             // [..., n, k/2]
  at::Tensor scales = at::empty(with_matrix_dims(stacked, rows, cols / kMXFP4BlockSize), bytes);  // [..., n, k/32]
  const int64_t total_rows = cols == 0 ? 0 : values.numel() / cols;
  const float* src = values.data_ptr<float>();
  uint8_t* packed_out = packed.data_ptr<uint8_t>();
  uint8_t* scales_out = scales.data_ptr<uint8_t>();
  // MXFP4 has no tensor-wide scale: every row is independent.
  at::parallel_for(0, total_rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      quantize_mxfp4_row(src + row * cols, cols, packed_out + row * (cols / 2), scales_out + row * (cols / kMXFP4BlockSize));
  });
  return {packed, scales};
}

at::ScalarType dequantized_dtype(const char* op, const std::optional<at::ScalarType>& out_dtype) {
  const at::ScalarType dtype = out_dtype.value_or(at::kBFloat16);
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kFloat || dtype == at::kHalf, op, ": out_dtype ", dtype,
              " is not supported; expected BFloat16 (default), Float or Half");
  return dtype;
}

// FP32 [..., n, k] from the stack (exact: E2M1 x scale, NVFP4's scale product rounded to
// FP32 once as the library's dequantize_rows does), then rounded to out_dtype.
at::Tensor dequantize_stack(const StackedFp4& stack, const at::TensorOptions& options, at::ScalarType out_dtype) {
  at::Tensor out = at::empty(with_matrix_dims(stack.stacked_sizes(), stack.rows(), stack.cols()), options.dtype(at::kFloat));
  float* dst = out.data_ptr<float>();
  for (int64_t m = 0; m < stack.matrices(); ++m) {
    const QuantMatrix matrix = stack.matrix(m, indexed_name("matrix", m));
    float* matrix_out = dst + m * stack.rows() * stack.cols();
    at::parallel_for(0, stack.rows(), kRowGrain, [&](int64_t begin, int64_t end) {
      dequantize_rows(matrix, begin, end - begin, matrix_out + begin * stack.cols());
    });
  }
  return out.to(out_dtype);
}

at::Tensor dequantize_nvfp4_cpu(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& global_scale,
                                std::optional<at::ScalarType> out_dtype) {
  constexpr const char* kOp = "dsv4::dequantize_nvfp4";
  TensorArg(kOp, "packed", packed).min_dims(2);
  const StackedFp4 stack(kOp, kNvfp4, {"packed", "scales", "global_scale"}, packed, scales, global_scale,
                         packed.dim() - 2);
  return dequantize_stack(stack, packed.options(), dequantized_dtype(kOp, out_dtype));
}

at::Tensor dequantize_mxfp4_cpu(const at::Tensor& packed, const at::Tensor& scales,
                                std::optional<at::ScalarType> out_dtype) {
  constexpr const char* kOp = "dsv4::dequantize_mxfp4";
  TensorArg(kOp, "packed", packed).min_dims(2);
  const StackedFp4 stack(kOp, kMxfp4, {"packed", "scales", "global_scale"}, packed, scales, std::nullopt,
                         packed.dim() - 2);
  return dequantize_stack(stack, packed.options(), dequantized_dtype(kOp, out_dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(dsv4, CPU, m) {
  m.impl("quantize_nvfp4", &quantize_nvfp4_cpu);
  m.impl("quantize_mxfp4", &quantize_mxfp4_cpu);
  m.impl("dequantize_nvfp4", &dequantize_nvfp4_cpu);
  m.impl("dequantize_mxfp4", &dequantize_mxfp4_cpu);
}

}  // namespace dsv4::torch_ops

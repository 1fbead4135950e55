// dsv4::quantize_nvfp4 / quantize_mxfp4 / dequantize_* on CUDA tensors: the CUDA
// quantizers of src/cuda/formats (bytes equal to the CPU quantizers') and the BF16
// dequantizer, on the current stream. Load-time ops: the finiteness check and the
// dequantizer's host tensor scale synchronise with the device.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "cuda/formats/dequantize.h"
#include "cuda/formats/quantize.h"
#include "dsv4/formats.h"
#include "fp4_tensors.h"
#include "tensor_checks.h"

namespace dsv4::torch_ops {

namespace {

void check_launch(const char* op, const char* what, cudaError_t error) {
  TORCH_CHECK(error == cudaSuccess, op, ": ", what, " failed: ", cudaGetErrorString(error));
}

std::vector<int64_t> with_matrix_dims(at::IntArrayRef stacked, int64_t rows, int64_t cols) {
  std::vector<int64_t> sizes = stacked.vec();
  sizes.push_back(rows);
  sizes.push_back(cols);
  return sizes;
}

// w [..., n, k] BF16 / FP32 on CUDA, contiguous, checked as on the CPU.
at::Tensor checked_weights(const char* op, const at::Tensor& w, const Fp4Format& format) {
  TensorArg(op, "w", w).dtype_in({at::kBFloat16, at::kFloat}).min_dims(2).device_type(at::kCUDA).size_multiple(
      -1, format.block, std::string("k: one ") + format.name + " block scale per " + std::to_string(format.block) +
                            " values");
  at::Tensor values = w.contiguous();  // the quantizer widens BF16 to FP32 itself, exactly
  check_all_finite(op, "w", values);
  return values;
}

cuda::QuantizeInput matrix_input(const at::Tensor& values, int64_t index, int64_t rows, int64_t cols) {
  cuda::QuantizeInput input;
  input.dtype = values.scalar_type() == at::kBFloat16 ? DType::kBF16 : DType::kF32;
  input.data = static_cast<const char*>(values.data_ptr()) + index * rows * cols * values.element_size();
  input.rows = rows;
  input.cols = cols;
  return input;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_nvfp4_cuda(const at::Tensor& w) {
  constexpr const char* kOp = "dsv4::quantize_nvfp4";
  const c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor values = checked_weights(kOp, w, kNvfp4);
  const int64_t rows = w.size(-2), cols = w.size(-1);
  const at::IntArrayRef stacked = w.sizes().slice(0, w.dim() - 2);
  const auto bytes = w.options().dtype(at::kByte);
  at::Tensor packed = at::empty(with_matrix_dims(stacked, rows, cols / 2), bytes);
  at::Tensor scales = at::empty(with_matrix_dims(stacked, rows, cols / kNVFP4BlockSize), bytes);
  at::Tensor global_scale = at::ones(stacked, w.options().dtype(at::kFloat));  // amax 0 / empty matrix: 1
  if (values.numel() == 0) return {packed, scales, global_scale};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int64_t m = 0; m < global_scale.numel(); ++m) {
    const cuda::QuantizeInput input = matrix_input(values, m, rows, cols);
    float* tensor_scale = global_scale.data_ptr<float>() + m;  // device: no host round trip between the two
    check_launch(kOp, "nvfp4_tensor_scale", cuda::nvfp4_tensor_scale(input, tensor_scale, stream));
    check_launch(kOp, "quantize_nvfp4",
                 cuda::quantize_nvfp4(input, 1.0f, tensor_scale, packed.data_ptr<uint8_t>() + m * rows * (cols / 2),
                                      scales.data_ptr<uint8_t>() + m * rows * (cols / kNVFP4BlockSize), stream));
  }
  return {packed, scales, global_scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_mxfp4_cuda(const at::Tensor& w) {
  constexpr const char* kOp = "dsv4::quantize_mxfp4";
  const c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor values = checked_weights(kOp, w, kMxfp4);
  const int64_t rows = w.size(-2), cols = w.size(-1);
  const at::IntArrayRef stacked = w.sizes().slice(0, w.dim() - 2);
  const auto bytes = w.options().dtype(at::kByte);
  at::Tensor packed = at::empty(with_matrix_dims(stacked, rows, cols / 2), bytes);
  at::Tensor scales = at::empty(with_matrix_dims(stacked, rows, cols / kMXFP4BlockSize), bytes);
  if (values.numel() == 0) return {packed, scales};
  // Rows are independent: the whole stack is one [rows x matrices, cols] matrix.
  const cuda::QuantizeInput input = matrix_input(values, 0, values.numel() / cols, cols);
  check_launch(kOp, "quantize_mxfp4",
               cuda::quantize_mxfp4(input, packed.data_ptr<uint8_t>(), scales.data_ptr<uint8_t>(),
                                    at::cuda::getCurrentCUDAStream()));
  return {packed, scales};
}

at::Tensor dequantize_cuda(const char* op, const StackedFp4& stack, const at::TensorOptions& options,
                           std::optional<at::ScalarType> out_dtype) {
  // The CUDA dequantizer writes BF16; FP32 from it would be BF16-rounded, not the exact values.
  TORCH_CHECK(out_dtype.value_or(at::kBFloat16) == at::kBFloat16, op, ": out_dtype ", *out_dtype,
              " is not supported on CUDA (the CUDA dequantizer writes BFloat16); dequantize on the CPU for exact "
              "Float values");
  at::Tensor out = at::empty(with_matrix_dims(stack.stacked_sizes(), stack.rows(), stack.cols()),
                             options.dtype(at::kBFloat16));
  if (out.numel() == 0) return out;
  const Fp4Format& format = stack.format();
  const at::Tensor tensor_scales = format.has_global_scale() ? stack.global_scale().cpu() : at::Tensor();
  const int64_t rows = stack.rows(), cols = stack.cols();
  for (int64_t m = 0; m < stack.matrices(); ++m) {
    cuda::DequantizeParams params{};
    params.format = static_cast<int>(format.format);
    params.rows = rows;
    params.cols = cols;
    params.data = stack.data_bytes() + m * rows * (cols / 2);
    params.scales = stack.scale_bytes() + m * rows * (cols / format.block);
    params.scale_is_f32 = 0;
    params.scale_cols = cols / format.block;
    params.tensor_scale = format.has_global_scale() ? tensor_scales.data_ptr<float>()[m] : 1.0f;
    params.out = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()) + m * rows * cols;
    params.stream = at::cuda::getCurrentCUDAStream();
    check_launch(op, "dequantize_to_bf16", cuda::dequantize_to_bf16(params));
  }
  return out;
}

at::Tensor dequantize_nvfp4_cuda(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& global_scale,
                                 std::optional<at::ScalarType> out_dtype) {
  constexpr const char* kOp = "dsv4::dequantize_nvfp4";
  TensorArg(kOp, "packed", packed).min_dims(2);
  const c10::cuda::CUDAGuard guard(packed.device());
  const StackedFp4 stack(kOp, kNvfp4, {"packed", "scales", "global_scale"}, packed, scales, global_scale,
                         packed.dim() - 2, at::kCUDA);
  return dequantize_cuda(kOp, stack, packed.options(), out_dtype);
}

at::Tensor dequantize_mxfp4_cuda(const at::Tensor& packed, const at::Tensor& scales,
                                 std::optional<at::ScalarType> out_dtype) {
  constexpr const char* kOp = "dsv4::dequantize_mxfp4";
  TensorArg(kOp, "packed", packed).min_dims(2);
  const c10::cuda::CUDAGuard guard(packed.device());
  const StackedFp4 stack(kOp, kMxfp4, {"packed", "scales", "global_scale"}, packed, scales, std::nullopt,
                         packed.dim() - 2, at::kCUDA);
  return dequantize_cuda(kOp, stack, packed.options(), out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(dsv4, CUDA, m) {
  m.impl("quantize_nvfp4", &quantize_nvfp4_cuda);
  m.impl("quantize_mxfp4", &quantize_mxfp4_cuda);
  m.impl("dequantize_nvfp4", &dequantize_nvfp4_cuda);
  m.impl("dequantize_mxfp4", &dequantize_mxfp4_cuda);
}

}  // namespace dsv4::torch_ops

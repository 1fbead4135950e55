// Argument checks of the dsv4 torch ops. Every failure is a c10::Error (Python:
// RuntimeError / ValueError) that names the op, the argument, what it is (dtype, shape,
// device) and what was expected, e.g.
//   dsv4::quantize_nvfp4: argument 'w' is Half[4, 32] on cpu; expected dtype BFloat16 or Float
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4::torch_ops {

// "Byte[4, 16] on cuda:0" (undefined tensors: "undefined").
std::string describe(const at::Tensor& tensor);

// One argument of one op: the checks chain, each returning *this.
class TensorArg {
 public:
  TensorArg(const char* op, const char* name, const at::Tensor& tensor);

  const TensorArg& dtype_in(c10::ArrayRef<at::ScalarType> allowed) const;
  const TensorArg& dims(int64_t expected) const;
  const TensorArg& min_dims(int64_t expected) const;
  // size(dim) == expected; `why` says where the expectation comes from ("k / 16 block scales").
  const TensorArg& size(int64_t dim, int64_t expected, std::string_view why) const;
  // size(dim) % multiple == 0.
  const TensorArg& size_multiple(int64_t dim, int64_t multiple, std::string_view why) const;
  const TensorArg& device_type(c10::DeviceType expected) const;
  const TensorArg& same_device(const at::Tensor& other, const char* other_name) const;
  // Leading dims [0, count) equal to other's (stacked matrices: one per leading index).
  const TensorArg& same_leading_dims(const at::Tensor& other, const char* other_name, int64_t count) const;

  [[noreturn]] void fail(std::string_view expectation) const;

 private:
  const char* op_;
  const char* name_;
  const at::Tensor& tensor_;
};

// dtypes a packed E2M1 tensor may come as (two codes per byte): uint8 (ModelOpt, `dsv4
// quantize`), int8 (some checkpoints), float4_e2m1fn_x2 (torch's own FP4 dtype).
inline constexpr at::ScalarType kPackedFp4Dtypes[] = {at::kByte, at::kChar, at::ScalarType::Float4_e2m1fn_x2};
// Block-scale byte dtypes: uint8 or the float8 dtype of the format's scales.
inline constexpr at::ScalarType kNvfp4ScaleDtypes[] = {at::kByte, at::ScalarType::Float8_e4m3fn};
inline constexpr at::ScalarType kMxfp4ScaleDtypes[] = {at::kByte, at::ScalarType::Float8_e8m0fnu};

// The bytes of a contiguous 1-byte tensor, whatever its dtype says they encode.
inline const uint8_t* byte_data(const at::Tensor& contiguous_bytes) {
  return static_cast<const uint8_t*>(contiguous_bytes.data_ptr());
}

}  // namespace dsv4::torch_ops

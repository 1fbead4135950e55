#include "tensor_checks.h"

#include <sstream>

namespace dsv4::torch_ops {

std::string describe(const at::Tensor& tensor) {
  if (!tensor.defined()) return "undefined";
  std::ostringstream text;
  text << tensor.scalar_type() << tensor.sizes() << " on " << tensor.device();
  return text.str();
}

TensorArg::TensorArg(const char* op, const char* name, const at::Tensor& tensor) : op_(op), name_(name), tensor_(tensor) {
  if (!tensor.defined()) fail("a defined tensor");
}

void TensorArg::fail(std::string_view expectation) const {
  TORCH_CHECK(false, op_, ": argument '", name_, "' is ", describe(tensor_), "; expected ", expectation);
}

const TensorArg& TensorArg::dtype_in(c10::ArrayRef<at::ScalarType> allowed) const {
  for (const at::ScalarType dtype : allowed)
    if (tensor_.scalar_type() == dtype) return *this;
  std::ostringstream text;
  text << "dtype ";
  for (size_t i = 0; i < allowed.size(); ++i) text << (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") << allowed[i];
  fail(text.str());
}

const TensorArg& TensorArg::dims(int64_t expected) const {
  if (tensor_.dim() != expected) fail(std::to_string(expected) + " dimensions");
  return *this;
}

const TensorArg& TensorArg::min_dims(int64_t expected) const {
  if (tensor_.dim() < expected) fail("at least " + std::to_string(expected) + " dimensions");
  return *this;
}

const TensorArg& TensorArg::size(int64_t dim, int64_t expected, std::string_view why) const {
  const int64_t wrapped = dim < 0 ? dim + tensor_.dim() : dim;
  if (tensor_.size(wrapped) != expected)
    fail("size " + std::to_string(expected) + " in dimension " + std::to_string(wrapped) + " (" + std::string(why) + ")");
  return *this;
}

const TensorArg& TensorArg::size_multiple(int64_t dim, int64_t multiple, std::string_view why) const {
  const int64_t wrapped = dim < 0 ? dim + tensor_.dim() : dim;
  if (tensor_.size(wrapped) % multiple != 0)
    fail("a multiple of " + std::to_string(multiple) + " in dimension " + std::to_string(wrapped) + " (" +
         std::string(why) + ")");
  return *this;
}

const TensorArg& TensorArg::device_type(c10::DeviceType expected) const {
  if (tensor_.device().type() != expected) {
    std::ostringstream text;
    text << "a " << c10::Device(expected) << " tensor";
    fail(text.str());
  }
  return *this;
}

const TensorArg& TensorArg::same_device(const at::Tensor& other, const char* other_name) const {
  if (tensor_.device() != other.device()) {
    std::ostringstream text;
    text << "the device of '" << other_name << "' (" << other.device() << ")";
    fail(text.str());
  }
  return *this;
}

const TensorArg& TensorArg::same_leading_dims(const at::Tensor& other, const char* other_name, int64_t count) const {
  const auto leading = other.sizes().slice(0, static_cast<size_t>(count));
  if (tensor_.dim() < count || tensor_.sizes().slice(0, static_cast<size_t>(count)) != leading) {
    std::ostringstream text;
    text << "leading dimensions " << leading << " as '" << other_name << "' (one entry per stacked matrix)";
    fail(text.str());
  }
  return *this;
}

}  // namespace dsv4::torch_ops

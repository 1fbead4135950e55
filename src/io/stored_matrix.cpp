// Format detection and validation of one stored weight matrix (rules: stored_matrix.h).
// With a config the messages are the loader's (tests/io/weights_test.cpp asserts them);
// without one, a companion's message names the grid its weight implies (as the survey's
// always did: tests/formats/pipeline_test.cpp).
#include "io/stored_matrix.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "dsv4/error.h"

namespace dsv4 {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Wording of the messages: against the config (loader) or the weight's own shape (survey).
struct Wording {
  std::string gives, why;
  // " (why)" or "" (the survey has no why).
  std::string why_suffix() const { return why.empty() ? std::string() : " (" + why + ")"; }
  // "(why; layout)" or "(layout)".
  std::string context(const char* layout) const { return why.empty() ? fmt::format("({})", layout) : fmt::format("({}; {})", why, layout); }
};

}  // namespace

MatrixCompanions find_matrix_companions(const Checkpoint& checkpoint, const std::string& stored_base) {
  MatrixCompanions c;
  c.scale = checkpoint.find(stored_base + ".scale");
  if (!c.scale) c.scale = checkpoint.find(stored_base + ".weight_scale_inv");
  c.block_scales = checkpoint.find(stored_base + ".weight_scale");
  c.tensor_scale = checkpoint.find(stored_base + ".weight_scale_2");
  c.input_scale = checkpoint.find(stored_base + ".input_scale");
  return c;
}

std::optional<WeightFormat> dense_weight_format(DType dtype) {
  switch (dtype) {
    case DType::kF32: return WeightFormat::kF32;
    case DType::kBF16: return WeightFormat::kBF16;
    case DType::kF16: return WeightFormat::kF16;
    default: return std::nullopt;
  }
}

QuantMatrix bind_stored_matrix(const TensorView& weight, const MatrixCompanions& companions,
                               const ExpectedMatrix* expected) {
  const TensorView* nv_scale = companions.block_scales;
  const TensorView* scale = nv_scale ? nullptr : companions.scale;
  const bool packed = weight.dtype == DType::kU8 || weight.dtype == DType::kI8;

  // Logical [rows, cols]: the config's, or read off the stored weight.
  int64_t rows = 0, cols = 0;
  Wording say;
  if (expected) {
    rows = expected->rows;
    cols = expected->cols;
    say = {"config gives", expected->why};
  } else {
    DSV4_CHECK(weight.shape.size() == 2, "tensor {} in {}: a weight matrix must be 2-D, got {}", weight.name, weight.file,
               weight.shape_string());
    rows = weight.shape[0];
    cols = (packed && (nv_scale || scale)) ? 2 * weight.shape[1] : weight.shape[1];
    say = {"the stored weight gives", ""};
  }
  // `layout` explains the config's shape (loader); `rule` the grid a companion must have
  // beside its weight (survey: the weight's own shape always passes).
  auto expect_shape = [&](const TensorView& view, const std::vector<int64_t>& shape, const char* layout,
                          const char* rule) {
    if (view.shape == shape) return;
    if (expected)
      fail("tensor {} in {}: shape {} but config expects {} {}", view.name, view.file, view.shape_string(),
           shape_text(shape), say.context(layout));
    fail("tensor {} in {}: {} {} but {}: {} (companion of {})", view.name, view.file, dtype_name(view.dtype),
         view.shape_string(), rule, shape_text(shape), weight.name);
  };

  QuantMatrix m;
  m.name = weight.name;
  m.rows = rows;
  m.cols = cols;
  m.data = weight.data;
  if (nv_scale) {  // ModelOpt NVFP4
    DSV4_CHECK(packed, "tensor {} in {}: dtype {} but an NVFP4 weight (it has {}) must be U8 packed E2M1{}", weight.name,
               weight.file, dtype_name(weight.dtype), nv_scale->name, say.why_suffix());
    DSV4_CHECK(cols % 16 == 0, "tensor {} in {}: NVFP4 needs in_features divisible by 16, {} {}{}", weight.name,
               weight.file, say.gives, cols, say.why_suffix());
    expect_shape(weight, {rows, cols / 2}, "NVFP4: packed E2M1, two per byte", "NVFP4 packs two per byte");
    DSV4_CHECK(nv_scale->dtype == DType::kF8_E4M3, "tensor {} in {}: dtype {} but NVFP4 block scales must be F8_E4M3",
               nv_scale->name, nv_scale->file, dtype_name(nv_scale->dtype));
    expect_shape(*nv_scale, {rows, cols / 16}, "NVFP4: one E4M3 scale per 16 inputs", "NVFP4 needs one scale per 16 inputs");
    const TensorView* global = companions.tensor_scale;
    const std::string stored_base = nv_scale->name.substr(0, nv_scale->name.size() - std::string(".weight_scale").size());
    DSV4_CHECK(global && global->dtype == DType::kF32 && global->numel() == 1,
               "tensor {}.weight_scale_2 (the F32 per-tensor scale of NVFP4 weight {} in {}) is missing or not a F32 "
               "scalar", stored_base, weight.name, weight.file);
    std::memcpy(&m.tensor_scale, global->data, 4);
    DSV4_CHECK(std::isfinite(m.tensor_scale) && m.tensor_scale > 0.0f,
               "tensor {} in {}: NVFP4 per-tensor scale {} must be positive and finite", global->name, global->file,
               m.tensor_scale);
    m.format = WeightFormat::kNVFP4;
    m.scales = nv_scale->data;
    m.scale_dtype = DType::kF8_E4M3;
    m.scale_rows = rows;
    m.scale_cols = cols / 16;
  } else if (scale && weight.dtype == DType::kF8_E4M3) {  // official FP8, 128x128 blocks
    expect_shape(weight, {rows, cols}, "FP8 E4M3", "FP8 E4M3");
    const int64_t scale_rows = (rows + 127) / 128, scale_cols = (cols + 127) / 128;
    DSV4_CHECK(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kF32,
               "tensor {} in {}: dtype {} but FP8 block scales must be F8_E8M0 or F32", scale->name, scale->file,
               dtype_name(scale->dtype));
    expect_shape(*scale, {scale_rows, scale_cols}, "one scale per 128x128 block", "FP8 needs one scale per 128x128 block");
    m.format = WeightFormat::kFP8Block;
    m.scales = scale->data;
    m.scale_dtype = scale->dtype;
    m.scale_rows = scale_rows;
    m.scale_cols = scale_cols;
  } else if (scale && (packed || weight.dtype == DType::kF4)) {
    DSV4_CHECK(cols % 32 == 0, "tensor {} in {}: MXFP4 needs in_features divisible by 32, {} {}{}", weight.name,
               weight.file, say.gives, cols, say.why_suffix());
    // F4 headers count E2M1 elements; I8/U8 headers count bytes.
    expect_shape(weight, weight.dtype == DType::kF4 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows, cols / 2},
                 "MXFP4: packed E2M1, two per byte", "MXFP4 packs two per byte");
    DSV4_CHECK(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kU8,
               "tensor {} in {}: dtype {} but MXFP4 scales must be F8_E8M0", scale->name, scale->file,
               dtype_name(scale->dtype));
    expect_shape(*scale, {rows, cols / 32}, "MXFP4: one E8M0 scale per 32 inputs", "MXFP4 needs one scale per 32 inputs");
    m.format = WeightFormat::kMXFP4;
    m.scales = scale->data;
    m.scale_dtype = DType::kF8_E8M0;
    m.scale_rows = rows;
    m.scale_cols = cols / 32;
  } else if (scale) {
    fail("tensor {} in {}: dtype {} with scale companion {} (expected F8_E4M3 for FP8 blocks or I8/U8/F4 for "
         "MXFP4){}", weight.name, weight.file, dtype_name(weight.dtype), scale->name, say.why_suffix());
  } else {
    const std::optional<WeightFormat> dense = dense_weight_format(weight.dtype);
    DSV4_CHECK(dense.has_value(), "tensor {} in {}: dtype {} but expected F32, BF16 or F16, or quantized data with a "
               ".scale (FP8/MXFP4) or .weight_scale + .weight_scale_2 (NVFP4) companion{}",
               weight.name, weight.file, dtype_name(weight.dtype), say.why_suffix());
    m.format = *dense;
    expect_shape(weight, {rows, cols}, "dense", "dense");
  }
  return m;
}

}  // namespace dsv4

// One stored weight matrix W[out, in] = X.weight and its quantization companions,
// bound as a QuantMatrix: the single place where the storage format is read off the
// dtypes and companions. Used by the loader (src/io/weights.cpp, shapes from the
// config) and by the checkpoint survey (src/formats/checkpoint_survey.cpp, shapes from
// the stored tensors).
//
// Stored forms (format detection in this order):
//   NVFP4     X.weight U8/I8 [out, in/2] + X.weight_scale E4M3 [out, in/16]
//             + X.weight_scale_2 F32 scalar (positive, finite) (+ X.input_scale, ignored)
//   FP8 block X.weight F8_E4M3 [out, in] + X.scale (or transformers' X.weight_scale_inv)
//             E8M0 or F32 [ceil(out/128), ceil(in/128)]
//   MXFP4     X.weight I8/U8 [out, in/2] or F4 [out, in] + X.scale E8M0 (or U8) [out, in/32]
//   dense     X.weight F32/BF16/F16 [out, in], no companion
// Packed E2M1: low nibble = even column.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "dsv4/safetensors.h"
#include "dsv4/weight_format.h"

namespace dsv4 {

struct MatrixCompanions {
  const TensorView* scale = nullptr;         // X.scale | X.weight_scale_inv (FP8 block, MXFP4)
  const TensorView* block_scales = nullptr;  // X.weight_scale (NVFP4)
  const TensorView* tensor_scale = nullptr;  // X.weight_scale_2 (NVFP4)
  const TensorView* input_scale = nullptr;   // X.input_scale (NVFP4 activation scale, unused)
  bool quantized() const { return scale || block_scales; }
};

// The companions stored beside `stored_base`.weight (stored_base as stored, e.g. with
// the `model.` prefix).
MatrixCompanions find_matrix_companions(const Checkpoint& checkpoint, const std::string& stored_base);

// F32 / BF16 / F16 -> their dense WeightFormat; nullopt for other dtypes.
std::optional<WeightFormat> dense_weight_format(DType dtype);

// The logical shape a caller requires, and why (appended to messages).
struct ExpectedMatrix {
  int64_t rows = 0, cols = 0;
  std::string why;
};

// Binds `weight` with `companions` (NVFP4 when block_scales is set; scale is then
// ignored). `expected` given (the loader): every stored shape is checked against the
// config's [rows, cols] and the messages say "config expects". `expected` null (the
// survey): [rows, cols] come from the weight's own 2-D shape and its companions are
// checked against that. Throws dsv4::Error naming the tensor, its file and the rule.
QuantMatrix bind_stored_matrix(const TensorView& weight, const MatrixCompanions& companions,
                               const ExpectedMatrix* expected);

}  // namespace dsv4

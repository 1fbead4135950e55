// Types shared by every CUDA op family and the CUDA engine: a stored weight matrix on
// the device, and the per-token metadata of one forward step. Plain structs of device
// pointers (usable from host and device code); nothing here owns memory.
#pragma once
#include <cstdint>

namespace dsv4::cuda {

// A weight matrix W[rows, cols] in device memory, in its stored format (the device
// twin of dsv4::QuantMatrix; y = x W^T). Layouts as in include/dsv4/weight_format.h:
//   kF32 / kBF16 / kF16: data [rows, cols]
//   kFP8Block: data E4M3 [rows, cols]; scales [ceil(rows/128), scale_cols] E8M0 (or F32 when scale_is_f32)
//   kMXFP4:    data packed E2M1 [rows, cols/2] (low nibble = even column); scales E8M0 [rows, scale_cols = cols/32]
//   kNVFP4:    data packed E2M1 [rows, cols/2]; scales E4M3 [rows, scale_cols = cols/16]; times tensor_scale
struct DeviceMatrix {
  int format = 0;                 // dsv4::WeightFormat value
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  const uint8_t* scales = nullptr;
  int scale_is_f32 = 0;
  int64_t scale_cols = 0;
  float tensor_scale = 1.0f;
};

// One forward step's tokens: a prefill chunk of one sequence, a decode step of many
// sequences (one token each), or any mix. Token rows of one sequence are consecutive
// and in position order. All arrays are device arrays of length `tokens`.
struct TokenBatch {
  int tokens = 0;
  const int32_t* token_ids = nullptr;   // [tokens]
  const int32_t* positions = nullptr;   // [tokens] absolute position in its sequence
  const int32_t* slots = nullptr;       // [tokens] cache slot (sequence) of the token, < max_slots
  const int32_t* first_rows = nullptr;  // [tokens] batch row of the first token of the same
                                        // sequence in this batch (its position = chunk start)
};

}  // namespace dsv4::cuda

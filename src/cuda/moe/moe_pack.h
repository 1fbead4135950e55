// Load-time pre-arrangement of 4-bit expert weights into the fragment layout of
// fragment.h (host code; the engine runs it once per expert at load).
#pragma once
#include <cstdint>

#include "cuda/moe/fragment.h"
#include "dsv4/weight_format.h"

namespace dsv4::cuda::moe {

// Bytes of one packed matrix [rows, cols] (rows % 16 == 0, cols % 64 == 0).
int64_t packed_data_bytes(int64_t rows, int64_t cols);
int64_t packed_scale_bytes(ExpertFormat format, int64_t rows, int64_t cols);

ExpertFormat expert_format_of(WeightFormat format);  // throws for non-4-bit formats

struct PackStats {
  int64_t flushed_blocks = 0;  // MXFP4 blocks more than 2^125 below the matrix max (decode to 0)
  int64_t zero_blocks = 0;     // NVFP4 blocks with a zero scale (decode to 0, as stored)
};

// W13 [2I, H] from w1 (gate) and w3 (up), both [I, H], I % 8 == 0: packed row 16b + r
// is w1 row 8b + r for r < 8 and w3 row 8b + r - 8 otherwise, so that an m16 A tile's
// rows g and g + 8 are the gate and up rows of one intermediate column.
// Epilogue factors: gate values are scaled by *gate_factor, up values by *up_factor.
void pack_w13(const QuantMatrix& w1, const QuantMatrix& w3, uint8_t* data, uint8_t* scales, float* gate_factor,
              float* up_factor, PackStats* stats);
// W2 [H, I] as it is.
void pack_w2(const QuantMatrix& w2, uint8_t* data, uint8_t* scales, float* down_factor, PackStats* stats);

}  // namespace dsv4::cuda::moe

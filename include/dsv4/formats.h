// Bit-exact scalar codecs of the 4- and 8-bit element types (see docs/nvfp4 facts).
#pragma once
#include <cstdint>

namespace dsv4 {

// E2M1: s e e m, bias 1; codes 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6; 0x8 = -0.
float e2m1_to_float(uint8_t code);
// Round to nearest, ties to even code; |x| > 6 saturates to 6; NaN -> +0 (no NaN code).
uint8_t float_to_e2m1(float value);

// E4M3 "fn": bias 7, max 448, 0x7F/0xFF NaN, no infinities.
float e4m3_to_float(uint8_t code);
// Round to nearest even; finite values beyond 448 saturate to +-448; NaN -> 0x7F.
uint8_t float_to_e4m3(float value);

// E8M0: 2^(e-127); 0xFF NaN.
float e8m0_to_float(uint8_t code);

}  // namespace dsv4

#include <vector>

namespace dsv4 {

// Block quantizers for one row of `cols` values (cols a multiple of the block).
// MXFP4 (OCP): per 32, shared exponent e = floor(log2(amax)) - 2 (E2M1's top exponent),
// stored as E8M0 (e + 127); amax 0 -> e = -127 (code 0). Packed low nibble = even column.
void quantize_mxfp4_row(const float* row, int64_t cols, uint8_t* packed, uint8_t* scales);
// NVFP4 (ModelOpt): per 16, block scale E4M3(amax_block / 6 / tensor_scale), values
// E2M1(x / (block_scale * tensor_scale)); tensor_scale = amax(W) / (6 * 448).
void quantize_nvfp4_row(const float* row, int64_t cols, float tensor_scale, uint8_t* packed, uint8_t* scales);
float nvfp4_tensor_scale(const float* values, int64_t count);

}  // namespace dsv4

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

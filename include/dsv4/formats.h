// Bit-exact CPU codecs of the 4- and 8-bit element types and the block quantizers of
// the three weight formats (facts and sources: ../shared/docs/nvfp4.md, checked by
// tests/formats against PyTorch's float8 dtypes and a torch reference of ModelOpt's
// FP4 cast, fixture made by scripts/make_format_fixtures.py).
//
// Layouts (W[out, in], y = x @ W^T, K = in is the blocked dimension):
//   MXFP4     packed [out, in/2] (low nibble = even column), E8M0 scales [out, in/32]
//   NVFP4     packed [out, in/2] (low nibble = even column), E4M3 scales [out, in/16],
//             one FP32 tensor scale
//   FP8 block E4M3 [out, in], E8M0 scales [ceil(out/128), ceil(in/128)] (ragged last
//             blocks cover the remainder)
//   FP8 act   E4M3 [tokens, in], FP32 scales [tokens, ceil(in/128)] (1 x 128 blocks)
#pragma once
#include <cstdint>

namespace dsv4 {

// ---------------------------------------------------------------------------------
// Element codecs
// ---------------------------------------------------------------------------------

// E2M1: s e e m, bias 1; codes 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6; 0x8 = -0.
float e2m1_to_float(uint8_t code);
// Round to nearest, ties to the even code; |x| > 6 saturates to 6 (infinities too).
// The sign bit is `value < 0`, as ModelOpt's _cast_fp4: -0.1 -> 0x8 (-0) but
// -0.0 -> 0x0. NaN -> 0x0 (E2M1 has no NaN; the block quantizers reject NaN input
// upstream, see quantize_checkpoint). Branch-free (seven compares).
uint8_t float_to_e2m1(float value);

// E4M3 "fn": bias 7, max 448, min normal 2^-6, min subnormal 2^-9, 0x7F/0xFF NaN,
// no infinities.
float e4m3_to_float(uint8_t code);
// Round to nearest even; finite values and infinities beyond 448 saturate to +-448
// (0x7E/0xFE) as the reference quantizers do (they clamp to +-448 before the cast);
// NaN -> 0x7F with the input's sign bit (0xFF for a negative NaN), as torch. torch's own `.to(float8_e4m3fn)` does NOT saturate: |x| >= 464 (the
// midpoint to the next, non-existent step 480) and +-inf become NaN (0x7F/0xFF).
uint8_t float_to_e4m3(float value);
// The non-saturating conversion torch implements (c10 fp8e4m3fn_from_fp32_value):
// identical to float_to_e4m3 except |x| >= 464 and +-inf -> NaN with the input's sign.
uint8_t float_to_e4m3_nonsaturating(float value);

// E8M0 (UE8M0): 2^(e-127) for e in 0..254; 0xFF is NaN; no sign, no zero.
float e8m0_to_float(uint8_t code);
// The code of 2^exponent, exponent clamped to [-127, 127].
uint8_t e8m0_from_exponent(int exponent);
// torch's `.to(float8_e8m0fnu)`: the sign is dropped, round to nearest power of two
// by torch's guard/round/sticky rule (ties go up: 1.5 -> 2, 3 -> 4), zero and
// denormals below 2^-127 -> 0x00, NaN/inf/>= 1.5 * 2^127 -> 0xFF. Not used by the
// quantizers (they pick exponents directly); here for the cross-check and for users.
uint8_t float_to_e8m0(float value);

// ---------------------------------------------------------------------------------
// Nibble packing: two E2M1 codes per byte, even column in the low nibble. This is the
// order of torch.float4_e2m1fn_x2 (val0 in bits 3..0), of transformers' _unpack_fp4
// for the official V4 experts, and of ModelOpt's `(q[..., 1::2] << 4) | q[..., 0::2]`.
// ---------------------------------------------------------------------------------
inline uint8_t pack_e2m1_pair(uint8_t even_code, uint8_t odd_code) {
  return static_cast<uint8_t>((even_code & 0xf) | (odd_code << 4));
}
inline uint8_t e2m1_code_at(const uint8_t* packed, int64_t column) {
  const uint8_t byte = packed[column >> 1];
  return (column & 1) ? static_cast<uint8_t>(byte >> 4) : static_cast<uint8_t>(byte & 0xf);
}

// ---------------------------------------------------------------------------------
// Block quantizers. Each throws dsv4::Error when `cols` is not a whole number of
// blocks (FP4 formats) and stores NaN/inf as documented for the element codecs.
// ---------------------------------------------------------------------------------
constexpr int64_t kMXFP4BlockSize = 32;
constexpr int64_t kNVFP4BlockSize = 16;
constexpr int64_t kFP8BlockSize = 128;

// MXFP4 (OCP MX v1.0, 6.3): per 32 columns, shared exponent
// e = floor(log2(amax)) - 2 (2 = E2M1's largest exponent), clamped to [-127, 127],
// stored as E8M0 (e + 127); amax 0 -> e = -127 (code 0) and all codes 0. Elements:
// E2M1(x * 2^-e) (exact scaling, then RNE + saturation: a block's values in
// [6, 8) * 2^e clip to 6 * 2^e, the spec's known clipping).
int mxfp4_shared_exponent(float amax);
// row: [cols] FP32; packed: [cols/2]; scales: [cols/32] E8M0. cols % 32 == 0.
void quantize_mxfp4_row(const float* row, int64_t cols, uint8_t* packed, uint8_t* scales);

// NVFP4 (ModelOpt NVFP4QTensor, dynamic weight path), all in FP32:
//   s_tensor = amax(W) / 2688 (= 6 * 448); amax(W) == 0 -> 1 (ModelOpt would give NaN)
//   s_block  = E4M3(amax(block) / (6 * s_tensor)), amax(block) == 0 -> E4M3(1.0) = 0x38
//   q        = E2M1(x / (s_block * s_tensor))     (the product rounded to FP32 first)
// A block whose scale underflows to E4M3 zero stores codes 0 (ModelOpt would divide by
// zero; both decode to 0).
float nvfp4_tensor_scale(const float* values, int64_t count);
uint8_t nvfp4_block_scale(float block_amax, float tensor_scale);
// row: [cols] FP32; packed: [cols/2]; scales: [cols/16] E4M3. cols % 16 == 0.
void quantize_nvfp4_row(const float* row, int64_t cols, float tensor_scale, uint8_t* packed, uint8_t* scales);

// FP8 block scale, DeepSeek's rule (inference/kernel.py act_quant with
// scale_fmt="ue8m0": fast_round_scale): amax' = max(amax, 1e-4);
// s = 2^ceil(log2(amax' * (1/448)))  (the product in FP32, ceil by exponent/mantissa
// bits). Hence amax / s <= 448: no element saturates. Returns the exponent of s.
int fp8_scale_exponent(float amax);
// One stripe of up to 128 rows of W: rows [stripe_rows, cols] FP32 (row stride cols),
// q [stripe_rows, cols] E4M3, scales [ceil(cols/128)] E8M0 (this stripe's scale row).
// q = E4M3(x * 2^-e) per 128x128 block (exact scaling, RNE).
void quantize_fp8_block_stripe(const float* rows, int64_t stripe_rows, int64_t cols, uint8_t* q, uint8_t* scales);
// Whole matrix: w [rows, cols], q [rows, cols], scales [ceil(rows/128), ceil(cols/128)].
void quantize_fp8_block(const float* w, int64_t rows, int64_t cols, uint8_t* q, uint8_t* scales);

// Activations, 1 x 128 per token (DeepSeek act_quant): x [cols] FP32 -> q [cols] E4M3,
// scales [ceil(cols/128)] FP32. power_of_two_scales: s = 2^ceil(log2(amax'/448)) as
// above (the V4 "ue8m0" path); otherwise s = amax' / 448 (amax' = max(amax, 1e-4)).
// q = E4M3(x / s), saturating.
void quantize_fp8_activation_row(const float* x, int64_t cols, bool power_of_two_scales, uint8_t* q, float* scales);

// ---------------------------------------------------------------------------------
// Error of an approximation against its reference, accumulated in double.
// ---------------------------------------------------------------------------------
struct ErrorStats {
  double sum_ref_sq = 0, sum_approx_sq = 0, sum_diff_sq = 0, dot = 0, max_abs_diff = 0;
  int64_t count = 0;
  void add(const float* reference, const float* approx, int64_t n);
  // ||approx - ref||_F / ||ref||_F (0 when both are zero, inf when only ref is zero).
  double relative_frobenius() const;
  // <ref, approx> / (|ref| |approx|); 1 when both are zero, 0 when only one is.
  double cosine() const;
};

}  // namespace dsv4

// FP8 KV cache row codec (issue 6 item 5), the CPU reference of
// src/cuda/attention/kv_fp8.cu (byte-identical). DeepSeek's V4 layout: one K=V row of
// head_dim 512 = 448 no-RoPE channels + 64 RoPE channels takes 584 bytes:
//   [0, 448)    E4M3 (OCP "fn": bias 7, max 448, no infinities), channel c at byte c
//   [448, 455)  7 UE8M0 scales, byte 448 + b for channels [64 b, 64 b + 64):
//               channel value = e4m3 * 2^(scale - 127)
//   455         pad (0)
//   [456, 584)  the 64 RoPE channels as BF16 (RNE), little-endian
// Encoding a 64-channel block (exact, integer arithmetic on the FP32 bits):
//   amax = max |x| over the block's finite values (NaN and +-inf ignored);
//   k = the smallest integer with 448 * 2^k >= amax, clamped to [-117, 117]
//       (amax 0 or subnormal: -117). The clamp keeps every decoded value an FP32
//       normal (>= 2^-126) below 2^125, so decoded values are exact in BF16 and finite;
//   scale byte = k + 127 (10 .. 244);
//   e4m3 = RNE(x * 2^-k) saturated to +-448; +-inf -> +-448, NaN -> +0, -0 -> 0x80.
// Decoding: sign * (e ? 8 + m : m) * 2^(max(e, 1) - 10 + k) for byte = s eeee mmm
// (0x7f / 0xff are never written; they decode as 480 * 2^k).
// The rounding error of a finite x in a block of scale exponent k is at most
// max(|x| / 16, 2^(k - 10)) (saturation aside: only amax above 448 * 2^117).
#pragma once
#include <cstdint>

namespace dsv4::cpu {

inline constexpr int kKvFp8HeadDim = 512;
inline constexpr int kKvFp8NopeDim = 448;
inline constexpr int kKvFp8RopeDim = 64;
inline constexpr int kKvFp8BlockChannels = 64;
inline constexpr int kKvFp8Blocks = kKvFp8NopeDim / kKvFp8BlockChannels;  // 7
inline constexpr int kKvFp8ScaleOffset = kKvFp8NopeDim;                    // 448
inline constexpr int kKvFp8RopeOffset = kKvFp8ScaleOffset + kKvFp8Blocks + 1;  // 456 (one pad byte)
inline constexpr int kKvFp8RowBytes = kKvFp8RopeOffset + 2 * kKvFp8RopeDim;    // 584
inline constexpr int kKvFp8MinScaleExponent = -117;
inline constexpr int kKvFp8MaxScaleExponent = 117;

// k of a block whose largest finite magnitude is amax (>= 0), see above.
int kv_fp8_scale_exponent(float amax);
// E4M3 byte of value (already divided by the block scale): RNE, saturating to +-448,
// NaN -> 0x00, sign kept (so -0 and negative values rounding to 0 give 0x80).
uint8_t float_to_e4m3(float value);
// The exact value of an E4M3 byte times 2^k (k in the clamp range: always exact).
float e4m3_to_float(uint8_t byte, int k = 0);

// row: [512] FP32 -> out: [584] bytes.
void kv_fp8_encode_row(const float* row, uint8_t* out);
// row: [584] bytes -> out: [512] FP32 (every value exact in BF16).
void kv_fp8_decode_row(const uint8_t* row, float* out);
// rows: [count, 512] FP32, replaced by their decoded encodings: what a CPU engine
// storing KV through the FP8 cache (a future CpuRounding option) would call where it
// rounds KV rows to BF16 today.
void kv_fp8_round_trip(float* rows, int64_t count);

}  // namespace dsv4::cpu

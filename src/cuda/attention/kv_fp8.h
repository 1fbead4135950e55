// FP8 KV cache (issue 6 item 5; opt-in: EngineOptions::kv_cache = kFP8): K=V rows of
// head_dim 512 stored in DeepSeek's V4 layout, 584 bytes a row:
//   [0, 448)    E4M3 of channels 0..447
//   [448, 455)  7 UE8M0 scales (byte 448 + b for channels [64 b, 64 b + 64)): value = e4m3 * 2^(scale - 127)
//   455         pad (0)
//   [456, 584)  channels 448..511 (RoPE) as BF16
// Per 64-channel block: amax = max finite |x|; k = smallest integer with 448 2^k >= amax,
// clamped to [-117, 117]; e4m3 = RNE(x 2^-k) saturated to +-448 (+-inf too), NaN -> +0.
// Decoded values are exact in BF16. CPU reference (byte-identical): src/cpu/kv_fp8.h.
// Rows are 8-byte aligned (584 = 73 x 8) when the array base is.
//
// Writers mirror the BF16 cache: the window ring row of each batch token
// (kv_window_write), and the compressed attention entries closed by the batch (from the
// compressor's BF16 / FP32 entries, see kv_fp8_write_entries). sparse_attention reads
// these rows with SparseAttentionParams::kv_fp8 (the FP32 kernel and kWgmmaPipelined).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/device_types.h"
#if defined(__CUDACC__)
#include "cuda/common/bf16x2.cuh"
#endif

namespace dsv4::cuda::attention {

inline constexpr int kKvFp8HeadDim = 512;
inline constexpr int kKvFp8NopeDim = 448;
inline constexpr int kKvFp8BlockChannels = 64;
inline constexpr int kKvFp8Blocks = 7;
inline constexpr int kKvFp8ScaleOffset = 448;
inline constexpr int kKvFp8RopeOffset = 456;
inline constexpr int kKvFp8RowBytes = 584;
inline constexpr int kKvFp8MinScaleExponent = -117;
inline constexpr int kKvFp8MaxScaleExponent = 117;

// kv [tokens, 512] FP32 (normed + RoPE'd, 16-byte aligned) -> window_fp8 [slots, ring_rows, 584]:
// position p of a slot in row p % ring_rows (as kv_window_write); tokens with a negative
// slot or position are skipped.
void kv_fp8_write_window(const float* kv, uint8_t* window_fp8, int ring_rows, const TokenBatch& batch,
                         cudaStream_t stream);
// For each batch token closing a window ((p + 1) % rate == 0, entry w = (p + 1) / rate - 1
// < max_entries): source row (slot, w) of [slots, max_entries, 512] (BF16 when source_bf16,
// else FP32; CompressorParams::entries as compressor_update wrote it) -> entries_fp8
// [slots, max_entries, 584] row (slot, w). Run after compressor_update in stream order.
// Needs the compressor's full-size entries as staging: a compressor writing FP8 directly
// is not built (see docs/kernels/attention.md, FP8 KV cache).
void kv_fp8_write_entries(const void* source, bool source_bf16, uint8_t* entries_fp8, int max_entries, int rate,
                          const TokenBatch& batch, cudaStream_t stream);
// rows [count, 512] FP32 (16-byte aligned) -> out [count, 584].
void kv_fp8_quantize_rows(const float* rows, int64_t count, uint8_t* out, cudaStream_t stream);
// rows [count, 584] -> out [count, 512], BF16 (out_bf16; exact) or FP32.
void kv_fp8_dequantize_rows(const uint8_t* rows, int64_t count, void* out, bool out_bf16, cudaStream_t stream);

namespace detail {
// kv_fp8.cu; the public functions above (launchers.cpp) validate, then call these.
cudaError_t launch_kv_fp8_write_window(const float* kv, uint8_t* window_fp8, int ring_rows, const TokenBatch& batch,
                                       cudaStream_t stream);
cudaError_t launch_kv_fp8_write_entries(const void* source, bool source_bf16, uint8_t* entries_fp8, int max_entries,
                                        int rate, const TokenBatch& batch, cudaStream_t stream);
cudaError_t launch_kv_fp8_quantize_rows(const float* rows, int64_t count, uint8_t* out, cudaStream_t stream);
cudaError_t launch_kv_fp8_dequantize_rows(const uint8_t* rows, int64_t count, void* out, bool out_bf16,
                                          cudaStream_t stream);
}  // namespace detail

#if defined(__CUDACC__)
// FP32 bits of E4M3 byte `b` times 2^k (k in [-117, 117]: always an exact normal or
// +-0): sign * (e ? 8 + m : m) * 2^(max(e, 1) - 10 + k). The BF16 is the top 16 bits.
// The scalar reference form; the kernels use kv_fp8_decode8_bf16 below (same values).
__device__ __forceinline__ uint32_t kv_fp8_decode_bits(uint32_t b, int k) {
  const int e = (b >> 3) & 15, m = b & 7;
  const int significand = e != 0 ? 8 + m : m;
  const float power = __int_as_float((max(e, 1) - 10 + k + 127) << 23);
  return __float_as_uint(static_cast<float>(significand) * power) | ((b & 0x80u) << 24);
}
// BF16 bits of 2^e (e in [-126, 127]).
__device__ __forceinline__ uint32_t kv_fp8_pow2_bf16x2(int e) { return static_cast<uint32_t>(e + 127) * 0x00800080u; }
// 8 E4M3 bytes (lo: channels 0..3, hi: 4..7, byte i of a word = channel i) at scale
// exponent k -> 8 BF16 packed in pairs (low half = even channel), the values of
// kv_fp8_decode_bits. Per pair of bytes: a byte permute spreads them to the two 16-bit
// halves; the 7 magnitude bits (e e e e m m m) move to BF16 bits 4..10 (exponent field e,
// mantissa m << 4) and the sign to bit 15, which reads as e4m3 * 2^-120 (a BF16 subnormal
// when e = 0); two exact BF16 multiplies by 2^120 and 2^k give e4m3 * 2^k (2^(120 + k)
// alone overflows BF16 for k > 7; every product is a normal >= 2^-9 * 2^-117 or +-0).
// ~3.5 integer / FMA-pipe instructions a value instead of the scalar form's conversion.
__device__ __forceinline__ uint4 kv_fp8_decode8_bf16(uint2 bytes, int k) {
  const uint32_t unbias = kv_fp8_pow2_bf16x2(120), scale = kv_fp8_pow2_bf16x2(k);
  uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t word = i < 2 ? bytes.x : bytes.y;
    // bytes 2 (i & 1) and 2 (i & 1) + 1 of word -> bits 0..7 and 16..23
    const uint32_t pair = __byte_perm(word, 0u, (i & 1) ? 0x4342u : 0x4140u);
    const uint32_t bits = ((pair << 4) & 0x07f007f0u) | ((pair << 8) & 0x80008000u);
    out[i] = bf16x2_mul(bf16x2_mul(bits, unbias), scale);
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}
#endif

}  // namespace dsv4::cuda::attention

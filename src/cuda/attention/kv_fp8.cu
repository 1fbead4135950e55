// FP8 KV cache writers and the dequantize helper (layout and rounding: kv_fp8.h; CPU
// reference, byte-identical: src/cpu/kv_fp8.cpp). One warp per 512-channel row; lane l
// owns channels [16 l, 16 l + 16): lanes 0..27 the E4M3 part (block b = lanes 4b..4b+3,
// amax reduced over those 4 lanes), lanes 28..31 the BF16 RoPE tail.
//   source rows  [rows, 512]  FP32 (16-byte loads) or BF16 (entries)
//   FP8 rows     [rows, 584]  bytes, 8-byte aligned: 8-byte stores / loads
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "cuda/attention/kv_fp8.h"

namespace dsv4::cuda::attention {

namespace {

constexpr int kWarps = 4;  // rows per CTA
constexpr int kThreads = kWarps * 32;
constexpr int kLaneChannels = 16;
constexpr int kNopeLanes = kKvFp8NopeDim / kLaneChannels;  // 28
static_assert(kKvFp8HeadDim == 32 * kLaneChannels, "one warp covers a row");
static_assert(kKvFp8BlockChannels == 4 * kLaneChannels, "a scale block is 4 lanes (shuffle xor 1, 2)");
static_assert(kKvFp8RowBytes % 8 == 0 && kKvFp8RopeOffset % 8 == 0, "8-byte row accesses");

enum class RowMap : int { kRows = 0, kWindow = 1, kEntries = 2 };

struct WriteArgs {
  const void* source = nullptr;  // [*, 512] FP32 or BF16
  bool source_bf16 = false;
  uint8_t* target = nullptr;     // [*, 584]
  int64_t rows = 0;              // warps to run (tokens for kWindow / kEntries)
  RowMap map = RowMap::kRows;
  int ring_rows = 0, max_entries = 0, rate = 0;
  TokenBatch batch;
};

// The block scale exponent k of kv_fp8.h from amax (finite, >= 0), on the FP32 bits.
__device__ __forceinline__ int scale_exponent(float amax) {
  const uint32_t bits = __float_as_uint(amax);
  const int biased = static_cast<int>(bits >> 23);
  if (biased == 0) return kKvFp8MinScaleExponent;
  const int k = biased - 135 + ((bits & 0x7fffffu) > 0x600000u ? 1 : 0);
  return min(max(k, kKvFp8MinScaleExponent), kKvFp8MaxScaleExponent);
}

__device__ __forceinline__ uint32_t to_e4m3(float x, float inverse_scale) {
  // |x 2^-k| <= 448 for finite x (k from the block amax); +-inf clamps to +-448; NaN -> +0.
  const float y = isnan(x) ? 0.0f : fminf(fmaxf(x * inverse_scale, -448.0f), 448.0f);
  return static_cast<uint32_t>(__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3));
}

// Lane `lane` of a warp holds channels [16 lane, 16 lane + 16) of one row in x; writes
// its part of the 584-byte row at `target`. All 32 lanes must call it (shuffles).
__device__ __forceinline__ void quantize_row_part(const float (&x)[kLaneChannels], uint8_t* target, int lane) {
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kLaneChannels; ++i) amax = fmaxf(amax, isfinite(x[i]) ? fabsf(x[i]) : 0.0f);
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  if (lane < kNopeLanes) {
    const int k = scale_exponent(amax);
    const float inverse_scale = __int_as_float((127 - k) << 23);  // 2^-k, normal
    uint32_t words[4];
#pragma unroll
    for (int w = 0; w < 4; ++w)
      words[w] = to_e4m3(x[4 * w], inverse_scale) | (to_e4m3(x[4 * w + 1], inverse_scale) << 8) |
                 (to_e4m3(x[4 * w + 2], inverse_scale) << 16) | (to_e4m3(x[4 * w + 3], inverse_scale) << 24);
    uint2* out = reinterpret_cast<uint2*>(target + kLaneChannels * lane);
    out[0] = make_uint2(words[0], words[1]);
    out[1] = make_uint2(words[2], words[3]);
    if (lane % 4 == 0) target[kKvFp8ScaleOffset + lane / 4] = static_cast<uint8_t>(k + 127);
    if (lane == 0) target[kKvFp8ScaleOffset + kKvFp8Blocks] = 0;  // pad
  } else {
    uint32_t words[8];
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      const uint32_t lo = __bfloat16_as_ushort(__float2bfloat16_rn(x[2 * w]));
      const uint32_t hi = __bfloat16_as_ushort(__float2bfloat16_rn(x[2 * w + 1]));
      words[w] = lo | (hi << 16);
    }
    uint2* out = reinterpret_cast<uint2*>(target + kKvFp8RopeOffset + 2 * kLaneChannels * (lane - kNopeLanes));
#pragma unroll
    for (int w = 0; w < 4; ++w) out[w] = make_uint2(words[2 * w], words[2 * w + 1]);
  }
}

// grid ceil(rows / kWarps), block kThreads: warp r of the grid writes one row.
__global__ void __launch_bounds__(kThreads) kv_fp8_write_kernel(const WriteArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (r >= a.rows) return;  // whole warps
  int64_t source_row = r, target_row = r;
  if (a.map != RowMap::kRows) {
    const int slot = a.batch.slots[r], position = a.batch.positions[r];
    if (slot < 0 || position < 0) return;
    if (a.map == RowMap::kWindow) {
      target_row = static_cast<int64_t>(slot) * a.ring_rows + position % a.ring_rows;
    } else {
      if ((position + 1) % a.rate != 0) return;
      const int w = (position + 1) / a.rate - 1;
      if (w >= a.max_entries) return;  // compressor_update flags kErrorCompressedEntryOverflow
      source_row = target_row = static_cast<int64_t>(slot) * a.max_entries + w;
    }
  }
  float x[kLaneChannels];
  if (a.source_bf16) {
    const uint4* source = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(a.source) +
                                                         source_row * kKvFp8HeadDim + kLaneChannels * lane);
#pragma unroll
    for (int v = 0; v < 2; ++v) {
      const uint4 packed = source[v];
      const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        x[8 * v + 2 * w] = __uint_as_float(words[w] << 16);
        x[8 * v + 2 * w + 1] = __uint_as_float(words[w] & 0xffff0000u);
      }
    }
  } else {
    const float4* source = reinterpret_cast<const float4*>(static_cast<const float*>(a.source) +
                                                           source_row * kKvFp8HeadDim + kLaneChannels * lane);
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const float4 f = source[v];
      x[4 * v] = f.x, x[4 * v + 1] = f.y, x[4 * v + 2] = f.z, x[4 * v + 3] = f.w;
    }
  }
  quantize_row_part(x, a.target + target_row * kKvFp8RowBytes, lane);
}

// grid ceil(count / kWarps), block kThreads: warp r decodes row r.
__global__ void __launch_bounds__(kThreads)
    kv_fp8_dequantize_kernel(const uint8_t* __restrict__ rows, int64_t count, void* __restrict__ out, bool out_bf16) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (r >= count) return;
  const uint8_t* row = rows + r * kKvFp8RowBytes;
  uint4 bf16[2];  // channels [16 lane, 16 lane + 16) as BF16 pairs
  if (lane < kNopeLanes) {
    const uint2* bytes = reinterpret_cast<const uint2*>(row + kLaneChannels * lane);
    const int k = static_cast<int>(row[kKvFp8ScaleOffset + lane / 4]) - 127;
    bf16[0] = kv_fp8_decode8_bf16(bytes[0], k);
    bf16[1] = kv_fp8_decode8_bf16(bytes[1], k);
  } else {
    const uint2* tail =
        reinterpret_cast<const uint2*>(row + kKvFp8RopeOffset + 2 * kLaneChannels * (lane - kNopeLanes));
    const uint2 t0 = tail[0], t1 = tail[1], t2 = tail[2], t3 = tail[3];
    bf16[0] = make_uint4(t0.x, t0.y, t1.x, t1.y);
    bf16[1] = make_uint4(t2.x, t2.y, t3.x, t3.y);
  }
  if (out_bf16) {
    uint4* target = reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + r * kKvFp8HeadDim + kLaneChannels * lane);
    target[0] = bf16[0];
    target[1] = bf16[1];
    return;
  }
  float4* target = reinterpret_cast<float4*>(static_cast<float*>(out) + r * kKvFp8HeadDim + kLaneChannels * lane);
#pragma unroll
  for (int v = 0; v < 2; ++v) {
    const uint32_t words[4] = {bf16[v].x, bf16[v].y, bf16[v].z, bf16[v].w};
    target[2 * v] = make_float4(__uint_as_float(words[0] << 16), __uint_as_float(words[0] & 0xffff0000u),
                                __uint_as_float(words[1] << 16), __uint_as_float(words[1] & 0xffff0000u));
    target[2 * v + 1] = make_float4(__uint_as_float(words[2] << 16), __uint_as_float(words[2] & 0xffff0000u),
                                    __uint_as_float(words[3] << 16), __uint_as_float(words[3] & 0xffff0000u));
  }
}

cudaError_t launch_write(const WriteArgs& a, cudaStream_t stream) {
  if (a.rows <= 0) return cudaSuccess;
  const int64_t blocks = (a.rows + kWarps - 1) / kWarps;
  kv_fp8_write_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

namespace detail {

cudaError_t launch_kv_fp8_write_window(const float* kv, uint8_t* window_fp8, int ring_rows, const TokenBatch& batch,
                                       cudaStream_t stream) {
  WriteArgs a;
  a.source = kv;
  a.target = window_fp8;
  a.rows = batch.tokens;
  a.map = RowMap::kWindow;
  a.ring_rows = ring_rows;
  a.batch = batch;
  return launch_write(a, stream);
}

cudaError_t launch_kv_fp8_write_entries(const void* source, bool source_bf16, uint8_t* entries_fp8, int max_entries,
                                        int rate, const TokenBatch& batch, cudaStream_t stream) {
  WriteArgs a;
  a.source = source;
  a.source_bf16 = source_bf16;
  a.target = entries_fp8;
  a.rows = batch.tokens;
  a.map = RowMap::kEntries;
  a.max_entries = max_entries;
  a.rate = rate;
  a.batch = batch;
  return launch_write(a, stream);
}

cudaError_t launch_kv_fp8_quantize_rows(const float* rows, int64_t count, uint8_t* out, cudaStream_t stream) {
  WriteArgs a;
  a.source = rows;
  a.target = out;
  a.rows = count;
  return launch_write(a, stream);
}

cudaError_t launch_kv_fp8_dequantize_rows(const uint8_t* rows, int64_t count, void* out, bool out_bf16,
                                          cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  const int64_t blocks = (count + kWarps - 1) / kWarps;
  kv_fp8_dequantize_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(rows, count, out, out_bf16);
  return cudaGetLastError();
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

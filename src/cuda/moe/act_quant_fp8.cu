// Activation quantizer for the W4A8 GEMMs (TileConfig::kPrefillW4A8): BF16 x [rows, k] ->
// E4M3 x8 [rows, k] + FP32 scale [rows, k / 128], one scale per 1 x 128 block:
//   amax = max |x| over the block, scale = amax / 448, q = E4M3_rn_satfinite(x * (448 / amax))
//   (amax == 0: scale 0, q 0), so x ~= q * scale.
// K order: inside every 32-block the bytes are stored in the packed-weight fragment order
// (grouped_gemm_w4a8.cuh): logical position 16 h + 4 t + i holds physical column
// 16 h + {2t, 2t+1, 8+2t, 9+2t}[i] (h = 0, 1; t, i = 0..3). One warp per (row, 128-block):
// lane l writes logical bytes 4l .. 4l + 3.
// Options for kPrefillW4A8WsTma (TMA reads whole row blocks): gather (output row r = x row
// gather[r], L1's slot order) and scale_stride (scales transposed, [k / 128][scale_stride]).
// Same values either way: only where they are stored changes.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe {

namespace {

__global__ void __launch_bounds__(256) act_quant_fp8_kernel(const ActQuantParams p) {
  const int k = p.k, blocks_per_row = k / 128;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;  // (row, block)
  if (item >= static_cast<int64_t>(p.rows) * blocks_per_row) return;
  const int lane = threadIdx.x & 31;
  const int64_t row = item / blocks_per_row;
  const int blk = static_cast<int>(item % blocks_per_row);
  int64_t src_row = row;
  if (p.gather != nullptr) {
    const int32_t g = p.gather[row];
    if (g < 0 || g >= p.x_rows) {  // a corrupt slot map: flag it, write zeros (not a wild read)
      if (lane == 0 && p.error_flag != nullptr) atomicExch(p.error_flag, 1);
      *reinterpret_cast<uint32_t*>(p.x8 + row * k + blk * 128 + lane * 4) = 0u;
      if (lane == 0) p.scale[p.scale_stride > 0 ? blk * static_cast<int64_t>(p.scale_stride) + row
                                                : row * blocks_per_row + blk] = 0.0f;
      return;
    }
    src_row = g;
  }
  const int b32 = lane / 8, q = lane % 8, h = q / 4, t = q % 4;
  const int64_t base = src_row * k + blk * 128 + b32 * 32 + 16 * h + 2 * t;  // physical columns base, base + 8 (pairs)
  const uint32_t p0 = *reinterpret_cast<const uint32_t*>(p.x + base);
  const uint32_t p1 = *reinterpret_cast<const uint32_t*>(p.x + base + 8);
  const float v[4] = {__uint_as_float(p0 << 16), __uint_as_float(p0 & 0xFFFF0000u), __uint_as_float(p1 << 16),
                      __uint_as_float(p1 & 0xFFFF0000u)};
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, o));
  const float inv = amax > 0.0f ? __fdiv_rn(448.0f, amax) : 0.0f;
  const __nv_fp8x2_storage_t lo = __nv_cvt_float2_to_fp8x2(make_float2(v[0] * inv, v[1] * inv), __NV_SATFINITE, __NV_E4M3);
  const __nv_fp8x2_storage_t hi = __nv_cvt_float2_to_fp8x2(make_float2(v[2] * inv, v[3] * inv), __NV_SATFINITE, __NV_E4M3);
  *reinterpret_cast<uint32_t*>(p.x8 + row * k + blk * 128 + lane * 4) =
      static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  if (lane == 0)
    p.scale[p.scale_stride > 0 ? blk * static_cast<int64_t>(p.scale_stride) + row : row * blocks_per_row + blk] =
        __fdiv_rn(amax, 448.0f);
}

}  // namespace

cudaError_t launch_act_quant_fp8(const ActQuantParams& p) {
  if (p.rows < 0 || p.k <= 0 || p.k % 128 != 0) return cudaErrorInvalidValue;  // k % 128 == 0
  if (p.rows > 0 && (p.x == nullptr || p.x8 == nullptr || p.scale == nullptr)) return cudaErrorInvalidValue;
  if (p.scale_stride < 0 || (p.scale_stride > 0 && (p.scale_stride < p.rows || p.scale_stride % 4 != 0)))
    return cudaErrorInvalidValue;  // transposed scales: stride >= rows, % 4
  if (p.gather != nullptr && p.x_rows <= 0) return cudaErrorInvalidValue;  // gather needs the row count of x
  const int64_t items = static_cast<int64_t>(p.rows) * (p.k / 128);
  if (items == 0) return cudaSuccess;
  const int64_t blocks = (items + 7) / 8;
  if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;
  act_quant_fp8_kernel<<<static_cast<unsigned>(blocks), 256, 0, p.stream>>>(p);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe

// Few-token BF16-weight GEMV with FP32 activations (launcher: detail::launch_small_gemv;
// caller: linear.cpp). Decode-sized linears are weight-bound: this streams every weight
// byte once with 16-byte non-allocating loads spread over all SMs, reads x in FP32
// straight from global memory (L1-resident: no conversion launch, no split parts, no
// stacked-parts add), and accumulates in FP32.
//
// Several weights on the same x (segments: wq_a and wkv, shared w1 and w3) run as one
// launch: their rows are laid end to end, each padded to whole row sets.
// Layout: a warp owns kRows consecutive weight rows (a "row set") and a slice of the
// columns; `slices` warps of a block share one row set and split its columns (chunk j of
// 8 columns goes to warp (j / 32) % slices, lane j % 32: every warp reads 512 contiguous
// bytes of each row per step). Each thread keeps acc[kRows][T] in registers; a butterfly
// warp sum, then the block sums its `slices` warps in warp order (fixed order:
// deterministic, the same bits from run to run).
#include <cuda_bf16.h>

#include "cuda/ops/kernels.h"

namespace dsv4::cuda::ops::detail {

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32, kRows = kSmallGemvRowsPerWarp;

// Chunks of weight loads in flight per row and thread: 4 where the accumulators are few.
__host__ __device__ constexpr int small_gemv_unroll(int t) { return t <= 2 ? 4 : 2; }

__device__ __forceinline__ uint4 load_stream(const uint16_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// x[0..7] = the 8 FP32 activations of one chunk (vector loads when aligned).
__device__ __forceinline__ void load_x8(const float* p, bool vec, float* x) {
  if (vec) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = __ldg(p + i);
  }
}

// acc[r][t] += sum_i w[r][i] x_t[i] over one chunk (w: 8 BF16 in a uint4, element 2i in
// the low half of word i).
template <int T>
__device__ __forceinline__ void chunk_fma(const uint4 (&w)[kRows], const float* x_row0, int64_t x_stride,
                                          int tokens, bool vec, float (&acc)[kRows][T]) {
#pragma unroll
  for (int t = 0; t < T; ++t) {
    float x[8];
    if (t < tokens) {
      load_x8(x_row0 + t * x_stride, vec, x);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) x[i] = 0.0f;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const uint32_t words[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        acc[r][t] = fmaf(__uint_as_float(words[i] << 16), x[2 * i], acc[r][t]);
        acc[r][t] = fmaf(__uint_as_float(words[i] & 0xffff0000u), x[2 * i + 1], acc[r][t]);
      }
    }
  }
}

// Segment of virtual row v (segments laid end to end, each padded to whole row sets) and
// the row within it.
struct SegmentRow {
  const SmallGemvSegment* seg;
  int64_t row;
};
__device__ __forceinline__ SegmentRow find_segment(const SmallGemvParams& p, int64_t v) {
  int64_t begin = 0;
  int s = 0;
  for (; s + 1 < p.segments; ++s) {
    const int64_t padded = (p.seg[s].rows + kRows - 1) / kRows * kRows;
    if (v < begin + padded) break;
    begin += padded;
  }
  return {&p.seg[s], v - begin};
}

template <int T>
__global__ void __launch_bounds__(kThreads, 2) small_gemv_kernel(SmallGemvParams p, int slices) {
  __shared__ float partial[kWarps][kRows * T];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sets_per_block = kWarps / slices;
  const int set_in_block = warp / slices, slice = warp % slices;
  const SegmentRow at = find_segment(p, (static_cast<int64_t>(blockIdx.x) * sets_per_block + set_in_block) * kRows);
  const int64_t row0 = at.row;
  const SmallGemvSegment seg = *at.seg;
  const int chunks = p.k / 8;
  float acc[kRows][T];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int t = 0; t < T; ++t) acc[r][t] = 0.0f;

  if (row0 < seg.rows) {
    const uint16_t* wrow[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + r < seg.rows ? row0 + r : seg.rows - 1;  // tail rows: load a valid row, drop it
      wrow[r] = seg.w + row * p.k;
    }
    // Every row of the set is in the same group (the caller checks group_rows % kRows == 0).
    const float* x = p.x + (row0 / p.group_rows) * p.group_x_offset;
    const bool vec = p.x_vec4;
    const int step = 32 * slices;
    constexpr int U = small_gemv_unroll(T);
    int j = slice * 32 + lane;
    // U chunks of loads in flight per row before the math (latency hiding).
    for (; j + (U - 1) * step < chunks; j += U * step) {
      uint4 w[U][kRows];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < kRows; ++r) w[u][r] = load_stream(wrow[r] + static_cast<int64_t>(j + u * step) * 8);
#pragma unroll
      for (int u = 0; u < U; ++u) chunk_fma<T>(w[u], x + static_cast<int64_t>(j + u * step) * 8, p.x_stride, p.tokens, vec, acc);
    }
    // Tail (< U chunks left for this lane): every load issued before the math.
    uint4 w[U - 1][kRows];
#pragma unroll
    for (int u = 0; u < U - 1; ++u)
      if (j + u * step < chunks)
#pragma unroll
        for (int r = 0; r < kRows; ++r) w[u][r] = load_stream(wrow[r] + static_cast<int64_t>(j + u * step) * 8);
#pragma unroll
    for (int u = 0; u < U - 1; ++u)
      if (j + u * step < chunks) chunk_fma<T>(w[u], x + static_cast<int64_t>(j + u * step) * 8, p.x_stride, p.tokens, vec, acc);
  }
  // Butterfly sum over the warp's lanes (every lane ends with the same total).
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float v = acc[r][t];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
      acc[r][t] = v;
    }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int t = 0; t < T; ++t) partial[warp][r * T + t] = acc[r][t];
  }
  __syncthreads();
  // Thread i < sets_per_block x kRows x T: set i / (kRows T), output (r, t); sums the
  // set's slices in warp order.
  const int per_set = kRows * T;
  const int i = threadIdx.x;
  if (i < sets_per_block * per_set) {
    const int set = i / per_set, rt = i % per_set, r = rt / T, t = rt % T;
    const SegmentRow out = find_segment(p, (static_cast<int64_t>(blockIdx.x) * sets_per_block + set) * kRows);
    const int64_t row = out.row + r;
    if (row < out.seg->rows && t < p.tokens) {
      float s = partial[set * slices][rt];
      for (int w = 1; w < slices; ++w) s += partial[set * slices + w][rt];
      float* dst = out.seg->y + t * out.seg->y_stride + row;
      *dst = p.accumulate ? *dst + s : s;
    }
  }
}

}  // namespace

bool small_gemv_supported(const SmallGemvParams& p) {
  if (!(p.tokens >= 1 && p.tokens <= kSmallGemvMaxTokens && p.k >= 8 && p.k % 8 == 0 && p.group_rows >= 1 &&
        p.group_rows % kRows == 0 && p.x != nullptr && p.x_stride >= p.k && p.segments >= 1 &&
        p.segments <= kSmallGemvMaxSegments))
    return false;
  for (int s = 0; s < p.segments; ++s) {
    const SmallGemvSegment& g = p.seg[s];
    if (g.rows < 1 || g.w == nullptr || (reinterpret_cast<uintptr_t>(g.w) % 16) != 0 || g.y == nullptr ||
        g.y_stride < g.rows)
      return false;
  }
  return true;
}

int64_t small_gemv_virtual_rows(const SmallGemvParams& p) {
  int64_t rows = 0;
  for (int s = 0; s < p.segments; ++s) rows += (p.seg[s].rows + kRows - 1) / kRows * kRows;
  return rows;
}

int small_gemv_slices(int k, int64_t rows) {
  // The fewest warps per row set that still give >= 2 waves of blocks (2 x 132 SMs on an
  // H200): fewer slices = longer per-lane runs (more loads in flight, no cross-warp sum);
  // too few blocks for that: the most slices that give every lane a chunk.
  constexpr int64_t kEnoughBlocks = 264;
  const int chunks = k / 8;
  int slices = 1;
  while (slices < kWarps && slices * 2 * 32 <= chunks) {
    const int64_t rows_per_block = static_cast<int64_t>(kWarps / slices) * kRows;
    if ((rows + rows_per_block - 1) / rows_per_block >= kEnoughBlocks) break;
    slices *= 2;
  }
  return slices;
}

cudaError_t launch_small_gemv(const SmallGemvParams& params, cudaStream_t stream) {
  if (!small_gemv_supported(params)) return cudaErrorInvalidValue;
  SmallGemvParams p = params;
  p.x_vec4 = p.x_stride % 4 == 0 && (reinterpret_cast<uintptr_t>(p.x) % 16) == 0 &&
             (p.group_x_offset % 4) == 0;
  const int64_t virtual_rows = small_gemv_virtual_rows(p);
  const int slices = small_gemv_slices(p.k, virtual_rows);
  const int64_t rows_per_block = static_cast<int64_t>(kWarps / slices) * kRows;
  const int64_t blocks = (virtual_rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(blocks));
  if (p.tokens == 1)
    small_gemv_kernel<1><<<grid, kThreads, 0, stream>>>(p, slices);
  else if (p.tokens == 2)
    small_gemv_kernel<2><<<grid, kThreads, 0, stream>>>(p, slices);
  else if (p.tokens <= 4)
    small_gemv_kernel<4><<<grid, kThreads, 0, stream>>>(p, slices);
  else
    small_gemv_kernel<8><<<grid, kThreads, 0, stream>>>(p, slices);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

// Device helpers shared by the wgmma sparse-attention kernels (sparse_attention_wgmma.cu,
// and through sparse_attention_ring.cuh sparse_attention_pipelined.cu and
// sparse_attention_pingpong.cu; sparse_attention_localp.cu): the CTA's 64 heads x head_dim
// 512, the wgmma wrappers (S: m64n64k16 SS; P V: m64n256k16 with A from shared memory or
// from registers, B MN-major), shared-memory descriptors and fences, the
// 128-byte-swizzled panel addressing of a [rows x 512] BF16 tile (8 column blocks of 64
// channels, 128 bytes a row), BF16 packing, the key row lookup (a query token's key list:
// key_list.cuh) and the output epilogue (final O / l with the sink, or a split's partials
// for the merge); host side, where a launch puts the split partials (split_partials).
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/key_list.cuh"
#include "cuda/common/bf16x2.cuh"
#include "cuda/common/wgmma_sync.cuh"

namespace dsv4::cuda::attention::sparse_wgmma {

inline constexpr int kBlockBytes = 64 * 128;  // one 64-channel column block of 64 rows
inline constexpr int kHeads = 64;              // heads per CTA = wgmma M
inline constexpr int kDim = 512;               // head_dim of the fast path
inline constexpr float kLog2e = 1.4426950408889634f;

// D[64 x 256] += A[64 x 16] B[16 x 256], A from shared memory (K-major), B MN-major.
__device__ __forceinline__ void wgmma_m64n256k16_ss_tb(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

// D[64 x 64] (+)= A[64 x 16] B[16 x 64], A and B from shared memory (descriptors), both K-major.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// D[64 x 256] += A[64 x 16] B[16 x 256], A from registers (the accumulator-shaped
// fragment a[4]), B from shared memory, MN-major (imm-trans-b = 1).
__device__ __forceinline__ void wgmma_m64n256k16_rs_tb(float (&d)[128], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

// smem_u32, make_desc, the wgmma fence / commit / wait, fence_proxy_async and fence_regs:
// cuda/common/wgmma_sync.cuh.

// 16-byte cp.async; src_bytes 0 zero-fills the destination (skipped key).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

// Byte offset of (row, 16-byte chunk c of 64 per row) in a swizzled panel.
__device__ __forceinline__ uint32_t panel_offset(int row, int c) {
  return (c >> 3) * kBlockBytes + row * 128 + (((c & 7) ^ (row & 7)) << 4);
}

__device__ __forceinline__ void st_shared_u32(uint32_t address, uint32_t value) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(address), "r"(value) : "memory");
}

// Accumulator rows (m64nNk16): the 4 lanes of a quad hold one row's columns. Max / sum
// over the quad, same order in every kernel.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// O *= alpha per row of this thread's 128-column O fragment (o[4 j + 0/1]: row0,
// o[4 j + 2/3]: row0 + 8).
__device__ __forceinline__ void rescale_o(float (&o)[128], const float (&alpha)[2]) {
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    o[4 * j + 0] *= alpha[0];
    o[4 * j + 1] *= alpha[0];
    o[4 * j + 2] *= alpha[1];
    o[4 * j + 3] *= alpha[1];
  }
}

// Online softmax on a thread's S fragment, in the exp2 domain (S scaled by
// scale * log2(e)); s[4 j + 2 h + e]: row row0 + 8 h, key 8 j + 2 q + e (q = lane % 4) of
// the keys whose flags start at valid.
// Scales s, masks keys with a false flag to -inf and returns in tile_max each row's
// maximum over this thread's keys (quad_max completes it).
template <int N>
__device__ __forceinline__ void scale_mask_max(float (&s)[N], const bool* valid, int q, float scale_log2,
                                               float (&tile_max)[2]) {
  tile_max[0] = -INFINITY;
  tile_max[1] = -INFINITY;
#pragma unroll
  for (int j = 0; j < N / 4; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const bool key_valid = valid[8 * j + 2 * q + e];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float& x = s[4 * j + 2 * h + e];
        x = key_valid ? x * scale_log2 : -INFINITY;
        tile_max[h] = fmaxf(tile_max[h], x);
      }
    }
}
// A row's running max m becomes m_new. Returns alpha = exp2(m - m_use), the factor of O
// and l; m_use, what the weights subtract: m_new, or 0 while the row has no key
// (m_new = -inf: every weight and alpha are 0).
__device__ __forceinline__ float advance_max(float& m, float m_new, float& m_use) {
  m_use = m_new == -INFINITY ? 0.0f : m_new;
  const float alpha = exp2f(m - m_use);
  m = m_new;
  return alpha;
}
// The weights of two adjacent keys of a row rounded to BF16 (packed, low half = s0's),
// their sum added to row_sum: the denominator sums the rounded weights the numerator uses.
__device__ __forceinline__ uint32_t softmax_pair(float s0, float s1, float m_use, float& row_sum) {
  const float p0 = exp2f(s0 - m_use), p1 = exp2f(s1 - m_use);
  const uint32_t packed = pack_bf16(p0, p1);
  const __nv_bfloat162 r = *reinterpret_cast<const __nv_bfloat162*>(&packed);
  row_sum += __low2float(r) + __high2float(r);
  return packed;
}

// Row of key k in window_kv or entries (w: its compressed-list entry from fetch_picks),
// or nullptr when skipped (past the list, a -1 / out-of-range pick).
__device__ __forceinline__ const uint16_t* key_row(const SparseAttentionParams& p, const KeyList& keys, int k, int w) {
  if (k >= keys.n_total) return nullptr;
  if (k < keys.n_window) {
    const int row = (keys.first_window + k) % p.ring_rows;
    return p.window_kv + (static_cast<int64_t>(keys.slot) * p.ring_rows + row) * kDim;
  }
  if (w < 0 || w >= keys.visible) return nullptr;
  return p.entries + (static_cast<int64_t>(keys.slot) * p.max_entries + w) * kDim;
}

// Programmatic dependent launch (PDL) of the split-KV merge: the attention kernels allow
// their dependents to be scheduled as soon as every CTA has started (a no-op unless the next
// launch carries cudaLaunchAttributeProgrammaticStreamSerialization); the merge waits for the
// whole attention grid and its memory before it reads a partial. Dependents launch only once
// every CTA of this grid has issued the instruction (or exited), so they never take an SM a
// not-yet-started CTA of this grid needs.
__device__ __forceinline__ void allow_dependent_launch() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
__device__ __forceinline__ void wait_for_prerequisite_grids() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }


// Consumer epilogue: this thread's O fragment (columns [256 wg, 256 wg + 256) of rows
// row0, row0 + 8: o[4 j + 2 h + 0/1] at column 8 j + 2 (lane % 4) + 0/1), its rows'
// running max m (log2 domain) and full row sums l (every key of the range). part_o
// nullptr: out = O / l with the sink in the denominator; else the split's unnormalised O
// and (m, l) for the merge (rows of a split without keys write no O). wg, lane, row0:
// the thread's warpgroup, lane and first row as the caller already holds them
// (sparse_attention_wgmma.cu); store_output below recomputes them (the ring kernels).
__device__ __forceinline__ void store_output_rows(const SparseAttentionParams& p, int token, int head0, int split,
                                                  float* part_o, float* part_ml, const float (&o)[128],
                                                  const float (&m)[2], const float (&l)[2], int wg, int lane,
                                                  int row0) {
  const int col0 = wg * 256 + 2 * (lane & 3);
  if (part_o == nullptr) {
    // Final: the sink joins the denominator only.
    float factor[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int head = head0 + row0 + 8 * h;
      const float sink = p.sinks != nullptr ? p.sinks[head] * kLog2e : -INFINITY;
      const float m_final = fmaxf(m[h], sink);
      const float rescale = m[h] == -INFINITY ? 0.0f : exp2f(m[h] - m_final);
      const float denominator = l[h] * rescale + (sink == -INFINITY ? 0.0f : exp2f(sink - m_final));
      factor[h] = denominator > 0.0f ? rescale / denominator : 0.0f;
    }
    // FP32 stores (8 bytes a lane: a quad writes one 32-byte sector per row and j) or BF16
    // ones (SparseAttentionParams::out_bf16).
    auto value = [&](int j, int h) {
      return make_float2(o[4 * j + 2 * h] * factor[h], o[4 * j + 2 * h + 1] * factor[h]);
    };
    const int64_t row_base = (static_cast<int64_t>(token) * p.heads + head0 + row0) * kDim + wg * 256;
    if (p.out_bf16 == nullptr) {
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < 32; ++j)
          *reinterpret_cast<float2*>(p.out + row_base + static_cast<int64_t>(8 * h) * kDim + 8 * j + 2 * (lane & 3)) =
              value(j, h);
    } else {
      // BF16: per row h and block of 4 j, lane t of the quad holds the words (pairs) of
      // columns 8 j + 2 t (j = 4 b .. 4 b + 3); a 4 x 4 transpose across the quad (two
      // butterfly steps through __shfl_xor_sync, on lane bits 1 then 0) gives lane t the
      // four words of j = 4 b + t, i.e. 8 contiguous columns: one 16-byte store, a quad
      // covering 64 contiguous bytes (instead of 4-byte stores into half sectors).
      const int t = lane & 3;
      const bool hi1 = (t & 2) != 0, hi0 = (t & 1) != 0;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int b = 0; b < 8; ++b) {
          uint32_t x[4];
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            const float2 v = value(4 * b + jj, h);
            x[jj] = pack_bf16(v.x, v.y);
          }
          // Step 1 (xor 2): swap lane bit 1 with word-index bit 1.
          const uint32_t s0 = __shfl_xor_sync(0xffffffffu, hi1 ? x[0] : x[2], 2);
          const uint32_t s1 = __shfl_xor_sync(0xffffffffu, hi1 ? x[1] : x[3], 2);
          if (hi1) x[0] = s0, x[1] = s1;
          else x[2] = s0, x[3] = s1;
          // Step 2 (xor 1): swap lane bit 0 with word-index bit 0.
          const uint32_t r0 = __shfl_xor_sync(0xffffffffu, hi0 ? x[0] : x[1], 1);
          const uint32_t r1 = __shfl_xor_sync(0xffffffffu, hi0 ? x[2] : x[3], 1);
          if (hi0) x[0] = r0, x[2] = r1;
          else x[1] = r0, x[3] = r1;
          *reinterpret_cast<uint4*>(p.out_bf16 + row_base + static_cast<int64_t>(8 * h) * kDim + 8 * (4 * b + t)) =
              make_uint4(x[0], x[1], x[2], x[3]);
        }
      }
    }
  } else {
    // Partial: [splits, tokens, heads, 512] unnormalised O, [splits, tokens, heads, 2] (m, l).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = (static_cast<int64_t>(split) * p.batch.tokens + token) * p.heads + head0 + row0 + 8 * h;
      float* out = part_o + row * kDim + col0;
      if (m[h] != -INFINITY) {  // the merge skips a split without keys for this row (no O read)
#pragma unroll
        for (int j = 0; j < 32; ++j)
          *reinterpret_cast<float2*>(out + 8 * j) = make_float2(o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
      }
      if (wg == 0 && (lane & 3) == 0) *reinterpret_cast<float2*>(part_ml + row * 2) = make_float2(m[h], l[h]);
    }
  }
}

// store_output_rows for the thread's own (wg, lane, row0), from threadIdx (the ring kernels).
__device__ __forceinline__ void store_output(const SparseAttentionParams& p, int token, int head0, int split,
                                             float* part_o, float* part_ml, const float (&o)[128],
                                             const float (&m)[2], const float (&l)[2]) {
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int row0 = warp * 16 + (lane >> 2);
  store_output_rows(p, token, head0, split, part_o, part_ml, o, m, l, wg, lane, row0);
}

// Host side, every wgmma launch: the split-KV partials of `splits` key ranges in
// p.split_workspace, [splits, tokens, heads, 512] unnormalised O then [splits, tokens,
// heads, 2] (m, l); both nullptr for one range (the kernel writes p.out itself).
struct SplitPartials {
  float* o = nullptr;
  float* ml = nullptr;
};
inline SplitPartials split_partials(const SparseAttentionParams& p, int splits) {
  SplitPartials parts;
  if (splits > 1) {
    parts.o = p.split_workspace;
    parts.ml = parts.o + static_cast<int64_t>(splits) * p.batch.tokens * p.heads * kDim;
  }
  return parts;
}

}  // namespace dsv4::cuda::attention::sparse_wgmma

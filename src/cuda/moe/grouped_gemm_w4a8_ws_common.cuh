// Device pieces shared by the two warp-specialised W4A8 kernels, kPrefillW4A8Ws
// (grouped_gemm_w4a8_ws.cu: the consumers convert the weights in registers) and
// kPrefillW4A8WsSS (grouped_gemm_w4a8_ws_ss.cu: the producer converts them into shared
// memory). Both use the same tiles (128 weight rows x 256 slots, K 128 per stage), the same
// row reference (w4a8_row_ref), the same B ring layout, activation-scale layout and row table,
// and the same mbarrier ring protocol; what differs is where A comes from. Included by those
// two translation units only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/mbarrier.cuh"
#include "cuda/moe/moe.h"

// The 64 FP32 accumulator operands of one m64n128 wgmma: DSV4_WS_ACC64(c) applies the
// constraint macro c to d[0..63]; DSV4_WS_REGS64 is the matching PTX operand list %0..%63.
#define DSV4_WS_ACC64(c) c(d[0]), c(d[1]), c(d[2]), c(d[3]), c(d[4]), c(d[5]), c(d[6]), c(d[7]), c(d[8]), c(d[9]), c(d[10]), c(d[11]), c(d[12]), c(d[13]), c(d[14]), c(d[15]), c(d[16]), c(d[17]), c(d[18]), c(d[19]), c(d[20]), c(d[21]), c(d[22]), c(d[23]), c(d[24]), c(d[25]), c(d[26]), c(d[27]), c(d[28]), c(d[29]), c(d[30]), c(d[31]), c(d[32]), c(d[33]), c(d[34]), c(d[35]), c(d[36]), c(d[37]), c(d[38]), c(d[39]), c(d[40]), c(d[41]), c(d[42]), c(d[43]), c(d[44]), c(d[45]), c(d[46]), c(d[47]), c(d[48]), c(d[49]), c(d[50]), c(d[51]), c(d[52]), c(d[53]), c(d[54]), c(d[55]), c(d[56]), c(d[57]), c(d[58]), c(d[59]), c(d[60]), c(d[61]), c(d[62]), c(d[63])
#define DSV4_WS_REGS64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"

namespace dsv4::cuda::moe::detail {

inline constexpr int kWsRefBias = 6;  // d = kc - row_ref + 6: 6 * 2^6 = 384 <= 448, 6 * 2^7 is not

// ---- shared-memory and cp.async primitives (addresses are shared-window u32) -------------
__device__ __forceinline__ uint4 ws_lds128(uint32_t a) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ uint2 ws_lds64(uint32_t a) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t ws_lds32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ void ws_sts32(uint32_t a, int v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory");
}
__device__ __forceinline__ void ws_sts128(uint32_t a, uint32_t x, uint32_t y, uint32_t z, uint32_t w) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
}
__device__ __forceinline__ void ws_cp16(uint32_t smem, const void* gmem, int src_size) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_size) : "memory");
}
// .ca (L1-allocating): for copies whose 16-byte pieces share sectors with the same thread's
// other copies (kPrefillW4A8WsSS's raw weights).
__device__ __forceinline__ void ws_cp16_ca(uint32_t smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem) : "memory");
}
__device__ __forceinline__ void ws_cp4(uint32_t smem, const void* gmem, int src_size) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_size) : "memory");
}
__device__ __forceinline__ void ws_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void ws_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Named barrier 1 over the 256 consumer threads, 2 over the 128 producer threads.
__device__ __forceinline__ void ws_consumer_bar() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }
__device__ __forceinline__ void ws_producer_bar() { asm volatile("bar.sync 2, 128;\n" ::: "memory"); }

// ---- the weight conversion's per-row constants --------------------------------------------
// f16x2 factor 2^(14 + d) for the cvt table (d < -5 only; clamped to >= -24, where every
// product rounds to E4M3 0 anyway).
__device__ __forceinline__ uint32_t ws_cvt_factor(int d) {
  d = d < -24 ? -24 : d;
  const uint32_t bits = static_cast<uint32_t>(29 + d) << 10;
  return bits | (bits << 16);
}
// The table bases of w4a8_lut_fast folded with a row's reference: lo = kc * 0x08080800 +
// base_lo = 0x3C383000 + 8 d per nonzero byte, d = kc - ref + kWsRefBias (hi likewise).
__device__ __forceinline__ void ws_table_bases(int ref, uint32_t& base_lo, uint32_t& base_hi) {
  const uint32_t shift = static_cast<uint32_t>(ref - kWsRefBias);
  base_lo = 0x3C383000u - shift * 0x08080800u;
  base_hi = 0x4C484440u - shift * 0x08080808u;
}
// The row factor 2^(ref - 259) the epilogue applies (0 when it is below FP32's normal range).
__device__ __forceinline__ float ws_row_factor(int ref) {
  return ref > 132 ? __uint_as_float(static_cast<uint32_t>(ref - 132) << 23) : 0.0f;
}

// ---- the row table: [256] u32, byte offset row * K of slot r's act8 row at r % 16 * 16 + r / 16
__device__ __forceinline__ int ws_row_table_index(int r) { return (r % 16) * 16 + r / 16; }
// Producer thread pt of kProducerThreads writes its entries (L1: the slot's token row; L2: the
// slot; 0 past the tile). The caller runs ws_producer_bar before any thread reads the table.
template <bool kL1, int kSlots, int kProducerThreads>
__device__ __forceinline__ void ws_write_row_table(const GroupedGemmParams& p, uint32_t row_table, int pt, int slot0,
                                                   int rows) {
#pragma unroll
  for (int r = pt; r < kSlots; r += kProducerThreads) {
    const int row = r < rows ? (kL1 ? p.slot_token[slot0 + r] : slot0 + r) : 0;
    ws_sts32(row_table + ws_row_table_index(r) * 4,
             static_cast<int>(static_cast<uint32_t>(row) * static_cast<uint32_t>(p.k)));
  }
}
// One stage of B by producer thread (b_r0 = pt / 8): chunk pt % 8 of slot rows b_r0 + 16 i
// (i < 16), destinations 2 KB apart from bd; rows at i >= b_valid are zero-filled (src-size 0).
__device__ __forceinline__ void ws_copy_b_stage(uint32_t row_table, int b_r0, uint32_t bd, const uint8_t* bs,
                                                int b_valid) {
#pragma unroll
  for (int i4 = 0; i4 < 4; ++i4) {
    const uint4 r4 = ws_lds128(row_table + (b_r0 * 16 + 4 * i4) * 4);
    const uint32_t off[4] = {r4.x, r4.y, r4.z, r4.w};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int i = 4 * i4 + u;
      ws_cp16(bd + i * 2048, bs + off[u], i < b_valid ? 16 : 0);
    }
  }
}

// ---- the launchers' contract ----------------------------------------------------------------
// Host: the contract both launchers check (MXFP4 only; act8 / act_scale from
// launch_act_quant_fp8, w4a8_row_ref from launch_w4a8_row_ref; n % bw, k % bk; max_tiles on
// grid.y). cudaErrorInvalidValue, or cudaSuccess with *launch false when there is no tile.
inline cudaError_t w4a8_ws_check(const GroupedGemmParams& p, int bw, int bk, bool* launch) {
  *launch = false;
  if (p.format != ExpertFormat::kMXFP4 || p.act8 == nullptr || p.act_scale == nullptr || p.w4a8_row_ref == nullptr)
    return cudaErrorInvalidValue;
  if (p.n % bw != 0 || p.k % bk != 0 || p.n <= 0 || p.k <= 0) return cudaErrorInvalidValue;
  if (p.max_tiles <= 0) return cudaSuccess;
  if (p.max_tiles > 65535) return cudaErrorInvalidValue;  // grid.y
  *launch = true;
  return cudaSuccess;
}
}  // namespace dsv4::cuda::moe::detail

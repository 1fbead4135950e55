// TMA and bulk-copy issue (sm_90): global -> shared copies that complete on an mbarrier's
// transaction count (the barrier's phase needs its arrivals AND the bytes announced by
// mbar_arrive_expect_tx). Addresses are shared-window u32 (smem_u32); tensor maps are
// __grid_constant__ kernel parameters (tensor_map.h encodes them on the host).
#pragma once

#include <cuda.h>

#include <cstdint>

namespace dsv4::cuda {

// One arrival that also announces `bytes` more to come on this phase (release, CTA scope).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// `bytes` (% 16, both addresses 16-byte aligned) contiguous bytes global -> shared.
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
// The box of `map` at element coordinates (c0 inner, c1 outer) -> shared (layout and swizzle
// as encoded; out-of-range elements are zero-filled and still count toward the bytes).
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

}  // namespace dsv4::cuda

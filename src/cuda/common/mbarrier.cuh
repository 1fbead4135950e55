// Shared-memory mbarrier plumbing for warp-specialised kernels (sm_90): init, arrivals
// (ordinary and cp.async-tracking), and bounded parity waits. Addresses are shared-window
// addresses (smem_u32). Used by the MoE W4A8 producer kernel and the attention ring
// (sparse_attention_ring.cuh, hence the ring kernels and kWgmmaLocalP); the MoE TMA kernel
// keeps its own (other instruction forms: .release / .acquire, expect_tx).
#pragma once
#include <cstdint>

namespace dsv4::cuda {

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the other threads (and the async proxy);
// follow with a CTA barrier.
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// A ring of `stages` full / empty barrier pairs (full[s] at full0 + 8 s, empty[s] at empty0 +
// 8 s): thread 0 initialises them and fences; follow with a CTA barrier.
__device__ __forceinline__ void mbar_init_ring(uint32_t full0, uint32_t empty0, int stages, int full_count,
                                               int empty_count) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(full0 + s * 8, full_count);
      mbar_init(empty0 + s * 8, empty_count);
    }
    mbar_init_fence();
  }
}
// One arrival (release semantics at CTA scope).
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
// One arrival once all of this thread's earlier cp.async copies have landed (.noinc: it
// counts against the barrier's init count).
__device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
// Waits until the phase of parity `parity` has completed; traps after 2^32 SM clocks
// (~2 s: a lost arrival becomes a launch error, not a hung process).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  if (mbar_try_wait(bar, parity)) return;
  const long long start = clock64();
  while (!mbar_try_wait(bar, parity))
    if (clock64() - start > (1ll << 32)) __trap();
}
// The same bound without the trap, for consumer code under setmaxnreg: a __trap path there
// makes ptxas allocate the consumers within the launch's register count (docs/kernels/
// attention.md, ptxas finding). After 2^32 clocks it goes on (wrong values, never a hang;
// a stuck ring also leaves the producer in its trapping wait).
__device__ __forceinline__ void mbar_wait_no_trap(uint32_t bar, uint32_t parity) {
  if (mbar_try_wait(bar, parity)) return;
  const long long start = clock64();
  while (!mbar_try_wait(bar, parity) && clock64() - start <= (1ll << 32)) {
  }
}

}  // namespace dsv4::cuda

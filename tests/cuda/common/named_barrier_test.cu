// The ping-pong attention kernel's hand-off protocol in isolation (sparse_attention_pingpong.cu:
// READY[parity] / FREE[parity] named barriers, bar.arrive by the writer warpgroup, bar.sync
// by the reader): warpgroup w writes round i's values (i % 2 == w) into buffer i % 2 and
// arrives on READY; the other warpgroup syncs on READY, reads them and arrives on FREE;
// the writer of round i + 2 syncs on FREE before overwriting. The test checks every value
// read. Its use: compute-sanitizer racecheck on this binary tells whether the tool models
// bar.arrive -> bar.sync as ordering (racecheck reported hazards on exactly this pattern in
// the ping-pong kernel, whose outputs are bitwise equal to the pipelined kernel's).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace {

constexpr int kRounds = 9, kThreads = 256;

__device__ __forceinline__ void named_sync(int id) { asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory"); }
__device__ __forceinline__ void named_arrive(int id) { asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory"); }

// out[wg][round][thread]: the value the reader of `round` saw (-1: not its round).
__global__ void handoff_kernel(int* out) {
  __shared__ int s_buffer[2][128];
  constexpr int kReady = 2, kFree = 4;
  const int wg = threadIdx.x >> 7, t = threadIdx.x & 127;
  for (int i = 0; i < kRounds; ++i) {
    const int par = i & 1;
    if (par == wg) {  // writer of round i
      if (i >= 2) named_sync(kFree + par);
      s_buffer[par][t] = 1000 * i + t;
      named_arrive(kReady + par);
    } else {          // reader of round i
      named_sync(kReady + par);
      out[(wg * kRounds + i) * 128 + t] = s_buffer[par][(t + 1) & 127];
      if (i + 2 < kRounds) named_arrive(kFree + par);
    }
  }
}

TEST(NamedBarrierHandoff, ReaderSeesEveryRoundsValues) {
  int* d_out = nullptr;
  const size_t count = 2 * kRounds * 128;
  ASSERT_EQ(cudaMalloc(&d_out, count * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_out, 0xff, count * sizeof(int)), cudaSuccess);
  handoff_kernel<<<1, kThreads>>>(d_out);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int> out(count);
  ASSERT_EQ(cudaMemcpy(out.data(), d_out, count * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d_out);
  for (int wg = 0; wg < 2; ++wg)
    for (int i = 0; i < kRounds; ++i)
      for (int t = 0; t < 128; ++t) {
        const int want = (i & 1) != wg ? 1000 * i + ((t + 1) & 127) : -1;
        ASSERT_EQ(out[(wg * kRounds + i) * 128 + t], want) << "warpgroup " << wg << " round " << i << " thread " << t;
      }
}

}  // namespace

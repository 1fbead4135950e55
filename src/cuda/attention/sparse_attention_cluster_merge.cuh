// Split-KV merge inside a thread-block cluster (SparseAttentionParams::split_cluster_merge,
// the ping-pong kernel): the `splits` CTAs of one (token, head group) form a cluster along
// grid z (cluster rank = split). After its key range each CTA parks its unnormalised
// partial in its own (now idle) tile ring, the cluster synchronises, and each CTA merges
// the rows r = rank, rank + splits, ... of all partials, read through distributed shared
// memory (DSMEM), into the final output. No split workspace, no merge launch, no HBM round
// trip of the partials.
//
// Partial layout in each CTA's shared memory, at s_part (the ring's first stage, 1024-
// aligned; the ring holds kStages x 48 KiB = 144 KiB, this needs 130.5 KiB):
//   O  [64 rows][kPartStride] FP32, row r = head head0 + r, columns 0..511 (+8 pad floats
//      so the float2 stores of a quad's 8 rows do not all hit one bank)
//   ml [64 rows] float2 (m, l) at s_part + kPartOBytes; m = -inf: no key of this range
//      for that row (its O row is not written and not read, as in the workspace path).
// Arithmetic: exactly sparse_attention_merge_kernel's per element (sparse_attention_wgmma.cu:
// m_final = max(sink, m_z over z in order), denominator from the sink, then for z = 0..S-1
// with m_z != -inf: w = exp2f(m_z - m_final), denominator += w l_z, acc += w O_z; out =
// acc * (1 / denominator), 0 when the denominator is 0), on the same partial values, so
// outputs are bitwise the workspace path's.
#pragma once
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/sparse_attention_wgmma_common.cuh"  // kDim, kHeads, kLog2e

namespace dsv4::cuda::attention::sparse_wgmma {

constexpr int kPartStride = kDim + 8;
constexpr int kPartOBytes = kHeads * kPartStride * 4;
constexpr int kPartBytes = kPartOBytes + kHeads * 8;
constexpr int kMaxClusterSplits = detail::kSparseClusterMaxSplits;  // internal.h: the portable cluster size

// Every thread of every CTA of the cluster (barrier.cluster counts all of them): arrive
// with release, wait with acquire, so shared-memory writes before it are visible to the
// other CTAs' DSMEM reads after it. .aligned: the warp must be converged.
__device__ __forceinline__ void cluster_sync_all() {
  __syncwarp();
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

// The shared::cluster address of `local` (a shared::cta address of this CTA's layout) in
// the CTA of cluster rank `rank`.
__device__ __forceinline__ uint32_t cluster_map(uint32_t local, uint32_t rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(rank));
  return remote;
}
__device__ __forceinline__ float4 ld_cluster_v4(uint32_t address) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(address)
               : "memory");
  return v;
}
__device__ __forceinline__ float2 ld_cluster_v2(uint32_t address) {
  float2 v;
  asm volatile("ld.shared::cluster.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(address) : "memory");
  return v;
}
__device__ __forceinline__ void st_shared_f2(uint32_t address, float x, float y) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(address), "f"(x), "f"(y) : "memory");
}

// Consumer thread (wg, lane, row0) of the ring kernels: its O fragment (rows row0 and
// row0 + 8, columns wg * 256 + 8 j + 2 (lane % 4) + {0, 1}) and the rows' (m, l) into the
// partial at s_part. The caller made sure no wgmma still reads the ring.
__device__ __forceinline__ void park_partial(uint32_t s_part, const float (&o)[128], const float (&m)[2],
                                             const float (&l)[2], int wg, int lane, int row0) {
  const int col0 = wg * 256 + 2 * (lane & 3);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + 8 * h;
#pragma unroll
    for (int j = 0; j < 32; ++j)
      st_shared_f2(s_part + (row * kPartStride + col0 + 8 * j) * 4, o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
    if (wg == 0 && (lane & 3) == 0) st_shared_f2(s_part + kPartOBytes + row * 8, m[h], l[h]);
  }
}

// The 256 consumer threads of cluster rank `rank` (of `splits`): rows rank + splits i of
// the token's head group, two rows per pass (thread t: row pass + t / 128, float4 t % 128),
// merged from every rank's partial and written to p.out. Between the two cluster_sync_all
// calls of the kernel (the first publishes the partials, the second keeps them alive).
__device__ __forceinline__ void merge_cluster_rows(const SparseAttentionParams& p, int token, int head0,
                                                   int splits, int rank, uint32_t s_part) {
  const int sub = threadIdx.x >> 7, c4 = threadIdx.x & 127;
  for (int row = rank + splits * sub; row < kHeads; row += 2 * splits) {
    const int head = head0 + row;
    const float sink = p.sinks != nullptr ? p.sinks[head] * kLog2e : -INFINITY;
    const uint32_t ml_local = s_part + kPartOBytes + row * 8;
    float m_final = sink;
    for (int z = 0; z < splits; ++z) m_final = fmaxf(m_final, ld_cluster_v2(cluster_map(ml_local, z)).x);
    float denominator = sink == -INFINITY ? 0.0f : exp2f(sink - m_final);
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int z = 0; z < splits; ++z) {
      const float2 ml = ld_cluster_v2(cluster_map(ml_local, z));
      const float mz = ml.x;
      if (mz == -INFINITY) continue;  // an empty split (or one of skipped keys only)
      const float w = exp2f(mz - m_final);
      denominator += w * ml.y;
      const float4 v = ld_cluster_v4(cluster_map(s_part + (row * kPartStride + 4 * c4) * 4, z));
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
    }
    const float inv = denominator > 0.0f ? 1.0f / denominator : 0.0f;
    reinterpret_cast<float4*>(p.out + (static_cast<int64_t>(token) * p.heads + head) * kDim)[c4] =
        make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  }
}

}  // namespace dsv4::cuda::attention::sparse_wgmma

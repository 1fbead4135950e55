// Sparse MQA attention with sinks on Hopper wgmma (issue 6): the fast member of the
// sparse_attention family for heads % 64 == 0 and head_dim == 512 (DeepSeek-V4); other
// shapes keep the FP32 kernel of sparse_attention.cu. Same contract and key list as
// there (attention.h), same math as the CPU reference except for the roundings below.
//
// One CTA = one token x 64 heads (the MMA M dimension) x one range of its key list
// (split-KV: blockIdx.z; 1 range without a workspace). 256 threads = 2 warpgroups.
//   Q    [64 heads x 512] BF16 in shared memory (converted from the FP32 q, rounded to nearest)
//   tile [64 keys x 512]  BF16 rows gathered by index through a 2-stage cp.async
//        pipeline (skipped keys: zero-filled rows, logit masked to -inf)
//   S = Q K^T (m64n64k16 x 32, both operands K-major) is computed by both warpgroups
//   (redundantly: each needs every logit of its rows for its own softmax, and no
//   exchange is needed); online softmax in the exp2 domain; P rounded to BF16 is the
//   register A operand of O += P V (m64n256k16 x 4, V = the same tile read MN-major),
//   warpgroup g owning O columns [256 g, 256 g + 256) (128 FP32 registers a thread).
// Shared-memory layout of Q and of a tile (128-byte swizzle, both wgmma operand views):
//   8 column blocks of 64 channels, block b at b * 8192 bytes; row r (head or key) at
//   r * 128 inside its block; 16-byte chunk c (channels 8c..8c+7 of the block) stored
//   at chunk position c ^ (r % 8). As a K-major operand (Q, and K for S): SBO = 1024
//   (8-row groups), k-step kk at block kk / 4, +32 bytes per kk % 4. As the MN-major B
//   of P V (V[key, channel], channels contiguous): LBO = 8192 (next 64-channel block),
//   SBO = 1024 (next 8 keys), k-step kc (keys 16 kc..) at +2048 bytes.
// Accumulator fragment (m64nNk16, thread t of a warpgroup, warp w = t / 32, lane l):
//   d[4 j + 0/1] = row 16 w + l / 4,     columns 8 j + 2 (l % 4) + 0/1
//   d[4 j + 2/3] = row 16 w + l / 4 + 8, same columns
// which for S (N = 64) is also the A fragment of P V for keys 16 kc..16 kc + 15:
//   a[0] = d[8kc+0,1], a[1] = d[8kc+2,3], a[2] = d[8kc+4,5], a[3] = d[8kc+6,7].
// Split-KV (decode with long key lists): split z of S covers key tiles
// [z * per_split, (z + 1) * per_split) of its token; it writes unnormalised O, the
// running max m (log2 domain) and the row sum l to the workspace, and
// sparse_attention_merge combines the splits with the sink (log-sum-exp merge).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/attention/sparse_attention_wgmma_common.cuh"
#include "cuda/common/pdl_launch.h"

namespace dsv4::cuda::attention {

namespace {

using namespace sparse_wgmma;  // kHeads, kDim, kBlockBytes, wgmma / smem helpers, key_row, store_output

constexpr int kTileKeys = 64;     // keys per tile = S's N = P V's K
constexpr int kStages = 2;
constexpr int kThreads = 256;     // 2 warpgroups
constexpr int kPanelBytes = kDim / 64 * kBlockBytes; // 64 rows x 512 BF16 = 64 KiB
constexpr int kPBytes = kHeads * kTileKeys * 2;                     // P [64 heads x 64 keys] BF16 (kShareP)
constexpr int kSmemBytes = (1 + kStages) * kPanelBytes + 1024;      // + slack for 1024-byte alignment
constexpr int kSmemBytesShareP = kSmemBytes + kPBytes;

// D[64 x 32] (+)= A[64 x 16] B[16 x 32], both from shared memory, K-major.
__device__ __forceinline__ void wgmma_m64n32k16_ss(float (&d)[16], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

constexpr int kRowsPerThread = kTileKeys / 4;  // a tile's rows per thread in load_tile

// The compressed-list entry of each of this thread's rows (t / 64 + 4 i) of key tile
// `tile`: kSelected loads selected[] here, one tile before load_tile uses the values, so
// the L2 round trip of the index loads overlaps a whole tile of work (the loads stay in
// flight across the asm statements; only the first use waits). Window rows and rows past
// the list get a value load_tile ignores.
__device__ __forceinline__ void fetch_picks(const SparseAttentionParams& p, const KeyList& keys, int token, int tile,
                                            int (&picks)[kRowsPerThread]) {
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int k = tile * kTileKeys + (threadIdx.x >> 6) + 4 * i;
    const int j = k - keys.n_window;
    picks[i] = p.compressed == CompressedKeys::kSelected && j >= 0 && k < keys.n_total
                   ? p.selected[static_cast<int64_t>(token) * p.top_k + j]
                   : j;
  }
}

// Gathers key tile `tile` into the panel at `dst` (all 256 threads: thread t copies
// chunk t % 64 of rows t / 64 + 4 i; picks from fetch_picks for this tile); valid[r] =
// whether key r of the tile is attended. (Until run2 the index loads sat between the
// cp.asyncs, whose asm memory clobber made them 16 dependent L2 round trips per tile.)
__device__ __forceinline__ void load_tile(const SparseAttentionParams& p, const KeyList& keys, int tile,
                                          const int (&picks)[kRowsPerThread], uint32_t dst, bool* valid) {
  const int chunk = threadIdx.x & 63;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int r = (threadIdx.x >> 6) + 4 * i;
    const uint16_t* row = key_row(p, keys, tile * kTileKeys + r, picks[i]);
    if (chunk == 0) valid[r] = row != nullptr;
    cp_async_16(dst + panel_offset(r, chunk), row != nullptr ? row + chunk * 8 : p.window_kv, row != nullptr ? 16 : 0);
  }
}

// grid (tokens, heads / 64, splits), block 256, dynamic smem kSmemBytes (kShareP:
// kSmemBytesShareP).
// kShareP (Kernel::kWgmmaShareP): S is not computed twice. Warpgroup g computes the
// logits of keys [32 g, 32 g + 32) of the tile (m64n32k16 x 32), the two exchange their
// row maxima through shared memory (both then hold the same m), each writes its half of
// P (BF16) into a shared [64 heads x 64 keys] panel laid out like a 64-channel block of
// Q (K-major, 128-byte swizzle), and O += P V takes P from there (m64n256k16, both
// operands from shared memory). Each warpgroup keeps the row sum of its own keys; the
// two are added at the end. Same P values as the register path (same m, same
// roundings); l is summed in another order.
template <bool kShareP>
__global__ void __launch_bounds__(kThreads, 1) sparse_attention_wgmma_kernel(const SparseAttentionParams p, int splits,
                                                                             float* part_o, float* part_ml) {
  extern __shared__ uint8_t smem_raw[];
  allow_dependent_launch();  // the split merge (PDL) may be scheduled once every CTA runs
  __shared__ bool s_valid[kStages][kTileKeys];
  __shared__ float s_xchg[2][kHeads];  // kShareP: per warpgroup, row maxima of a tile / final row sums
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t s_q = smem_u32(smem);
  const uint32_t s_tiles = s_q + kPanelBytes;
  const uint32_t s_p = s_tiles + kStages * kPanelBytes;  // kShareP only (1024-aligned)

  const int token = blockIdx.x, head0 = blockIdx.y * kHeads, split = blockIdx.z;
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int row0 = warp * 16 + (lane >> 2);  // this thread's rows row0, row0 + 8 (heads head0 + row)

  const KeyList keys = key_list(p, token);
  const int n_tiles = (keys.n_total + kTileKeys - 1) / kTileKeys;
  const int per_split = (n_tiles + splits - 1) / splits;
  const int tile_begin = split * per_split, tile_end = min(n_tiles, tile_begin + per_split);

  // Prologue: the first tile's gather in flight while Q is converted.
  int picks[kRowsPerThread];  // of the next tile to gather
  if (tile_begin < tile_end) {
    fetch_picks(p, keys, token, tile_begin, picks);
    load_tile(p, keys, tile_begin, picks, s_tiles, s_valid[0]);
  }
  cp_async_commit();
  if (tile_begin + 1 < tile_end) fetch_picks(p, keys, token, tile_begin + 1, picks);
  {
    const float* q = p.q + (static_cast<int64_t>(token) * p.heads + head0) * kDim;
    const int chunk = threadIdx.x & 63;
#pragma unroll  // all 32 float4 loads of q in flight per thread (one HBM latency per CTA)
    for (int i = 0; i < kHeads / 4; ++i) {
      const int r = (threadIdx.x >> 6) + 4 * i;
      const float4 a = *reinterpret_cast<const float4*>(q + r * kDim + chunk * 8);
      const float4 b = *reinterpret_cast<const float4*>(q + r * kDim + chunk * 8 + 4);
      const uint4 v = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
      *reinterpret_cast<uint4*>(smem + panel_offset(r, chunk)) = v;
    }
  }
  fence_proxy_async();

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  // Per row (0: row0, 1: row0 + 8): running max m (log2 domain, -inf before any key)
  // and this thread's partial row sum l (its 16 columns of each tile; the 4 lanes of a
  // row are summed at the end). Both warpgroups hold identical m and l (kShareP: the same
  // m; l of its own 8 columns per tile until the two are added after the loop).
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float scale_log2 = p.scale * kLog2e;

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int stage = (tile - tile_begin) & 1;
    if (tile + 1 < tile_end) {
      load_tile(p, keys, tile + 1, picks, s_tiles + (stage ^ 1) * kPanelBytes, s_valid[stage ^ 1]);
      if (tile + 2 < tile_end) fetch_picks(p, keys, token, tile + 2, picks);  // used next iteration
    }
    cp_async_commit();
    cp_async_wait_1();  // this tile's group (all but the newest) has landed
    fence_proxy_async();
    __syncthreads();

    const uint32_t s_k = s_tiles + stage * kPanelBytes;
    if constexpr (kShareP) {
      // S for this warpgroup's 32 keys: rows 32 wg.. of every column block of the tile.
      float s[16];
#pragma unroll
      for (int i = 0; i < 16; ++i) s[i] = 0.0f;
      fence_regs(s);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
        const uint32_t offset = (kk >> 2) * kBlockBytes + (kk & 3) * 32;
        wgmma_m64n32k16_ss(s, make_desc(s_q + offset, 16, 1024), make_desc(s_k + wg * 32 * 128 + offset, 16, 1024), kk);
      }
      wgmma_commit();
      wgmma_wait_all();
      fence_regs(s);

      // This thread: rows row0, row0 + 8 x keys 32 wg + 8 j + 2 (lane % 4) + 0/1, j < 4.
      float tile_max[2];
      scale_mask_max(s, &s_valid[stage][32 * wg], lane & 3, scale_log2, tile_max);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        tile_max[h] = quad_max(tile_max[h]);
        if ((lane & 3) == 0) s_xchg[wg][row0 + 8 * h] = tile_max[h];
      }
      __syncthreads();  // both halves' maxima
      float alpha[2], m_use[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        alpha[h] = advance_max(m[h], fmaxf(m[h], fmaxf(tile_max[h], s_xchg[wg ^ 1][row0 + 8 * h])), m_use[h]);
      }
      float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t packed = softmax_pair(s[4 * j + 2 * h], s[4 * j + 2 * h + 1], m_use[h], row_sum[h]);
          // P[row][key]: 16-byte chunk 4 wg + j of the row (swizzled), 4 bytes per lane % 4.
          const int row = row0 + 8 * h;
          st_shared_u32(s_p + row * 128 + ((((4 * wg + j) ^ (row & 7))) << 4) + 4 * (lane & 3), packed);
        }
#pragma unroll
      for (int h = 0; h < 2; ++h) l[h] = l[h] * alpha[h] + row_sum[h];
      rescale_o(o, alpha);
      fence_proxy_async();  // P (st.shared) -> the wgmma's async-proxy reads
      __syncthreads();      // both halves of P written

      fence_regs(o);
      wgmma_fence();
#pragma unroll
      for (int kc = 0; kc < kTileKeys / 16; ++kc)
        wgmma_m64n256k16_ss_tb(o, make_desc(s_p + kc * 32, 16, 1024),
                               make_desc(s_k + wg * 4 * kBlockBytes + kc * 2048, kBlockBytes, 1024));
    } else {
      float s[32];
#pragma unroll
      for (int i = 0; i < 32; ++i) s[i] = 0.0f;
      fence_regs(s);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
        const uint32_t offset = (kk >> 2) * kBlockBytes + (kk & 3) * 32;
        wgmma_m64n64k16_ss(s, make_desc(s_q + offset, 16, 1024), make_desc(s_k + offset, 16, 1024), kk);
      }
      wgmma_commit();
      wgmma_wait_all();
      fence_regs(s);

      // Online softmax on this thread's 2 rows x 16 columns.
      float tile_max[2];
      scale_mask_max(s, s_valid[stage], lane & 3, scale_log2, tile_max);
      float alpha[2], m_use[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        alpha[h] = advance_max(m[h], fmaxf(m[h], quad_max(tile_max[h])), m_use[h]);  // no key yet: 0, O and l are 0
      }
      uint32_t pa[16];  // P in BF16, A fragments of the 4 k-steps
      float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          // j = 2 kc + half: a[kc][2 half + h]
          pa[2 * j + h] = softmax_pair(s[4 * j + 2 * h], s[4 * j + 2 * h + 1], m_use[h], row_sum[h]);
        }
#pragma unroll
      for (int h = 0; h < 2; ++h) l[h] = l[h] * alpha[h] + row_sum[h];
      rescale_o(o, alpha);

      fence_regs(o);
      fence_regs(pa);
      wgmma_fence();
#pragma unroll
      for (int kc = 0; kc < kTileKeys / 16; ++kc) {
        const uint32_t a[4] = {pa[4 * kc + 0], pa[4 * kc + 1], pa[4 * kc + 2], pa[4 * kc + 3]};
        wgmma_m64n256k16_rs_tb(o, a, make_desc(s_k + wg * 4 * kBlockBytes + kc * 2048, kBlockBytes, 1024));
      }
    }
    wgmma_commit();
    wgmma_wait_all();
    fence_regs(o);
    __syncthreads();  // both warpgroups are done with this stage before it is refilled
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] = quad_sum(l[h]);
  if constexpr (kShareP) {
    // Each warpgroup summed its own keys: add the other's (the last __syncthreads of
    // the loop ordered every read of s_xchg's maxima before these writes).
#pragma unroll
    for (int h = 0; h < 2; ++h)
      if ((lane & 3) == 0) s_xchg[wg][row0 + 8 * h] = l[h];
    __syncthreads();
#pragma unroll
    for (int h = 0; h < 2; ++h) l[h] += s_xchg[wg ^ 1][row0 + 8 * h];
  }
  store_output_rows(p, token, head0, split, part_o, part_ml, o, m, l, wg, lane, row0);
}

// grid (tokens, heads), block 128: out = sum_z 2^(m_z - M) O_z / (sum_z 2^(m_z - M) l_z + 2^(sink - M)).
// kUnrolled > 0 (splits <= kUnrolled): every split's (m, l) and O row are loaded before any is
// used, so the loads of all splits are in flight together (the loop form below issues them one
// dependent L2 round trip after another: ~8 us for 10 splits under ncu, H200 2026-12-02).
// Same operations in the same order in both forms (max over z ascending, then the sums in
// z order, empty splits skipped), so the output is bitwise the same.
template <int kUnrolled>
__global__ void __launch_bounds__(128) sparse_attention_merge_kernel(const SparseAttentionParams p, int splits,
                                                                     const float* part_o, const float* part_ml) {
  const int token = blockIdx.x, head = blockIdx.y;
  const int64_t split_stride = static_cast<int64_t>(p.batch.tokens) * p.heads;
  const int64_t row = static_cast<int64_t>(token) * p.heads + head;
  wait_for_prerequisite_grids();  // launched with PDL: the attention grid's partials are complete and visible
  const float sink = p.sinks != nullptr ? p.sinks[head] * kLog2e : -INFINITY;
  float m_final = sink;
  float denominator;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if constexpr (kUnrolled > 0) {
    float2 ml[kUnrolled];
    float4 v[kUnrolled];
#pragma unroll
    for (int z = 0; z < kUnrolled; ++z)
      ml[z] = z < splits ? reinterpret_cast<const float2*>(part_ml)[z * split_stride + row]
                         : make_float2(-INFINITY, 0.0f);
#pragma unroll
    for (int z = 0; z < kUnrolled; ++z)  // an empty split (or one of skipped keys only) wrote no O
      v[z] = ml[z].x != -INFINITY ? reinterpret_cast<const float4*>(part_o + (z * split_stride + row) * kDim)[threadIdx.x]
                                  : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int z = 0; z < kUnrolled; ++z) m_final = fmaxf(m_final, ml[z].x);
    denominator = sink == -INFINITY ? 0.0f : exp2f(sink - m_final);
#pragma unroll
    for (int z = 0; z < kUnrolled; ++z) {
      if (ml[z].x == -INFINITY) continue;
      const float w = exp2f(ml[z].x - m_final);
      denominator += w * ml[z].y;
      acc.x += w * v[z].x;
      acc.y += w * v[z].y;
      acc.z += w * v[z].z;
      acc.w += w * v[z].w;
    }
  } else {
    for (int z = 0; z < splits; ++z) m_final = fmaxf(m_final, part_ml[(z * split_stride + row) * 2]);
    denominator = sink == -INFINITY ? 0.0f : exp2f(sink - m_final);
    for (int z = 0; z < splits; ++z) {
      const float mz = part_ml[(z * split_stride + row) * 2];
      if (mz == -INFINITY) continue;  // an empty split (or one of skipped keys only)
      const float w = exp2f(mz - m_final);
      denominator += w * part_ml[(z * split_stride + row) * 2 + 1];
      const float4 v = reinterpret_cast<const float4*>(part_o + (z * split_stride + row) * kDim)[threadIdx.x];
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
    }
  }
  const float inv = denominator > 0.0f ? 1.0f / denominator : 0.0f;
  const float4 v = make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  // FP32 or BF16 stores (SparseAttentionParams::out_bf16; 128 threads = one contiguous row).
  if (p.out_bf16 != nullptr)
    reinterpret_cast<uint2*>(p.out_bf16 + row * kDim)[threadIdx.x] = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
  else
    reinterpret_cast<float4*>(p.out + row * kDim)[threadIdx.x] = v;
}

}  // namespace

namespace detail {

bool sparse_attention_wgmma_supported(const SparseAttentionParams& p) {
  return p.head_dim == kDim && p.heads % kHeads == 0;
}

int64_t sparse_attention_split_workspace_floats(int tokens, int heads, int splits) {
  return splits <= 1 ? 0 : static_cast<int64_t>(splits) * tokens * heads * (kDim + 2);
}

cudaError_t launch_sparse_attention_wgmma(const SparseAttentionParams& p, int splits, bool share_p,
                                          cudaStream_t stream) {
  // Once per device (the attribute is per device; setting it twice in a race is harmless),
  // so a launch inside a stream capture makes no attribute call.
  static bool attribute_set[64] = {};
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return error;
  if (device >= 64 || !attribute_set[device]) {
    error = cudaFuncSetAttribute(sparse_attention_wgmma_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 kSmemBytes);
    if (error != cudaSuccess) return error;
    error = cudaFuncSetAttribute(sparse_attention_wgmma_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 kSmemBytesShareP);
    if (error != cudaSuccess) return error;
    if (device < 64) attribute_set[device] = true;
  }
  splits = max(1, splits);
  const SplitPartials parts = split_partials(p, splits);
  const dim3 grid(p.batch.tokens, p.heads / kHeads, splits);
  if (share_p)
    sparse_attention_wgmma_kernel<true><<<grid, kThreads, kSmemBytesShareP, stream>>>(p, splits, parts.o, parts.ml);
  else
    sparse_attention_wgmma_kernel<false><<<grid, kThreads, kSmemBytes, stream>>>(p, splits, parts.o, parts.ml);
  if (splits > 1) {
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
    return launch_sparse_attention_merge(p, splits, parts.o, parts.ml, stream);
  }
  return cudaGetLastError();
}

cudaError_t launch_sparse_attention_merge(const SparseAttentionParams& p, int splits, const float* part_o,
                                          const float* part_ml, cudaStream_t stream) {
  // Programmatic dependent launch: the merge's CTAs are scheduled while the attention grid
  // drains (its CTAs allow it once all have started) and wait in griddepcontrol.wait, so
  // the launch latency overlaps the attention tail.
  const dim3 grid(p.batch.tokens, p.heads);
  if (splits <= 4)
    return launch_programmatic(sparse_attention_merge_kernel<4>, grid, dim3(128), 0, stream, p, splits,
                               part_o, part_ml);
  if (splits <= 16)
    return launch_programmatic(sparse_attention_merge_kernel<16>, grid, dim3(128), 0, stream, p, splits,
                               part_o, part_ml);
  return launch_programmatic(sparse_attention_merge_kernel<0>, grid, dim3(128), 0, stream, p, splits,
                             part_o, part_ml);
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

// Lightning indexer scores on Hopper wgmma (issue 6 item 2), heads 64 x dim 128, the
// fast member next to indexer_mma.cu (mma.sync, kept selectable) and the FP32 oracle:
// score[t, w] = sum_h relu(q[t,h] . key[w]) * (head_weights[t,h] / sqrt(heads) / sqrt(dim))
// for w < visible(t) = min((p + 1) / rate, max_entries), into the FP32 scores workspace.
//
// Orientation: D[key, head] = K[key, :] . Q[t][head, :]^T, one m64n64k16 x 8 chain per
// (64-key tile, token): M = 64 keys, N = 64 heads of one token, K = 128. The head sum of
// the epilogue then runs along N, i.e. inside a thread's registers (16 columns per row)
// plus two shuffles over the 4 lanes of a row, instead of a reduction across rows.
//   * A (keys) from registers: each thread loads its rows (16 w + g, + 8) of the tile
//     straight from the FP32 entries (float4), rounds to BF16 once and keeps the packed
//     fragments for every token of its CTA that sees the tile (key-stationary: a prefill
//     group of 8 tokens of one sequence reuses each key tile 8 times; L2 traffic 1/8).
//     The next tile's FP32 values are prefetched into registers during the MMAs.
//   * B (queries) from shared memory, BF16, K-major, 128-byte swizzle (the layout of
//     sparse_attention_wgmma.cu's K-major operands): per token 64 rows (heads) x 128
//     channels as two 64-channel blocks of 8 KiB; k-step kk at block kk / 4, + 32 bytes
//     per kk % 4; SBO 1024 (8-row groups).
//   * The K order is permuted consistently in A and B (a dot product does not care): a
//     thread with lane % 4 == c loads physical channels 16 kk + 4 c .. + 3 of its rows
//     for k-step kk (one float4), which fill the fragment's logical columns 2c, 2c+1
//     (a0/a1) and 2c+8, 2c+9 (a2/a3). So logical column L of a k-step holds physical
//     channel kPhys(L) = 4 ((L & 7) >> 1) + 2 (L >> 3) + (L & 1); the q staging writes B
//     with the same map.
// A CTA (2 warpgroups) owns a group of up to kGroup consecutive tokens and a range of
// key tiles; warpgroup g takes tiles g, g + 2, ... of the range. Tokens of the group
// with different slots (decode batches, mixed batches) run as separate passes over
// their own keys (per distinct slot: each pass multiplies only the tokens of that
// slot, so decode costs one n64 chain per key tile). grid = (key splits, groups).
//
// Precision: BF16 operands rounded to nearest (as indexer_mma.cu), FP32 accumulation,
// FP32 epilogue in a fixed order: equal key rows give bitwise-equal scores (the top-k's
// tie rule needs that). The summation order differs from indexer_mma.cu (other MMA
// shape, other K order), so scores agree with it to FP32 rounding, not bitwise.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "cuda/common/bf16x2.cuh"
#include "cuda/common/wgmma_sync.cuh"

namespace dsv4::cuda::attention {

namespace {

constexpr int kHeads = detail::kIndexerMmaHeads;  // 64 = wgmma N per token
constexpr int kDim = detail::kIndexerMmaDim;      // 128 = K
constexpr int kTileKeys = 64;                     // wgmma M
constexpr int kKSteps = kDim / 16;                // 8
constexpr int kThreads = 256;                     // 2 warpgroups
constexpr int kGroupMax = detail::kIndexerWgmmaGroupMax;  // tokens per CTA (prefill)
constexpr int kTokenBytes = kHeads * kDim * 2;    // 16 KiB: one token's B panel
constexpr int kBlockBytes = kHeads * 128;         // one 64-channel column block of a token
static_assert(kTokenBytes == 2 * kBlockBytes, "two 64-channel blocks per token");

// D[64 x 64] (+)= A[64 x 16] B[16 x 64]; A from registers, B K-major from shared memory.
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,
                                                   int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, "
      "%12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
}

// One token's chain: acc = A (this thread's key fragments) x B (the token's q panel).
__device__ __forceinline__ void issue_chain(float (&acc)[32], uint32_t (&a)[kKSteps][4], uint32_t token_b) {
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk) fence_regs(a[kk]);
  fence_regs(acc);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk)
    wgmma_m64n64k16_rs(acc, a[kk], make_desc(token_b + (kk >> 2) * kBlockBytes + (kk & 3) * 32, 16, 1024), kk);
  wgmma_commit();
}

// ReLU, head weights and the head sum of one (tile, token): acc[4 n + 0/1] = key row
// 16 w + g, heads 8 n + 2c + 0/1; acc[4 n + 2/3] = row + 8. Fixed order (in-thread over
// n, then lanes xor 1, xor 2), the same for every row.
__device__ __forceinline__ void epilogue(const float (&acc)[32], const IndexerParams& p, const float* weight,
                                         int token, int visible, int base, int wwarp, int g, int c) {
  float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    const float2 w = *reinterpret_cast<const float2*>(weight + 8 * n + 2 * c);
    s0 = fmaf(fmaxf(acc[4 * n + 0], 0.0f), w.x, s0);
    s0 = fmaf(fmaxf(acc[4 * n + 1], 0.0f), w.y, s0);
    s1 = fmaf(fmaxf(acc[4 * n + 2], 0.0f), w.x, s1);
    s1 = fmaf(fmaxf(acc[4 * n + 3], 0.0f), w.y, s1);
  }
  s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
  s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
  s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
  s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
  const int key = base + 16 * wwarp + g;
  float* out = p.scores + static_cast<int64_t>(token) * p.max_entries;
  if (c == 0 && key < visible) out[key] = s0;
  if (c == 1 && key + 8 < visible) out[key + 8] = s1;
}

// This thread's FP32 key values of a tile: rows r0 = base + 16 w + g and r0 + 8,
// channels 16 kk + 4 c .. + 3 for kk < 8. Rows at or past `limit` read as zero.
__device__ __forceinline__ void load_keys(float4 (&v)[2][kKSteps], const float* slot_keys, int row0, int limit,
                                          int c) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    const float4* src = reinterpret_cast<const float4*>(slot_keys + static_cast<int64_t>(row) * kDim) + c;
    const bool ok = row < limit;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) v[r][kk] = ok ? __ldg(src + 4 * kk) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

// grid (key splits, token groups), block kThreads; dynamic smem: group B panels
// (16 KiB each, 1024-aligned) after 1 KiB alignment slack. tiles_per_cta: 64-key tiles
// per CTA along x.
__global__ void __launch_bounds__(kThreads, 1) indexer_scores_wgmma_kernel(const IndexerParams p, int group,
                                                                          int tiles_per_cta) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  __shared__ __align__(16) float s_weight[kGroupMax][kHeads];
  __shared__ int s_visible[kGroupMax], s_slot[kGroupMax], s_pass_limit[kGroupMax];

  const int first_token = blockIdx.y * group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wg = warp >> 2, wwarp = warp & 3;  // warpgroup, warp within it
  const int g = lane >> 2, c = lane & 3;

  if (threadIdx.x < kGroupMax) {
    const int j = threadIdx.x, t = first_token + j;
    int visible = 0, slot = -1;
    if (j < group && t < p.batch.tokens) {
      const int position = p.batch.positions[t];
      slot = p.batch.slots[t];
      if (position >= 0 && slot >= 0) visible = min((position + 1) / p.rate, p.max_entries);
    }
    s_visible[j] = visible;
    s_slot[j] = visible > 0 ? slot : -1;
  }
  __syncthreads();
  if (threadIdx.x < kGroupMax) {
    // Token j leads a pass when it is the first of its slot; the pass covers the largest
    // visible count among the tokens sharing the slot (0: no pass).
    const int j = threadIdx.x;
    int lead = j, limit = 0;
    for (int i = 0; i < kGroupMax; ++i) {
      if (s_slot[j] >= 0 && s_slot[i] == s_slot[j]) {
        if (i < lead) lead = i;
        limit = max(limit, s_visible[i]);
      }
    }
    s_pass_limit[j] = lead == j ? limit : 0;
  }
  int cta_visible = 0;
  for (int i = 0; i < kGroupMax; ++i) cta_visible = max(cta_visible, s_visible[i]);
  const int tile_begin = blockIdx.x * tiles_per_cta;
  if (tile_begin * kTileKeys >= cta_visible) return;  // block-uniform
  const int tile_end = min(tile_begin + tiles_per_cta, (cta_visible + kTileKeys - 1) / kTileKeys);

  // Stage B: q of the group's visible tokens, BF16, swizzled, K order permuted (header).
  // Unit = (token, row, 16-byte chunk ch of 16): logical channels 8 ch .. 8 ch + 7 =
  // k-step ch / 2, logical columns 8 (ch & 1) .. + 7 = physical 16 (ch / 2) + 2 (ch & 1)
  // + {0, 1, 4, 5, 8, 9, 12, 13}.
  const float weight_scale = 1.0f / (sqrtf(static_cast<float>(kHeads)) * sqrtf(static_cast<float>(kDim)));
  for (int u = threadIdx.x; u < group * kHeads * 16; u += kThreads) {
    const int j = u / (kHeads * 16), row = (u / 16) % kHeads, ch = u % 16;
    if (s_visible[j] == 0) continue;
    const float* src = p.q + (static_cast<int64_t>(first_token + j) * kHeads + row) * kDim + 16 * (ch >> 1) + 2 * (ch & 1);
    const float2 x0 = *reinterpret_cast<const float2*>(src);
    const float2 x1 = *reinterpret_cast<const float2*>(src + 4);
    const float2 x2 = *reinterpret_cast<const float2*>(src + 8);
    const float2 x3 = *reinterpret_cast<const float2*>(src + 12);
    const uint4 v = make_uint4(pack_bf16(x0.x, x0.y), pack_bf16(x1.x, x1.y), pack_bf16(x2.x, x2.y), pack_bf16(x3.x, x3.y));
    const int offset = j * kTokenBytes + (ch >> 3) * kBlockBytes + row * 128 + (((ch & 7) ^ (row & 7)) << 4);
    *reinterpret_cast<uint4*>(smem + offset) = v;
  }
  for (int i = threadIdx.x; i < group * kHeads; i += kThreads) {
    const int j = i / kHeads;
    s_weight[j][i % kHeads] =
        s_visible[j] > 0 ? p.head_weights[static_cast<int64_t>(first_token + j) * kHeads + i % kHeads] * weight_scale
                         : 0.0f;
  }
  fence_proxy_async();
  __syncthreads();

  const uint32_t s_b = smem_u32(smem);
  float acc0[32], acc1[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) acc0[i] = acc1[i] = 0.0f;

  // Work items = (pass, tile): for each pass (lead token of a slot) the tiles of this
  // CTA's range below the pass's limit, in order; warpgroup g takes items g, g + 2, ...
  // The next item's keys are prefetched into registers during the current item's MMAs,
  // also across passes (a decode group streams its 8 sequences back to back).
  int lead = 0, tile = tile_begin;
  auto pass_end = [&](int l) { return min(tile_end, (s_pass_limit[l] + kTileKeys - 1) / kTileKeys); };
  auto settle = [&]() {  // move (lead, tile) to the first valid item at or after it
    while (lead < group && tile >= pass_end(lead)) {
      ++lead;
      tile = tile_begin;
    }
  };
  auto advance = [&]() {
    ++tile;
    settle();
  };
  settle();
  if (wg == 1) advance();
  float4 raw[2][kKSteps];
  if (lead < group)
    load_keys(raw, p.entries + static_cast<int64_t>(s_slot[lead]) * p.max_entries * kDim,
              tile * kTileKeys + 16 * wwarp + g, s_pass_limit[lead], c);
  while (lead < group) {  // warpgroup-uniform (no block barrier below)
    const int slot = s_slot[lead];
    const int base = tile * kTileKeys;
    {
      // A fragments of this tile: a[kk] = {(g, 2c..), (g+8, 2c..), (g, 2c+8..), (g+8, 2c+8..)}
      // = {row g phys 4c, 4c+1}, {row g+8 same}, {row g phys 4c+2, 4c+3}, {row g+8 same}.
      uint32_t a[kKSteps][4];
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
        a[kk][0] = pack_bf16(raw[0][kk].x, raw[0][kk].y);
        a[kk][1] = pack_bf16(raw[1][kk].x, raw[1][kk].y);
        a[kk][2] = pack_bf16(raw[0][kk].z, raw[0][kk].w);
        a[kk][3] = pack_bf16(raw[1][kk].z, raw[1][kk].w);
      }
      const int this_lead = lead;
      advance();
      advance();
      if (lead < group)
        load_keys(raw, p.entries + static_cast<int64_t>(s_slot[lead]) * p.max_entries * kDim,
                  tile * kTileKeys + 16 * wwarp + g, s_pass_limit[lead], c);

      // Tokens of this pass that see the tile (warpgroup-uniform bit mask), in pairs: two
      // chains in flight, the first's epilogue overlapping the second's MMAs. An odd last
      // token runs its chain twice (the copy's epilogue stores nothing), which keeps the
      // control flow free of waits in divergent paths (ptxas would serialise the wgmmas).
      unsigned active = 0;
      for (int j = this_lead; j < group; ++j)
        if (s_slot[j] == slot && base < s_visible[j]) active |= 1u << j;
      while (active != 0) {
        const int j0 = __ffs(active) - 1;
        active &= active - 1;
        const int j1 = active != 0 ? __ffs(active) - 1 : j0;
        active &= active - 1;  // no-op when empty
        issue_chain(acc0, a, s_b + j0 * kTokenBytes);
        issue_chain(acc1, a, s_b + j1 * kTokenBytes);
        wgmma_wait<1>();
        fence_regs(acc0);
        epilogue(acc0, p, s_weight[j0], first_token + j0, s_visible[j0], base, wwarp, g, c);
        wgmma_wait<0>();
        fence_regs(acc1);
        epilogue(acc1, p, s_weight[j1], first_token + j1, j1 != j0 ? s_visible[j1] : 0, base, wwarp, g, c);
      }
    }
  }
}

}  // namespace

namespace detail {

size_t indexer_wgmma_smem_bytes(int group) { return 1024 + static_cast<size_t>(group) * kTokenBytes; }

int indexer_wgmma_group(int tokens) {
  // Registers (183 a thread) allow one CTA of 256 threads per SM whatever the q panel's
  // size, so the group only trades key reuse (prefill: 8 tokens of a sequence share each
  // key tile) against q staging per CTA (decode: a CTA stages all its tokens' q, 32 KiB
  // FP32 each, for the key tiles of its split). Small batches (decode) take 1 token.
  return tokens <= 64 ? 1 : kGroupMax;
}

cudaError_t launch_indexer_scores_wgmma(const IndexerParams& p, cudaStream_t stream) {
  const int group = indexer_wgmma_group(p.batch.tokens);
  int device = 0;
  const cudaError_t device_error = cudaGetDevice(&device);
  if (device_error != cudaSuccess) return device_error;
  // The largest dynamic smem size, once per device (no attribute call inside a later
  // stream capture).
  constexpr int kMaxDevices = 64;
  static bool attribute_set[kMaxDevices] = {};
  if (device >= kMaxDevices || !attribute_set[device]) {
    const cudaError_t attr_error = cudaFuncSetAttribute(indexer_scores_wgmma_kernel,
                                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                        static_cast<int>(indexer_wgmma_smem_bytes(kGroupMax)));
    if (attr_error != cudaSuccess) return attr_error;
    if (device < kMaxDevices) attribute_set[device] = true;
  }
  const int groups = (p.batch.tokens + group - 1) / group;
  if (groups > 65535) return cudaErrorInvalidConfiguration;  // the dispatcher keeps tokens <= 4 * 65535
  const int tiles = (p.max_entries + kTileKeys - 1) / kTileKeys;
  int sms = 0;
  const cudaError_t sm_error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (sm_error != cudaSuccess) return sm_error;
  if (sms < 1) sms = 1;
  // Fewer groups than SMs (decode, short chunks): split each group's keys so the CTAs make
  // about one full wave (one CTA per SM), each CTA as long as possible (q staged once per
  // CTA). Otherwise up to 64 tiles (4096 keys) per CTA, several waves.
  int splits = groups < sms ? sms / groups : (tiles + 63) / 64;
  splits = splits < 1 ? 1 : (splits > tiles ? tiles : splits);
  const int tiles_per_cta = (tiles + splits - 1) / splits;
  splits = (tiles + tiles_per_cta - 1) / tiles_per_cta;
  indexer_scores_wgmma_kernel<<<dim3(splits, groups), kThreads, indexer_wgmma_smem_bytes(group), stream>>>(
      p, group, tiles_per_cta);
  return cudaGetLastError();
}

}  // namespace detail

}  // namespace dsv4::cuda::attention

// mHC hyper-connections (cpu twins: cpu::hyper_collapse / hyper_expand / hyper_head in
// src/cpu/hyper_connection.cpp), FP32 with the CPU's formulas and op order:
//   flat   = unweighted_rmsnorm(streams[t] flattened to n*hidden, rms_eps)
//   mixes  = flat @ fn^T                          fn: [mix, n*hidden]
//   sites: mixes = [pre(n) | post(n) | comb(n*n, row-major (j, k))]
//     pre[i]  = sigmoid(mixes[i] * scale[0] + base[i]) + hc_eps
//     post[i] = 2 * sigmoid(mixes[n+i] * scale[1] + base[n+i])
//     comb    = row softmax of (mixes[2n + j*n + k] * scale[2] + base[...]) + hc_eps, then
//               column-normalise, then (iters - 1) x (row-normalise, column-normalise),
//               each normalisation dividing by (sum + hc_eps)
//   head:  mixes = [pre(n)], pre as above
//   collapsed[t, d] = sum_i pre[i] * streams[t, i, d]
// Argument checks: hyper_connection.cpp.
#include "cuda/ops/block_reduce.cuh"
#include "cuda/ops/kernels.h"

namespace dsv4::cuda::ops::detail {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxStreams = kMaxHyperStreams;
constexpr int kMaxMix = (2 + kMaxStreams) * kMaxStreams;   // mix width of a sublayer site

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Sinkhorn of one token's comb [n, n] (row j, column k), serial in one thread exactly as
// the CPU: logits -> row softmax (max-subtracted) + eps -> columns -> (iters-1) x (rows, columns).
__device__ void sinkhorn(float* comb, int n, int iters, float eps) {
  for (int j = 0; j < n; ++j) {
    float* row = comb + j * n;
    float max_value = -INFINITY;
    for (int k = 0; k < n; ++k) max_value = fmaxf(max_value, row[k]);
    float sum = 0.0f;
    for (int k = 0; k < n; ++k) {
      row[k] = expf(row[k] - max_value);
      sum += row[k];
    }
    for (int k = 0; k < n; ++k) row[k] /= sum;
    for (int k = 0; k < n; ++k) row[k] += eps;
  }
  auto normalize_columns = [&] {
    for (int k = 0; k < n; ++k) {
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) sum += comb[j * n + k];
      for (int j = 0; j < n; ++j) comb[j * n + k] /= (sum + eps);
    }
  };
  auto normalize_rows = [&] {
    for (int j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int k = 0; k < n; ++k) sum += comb[j * n + k];
      for (int k = 0; k < n; ++k) comb[j * n + k] /= (sum + eps);
    }
  };
  normalize_columns();
  for (int iter = 0; iter + 1 < iters; ++iter) {
    normalize_rows();
    normalize_columns();
  }
}

// One block per token t. streams: [tokens, n, hidden]; collapsed: [tokens, hidden];
// sites only (kHead false): post [tokens, n], comb [tokens, n, n].
template <bool kHead>
__global__ void __launch_bounds__(kThreads) hyper_mix_kernel(HyperWeights weights, HyperShape shape,
                                                             const float* streams, float* collapsed, float* post,
                                                             float* comb) {
  __shared__ float scratch[32];
  __shared__ float mixes[kMaxMix];
  __shared__ float pre[kMaxStreams];
  const int n = shape.n;
  const int64_t hidden = shape.hidden, flat_width = n * hidden;
  const int mix_width = kHead ? n : (2 + n) * n;
  const int64_t t = blockIdx.x;
  const float* token_streams = streams + t * flat_width;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;

  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < flat_width; i += blockDim.x) sum_squares += token_streams[i] * token_streams[i];
  sum_squares = block_sum(sum_squares, scratch);
  const float inv = 1.0f / sqrtf(sum_squares / static_cast<float>(flat_width) + shape.rms_eps);

  // mixes[m] = normalized . fn[m]: one warp per mix row, normalized rounded first as the CPU.
  for (int m = warp; m < mix_width; m += warps) {
    const float* fn_row = weights.fn + m * flat_width;
    float acc = 0.0f;
    for (int64_t i = lane; i < flat_width; i += 32) acc += (token_streams[i] * inv) * fn_row[i];
    acc = warp_sum(acc);
    if (lane == 0) mixes[m] = acc;
  }
  __syncthreads();

  if (threadIdx.x == 0) {
    const float* base = weights.base;
    const float* scale = weights.scale;
    for (int i = 0; i < n; ++i) pre[i] = sigmoid(mixes[i] * scale[0] + base[i]) + shape.hc_eps;
    if (!kHead) {
      for (int i = 0; i < n; ++i) post[t * n + i] = 2.0f * sigmoid(mixes[n + i] * scale[1] + base[n + i]);
      float* logits = mixes + 2 * n;  // [n, n], normalised in place
      for (int jk = 0; jk < n * n; ++jk) logits[jk] = logits[jk] * scale[2] + base[2 * n + jk];
      sinkhorn(logits, n, shape.sinkhorn_iters, shape.hc_eps);
      for (int jk = 0; jk < n * n; ++jk) comb[t * n * n + jk] = logits[jk];
    }
  }
  __syncthreads();

  float* out = collapsed + t * hidden;
  for (int64_t d = threadIdx.x; d < hidden; d += blockDim.x) {
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) sum += pre[i] * token_streams[i * hidden + d];
    out[d] = sum;
  }
}

// One thread per (t, d). streams: [tokens, n, hidden] in place; post [tokens, n];
// comb [tokens, n, n]; output [tokens, hidden]. Each thread owns column d of every
// stream of token t, so the in-place update needs no barrier.
__global__ void hyper_expand_kernel(const float* post, const float* comb, int n, int64_t hidden, const float* output,
                                    int64_t tokens, float* streams) {
  const int64_t total = tokens * hidden;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < total;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = item / hidden, d = item % hidden;
    float* token_streams = streams + t * n * hidden;
    const float* token_comb = comb + t * n * n;
    float old[kMaxStreams];
    for (int j = 0; j < n; ++j) old[j] = token_streams[j * hidden + d];
    const float out = output[t * hidden + d];
    for (int k = 0; k < n; ++k) {
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) sum += token_comb[j * n + k] * old[j];
      token_streams[k * hidden + d] = post[t * n + k] * out + sum;
    }
  }
}

}  // namespace

cudaError_t launch_hyper_mix(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                             float* collapsed, float* post, float* comb, bool head, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  if (head)
    hyper_mix_kernel<true><<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(weights, shape, streams,
                                                                                    collapsed, nullptr, nullptr);
  else
    hyper_mix_kernel<false><<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(weights, shape, streams,
                                                                                     collapsed, post, comb);
  return cudaGetLastError();
}

cudaError_t launch_hyper_expand(const float* post, const float* comb, const HyperShape& shape, const float* output,
                                int tokens, float* streams, cudaStream_t stream) {
  const int64_t items = static_cast<int64_t>(tokens) * shape.hidden;
  if (items <= 0) return cudaSuccess;
  hyper_expand_kernel<<<grid_for(items, kThreads), kThreads, 0, stream>>>(post, comb, shape.n, shape.hidden, output,
                                                                          tokens, streams);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

// Embedding lookup, RMSNorm and RoPE kernels (cpu twins: dequantize_rows of the
// embedding, cpu::rms_norm / rms_norm_unweighted, cpu::RopeTable::apply). FP32
// throughout. Argument checks: embed_norm_rope.cpp.
#include <cuda_bf16.h>

#include "cuda/ops/block_reduce.cuh"
#include "cuda/ops/kernels.h"
#include "cuda/ops/weight_decode.cuh"

namespace dsv4::cuda::ops::detail {

namespace {

constexpr int kThreads = 256;

// One block per token. embed: [vocab, hidden] any format; token_ids: [tokens];
// streams: [tokens, n, hidden]. The row is decoded exactly (FP32) once per element and
// copied into the n streams.
__global__ void embed_kernel(DeviceMatrix embed, const int32_t* token_ids, int n_streams, float* streams,
                             int32_t* error_flag) {
  const int64_t t = blockIdx.x;
  const int64_t hidden = embed.cols;
  const int32_t id = token_ids[t];
  const bool valid = id >= 0 && id < embed.rows;
  if (!valid && threadIdx.x == 0 && error_flag != nullptr) atomicOr(error_flag, kErrorIdOutOfRange);
  float* out = streams + t * n_streams * hidden;
  for (int64_t d = threadIdx.x; d < hidden; d += blockDim.x) {
    const float value = valid ? weight_element(embed, id, d) : 0.0f;
    for (int i = 0; i < n_streams; ++i) out[i * hidden + d] = value;
  }
}

// One block per row. x: [rows, width] in place; weight: [width] or null.
// CPU order: mean = sum(x^2) / width; inv = 1 / sqrt(mean + eps); x = w * (x * inv).
__global__ void rms_norm_kernel(float* x, int64_t width, const float* weight, float eps) {
  __shared__ float scratch[32];
  float* row = x + static_cast<int64_t>(blockIdx.x) * width;
  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) sum_squares += row[i] * row[i];
  sum_squares = block_sum(sum_squares, scratch);
  const float inv = 1.0f / sqrtf(sum_squares / static_cast<float>(width) + eps);
  if (weight != nullptr) {
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) row[i] = weight[i] * (row[i] * inv);
  } else {
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) row[i] *= inv;
  }
}

// One RoPE pair (even, odd) rotated by +angle (inverse: by -angle), angle = inv_freq x position
// (transformers: inv_freq (FP32) x float(position), cos / sin in FP32); shared by rope_kernel
// and rms_norm_rope_kernel, so both give the same bits. Explicit round-to-nearest products
// and sums: no FMA contraction that could differ between the two call sites.
__device__ __forceinline__ float2 rope_rotate_pair(float even, float odd, float inv_freq, float position,
                                                   bool inverse) {
  float sine, cosine;
  sincosf(inv_freq * position, &sine, &cosine);
  if (inverse) sine = -sine;
  return make_float2(__fsub_rn(__fmul_rn(even, cosine), __fmul_rn(odd, sine)),
                     __fadd_rn(__fmul_rn(odd, cosine), __fmul_rn(even, sine)));
}

// One thread per (token, vector, pair). x: [tokens, vectors, width]; the rotated part is
// channels [width - rope_dim, width); pair i = channels (2i, 2i+1) of it.
// positions: [tokens]; inv_freq: [rope_dim/2].
__global__ void rope_kernel(float* x, int64_t tokens, int vectors, int width, int rope_dim, const float* inv_freq,
                            const int32_t* positions, bool inverse) {
  const int pairs = rope_dim / 2;
  const int64_t total = tokens * vectors * pairs;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < total;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(item % pairs);
    const int64_t vector = item / pairs;  // t * vectors + v
    const int64_t t = vector / vectors;
    // transformers: freqs = inv_freq (fp32) * float(position); cos/sin in fp32.
    float* pair = x + vector * width + (width - rope_dim) + 2 * i;
    const float2 rotated = rope_rotate_pair(pair[0], pair[1], inv_freq[i], static_cast<float>(positions[t]), inverse);
    pair[0] = rotated.x;
    pair[1] = rotated.y;
  }
}

// rms_norm_kernel then rope_kernel in one launch, one block per (token, vector) row: the
// same sum (same threads, same order), the same normalised values written, then after a
// barrier the same rotation of the last rope_dim channels: the same bits as the two
// launches. x: [tokens, vectors, width]; rows = tokens * vectors. out_bf16 (or null, same
// shape): each final value's RNE BF16 bits, stored where it is written (the normalised
// channels before the rope part by the norm loop, the rotated pairs by the rope loop).
__device__ __forceinline__ uint16_t bf16_bits_rn(float value) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(value));  // = pack_bf16's rounding (attention)
}
__global__ void rms_norm_rope_kernel(float* x, int vectors, int64_t width, const float* weight, float eps,
                                     int rope_dim, const float* inv_freq, const int32_t* positions,
                                     uint16_t* out_bf16) {
  __shared__ float scratch[32];
  const int64_t vector = blockIdx.x;
  float* row = x + vector * width;
  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) sum_squares += row[i] * row[i];
  sum_squares = block_sum(sum_squares, scratch);
  const float inv = 1.0f / sqrtf(sum_squares / static_cast<float>(width) + eps);
  if (weight != nullptr) {
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) row[i] = weight[i] * (row[i] * inv);
  } else {
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) row[i] *= inv;
  }
  uint16_t* row_bf16 = out_bf16 != nullptr ? out_bf16 + vector * width : nullptr;
  if (row_bf16 != nullptr)  // the channels the rope leaves as normalised (each thread reads back its own stores)
    for (int64_t i = threadIdx.x; i < width - rope_dim; i += blockDim.x) row_bf16[i] = bf16_bits_rn(row[i]);
  __syncthreads();  // the rotation reads values other threads normalised
  const int pairs = rope_dim / 2;
  const float position = pairs > 0 ? static_cast<float>(positions[vector / vectors]) : 0.0f;
  for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
    float* pair = row + (width - rope_dim) + 2 * i;
    const float2 rotated = rope_rotate_pair(pair[0], pair[1], inv_freq[i], position, false);
    const float rotated_even = rotated.x, rotated_odd = rotated.y;
    pair[0] = rotated_even;
    pair[1] = rotated_odd;
    if (row_bf16 != nullptr) {
      const int64_t c = (width - rope_dim) + 2 * i;
      row_bf16[c] = bf16_bits_rn(rotated_even);
      row_bf16[c + 1] = bf16_bits_rn(rotated_odd);
    }
  }
}

}  // namespace

cudaError_t launch_rms_norm_rope(float* x, int tokens, int vectors_per_token, int width, const float* weight,
                                 float eps, int rope_dim, const float* inv_freq, const int32_t* positions,
                                 cudaStream_t stream, uint16_t* out_bf16) {
  const int64_t rows = static_cast<int64_t>(tokens) * vectors_per_token;
  if (rows <= 0) return cudaSuccess;
  if (rows > 0x7fffffff) return cudaErrorInvalidValue;
  rms_norm_rope_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, vectors_per_token, width, weight, eps,
                                                                              rope_dim, inv_freq, positions, out_bf16);
  return cudaGetLastError();
}

cudaError_t launch_embed(const DeviceMatrix& embed, const int32_t* token_ids, int tokens, int n_streams,
                         float* streams, int32_t* error_flag, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  embed_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(embed, token_ids, n_streams, streams,
                                                                         error_flag);
  return cudaGetLastError();
}

cudaError_t launch_rms_norm(float* x, int64_t rows, int64_t width, const float* weight, float eps,
                            cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, width, weight, eps);
  return cudaGetLastError();
}

cudaError_t launch_rope(float* x, int tokens, int vectors_per_token, int width, int rope_dim, const float* inv_freq,
                        const int32_t* positions, bool inverse, cudaStream_t stream) {
  const int64_t items = static_cast<int64_t>(tokens) * vectors_per_token * (rope_dim / 2);
  if (items <= 0) return cudaSuccess;
  rope_kernel<<<grid_for(items, kThreads), kThreads, 0, stream>>>(x, tokens, vectors_per_token, width, rope_dim,
                                                                    inv_freq, positions, inverse);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::ops::detail

// The straightforward CUDA ops of the DeepSeek-V4 forward (issue 4: correct before
// fast). Every op has a CPU twin in src/cpu (named next to each launcher) and a test
// in tests/cuda/ops against it. Activations are FP32 in device memory unless stated;
// GEMMs take BF16 operands and accumulate in FP32. All launchers are asynchronous on
// the given stream, allocate nothing and never synchronise (CUDA-graph capturable);
// they throw dsv4::Error for bad arguments and launch errors.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/device_types.h"

namespace dsv4::cuda::ops {

// Value OR-ed into *error_flag (the "bit 1" below: value 1, the same value as
// moe::kErrorTokenIdOutOfRange) when an id is out of range: a token id outside
// [0, vocab) (embedding, hash routing), a routed expert id outside [0, experts), or an
// expert matrix whose shape disagrees with the layer's. The offending row reads nothing
// and contributes zeros. Never cleared here.
inline constexpr int32_t kErrorIdOutOfRange = 1;

// ---- Embedding (cpu: dequantize_rows of embed, copied into every stream) ---------------
// streams[t, i, :] = embed[token_ids[t], :] for i < n. embed: [vocab, hidden], any format.
// Token ids outside [0, vocab) set bit 1 of *error_flag and write zeros.
void embed_tokens(const DeviceMatrix& embed, const int32_t* token_ids, int tokens, int n_streams,
                  float* streams /*[tokens, n, hidden]*/, int32_t* error_flag, cudaStream_t stream);

// ---- RMSNorm (cpu: rms_norm / rms_norm_unweighted) ----------------------------------
// In place over `rows` rows of `width`: x = w * (x * rsqrt(mean(x^2) + eps)); weight null
// means unweighted. Row stride = width.
void rms_norm(float* x, int64_t rows, int64_t width, const float* weight /*[width] or null*/, float eps,
              cudaStream_t stream);

// ---- RoPE (cpu: RopeTable::apply) -----------------------------------------------------
// For token t and vector v < vectors_per_token: rotates the last rope_dim channels of
// x[t, v, :] (width `width`) by angle positions[t] * inv_freq[i] (pairs 2i, 2i+1,
// angle computed in FP32 as inv_freq[i] * float(position), cos/sin in FP32);
// inverse rotates by -angle. positions: [tokens] device array.
void rope(float* x, int tokens, int vectors_per_token, int width, int rope_dim, const float* inv_freq /*[rope_dim/2]*/,
          const int32_t* positions, bool inverse, cudaStream_t stream);
// rms_norm(x, tokens * vectors_per_token, width, weight, eps) then rope(..., inverse =
// false) in one launch (a block per vector), bit-identical to the two calls.
// out_bf16 (optional, [tokens, vectors_per_token, width]): also the round-to-nearest-even
// BF16 bits of every value written to x (x keeps the FP32 result), in the same launch; the
// rounding of the attention kernels' pack_bf16, so sparse_attention's q_bf16 can be it.
void rms_norm_rope(float* x, int tokens, int vectors_per_token, int width, const float* weight /*[width] or null*/,
                   float eps, int rope_dim, const float* inv_freq /*[rope_dim/2]*/, const int32_t* positions,
                   cudaStream_t stream, uint16_t* out_bf16 = nullptr);

// ---- mHC (cpu: hyper_collapse / hyper_expand / hyper_head) ----------------------------
struct HyperWeights {          // device FP32
  const float* fn = nullptr;     // [mix, n*hidden], mix = (2+n)*n for sublayer sites, n for the head
  const float* base = nullptr;   // [mix]
  const float* scale = nullptr;  // [3] (sites) or [1] (head)
};
struct HyperShape {
  int n = 4;                  // hc_mult
  int hidden = 0;
  int sinkhorn_iters = 20;
  float hc_eps = 1e-6f;
  float rms_eps = 1e-6f;      // of the unweighted norm over the flattened streams
};
// collapsed[t] = sum_i pre[t,i] streams[t,i,:]; post [tokens, n], comb [tokens, n, n]
// (row j, column k: new stream k gets comb[j,k] * old stream j), Sinkhorn in FP32.
void hyper_collapse(const HyperWeights& weights, const HyperShape& shape, const float* streams /*[tokens, n, hidden]*/,
                    int tokens, float* collapsed /*[tokens, hidden]*/, float* post /*[tokens, n]*/,
                    float* comb /*[tokens, n, n]*/, cudaStream_t stream);
// streams[t,k,:] = post[t,k] * output[t,:] + sum_j comb[t,j,k] * streams[t,j,:] (in place).
void hyper_expand(const float* post, const float* comb, const HyperShape& shape, const float* output /*[tokens, hidden]*/,
                  int tokens, float* streams /*[tokens, n, hidden]*/, cudaStream_t stream);
// HyperHead: collapsed[t] = sum_i (sigmoid(mix_i * scale[0] + base[i]) + eps) streams[t,i,:].
void hyper_head(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                float* collapsed /*[tokens, hidden]*/, cudaStream_t stream);

// Fast forms (hyper_connection_fused_kernels.cu; the two above stay as the straightforward
// oracles): the mixing GEMM spread over every SM (partial sums per 128/256-column chunk
// into `workspace`, summed in a fixed order: deterministic), then per token Sinkhorn,
// collapse and the RMSNorm that follows the collapse in the model, fused:
//   collapsed[t] = norm_weight * (c * rsqrt(mean(c^2) + norm_eps)),  c = sum_i pre[t,i] streams[t,i,:]
// norm_weight null: no norm (collapsed = c). workspace: >= hyper_workspace_floats(shape,
// tokens) floats (workspace_floats says how many there are).
int64_t hyper_workspace_floats(const HyperShape& shape, int max_tokens);
void hyper_collapse_norm(const HyperWeights& weights, const HyperShape& shape,
                         const float* streams /*[tokens, n, hidden]*/, int tokens,
                         const float* norm_weight /*[hidden] or null*/, float norm_eps, float* workspace,
                         int64_t workspace_floats, float* collapsed /*[tokens, hidden]*/, float* post /*[tokens, n]*/,
                         float* comb /*[tokens, n, n]*/, cudaStream_t stream,
                         uint16_t* collapsed_bf16 = nullptr /*[tokens, hidden]: bf16_rn(collapsed), fast MoE input*/);
void hyper_head_norm(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                     const float* norm_weight /*[hidden] or null*/, float norm_eps, float* workspace,
                     int64_t workspace_floats, float* collapsed /*[tokens, hidden]*/, cudaStream_t stream);

// ---- Dense linear (cpu: linear / linear_rows) ----------------------------------------
// cuBLAS handle, stream and the scratch the GEMM path needs, all owned by the caller
// (the engine's arena). The handle must have its workspace set (cublasSetWorkspace)
// and its stream set to `stream` so the op is graph-capturable.
struct LinearContext {
  cublasHandle_t cublas = nullptr;
  cudaStream_t stream = nullptr;
  uint16_t* act_bf16 = nullptr;      // scratch: >= act_capacity BF16 elements (activations converted)
  int64_t act_capacity = 0;
  uint16_t* weight_bf16 = nullptr;   // scratch: >= weight_capacity BF16 elements (non-BF16 weights
  int64_t weight_capacity = 0;       // dequantized here before the GEMM); unused for BF16 weights
  // Split activations: x = bf16(x) + bf16(x - bf16(x)) (+ a third part, below), two BF16
  // GEMMs (the second adds into y), so the GEMM sees x to ~2^-17 relative instead of 2^-9
  // (the engine's correct-first path; act_capacity must then hold parts x tokens x cols).
  bool split_activations = false;
  // Optional FP32 scratch for split activations on few tokens (<= kStackedSplitMaxTokens):
  // the parts go through ONE GEMM as parts x tokens columns (the weight is streamed once),
  // into split_out [parts x tokens, rows], then y = their sum. Three parts
  // (hi + mid + lo: x to ~2^-26, below an FP32 GEMM's own rounding) when split_out and
  // act_bf16 hold 3 x tokens x (rows / cols), else two. Null, or too small for two:
  // two GEMMs, the second adding into y.
  float* split_out = nullptr;
  int64_t split_out_capacity = 0;
  // With split activations, calls of <= kSmallGemvMaxTokens tokens (cols % 8 == 0, the
  // BF16 weight 16-byte aligned; grouped: rank % 4 == 0) skip the conversion and cuBLAS:
  // one GEMV kernel reads x in FP32 (more exact than the 3-part split) and streams the
  // BF16 weight once over all SMs (small_gemv_kernels.cu). false: the cuBLAS paths above.
  bool small_gemv = true;
  // Calls of more tokens than this (capped at kSmallGemvMaxTokens) skip the GEMV. The
  // engine sets 2: on the H200 (2026-12-01) the GEMV beat or equalled the stacked cuBLAS
  // GEMM at 1 token on every engine shape, but lost on the wide ones at 8 tokens
  // (lm_head 0.52 vs 0.28 ms: each weight byte brings 8 tokens of x through L1).
  int64_t small_gemv_max_tokens = 8;
};
inline constexpr int64_t kSmallGemvMaxTokens = 8;
inline constexpr int64_t kStackedSplitMaxTokens = 64;
// y[t, r * 1] = sum_c x[t, c] W[row_begin + r, c] for r < row_count, t < tokens.
// x: [tokens, W.cols] with row stride x_stride (elements); y: [tokens, row_count] with row
// stride y_stride. BF16 operands (x rounded to BF16), FP32 accumulate and output.
// row_count = -1 means all rows from row_begin. Any row_begin in every format (the
// dequantize kernel picks the FP8 scale row of each absolute row). Non-BF16 weights need
// an even column count and weight_capacity >= row_count * cols; act_capacity >= tokens * cols.
// The handle must use CUBLAS_POINTER_MODE_HOST. y must not overlap x.
void linear(const LinearContext& ctx, const DeviceMatrix& weight, const float* x, int64_t x_stride, int64_t tokens,
            float* y, int64_t y_stride, int64_t row_begin = 0, int64_t row_count = -1);
// y [tokens, W.rows] (dense) += W x: with the few-token GEMV (BF16 W) the sum is added in
// its epilogue (y + s, the same bits as linear into scratch then add_inplace); otherwise
// linear into scratch [tokens, W.rows] then add_inplace (scratch must then be given).
void linear_add(const LinearContext& ctx, const DeviceMatrix& weight, const float* x, int64_t x_stride,
                int64_t tokens, float* y, float* scratch);
// Several linears on the same x (wq_a and wkv; the shared expert's w1 and w3):
// outputs[i].y [tokens, y_stride] = linear(*outputs[i].weight, x). Same results as one
// linear() per output (bit for bit); with split activations, <= kSmallGemvMaxTokens tokens
// and BF16 weights of one column count (% 8 == 0), all of them in ONE GEMV launch.
struct LinearOutput {
  const DeviceMatrix* weight = nullptr;
  float* y = nullptr;
  int64_t y_stride = 0;
};
void linear_same_input(const LinearContext& ctx, const LinearOutput* outputs, int count, const float* x,
                       int64_t x_stride, int64_t tokens);
// Grouped output projection: for g < groups,
//   y[t, g R + r] = sum_c x[t, g gw + c] W[g R + r, c],  W: [groups R, gw] (R = W.rows / groups)
// x: [tokens, groups gw] with row stride x_stride; y: [tokens, groups R] with row stride
// y_stride. One strided-batched cuBLAS GEMM over the groups (activations converted once,
// the weight dequantized whole when not BF16) when the scratch holds groups x gw columns
// of activations and the whole weight; otherwise one linear() per group (same results up
// to cuBLAS's summation order).
void linear_grouped(const LinearContext& ctx, const DeviceMatrix& weight, int64_t groups, const float* x,
                    int64_t x_stride, int64_t tokens, float* y, int64_t y_stride);
// The same in FP32 throughout (router gate scores: selection must follow the reference).
// weight_f32: [rows, cols] FP32 on the device.
// x: [tokens, cols] dense, y: [tokens, rows] dense. CUBLAS_COMPUTE_32F_PEDANTIC (never TF32).
void linear_f32(const LinearContext& ctx, const float* weight_f32, int64_t rows, int64_t cols, const float* x,
                int64_t tokens, float* y);

// ---- MoE, generic path (cpu: route / moe_forward) --------------------------------------
// Any expert format, any size; used when the fast 4-bit kernels (src/cuda/moe) do not
// apply (BF16/FP8 experts, shapes off their tiles). Correctness first: one pass per
// (token, expert) pair with weights dequantized on the fly.
struct GenericMoeWeights {
  int hidden = 0, intermediate = 0, experts = 0, top_k = 0;
  const DeviceMatrix* w1 = nullptr;      // device array [experts]: gate [I, H]
  const DeviceMatrix* w2 = nullptr;      // device array [experts]: down [H, I]
  const DeviceMatrix* w3 = nullptr;      // device array [experts]: up [I, H]
  DeviceMatrix shared_w1, shared_w2, shared_w3;
  bool has_shared = true;
  const float* gate_weight = nullptr;    // [experts, H] FP32
  const float* gate_bias = nullptr;      // [experts] (score routing)
  const int32_t* tid2eid = nullptr;      // [vocab, top_k]: hash routing when not null
  int64_t vocab_size = 0;
  float routed_scaling_factor = 1.0f, swiglu_limit = 10.0f;
};
// Bytes of scratch moe_generic_forward needs for `tokens` tokens.
size_t moe_generic_workspace_bytes(const GenericMoeWeights& weights, int tokens);
// out[t] = sum_k weight_k * expert_k(x[t]) + shared(x[t]). x: [tokens, H] FP32 (after
// ffn_norm); token_ids for hash routing. Routing ids out of range set *error_flag bit 1.
void moe_generic_forward(const LinearContext& ctx, const GenericMoeWeights& weights, const float* x,
                         const int32_t* token_ids, int tokens, void* workspace, float* out /*[tokens, H]*/,
                         int32_t* error_flag);

// ---- Small conversions ------------------------------------------------------------------
void f32_to_bf16(const float* in, uint16_t* out, int64_t count, cudaStream_t stream);
// y = x + add, elementwise (count elements).
void add_inplace(float* y, const float* add, int64_t count, cudaStream_t stream);

}  // namespace dsv4::cuda::ops

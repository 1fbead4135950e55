// Kernel launchers of the ops family, internal to src/cuda/ops. The .cu files hold only
// kernels and these launchers (no fmt/dsv4::Error: nvcc cannot compile fmt's consteval
// format strings); the engine-facing launchers of ops.h live in the .cpp files, which
// validate arguments, call these and turn a launch error into dsv4::Error.
// Every launcher returns the launch error (cudaGetLastError) and never synchronises.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/device_types.h"
#include "cuda/ops/ops.h"

namespace dsv4::cuda::ops::detail {

// ---- conversions (conversion_kernels.cu) ---------------------------------------------
// out[i] = bf16_rn(in[i]); in, out: [count].
cudaError_t launch_f32_to_bf16(const float* in, uint16_t* out, int64_t count, cudaStream_t stream);
// out[r, c] = bf16_rn(x[r * x_stride + c]); x: [rows, x_stride] (first cols used); out: [rows, cols].
// residual / residual2 (optional, [rows, cols]): the next BF16 parts of x (split activations).
cudaError_t launch_f32_rows_to_bf16(const float* x, int64_t x_stride, int64_t rows, int64_t cols, uint16_t* out,
                                    cudaStream_t stream, uint16_t* residual = nullptr,
                                    uint16_t* residual2 = nullptr);
// y[t, c] = stacked[t, c] + (sum of the other parts' [t, c]): stacked [parts tokens, cols]
// dense (parts 2 or 3), y [tokens, y_stride] (first cols written). The sum of a stacked
// split GEMM.
cudaError_t launch_add_stacked_parts(const float* stacked, int64_t tokens, int64_t cols, int parts, float* y,
                                     int64_t y_stride, cudaStream_t stream);
// y[i] += add[i]; [count].
cudaError_t launch_add_inplace(float* y, const float* add, int64_t count, cudaStream_t stream);

// ---- few-token BF16-weight GEMV (small_gemv_kernels.cu) --------------------------------
// For each segment s (1..4 weights on the same x, one launch) and r < seg[s].rows, t < tokens:
//   seg[s].y[t, r] = sum_c x[t, (r / group_rows) group_x_offset + c] W_s[r, c]
// W_s [rows, k] BF16 dense (16-byte aligned, k % 8 == 0), x FP32 read in full precision
// (row stride x_stride), FP32 accumulate, y [tokens, y_stride] (first rows columns written).
// group_rows (a multiple of kSmallGemvRowsPerWarp) maps rows to x column groups (the grouped
// out-projection, one segment); a plain linear passes group_rows >= rows, group_x_offset 0.
inline constexpr int kSmallGemvMaxTokens = 8;
inline constexpr int kSmallGemvRowsPerWarp = 4;
inline constexpr int kSmallGemvMaxSegments = 4;
struct SmallGemvSegment {
  const uint16_t* w = nullptr;
  int64_t rows = 0;
  float* y = nullptr;
  int64_t y_stride = 0;
};
struct SmallGemvParams {
  SmallGemvSegment seg[kSmallGemvMaxSegments];
  int segments = 1;
  int k = 0;
  int64_t group_rows = 0, group_x_offset = 0;
  const float* x = nullptr;
  int64_t x_stride = 0;
  int tokens = 0;
  bool accumulate = false;  // y += the result (instead of y =)
  bool x_vec4 = false;  // set by the launcher (float4 loads of x when aligned)
};
// Whether launch_small_gemv takes these params (else it returns cudaErrorInvalidValue).
bool small_gemv_supported(const SmallGemvParams& params);
// Warps of a block sharing one row set (split columns) for k columns and `rows` (padded)
// rows in all: 1, 2, 4 or 8.
int small_gemv_slices(int k, int64_t rows);
cudaError_t launch_small_gemv(const SmallGemvParams& params, cudaStream_t stream);

// ---- embedding, RMSNorm, RoPE (embed_norm_rope_kernels.cu) -----------------------------
cudaError_t launch_embed(const DeviceMatrix& embed, const int32_t* token_ids, int tokens, int n_streams,
                         float* streams, int32_t* error_flag, cudaStream_t stream);
cudaError_t launch_rms_norm(float* x, int64_t rows, int64_t width, const float* weight, float eps,
                            cudaStream_t stream);
cudaError_t launch_rope(float* x, int tokens, int vectors_per_token, int width, int rope_dim, const float* inv_freq,
                        const int32_t* positions, bool inverse, cudaStream_t stream);
// launch_rms_norm on the tokens x vectors rows, then launch_rope (forward), in one launch;
// out_bf16 (or null): the RNE BF16 bits of every value written to x.
cudaError_t launch_rms_norm_rope(float* x, int tokens, int vectors_per_token, int width, const float* weight,
                                 float eps, int rope_dim, const float* inv_freq, const int32_t* positions,
                                 cudaStream_t stream, uint16_t* out_bf16);

// ---- mHC (hyper_connection_kernels.cu) -------------------------------------------------
inline constexpr int kMaxHyperStreams = 8;  // hc_mult supported up to 8 (V4: 4)
// head == false: a sublayer site (collapsed, post, comb written); head == true: the
// HyperHead (collapsed only; post and comb unused).
cudaError_t launch_hyper_mix(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                             float* collapsed, float* post, float* comb, bool head, cudaStream_t stream);
cudaError_t launch_hyper_expand(const float* post, const float* comb, const HyperShape& shape, const float* output,
                                int tokens, float* streams, cudaStream_t stream);

// ---- fast mHC (hyper_connection_fused_kernels.cu) --------------------------------------
// Up to this many tokens the mixing GEMM uses the decode tiles (128 columns x 8 tokens a
// block), above it the prefill tiles (256 columns x 16 tokens).
inline constexpr int kHyperDecodeTokens = 64;
// Floats of the partial-sum scratch one fused collapse of `tokens` tokens uses:
// [chunks, tokens, mix + 1].
int64_t hyper_partial_floats(const HyperShape& shape, int tokens, bool head);
// Mixing GEMM into `partial`, then per token: Sinkhorn, collapse and (norm_weight not
// null) x = norm_weight * (x * rsqrt(mean(x^2) + norm_eps)); collapsed_bf16 (not null) gets
// bf16_rn of the final x. head: HyperHead (post, comb unused).
cudaError_t launch_hyper_collapse_fused(const HyperWeights& weights, const HyperShape& shape, const float* streams,
                                        int tokens, const float* norm_weight, float norm_eps, float* partial,
                                        float* collapsed, uint16_t* collapsed_bf16, float* post, float* comb,
                                        bool head, cudaStream_t stream);
// hyper_expand with a block row per token (tokens <= 65535: grid.y), float4 when aligned,
// for n == kHyperFastExpandStreams only (register arrays; the caller checks).
inline constexpr int kHyperFastExpandStreams = 4;
cudaError_t launch_hyper_expand_fast(const float* post, const float* comb, const HyperShape& shape,
                                     const float* output, int tokens, float* streams, cudaStream_t stream);

// ---- generic MoE (moe_generic_kernels.cu) ----------------------------------------------
// Scratch of one moe_generic_forward call, carved from the caller's workspace
// (moe_generic.cpp). slots = top_k + 1 per token: slot k < top_k is routed pick k,
// slot top_k the shared expert (unused without one).
struct MoeGenericScratch {
  float* scores = nullptr;        // [tokens, experts]: x Wg^T, then sqrt(softplus()) in place
  int32_t* topk_ids = nullptr;    // [tokens, top_k]; -1 where routing failed
  float* topk_weights = nullptr;  // [tokens, top_k]; 0 where routing failed
  float* act = nullptr;           // [tokens, slots, intermediate]: silu(min(g, L)) * clamp(u, +-L)
  float* contrib = nullptr;       // [tokens, slots, hidden]: weight * expert(x) per slot
};
struct MoeGenericParams {
  int tokens = 0, hidden = 0, intermediate = 0, experts = 0, top_k = 0;
  bool has_shared = true;
  const DeviceMatrix* w1 = nullptr;  // device arrays [experts]
  const DeviceMatrix* w2 = nullptr;
  const DeviceMatrix* w3 = nullptr;
  DeviceMatrix shared_w1, shared_w2, shared_w3;
  const float* gate_bias = nullptr;  // [experts] (score routing)
  const int32_t* tid2eid = nullptr;  // [vocab, top_k] (hash routing when not null)
  const int32_t* token_ids = nullptr;
  int64_t vocab_size = 0;
  float routed_scaling_factor = 1.0f, swiglu_limit = 10.0f;
  const float* x = nullptr;          // [tokens, hidden]
  float* out = nullptr;              // [tokens, hidden]
  int32_t* error_flag = nullptr;
  MoeGenericScratch scratch;
  cudaStream_t stream = nullptr;
};
// scratch.scores (raw logits, filled by the caller) -> scores, topk_ids, topk_weights.
cudaError_t launch_moe_generic_route(const MoeGenericParams& params);
// Experts on every (token, slot) pair, then out = sum_k contrib[k] (k order) + shared.
cudaError_t launch_moe_generic_experts(const MoeGenericParams& params);

// Grid size for `count` items of `threads` threads each, capped at the 1-D grid limit
// (the kernels that use it loop with a grid stride).
inline unsigned grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  constexpr int64_t kMaxBlocks = 0x7fffffff;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

}  // namespace dsv4::cuda::ops::detail

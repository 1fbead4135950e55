// hyper_collapse, hyper_expand, hyper_head and the fused collapse/head + norm of ops.h: argument checks, then the
// kernels of hyper_connection_kernels.cu.
#include <algorithm>

#include "cuda/common/cuda_check.h"
#include "cuda/ops/kernels.h"
#include "cuda/ops/ops.h"

namespace dsv4::cuda::ops {

namespace {
void check_shape(const HyperShape& shape, int tokens, const char* op) {
  DSV4_CHECK(shape.n >= 1 && shape.n <= detail::kMaxHyperStreams, "{}: hc_mult {} outside [1, {}]", op, shape.n,
             detail::kMaxHyperStreams);
  DSV4_CHECK(shape.hidden > 0, "{}: hidden {} must be positive", op, shape.hidden);
  DSV4_CHECK(tokens >= 0, "{}: tokens {}", op, tokens);
}
}  // namespace

void hyper_collapse(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                    float* collapsed, float* post, float* comb, cudaStream_t stream) {
  check_shape(shape, tokens, "hyper_collapse");
  DSV4_CHECK(shape.sinkhorn_iters >= 1, "hyper_collapse: sinkhorn_iters {} must be >= 1", shape.sinkhorn_iters);
  if (tokens == 0) return;
  DSV4_CHECK(weights.fn && weights.base && weights.scale, "hyper_collapse: null fn, base or scale");
  DSV4_CHECK(streams && collapsed && post && comb, "hyper_collapse: null streams, collapsed, post or comb");
  DSV4_CUDA_CHECK(detail::launch_hyper_mix(weights, shape, streams, tokens, collapsed, post, comb, false, stream));
}

void hyper_expand(const float* post, const float* comb, const HyperShape& shape, const float* output, int tokens,
                  float* streams, cudaStream_t stream) {
  check_shape(shape, tokens, "hyper_expand");
  if (tokens == 0) return;
  DSV4_CHECK(post && comb && output && streams, "hyper_expand: null post, comb, output or streams");
  if (tokens <= 65535 && shape.n == detail::kHyperFastExpandStreams)  // fast kernel: tokens on grid.y
    DSV4_CUDA_CHECK(detail::launch_hyper_expand_fast(post, comb, shape, output, tokens, streams, stream));
  else
    DSV4_CUDA_CHECK(detail::launch_hyper_expand(post, comb, shape, output, tokens, streams, stream));
}

int64_t hyper_workspace_floats(const HyperShape& shape, int max_tokens) {
  check_shape(shape, max_tokens, "hyper_workspace_floats");
  // The decode and prefill tilings chunk differently: the larger of both at their largest count.
  const int decode_tokens = std::min(max_tokens, detail::kHyperDecodeTokens);
  return std::max<int64_t>({1, detail::hyper_partial_floats(shape, decode_tokens, false),
                            detail::hyper_partial_floats(shape, max_tokens, false)});
}

namespace {
void check_fused(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                 const float* workspace, int64_t workspace_floats, const float* collapsed, bool head,
                 const char* op) {
  check_shape(shape, tokens, op);
  DSV4_CHECK(weights.fn && weights.base && weights.scale, "{}: null fn, base or scale", op);
  DSV4_CHECK(streams && collapsed && workspace, "{}: null streams, collapsed or workspace", op);
  const int64_t need = detail::hyper_partial_floats(shape, tokens, head);
  DSV4_CHECK(need <= workspace_floats,
             "{}: workspace of {} floats is too small for {} tokens (n {}, hidden {}): {} needed "
             "(hyper_workspace_floats)",
             op, workspace_floats, tokens, shape.n, shape.hidden, need);
}
}  // namespace

void hyper_collapse_norm(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                         const float* norm_weight, float norm_eps, float* workspace, int64_t workspace_floats,
                         float* collapsed, float* post, float* comb, cudaStream_t stream, uint16_t* collapsed_bf16) {
  check_shape(shape, tokens, "hyper_collapse_norm");
  DSV4_CHECK(shape.sinkhorn_iters >= 1, "hyper_collapse_norm: sinkhorn_iters {} must be >= 1", shape.sinkhorn_iters);
  if (tokens == 0) return;
  check_fused(weights, shape, streams, tokens, workspace, workspace_floats, collapsed, false, "hyper_collapse_norm");
  DSV4_CHECK(post && comb, "hyper_collapse_norm: null post or comb");
  DSV4_CUDA_CHECK(detail::launch_hyper_collapse_fused(weights, shape, streams, tokens, norm_weight, norm_eps, workspace,
                                                      collapsed, collapsed_bf16, post, comb, false, stream));
}

void hyper_head_norm(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                     const float* norm_weight, float norm_eps, float* workspace, int64_t workspace_floats,
                     float* collapsed, cudaStream_t stream) {
  check_shape(shape, tokens, "hyper_head_norm");
  if (tokens == 0) return;
  check_fused(weights, shape, streams, tokens, workspace, workspace_floats, collapsed, true, "hyper_head_norm");
  DSV4_CUDA_CHECK(detail::launch_hyper_collapse_fused(weights, shape, streams, tokens, norm_weight, norm_eps, workspace,
                                                      collapsed, nullptr, nullptr, nullptr, true, stream));
}

void hyper_head(const HyperWeights& weights, const HyperShape& shape, const float* streams, int tokens,
                float* collapsed, cudaStream_t stream) {
  check_shape(shape, tokens, "hyper_head");
  if (tokens == 0) return;
  DSV4_CHECK(weights.fn && weights.base && weights.scale, "hyper_head: null fn, base or scale");
  DSV4_CHECK(streams && collapsed, "hyper_head: null streams or collapsed");
  DSV4_CUDA_CHECK(detail::launch_hyper_mix(weights, shape, streams, tokens, collapsed, nullptr, nullptr, true, stream));
}

}  // namespace dsv4::cuda::ops

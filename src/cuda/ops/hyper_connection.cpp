// hyper_collapse, hyper_expand and hyper_head of ops.h: argument checks, then the
// kernels of hyper_connection_kernels.cu.
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
  DSV4_CUDA_CHECK(detail::launch_hyper_expand(post, comb, shape, output, tokens, streams, stream));
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

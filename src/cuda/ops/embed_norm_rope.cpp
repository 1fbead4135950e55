// embed_tokens, rms_norm and rope of ops.h: argument checks, then the kernels of
// embed_norm_rope_kernels.cu.
#include "cuda/common/cuda_check.h"
#include "cuda/ops/kernels.h"
#include "cuda/ops/ops.h"
#include "dsv4/weight_format.h"

namespace dsv4::cuda::ops {

namespace {
bool known_format(int format) {
  return format >= static_cast<int>(WeightFormat::kF32) && format <= static_cast<int>(WeightFormat::kNVFP4);
}
}  // namespace

void embed_tokens(const DeviceMatrix& embed, const int32_t* token_ids, int tokens, int n_streams, float* streams,
                  int32_t* error_flag, cudaStream_t stream) {
  DSV4_CHECK(tokens >= 0 && n_streams >= 1, "embed_tokens: tokens {} n_streams {}", tokens, n_streams);
  DSV4_CHECK(known_format(embed.format), "embed_tokens: unknown weight format {}", embed.format);
  DSV4_CHECK(embed.rows > 0 && embed.cols > 0 && embed.data != nullptr, "embed_tokens: empty embedding [{}, {}]",
             embed.rows, embed.cols);
  if (tokens == 0) return;
  DSV4_CHECK(token_ids != nullptr && streams != nullptr, "embed_tokens: null token_ids or streams");
  DSV4_CHECK(error_flag != nullptr, "embed_tokens: null error_flag (out-of-range ids are reported there)");
  DSV4_CUDA_CHECK(detail::launch_embed(embed, token_ids, tokens, n_streams, streams, error_flag, stream));
}

void rms_norm(float* x, int64_t rows, int64_t width, const float* weight, float eps, cudaStream_t stream) {
  DSV4_CHECK(rows >= 0 && width > 0, "rms_norm: rows {} width {}", rows, width);
  DSV4_CHECK(rows <= 0x7fffffff, "rms_norm: {} rows exceed the grid", rows);
  if (rows == 0) return;
  DSV4_CHECK(x != nullptr, "rms_norm: null x");
  DSV4_CUDA_CHECK(detail::launch_rms_norm(x, rows, width, weight, eps, stream));
}

void rope(float* x, int tokens, int vectors_per_token, int width, int rope_dim, const float* inv_freq,
          const int32_t* positions, bool inverse, cudaStream_t stream) {
  DSV4_CHECK(tokens >= 0 && vectors_per_token >= 0, "rope: tokens {} vectors_per_token {}", tokens,
             vectors_per_token);
  DSV4_CHECK(rope_dim >= 0 && rope_dim % 2 == 0 && rope_dim <= width,
             "rope: rope_dim {} must be even and at most the width {}", rope_dim, width);
  if (static_cast<int64_t>(tokens) * vectors_per_token * rope_dim == 0) return;
  DSV4_CHECK(x != nullptr && inv_freq != nullptr && positions != nullptr, "rope: null x, inv_freq or positions");
  DSV4_CUDA_CHECK(
      detail::launch_rope(x, tokens, vectors_per_token, width, rope_dim, inv_freq, positions, inverse, stream));
}

void rms_norm_rope(float* x, int tokens, int vectors_per_token, int width, const float* weight, float eps,
                   int rope_dim, const float* inv_freq, const int32_t* positions, cudaStream_t stream,
                   uint16_t* out_bf16) {
  DSV4_CHECK(tokens >= 0 && vectors_per_token >= 0 && width > 0, "rms_norm_rope: tokens {} vectors_per_token {} width {}",
             tokens, vectors_per_token, width);
  DSV4_CHECK(rope_dim >= 0 && rope_dim % 2 == 0 && rope_dim <= width,
             "rms_norm_rope: rope_dim {} must be even and at most the width {}", rope_dim, width);
  const int64_t rows = static_cast<int64_t>(tokens) * vectors_per_token;
  DSV4_CHECK(rows <= 0x7fffffff, "rms_norm_rope: {} rows exceed the grid", rows);
  if (rows == 0) return;
  DSV4_CHECK(x != nullptr, "rms_norm_rope: null x");
  DSV4_CHECK(rope_dim == 0 || (inv_freq != nullptr && positions != nullptr), "rms_norm_rope: null inv_freq or positions");
  DSV4_CUDA_CHECK(detail::launch_rms_norm_rope(x, tokens, vectors_per_token, width, weight, eps, rope_dim, inv_freq,
                                               positions, stream, out_bf16));
}

}  // namespace dsv4::cuda::ops

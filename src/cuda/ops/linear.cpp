// Dense linear layers on cuBLAS (cpu twins: cpu::linear / linear_rows).
//
// Row-major to cuBLAS (column-major): a row-major [R, C] array with row stride ld is the
// column-major [C, R] matrix with leading dimension ld. For y[t, r] = sum_c x[t, c] W[r, c]:
//   C (column-major [row_count, tokens], ldc = y_stride)   = y
//   A (column-major [cols, row_count], lda = cols), op T   = W rows [row_begin, +row_count)
//   B (column-major [cols, tokens], ldb = cols), op N      = x converted to dense BF16
// so cublasGemmEx(T, N, m = row_count, n = tokens, k = cols).
#include <algorithm>
#include <climits>

#include "cuda/common/cuda_check.h"
#include "cuda/formats/dequantize.h"
#include "cuda/ops/kernels.h"
#include "cuda/ops/ops.h"
#include "dsv4/weight_format.h"

namespace dsv4::cuda::ops {

namespace {

// The handle must run on ctx.stream (graph capture) with host scalars (alpha, beta here).
void check_context(const LinearContext& ctx, const char* op) {
  DSV4_CHECK(ctx.cublas != nullptr, "{}: LinearContext has no cuBLAS handle", op);
  cudaStream_t handle_stream = nullptr;
  DSV4_CUBLAS_CHECK(cublasGetStream(ctx.cublas, &handle_stream));
  DSV4_CHECK(handle_stream == ctx.stream,
             "{}: the cuBLAS handle runs on stream {} but LinearContext.stream is {} (call cublasSetStream once "
             "when creating the context)",
             op, static_cast<void*>(handle_stream), static_cast<void*>(ctx.stream));
  cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
  DSV4_CUBLAS_CHECK(cublasGetPointerMode(ctx.cublas, &mode));
  DSV4_CHECK(mode == CUBLAS_POINTER_MODE_HOST, "{}: the cuBLAS handle must use CUBLAS_POINTER_MODE_HOST", op);
}

void check_int(int64_t value, const char* what, const char* op) {
  DSV4_CHECK(value >= 0 && value <= INT_MAX, "{}: {} = {} does not fit cuBLAS's int", op, what, value);
}

// C = op(A)^T B for `batch` groups (strides between groups; batch 1 ignores them), BF16
// operands, FP32 accumulate and output. A: W rows (column-major [k, m], lda); B: the
// converted activations (column-major [k, n], ldb); C column-major [m, n], ldc.
void bf16_gemm(const LinearContext& ctx, int m, int n, int k, const uint16_t* a, int lda, int64_t stride_a,
               const uint16_t* b, int ldb, int64_t stride_b, float beta, float* c, int ldc, int64_t stride_c,
               int batch) {
  const float alpha = 1.0f;
  if (batch == 1) {
    DSV4_CUBLAS_CHECK(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_16BF, lda, b,
                                   CUDA_R_16BF, ldb, &beta, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
    return;
  }
  DSV4_CUBLAS_CHECK(cublasGemmStridedBatchedEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_16BF,
                                               lda, stride_a, b, CUDA_R_16BF, ldb, stride_b, &beta, c, CUDA_R_32F, ldc,
                                               stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// How a call splits its activations: parts 1 (off), 2 (hi + lo) or 3 (hi + mid + lo);
// stacked: the parts go through one GEMM of parts x tokens columns into split_out.
struct SplitPlan {
  int parts = 1;
  bool stacked = false;
};
SplitPlan plan_split(const LinearContext& ctx, int64_t tokens, int64_t x_cols, int64_t y_cols) {
  if (!ctx.split_activations) return {1, false};
  if (tokens <= kStackedSplitMaxTokens && ctx.split_out != nullptr)
    for (int parts : {3, 2})
      if (parts * tokens * y_cols <= ctx.split_out_capacity && parts * tokens * x_cols <= ctx.act_capacity)
        return {parts, true};
  return {2, false};
}

// Converts x [tokens, x_cols] (row stride x_stride) into ctx.act_bf16: part p at rows
// [p tokens, (p + 1) tokens) of [parts tokens, x_cols].
void convert_activations(const LinearContext& ctx, const SplitPlan& plan, const float* x, int64_t x_stride,
                         int64_t tokens, int64_t x_cols) {
  uint16_t* part1 = plan.parts >= 2 ? ctx.act_bf16 + tokens * x_cols : nullptr;
  uint16_t* part2 = plan.parts >= 3 ? ctx.act_bf16 + 2 * tokens * x_cols : nullptr;
  DSV4_CUDA_CHECK(detail::launch_f32_rows_to_bf16(x, x_stride, tokens, x_cols, ctx.act_bf16, ctx.stream, part1, part2));
}

// y [tokens, y_cols] (row stride y_stride) = the GEMM(s) of `batch` groups of m rows
// each (y_cols = batch m; group g writes columns [g m, (g + 1) m)) on ctx.act_bf16
// (convert_activations' parts, each [tokens, ldb]). Stacked: one GEMM of parts x tokens
// columns into split_out [parts tokens, y_cols], then y = their sum; unstacked split:
// hi, then lo with beta 1.
void split_gemm(const LinearContext& ctx, const SplitPlan& plan, int64_t m, int64_t tokens, int64_t k,
                const uint16_t* w, int64_t lda, int64_t stride_a, int64_t ldb, int64_t stride_b, float* y,
                int64_t y_stride, int batch) {
  const int64_t y_cols = batch * m;
  const uint16_t* act = ctx.act_bf16;
  if (plan.parts == 1) {
    bf16_gemm(ctx, int(m), int(tokens), int(k), w, int(lda), stride_a, act, int(ldb), stride_b, 0.0f, y,
              int(y_stride), m, batch);
    return;
  }
  if (plan.stacked) {
    bf16_gemm(ctx, int(m), int(plan.parts * tokens), int(k), w, int(lda), stride_a, act, int(ldb), stride_b, 0.0f,
              ctx.split_out, int(y_cols), m, batch);
    DSV4_CUDA_CHECK(
        detail::launch_add_stacked_parts(ctx.split_out, tokens, y_cols, plan.parts, y, y_stride, ctx.stream));
    return;
  }
  bf16_gemm(ctx, int(m), int(tokens), int(k), w, int(lda), stride_a, act, int(ldb), stride_b, 0.0f, y,
            int(y_stride), m, batch);
  bf16_gemm(ctx, int(m), int(tokens), int(k), w, int(lda), stride_a, act + tokens * ldb, int(ldb), stride_b, 1.0f, y,
            int(y_stride), m, batch);
}

// The few-token GEMV (kernels.h: launch_small_gemv) on a dense BF16 weight [rows, k]
// when ctx and the shapes allow it; false: the caller takes the cuBLAS path.
bool try_small_gemv(const LinearContext& ctx, const uint16_t* w, int64_t rows, int64_t k, int64_t group_rows,
                    int64_t group_x_offset, const float* x, int64_t x_stride, int64_t tokens, float* y,
                    int64_t y_stride, bool accumulate = false) {
  if (!ctx.split_activations || !ctx.small_gemv || tokens > std::min(ctx.small_gemv_max_tokens, kSmallGemvMaxTokens) || k > INT_MAX) return false;
  detail::SmallGemvParams p;
  p.seg[0] = {w, rows, y, y_stride};
  p.k = static_cast<int>(k);
  p.group_rows = group_rows;
  p.group_x_offset = group_x_offset;
  p.x = x;
  p.x_stride = x_stride;
  p.tokens = static_cast<int>(tokens);
  p.accumulate = accumulate;
  if (!detail::small_gemv_supported(p)) return false;
  DSV4_CUDA_CHECK(detail::launch_small_gemv(p, ctx.stream));
  return true;
}

// Whether a linear on this (possibly not yet dequantized) weight will take the GEMV: the
// shape conditions of small_gemv_supported that do not depend on the pointer.
bool small_gemv_shape(const LinearContext& ctx, int64_t tokens, int64_t k, int64_t group_rows) {
  return ctx.split_activations && ctx.small_gemv && tokens >= 1 && tokens <= std::min(ctx.small_gemv_max_tokens, kSmallGemvMaxTokens) && k >= 8 &&
         k % 8 == 0 && k <= INT_MAX && group_rows % detail::kSmallGemvRowsPerWarp == 0;
}

// Rounds up to the GEMV's row set (group_rows of a plain linear: every row in group 0).
int64_t whole_row_sets(int64_t rows) {
  return (rows + detail::kSmallGemvRowsPerWarp - 1) / detail::kSmallGemvRowsPerWarp * detail::kSmallGemvRowsPerWarp;
}

}  // namespace

void linear(const LinearContext& ctx, const DeviceMatrix& weight, const float* x, int64_t x_stride, int64_t tokens,
            float* y, int64_t y_stride, int64_t row_begin, int64_t row_count) {
  const int64_t cols = weight.cols;
  if (row_count < 0) row_count = weight.rows - row_begin;
  DSV4_CHECK(weight.format >= static_cast<int>(WeightFormat::kF32) &&
                 weight.format <= static_cast<int>(WeightFormat::kNVFP4),
             "linear: unknown weight format {}", weight.format);
  DSV4_CHECK(weight.rows > 0 && cols > 0 && weight.data != nullptr, "linear: empty weight [{}, {}]", weight.rows,
             cols);
  DSV4_CHECK(row_begin >= 0 && row_count >= 0 && row_begin + row_count <= weight.rows,
             "linear: rows [{}, {}) outside the weight's {} rows", row_begin, row_begin + row_count, weight.rows);
  DSV4_CHECK(tokens >= 0, "linear: tokens {}", tokens);
  DSV4_CHECK(x_stride >= cols, "linear: x_stride {} is less than the weight's {} columns", x_stride, cols);
  DSV4_CHECK(y_stride >= row_count, "linear: y_stride {} is less than row_count {}", y_stride, row_count);
  if (tokens == 0 || row_count == 0) return;
  DSV4_CHECK(x != nullptr && y != nullptr, "linear: null x or y");
  check_context(ctx, "linear");
  check_int(row_count, "row_count", "linear");
  check_int(tokens, "tokens", "linear");
  check_int(cols, "cols", "linear");
  check_int(y_stride, "y_stride", "linear");
  check_int(x_stride, "x_stride", "linear");
  if (weight.format == static_cast<int>(WeightFormat::kF32)) {
    // Weights stored in FP32 are computed in FP32 (no TF32): the stored precision is
    // the model's, and rounding both operands to BF16 would cost ~1e-4 of cosine.
    const float alpha = 1.0f, beta = 0.0f;
    const float* w = reinterpret_cast<const float*>(weight.data) + row_begin * cols;
    DSV4_CUBLAS_CHECK(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(row_count),
                                   static_cast<int>(tokens), static_cast<int>(cols), &alpha, w, CUDA_R_32F,
                                   static_cast<int>(cols), x, CUDA_R_32F, static_cast<int>(x_stride), &beta, y,
                                   CUDA_R_32F, static_cast<int>(y_stride), CUBLAS_COMPUTE_32F_PEDANTIC,
                                   CUBLAS_GEMM_DEFAULT));
    return;
  }
  // Few tokens: the GEMV reads x in FP32 (no conversion, no activation scratch).
  const bool gemv = small_gemv_shape(ctx, tokens, cols, whole_row_sets(row_count));
  const SplitPlan plan = plan_split(ctx, tokens, cols, row_count);
  const auto convert = [&] {
    const int64_t act_needed = plan.parts * tokens * cols;
    DSV4_CHECK(ctx.act_bf16 != nullptr && act_needed <= ctx.act_capacity,
               "linear: activation scratch too small: {} x tokens {} x cols {} = {} BF16 elements, act_capacity {}",
               plan.parts, tokens, cols, act_needed, ctx.act_capacity);
    convert_activations(ctx, plan, x, x_stride, tokens, cols);
  };
  if (!gemv) convert();

  const uint16_t* w_bf16 = nullptr;  // [row_count, cols] BF16, row stride cols
  if (weight.format == static_cast<int>(WeightFormat::kBF16)) {
    w_bf16 = reinterpret_cast<const uint16_t*>(weight.data) + row_begin * cols;
  } else {
    DSV4_CHECK(ctx.weight_bf16 != nullptr && row_count * cols <= ctx.weight_capacity,
               "linear: weight scratch too small: {} rows x {} cols = {} BF16 elements, weight_capacity {}",
               row_count, cols, row_count * cols, ctx.weight_capacity);
    DSV4_CHECK(cols % 2 == 0, "linear: a {} weight needs an even column count to dequantize, got {}",
               weight_format_name(static_cast<WeightFormat>(weight.format)), cols);
    DequantizeParams params{weight.format, weight.rows, cols,         weight.data,     weight.scales,
                            weight.scale_is_f32, weight.scale_cols, weight.tensor_scale, ctx.weight_bf16, ctx.stream};
    params.row_begin = row_begin;
    params.row_count = row_count;
    DSV4_CUDA_CHECK(dequantize_to_bf16(params));
    w_bf16 = ctx.weight_bf16;
  }

  if (gemv && try_small_gemv(ctx, w_bf16, row_count, cols, whole_row_sets(row_count), 0, x, x_stride, tokens, y,
                             y_stride))
    return;
  if (gemv) convert();  // the weight pointer was not 16-byte aligned: the cuBLAS path after all
  split_gemm(ctx, plan, row_count, tokens, cols, w_bf16, cols, 0, cols, 0, y, y_stride, 1);
}

void linear_add(const LinearContext& ctx, const DeviceMatrix& weight, const float* x, int64_t x_stride,
                int64_t tokens, float* y, float* scratch) {
  DSV4_CHECK(tokens >= 0, "linear_add: tokens {}", tokens);
  if (tokens == 0) return;
  DSV4_CHECK(weight.rows > 0 && weight.cols > 0 && weight.data != nullptr, "linear_add: empty weight [{}, {}]",
             weight.rows, weight.cols);
  DSV4_CHECK(x != nullptr && y != nullptr, "linear_add: null x or y");
  DSV4_CHECK(x_stride >= weight.cols, "linear_add: x_stride {} is less than the weight's {} columns", x_stride,
             weight.cols);
  if (weight.format == static_cast<int>(WeightFormat::kBF16) &&
      small_gemv_shape(ctx, tokens, weight.cols, whole_row_sets(weight.rows))) {
    check_context(ctx, "linear_add");
    if (try_small_gemv(ctx, reinterpret_cast<const uint16_t*>(weight.data), weight.rows, weight.cols,
                       whole_row_sets(weight.rows), 0, x, x_stride, tokens, y, weight.rows, /*accumulate=*/true))
      return;
  }
  DSV4_CHECK(scratch != nullptr, "linear_add: null scratch (needed off the GEMV path: tokens {}, format {})", tokens,
             weight.format);
  linear(ctx, weight, x, x_stride, tokens, scratch, weight.rows);
  DSV4_CUDA_CHECK(detail::launch_add_inplace(y, scratch, tokens * weight.rows, ctx.stream));
}

void linear_same_input(const LinearContext& ctx, const LinearOutput* outputs, int count, const float* x,
                       int64_t x_stride, int64_t tokens) {
  DSV4_CHECK(count >= 0 && (count == 0 || outputs != nullptr), "linear_same_input: {} outputs at {}", count,
             static_cast<const void*>(outputs));
  for (int i = 0; i < count; ++i)
    DSV4_CHECK(outputs[i].weight != nullptr, "linear_same_input: output {} has no weight", i);
  bool fused = count >= 2 && count <= detail::kSmallGemvMaxSegments && tokens >= 1 && x != nullptr;
  detail::SmallGemvParams p;
  for (int i = 0; fused && i < count; ++i) {
    const DeviceMatrix& w = *outputs[i].weight;
    fused = w.format == static_cast<int>(WeightFormat::kBF16) && w.cols == outputs[0].weight->cols &&
            x_stride >= w.cols && outputs[i].y_stride >= w.rows &&
            small_gemv_shape(ctx, tokens, w.cols, detail::kSmallGemvRowsPerWarp);
    p.seg[i] = {reinterpret_cast<const uint16_t*>(w.data), w.rows, outputs[i].y, outputs[i].y_stride};
  }
  if (fused) {
    check_context(ctx, "linear_same_input");
    p.segments = count;
    p.k = static_cast<int>(outputs[0].weight->cols);
    p.group_rows = 0;
    for (int i = 0; i < count; ++i) p.group_rows = std::max(p.group_rows, whole_row_sets(outputs[i].weight->rows));
    p.group_x_offset = 0;
    p.x = x;
    p.x_stride = x_stride;
    p.tokens = static_cast<int>(tokens);
    if (detail::small_gemv_supported(p)) {
      DSV4_CUDA_CHECK(detail::launch_small_gemv(p, ctx.stream));
      return;
    }
  }
  for (int i = 0; i < count; ++i) linear(ctx, *outputs[i].weight, x, x_stride, tokens, outputs[i].y, outputs[i].y_stride);
}

void linear_grouped(const LinearContext& ctx, const DeviceMatrix& weight, int64_t groups, const float* x,
                    int64_t x_stride, int64_t tokens, float* y, int64_t y_stride) {
  DSV4_CHECK(groups >= 1 && weight.rows > 0 && weight.rows % groups == 0,
             "linear_grouped: the weight's {} rows do not split into {} groups", weight.rows, groups);
  const int64_t rank = weight.rows / groups, gw = weight.cols, x_cols = groups * gw;
  DSV4_CHECK(x_stride >= x_cols, "linear_grouped: x_stride {} is less than groups {} x group width {}", x_stride,
             groups, gw);
  DSV4_CHECK(y_stride >= groups * rank, "linear_grouped: y_stride {} is less than groups {} x rank {}", y_stride,
             groups, rank);
  DSV4_CHECK(tokens >= 0, "linear_grouped: tokens {}", tokens);
  if (tokens == 0) return;
  DSV4_CHECK(x != nullptr && y != nullptr, "linear_grouped: null x or y");
  const bool bf16 = weight.format == static_cast<int>(WeightFormat::kBF16);
  const SplitPlan plan = plan_split(ctx, tokens, x_cols, groups * rank);
  const int64_t act_needed = plan.parts * tokens * x_cols;
  const bool batched = weight.format != static_cast<int>(WeightFormat::kF32) && ctx.act_bf16 != nullptr &&
                       act_needed <= ctx.act_capacity && groups <= INT_MAX &&
                       (bf16 || (ctx.weight_bf16 != nullptr && weight.rows * gw <= ctx.weight_capacity &&
                                 gw % 2 == 0));
  // Few tokens: the GEMV over all groups at once (x in FP32, no activation scratch).
  const bool gemv = weight.format != static_cast<int>(WeightFormat::kF32) && small_gemv_shape(ctx, tokens, gw, rank) &&
                    (bf16 || (ctx.weight_bf16 != nullptr && weight.rows * gw <= ctx.weight_capacity));
  if (gemv) {
    check_context(ctx, "linear_grouped");
    const uint16_t* w_bf16 = reinterpret_cast<const uint16_t*>(weight.data);
    if (!bf16) {
      DequantizeParams params{weight.format, weight.rows, gw,         weight.data,     weight.scales,
                              weight.scale_is_f32, weight.scale_cols, weight.tensor_scale, ctx.weight_bf16, ctx.stream};
      params.row_begin = 0;
      params.row_count = weight.rows;
      DSV4_CUDA_CHECK(dequantize_to_bf16(params));
      w_bf16 = ctx.weight_bf16;
    }
    if (try_small_gemv(ctx, w_bf16, weight.rows, gw, rank, gw, x, x_stride, tokens, y, y_stride)) return;
    // An unaligned weight pointer: the paths below (the dequantize above is redone; rare).
  }
  if (!batched) {
    for (int64_t g = 0; g < groups; ++g)
      linear(ctx, weight, x + g * gw, x_stride, tokens, y + g * rank, y_stride, g * rank, rank);
    return;
  }
  check_context(ctx, "linear_grouped");
  check_int(tokens, "tokens", "linear_grouped");
  check_int(x_cols, "groups x group width", "linear_grouped");
  check_int(y_stride, "y_stride", "linear_grouped");
  check_int(x_stride, "x_stride", "linear_grouped");
  convert_activations(ctx, plan, x, x_stride, tokens, x_cols);
  const uint16_t* w_bf16 = nullptr;  // [groups rank, gw]
  if (bf16) {
    w_bf16 = reinterpret_cast<const uint16_t*>(weight.data);
  } else {
    DequantizeParams params{weight.format, weight.rows, gw,         weight.data,     weight.scales,
                            weight.scale_is_f32, weight.scale_cols, weight.tensor_scale, ctx.weight_bf16, ctx.stream};
    params.row_begin = 0;
    params.row_count = weight.rows;
    DSV4_CUDA_CHECK(dequantize_to_bf16(params));
    w_bf16 = ctx.weight_bf16;
  }
  // Group g: A = W rows [g rank, +rank) (stride rank gw), B = act columns [g gw, +gw) of
  // rows of x_cols (stride gw), C = y columns [g rank, +rank) (stride rank).
  split_gemm(ctx, plan, rank, tokens, gw, w_bf16, gw, rank * gw, x_cols, gw, y, y_stride, static_cast<int>(groups));
}

void linear_f32(const LinearContext& ctx, const float* weight_f32, int64_t rows, int64_t cols, const float* x,
                int64_t tokens, float* y) {
  DSV4_CHECK(rows > 0 && cols > 0 && tokens >= 0, "linear_f32: rows {} cols {} tokens {}", rows, cols, tokens);
  if (tokens == 0) return;
  DSV4_CHECK(weight_f32 != nullptr && x != nullptr && y != nullptr, "linear_f32: null weight, x or y");
  check_context(ctx, "linear_f32");
  check_int(rows, "rows", "linear_f32");
  check_int(cols, "cols", "linear_f32");
  check_int(tokens, "tokens", "linear_f32");
  // Same mapping as linear: y (column-major [rows, tokens]) = W^T-op x. PEDANTIC keeps
  // cuBLAS off TF32 whatever the handle's math mode (router selection follows FP32).
  const float alpha = 1.0f, beta = 0.0f;
  const int m = static_cast<int>(rows), n = static_cast<int>(tokens), k = static_cast<int>(cols);
  const cublasStatus_t status = cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, weight_f32,
                                             CUDA_R_32F, k, x, CUDA_R_32F, k, &beta, y, CUDA_R_32F, m,
                                             CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    // A cuBLAS without the pedantic FP32 GemmEx path: plain SGEMM (FP32 unless the
    // handle was put in TF32 math mode).
    DSV4_CUBLAS_CHECK(cublasSgemm(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, weight_f32, k, x, k, &beta,
                                  y, m));
    return;
  }
  DSV4_CUBLAS_CHECK(status);
}

}  // namespace dsv4::cuda::ops

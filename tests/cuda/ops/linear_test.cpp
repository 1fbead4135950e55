// cuda::ops::linear (BF16 cuBLAS GEMM) vs cpu::linear_rows in every stored format, on
// odd shapes, row slices and strided inputs/outputs (the grouped output projection);
// linear_f32 vs cpu::linear; the dequantize kernel's row slice; capacity errors; and
// a CUDA-graph capture of linear.
//
// Tolerances: BF16 GEMM (x rounded to BF16, the weight rounded to BF16 where its format
// is not exact in BF16): |got - ref| <= 1e-2 * sum_c |x_c W_rc| elementwise, and
// cosine >= 0.9999 per token row. linear_f32: 1e-5 * sum_c |x_c W_rc|.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cuda/formats/dequantize.h"
#include "ops_test_util.h"

namespace dsv4::ops_test {
namespace {

using cuda::ops::linear;

// sum_c |x[t, c] W[row_begin + r, c]| for the error bound: [tokens, row_count].
std::vector<double> magnitude(const std::vector<float>& x, int64_t x_stride, const std::vector<float>& w, int64_t cols,
                              int64_t tokens, int64_t row_begin, int64_t row_count) {
  std::vector<double> m(static_cast<size_t>(tokens * row_count));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t r = 0; r < row_count; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += std::abs(double(x[t * x_stride + c]) * w[(row_begin + r) * cols + c]);
      m[t * row_count + r] = s;
    }
  return m;
}

struct LinearCase {
  WeightFormat format;
  int64_t tokens, rows, cols, row_begin, row_count;
  int64_t x_pad = 0, y_pad = 0;  // extra elements per row of x / y (strides cols + x_pad, row_count + y_pad)
  bool fp8_f32_scales = false;
};

std::string describe(const LinearCase& c) {
  return std::string(weight_format_name(c.format)) + (c.fp8_f32_scales ? "(f32 scales)" : "") + " tokens " +
         std::to_string(c.tokens) + " W [" + std::to_string(c.rows) + ", " + std::to_string(c.cols) + "] rows [" +
         std::to_string(c.row_begin) + ", +" + std::to_string(c.row_count) + ") x_pad " + std::to_string(c.x_pad) +
         " y_pad " + std::to_string(c.y_pad);
}

void run_case(const LinearCase& c, uint64_t seed) {
  SCOPED_TRACE(describe(c));
  const TestWeight w = make_weight(c.format, c.rows, c.cols, random_normal(c.rows * c.cols, 0.5f, seed), c.fp8_f32_scales);
  const int64_t x_stride = c.cols + c.x_pad, y_stride = c.row_count + c.y_pad;
  const std::vector<float> x = random_normal(c.tokens * x_stride, 1.0f, seed + 1);

  // Oracle: cpu::linear_rows on the dense x (FP32 x, exact weights).
  std::vector<float> x_dense(c.tokens * c.cols);
  for (int64_t t = 0; t < c.tokens; ++t)
    for (int64_t k = 0; k < c.cols; ++k) x_dense[t * c.cols + k] = x[t * x_stride + k];
  std::vector<float> want(c.tokens * c.row_count);
  cpu::linear_rows(w.matrix, c.row_begin, c.row_count, x_dense.data(), c.tokens, want.data());

  TestLinearContext context(c.tokens * c.cols, c.row_count * c.cols);
  DeviceBuffer<float> d_x(x), d_y(static_cast<size_t>(c.tokens * y_stride));
  d_y.poison();
  linear(context.ctx, w.device(), d_x.get(), x_stride, c.tokens, d_y.get(), y_stride, c.row_begin, c.row_count);
  const std::vector<float> y = d_y.download();

  std::vector<float> got(c.tokens * c.row_count);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t r = 0; r < c.row_count; ++r) got[t * c.row_count + r] = y[t * y_stride + r];
    for (int64_t r = c.row_count; r < y_stride; ++r)
      ASSERT_TRUE(std::isnan(y[t * y_stride + r])) << "linear wrote the y padding at token " << t << " column " << r;
  }
  const std::vector<double> scale = magnitude(x, x_stride, w.dequantized(), c.cols, c.tokens, c.row_begin, c.row_count);
  expect_close("linear y", got, want, {1e-2, 0}, {c.tokens, c.row_count}, {"t", "r"}, scale);
  expect_row_cosine("linear y", got, want, c.row_count, 0.9999);
}

TEST(CudaOpsLinear, EveryFormatOddShapes) {
  uint64_t seed = 100;
  for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kFP8Block})
    for (int64_t tokens : {1, 3, 77})
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{16, 64}, {83, 200}}) run_case({f, tokens, rows, cols, 0, rows}, seed++);
  // FP4 formats need whole blocks of columns (MXFP4 32, NVFP4 16).
  for (int64_t tokens : {1, 3, 77}) {
    run_case({WeightFormat::kMXFP4, tokens, 83, 64, 0, 83}, seed++);
    run_case({WeightFormat::kMXFP4, tokens, 16, 96, 0, 16}, seed++);
    run_case({WeightFormat::kNVFP4, tokens, 83, 64, 0, 83}, seed++);
    run_case({WeightFormat::kNVFP4, tokens, 16, 208, 0, 16}, seed++);
  }
  run_case({WeightFormat::kFP8Block, 3, 83, 200, 0, 83, 0, 0, /*fp8_f32_scales=*/true}, seed++);
}

TEST(CudaOpsLinear, RowSlicesAndStrides) {
  uint64_t seed = 300;
  for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kF32, WeightFormat::kFP8Block, WeightFormat::kMXFP4,
                         WeightFormat::kNVFP4}) {
    run_case({f, 3, 83, 64, 5, 40}, seed++);             // a slice off the start
    run_case({f, 77, 83, 64, 67, 16}, seed++);           // the last 16 rows
    run_case({f, 5, 83, 64, 10, 33, 7, 3}, seed++);      // slice + padded x and y rows
  }
  // FP8 slices crossing a 128-row scale block, starting off a block boundary.
  run_case({WeightFormat::kFP8Block, 3, 300, 200, 130, 100}, seed++);
  run_case({WeightFormat::kFP8Block, 2, 300, 200, 100, 60, 0, 0, true}, seed++);
}

// The engine's grouped output projection: group g reads x[:, g*gw : (g+1)*gw] of a
// [tokens, heads*head_dim] row and writes y[:, g*R : (g+1)*R] of a [tokens, groups*R] row,
// with rows [g*R, (g+1)*R) of W [groups*R, gw].
TEST(CudaOpsLinear, GroupedOutputProjection) {
  constexpr int64_t tokens = 7, groups = 4, gw = 50, R = 24;
  for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kFP8Block}) {
    SCOPED_TRACE(weight_format_name(f));
    const TestWeight w = make_weight(f, groups * R, gw, random_normal(groups * R * gw, 0.5f, 7));
    const std::vector<float> x = random_normal(tokens * groups * gw, 1.0f, 8);
    std::vector<float> want(tokens * groups * R);
    std::vector<double> scale(want.size());
    const std::vector<float> wf = w.dequantized();
    for (int64_t g = 0; g < groups; ++g) {
      std::vector<float> xg(tokens * gw), yg(tokens * R);
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t c = 0; c < gw; ++c) xg[t * gw + c] = x[t * groups * gw + g * gw + c];
      cpu::linear_rows(w.matrix, g * R, R, xg.data(), tokens, yg.data());
      const std::vector<double> mg = magnitude(xg, gw, wf, gw, tokens, g * R, R);
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t r = 0; r < R; ++r) {
          want[t * groups * R + g * R + r] = yg[t * R + r];
          scale[t * groups * R + g * R + r] = mg[t * R + r];
        }
    }
    TestLinearContext context(tokens * gw, R * gw);
    DeviceBuffer<float> d_x(x), d_y(want.size());
    d_y.poison();
    for (int64_t g = 0; g < groups; ++g)
      linear(context.ctx, w.device(), d_x.get() + g * gw, groups * gw, tokens, d_y.get() + g * R, groups * R, g * R, R);
    const std::vector<float> got = d_y.download();
    expect_close("grouped y", got, want, {1e-2, 0}, {tokens, groups, R}, {"t", "group", "r"}, scale);
    expect_row_cosine("grouped y", got, want, groups * R, 0.9999);
  }
}

// Split activations (the engine's mode): BF16 parts of x stacked into one GEMM of
// parts x tokens columns when split_out has room (tokens <= 64: 3 parts with room for 3,
// else 2), else two GEMMs (hi, lo). BF16 weights: with 2 parts the GEMM sees x to ~2^-17,
// so the bound is 1e-4 x sum |x W|; with 3 parts x to ~2^-26: only the accumulation
// order differs from the CPU's FP32 sum, 2e-6 x sum |x W|.
void run_split_case(WeightFormat format, int64_t tokens, int64_t rows, int64_t cols, int split_out_parts,
                    int64_t y_pad, uint64_t seed) {
  const bool with_split_out = split_out_parts > 0;
  SCOPED_TRACE(std::string(weight_format_name(format)) + " split tokens " + std::to_string(tokens) + " W [" +
               std::to_string(rows) + ", " + std::to_string(cols) + "]" + " split_out parts " +
               std::to_string(split_out_parts) + " y_pad " + std::to_string(y_pad));
  const TestWeight w = make_weight(format, rows, cols, random_normal(rows * cols, 0.5f, seed));
  const std::vector<float> x = random_normal(tokens * cols, 1.0f, seed + 1);
  std::vector<float> want(tokens * rows);
  cpu::linear_rows(w.matrix, 0, rows, x.data(), tokens, want.data());
  TestLinearContext context(3 * tokens * cols, rows * cols);
  context.ctx.split_activations = true;
  DeviceBuffer<float> split_out(static_cast<size_t>(std::max(1, split_out_parts) * tokens * rows));
  split_out.poison();
  if (with_split_out) {
    context.ctx.split_out = split_out.get();
    context.ctx.split_out_capacity = split_out_parts * tokens * rows;
  }
  const bool three_parts = split_out_parts == 3 && tokens <= cuda::ops::kStackedSplitMaxTokens;
  const int64_t y_stride = rows + y_pad;
  DeviceBuffer<float> d_x(x), d_y(static_cast<size_t>(tokens * y_stride));
  d_y.poison();
  linear(context.ctx, w.device(), d_x.get(), cols, tokens, d_y.get(), y_stride);
  const std::vector<float> y = d_y.download();
  std::vector<float> got(tokens * rows);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) got[t * rows + r] = y[t * y_stride + r];
    for (int64_t r = rows; r < y_stride; ++r) ASSERT_TRUE(std::isnan(y[t * y_stride + r])) << "wrote y padding";
  }
  const double rel = format != WeightFormat::kBF16 ? 1e-2 : three_parts ? 2e-6 : 1e-4;
  expect_close("split linear y", got, want, {rel, 0}, {tokens, rows}, {"t", "r"},
               magnitude(x, cols, w.dequantized(), cols, tokens, 0, rows));
  expect_row_cosine("split linear y", got, want, rows, 0.9999);
}

TEST(CudaOpsLinear, SplitActivationsStackedAndNot) {
  uint64_t seed = 500;
  for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kFP8Block})
    for (int64_t tokens : {1, 7, 64, 70})  // 70 > kStackedSplitMaxTokens: two GEMMs even with split_out
      for (int split_out_parts : {0, 2, 3}) {
        run_split_case(f, tokens, 83, 200, split_out_parts, 0, seed++);
        run_split_case(f, tokens, 16, 64, split_out_parts, 5, seed++);
      }
}

// linear_grouped vs per-group cpu::linear_rows: one strided-batched GEMM (BF16 and
// dequantized FP8), the per-group fallback (F32 weight; activation scratch too small),
// split activations stacked (tokens <= 64 with split_out) and not.
TEST(CudaOpsLinear, LinearGroupedMatchesCpu) {
  struct Case {
    WeightFormat format;
    int64_t tokens, groups, gw, rank;
    bool split, small_act;
  };
  const Case cases[] = {{WeightFormat::kBF16, 7, 4, 50, 24, false, false},
                        {WeightFormat::kBF16, 1, 8, 64, 32, true, false},
                        {WeightFormat::kBF16, 70, 3, 40, 17, true, false},
                        {WeightFormat::kFP8Block, 5, 4, 64, 24, true, false},
                        {WeightFormat::kF32, 3, 4, 50, 24, true, false},
                        {WeightFormat::kBF16, 9, 4, 50, 24, true, true}};
  uint64_t seed = 700;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(weight_format_name(c.format)) + " tokens " + std::to_string(c.tokens) + " groups " +
                 std::to_string(c.groups) + " gw " + std::to_string(c.gw) + " rank " + std::to_string(c.rank) +
                 (c.split ? " split" : "") + (c.small_act ? " small act scratch" : ""));
    const int64_t rows = c.groups * c.rank, x_stride = c.groups * c.gw + 3, y_stride = c.groups * c.rank + 2;
    const TestWeight w = make_weight(c.format, rows, c.gw, random_normal(rows * c.gw, 0.5f, seed++));
    const std::vector<float> x = random_normal(c.tokens * x_stride, 1.0f, seed++);
    const std::vector<float> wf = w.dequantized();
    std::vector<float> want(c.tokens * rows);
    std::vector<double> scale(want.size());
    for (int64_t g = 0; g < c.groups; ++g) {
      std::vector<float> xg(c.tokens * c.gw), yg(c.tokens * c.rank);
      for (int64_t t = 0; t < c.tokens; ++t)
        for (int64_t k = 0; k < c.gw; ++k) xg[t * c.gw + k] = x[t * x_stride + g * c.gw + k];
      cpu::linear_rows(w.matrix, g * c.rank, c.rank, xg.data(), c.tokens, yg.data());
      const std::vector<double> mg = magnitude(xg, c.gw, wf, c.gw, c.tokens, g * c.rank, c.rank);
      for (int64_t t = 0; t < c.tokens; ++t)
        for (int64_t r = 0; r < c.rank; ++r) {
          want[t * rows + g * c.rank + r] = yg[t * c.rank + r];
          scale[t * rows + g * c.rank + r] = mg[t * c.rank + r];
        }
    }
    const int64_t act_capacity = c.small_act ? 2 * c.tokens * c.gw : 2 * c.tokens * c.groups * c.gw;
    TestLinearContext context(act_capacity, rows * c.gw);
    context.ctx.split_activations = c.split;
    DeviceBuffer<float> split_out(static_cast<size_t>(2 * c.tokens * rows));
    context.ctx.split_out = split_out.get();
    context.ctx.split_out_capacity = 2 * c.tokens * rows;
    DeviceBuffer<float> d_x(x), d_y(static_cast<size_t>(c.tokens * y_stride));
    d_y.poison();
    cuda::ops::linear_grouped(context.ctx, w.device(), c.groups, d_x.get(), x_stride, c.tokens, d_y.get(), y_stride);
    const std::vector<float> y = d_y.download();
    std::vector<float> got(want.size());
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t r = 0; r < rows; ++r) got[t * rows + r] = y[t * y_stride + r];
      for (int64_t r = rows; r < y_stride; ++r) ASSERT_TRUE(std::isnan(y[t * y_stride + r])) << "wrote y padding";
    }
    const double rel = c.split && c.format == WeightFormat::kBF16 ? 1e-4 : (c.format == WeightFormat::kF32 ? 1e-5 : 1e-2);
    expect_close("grouped y", got, want, {rel, 0}, {c.tokens, c.groups, c.rank}, {"t", "group", "r"}, scale);
    expect_row_cosine("grouped y", got, want, rows, 0.9999);
  }
  TestLinearContext context(16, 16);
  const TestWeight w = make_weight(WeightFormat::kBF16, 10, 8, random_normal(80, 0.5f, 1));
  DeviceBuffer<float> d_x(64), d_y(64);
  EXPECT_THROW(cuda::ops::linear_grouped(context.ctx, w.device(), 3, d_x.get(), 24, 1, d_y.get(), 12), Error)
      << "10 rows do not split into 3 groups";
}

// The few-token GEMV (small_gemv_kernels.cu): split activations, tokens <= 8, cols % 8 == 0.
// It reads x in FP32, so with a BF16 weight only the summation order differs from the
// CPU's FP32 sum: 2e-6 x sum |x W| (the 3-part bound). The activation scratch is taken
// away (act_bf16 null, capacity 0): the cuBLAS path would throw, so a pass proves the
// GEMV ran. Ragged rows (not a multiple of the 4-row set), every column-slice count
// (k / 8 = 1 .. 1024 chunks), tokens 1..8 (templates 1,
// 2, 4, 8 with masked tokens), unaligned x (odd stride: scalar loads), padded y, row
// slices; the result must be the same bits on a second run. Warps per row set
// (small_gemv_slices): [83, 200] 1, [37, 520] 2, [7, 1032] 4, [37, 2056] and [130, 8192] 8,
// [8452, 1032] 1 with 4-5 chunks per lane.
struct GemvCase {
  WeightFormat format;
  int64_t tokens, rows, cols, row_begin, row_count, x_pad, y_pad;
};

void run_gemv_case(const GemvCase& c, uint64_t seed) {
  SCOPED_TRACE(std::string("gemv ") + weight_format_name(c.format) + " tokens " + std::to_string(c.tokens) + " W [" +
               std::to_string(c.rows) + ", " + std::to_string(c.cols) + "] rows [" + std::to_string(c.row_begin) +
               ", +" + std::to_string(c.row_count) + ") x_pad " + std::to_string(c.x_pad) + " y_pad " +
               std::to_string(c.y_pad));
  const TestWeight w = make_weight(c.format, c.rows, c.cols, random_normal(c.rows * c.cols, 0.5f, seed));
  const int64_t x_stride = c.cols + c.x_pad, y_stride = c.row_count + c.y_pad;
  const std::vector<float> x = random_normal(c.tokens * x_stride, 1.0f, seed + 1);
  std::vector<float> x_dense(c.tokens * c.cols);
  for (int64_t t = 0; t < c.tokens; ++t)
    for (int64_t k = 0; k < c.cols; ++k) x_dense[t * c.cols + k] = x[t * x_stride + k];
  std::vector<float> want(c.tokens * c.row_count);
  cpu::linear_rows(w.matrix, c.row_begin, c.row_count, x_dense.data(), c.tokens, want.data());

  TestLinearContext context(1, c.rows * c.cols);
  context.ctx.split_activations = true;
  context.ctx.act_bf16 = nullptr;  // the GEMV needs no activation scratch
  context.ctx.act_capacity = 0;
  DeviceBuffer<float> d_x(x), d_y(static_cast<size_t>(c.tokens * y_stride)), d_y2(static_cast<size_t>(c.tokens * y_stride));
  d_y.poison();
  d_y2.poison();
  linear(context.ctx, w.device(), d_x.get(), x_stride, c.tokens, d_y.get(), y_stride, c.row_begin, c.row_count);
  linear(context.ctx, w.device(), d_x.get(), x_stride, c.tokens, d_y2.get(), y_stride, c.row_begin, c.row_count);
  const std::vector<float> y = d_y.download(), y2 = d_y2.download();
  ASSERT_EQ(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)), 0) << "two runs differ";
  std::vector<float> got(c.tokens * c.row_count);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t r = 0; r < c.row_count; ++r) got[t * c.row_count + r] = y[t * y_stride + r];
    for (int64_t r = c.row_count; r < y_stride; ++r)
      ASSERT_TRUE(std::isnan(y[t * y_stride + r])) << "the GEMV wrote the y padding at token " << t << " column " << r;
  }
  const double rel = c.format == WeightFormat::kBF16 ? 2e-6 : 1e-2;
  expect_close("gemv y", got, want, {rel, 0}, {c.tokens, c.row_count}, {"t", "r"},
               magnitude(x, x_stride, w.dequantized(), c.cols, c.tokens, c.row_begin, c.row_count));
  expect_row_cosine("gemv y", got, want, c.row_count, 0.9999);
}

TEST(CudaOpsLinear, SmallGemvMatchesCpu) {
  uint64_t seed = 900;
  for (int64_t tokens : {1, 2, 3, 5, 8})
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{83, 200}, {1, 8}, {7, 1032}, {37, 520}, {37, 2056}, {130, 8192}}) {
      run_gemv_case({WeightFormat::kBF16, tokens, rows, cols, 0, rows, 0, 0}, seed++);
      run_gemv_case({WeightFormat::kBF16, tokens, rows, cols, 0, rows, 3, 5}, seed++);  // odd x stride: scalar x loads
    }
  // Enough rows for 1 warp per row set (>= 264 blocks of 32 rows): long per-lane runs, the
  // unrolled loop then the tail; 8452 rows: a ragged last row set.
  for (int64_t tokens : {1, 5}) run_gemv_case({WeightFormat::kBF16, tokens, 8452, 1032, 0, 8452, 0, 0}, seed++);
  // Row slices (the weight pointer offset row_begin * cols stays 16-byte aligned).
  run_gemv_case({WeightFormat::kBF16, 4, 83, 200, 5, 40, 4, 0}, seed++);
  run_gemv_case({WeightFormat::kBF16, 7, 300, 512, 297, 3, 0, 2}, seed++);
  // Dequantized weights go through the GEMV too.
  run_gemv_case({WeightFormat::kFP8Block, 3, 300, 256, 130, 100, 0, 0}, seed++);
  run_gemv_case({WeightFormat::kNVFP4, 6, 83, 208, 0, 83, 0, 1}, seed++);
}

// The grouped form (wo_a): rows map to x column groups (rank % 4 == 0), one launch.
TEST(CudaOpsLinear, SmallGemvGroupedMatchesCpu) {
  struct Case {
    WeightFormat format;
    int64_t tokens, groups, gw, rank, x_pad, y_pad;
  };
  const Case cases[] = {{WeightFormat::kBF16, 1, 8, 512, 32, 0, 0}, {WeightFormat::kBF16, 5, 4, 56, 24, 3, 2},
                        {WeightFormat::kBF16, 8, 3, 1024, 12, 4, 0}, {WeightFormat::kFP8Block, 2, 4, 64, 24, 0, 1}};
  uint64_t seed = 1000;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string("gemv grouped ") + weight_format_name(c.format) + " tokens " + std::to_string(c.tokens) +
                 " groups " + std::to_string(c.groups) + " gw " + std::to_string(c.gw) + " rank " +
                 std::to_string(c.rank) + " x_pad " + std::to_string(c.x_pad));
    const int64_t rows = c.groups * c.rank, x_stride = c.groups * c.gw + c.x_pad, y_stride = rows + c.y_pad;
    const TestWeight w = make_weight(c.format, rows, c.gw, random_normal(rows * c.gw, 0.5f, seed++));
    const std::vector<float> x = random_normal(c.tokens * x_stride, 1.0f, seed++);
    const std::vector<float> wf = w.dequantized();
    std::vector<float> want(c.tokens * rows);
    std::vector<double> scale(want.size());
    for (int64_t g = 0; g < c.groups; ++g) {
      std::vector<float> xg(c.tokens * c.gw), yg(c.tokens * c.rank);
      for (int64_t t = 0; t < c.tokens; ++t)
        for (int64_t k = 0; k < c.gw; ++k) xg[t * c.gw + k] = x[t * x_stride + g * c.gw + k];
      cpu::linear_rows(w.matrix, g * c.rank, c.rank, xg.data(), c.tokens, yg.data());
      const std::vector<double> mg = magnitude(xg, c.gw, wf, c.gw, c.tokens, g * c.rank, c.rank);
      for (int64_t t = 0; t < c.tokens; ++t)
        for (int64_t r = 0; r < c.rank; ++r) {
          want[t * rows + g * c.rank + r] = yg[t * c.rank + r];
          scale[t * rows + g * c.rank + r] = mg[t * c.rank + r];
        }
    }
    TestLinearContext context(1, rows * c.gw);
    context.ctx.split_activations = true;
    context.ctx.act_bf16 = nullptr;  // a pass proves the GEMV ran (the batched GEMM needs act scratch)
    context.ctx.act_capacity = 0;
    DeviceBuffer<float> d_x(x), d_y(static_cast<size_t>(c.tokens * y_stride));
    d_y.poison();
    cuda::ops::linear_grouped(context.ctx, w.device(), c.groups, d_x.get(), x_stride, c.tokens, d_y.get(), y_stride);
    const std::vector<float> y = d_y.download();
    std::vector<float> got(want.size());
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t r = 0; r < rows; ++r) got[t * rows + r] = y[t * y_stride + r];
      for (int64_t r = rows; r < y_stride; ++r) ASSERT_TRUE(std::isnan(y[t * y_stride + r])) << "wrote y padding";
    }
    const double rel = c.format == WeightFormat::kBF16 ? 2e-6 : 1e-2;
    expect_close("gemv grouped y", got, want, {rel, 0}, {c.tokens, c.groups, c.rank}, {"t", "group", "r"}, scale);
    expect_row_cosine("gemv grouped y", got, want, rows, 0.9999);
  }
}

// linear_same_input: 2-4 BF16 weights on one x in one GEMV launch (rows 83, 4, 1, 37:
// segments padded to whole 4-row sets, ragged tails), the same bits as one linear() per
// weight, and within 2e-6 x sum |x W| of the CPU. Then the fallbacks: an FP8 weight among
// them, or 9 tokens: one linear() per weight (same bits as separate calls).
TEST(CudaOpsLinear, LinearSameInputMatchesSeparateCalls) {
  constexpr int64_t cols = 264;
  const int64_t rows_of[] = {83, 4, 1, 37};
  uint64_t seed = 1100;
  for (int64_t tokens : {1, 3, 8, 9})
    for (int count : {2, 4})
      for (bool with_fp8 : {false, true}) {
        SCOPED_TRACE("tokens " + std::to_string(tokens) + " weights " + std::to_string(count) +
                     (with_fp8 ? " (one FP8)" : ""));
        std::vector<TestWeight> weights;
        for (int i = 0; i < count; ++i)
          weights.push_back(make_weight(with_fp8 && i == 1 ? WeightFormat::kFP8Block : WeightFormat::kBF16, rows_of[i],
                                        cols, random_normal(rows_of[i] * cols, 0.5f, seed++)));
        const int64_t x_stride = cols + 4;
        const std::vector<float> x = random_normal(tokens * x_stride, 1.0f, seed++);
        TestLinearContext context(3 * tokens * cols, 83 * cols);
        context.ctx.split_activations = true;
        DeviceBuffer<float> split_out(static_cast<size_t>(3 * tokens * 83));
        context.ctx.split_out = split_out.get();
        context.ctx.split_out_capacity = 3 * tokens * 83;
        DeviceBuffer<float> d_x(x);
        std::vector<cuda::DeviceMatrix> mats;
        std::vector<DeviceBuffer<float>> fused_y, single_y;
        std::vector<cuda::ops::LinearOutput> outputs;
        for (int i = 0; i < count; ++i) {
          mats.push_back(weights[i].device());
          fused_y.emplace_back(static_cast<size_t>(tokens * (rows_of[i] + 1)));
          single_y.emplace_back(static_cast<size_t>(tokens * (rows_of[i] + 1)));
          fused_y.back().poison();
          single_y.back().poison();
        }
        for (int i = 0; i < count; ++i) outputs.push_back({&mats[i], fused_y[i].get(), rows_of[i] + 1});
        cuda::ops::linear_same_input(context.ctx, outputs.data(), count, d_x.get(), x_stride, tokens);
        for (int i = 0; i < count; ++i)
          linear(context.ctx, mats[i], d_x.get(), x_stride, tokens, single_y[i].get(), rows_of[i] + 1);
        std::vector<float> x_dense(tokens * cols);
        for (int64_t t = 0; t < tokens; ++t)
          for (int64_t k = 0; k < cols; ++k) x_dense[t * cols + k] = x[t * x_stride + k];
        for (int i = 0; i < count; ++i) {
          SCOPED_TRACE("weight " + std::to_string(i));
          const std::vector<float> a = fused_y[i].download(), b = single_y[i].download();
          for (size_t e = 0; e < a.size(); ++e)
            ASSERT_EQ(std::memcmp(&a[e], &b[e], 4), 0) << "element " << e << ": " << a[e] << " vs " << b[e];
          const int64_t rows = rows_of[i];
          std::vector<float> got(tokens * rows), want(tokens * rows);
          for (int64_t t = 0; t < tokens; ++t) {
            for (int64_t r = 0; r < rows; ++r) got[t * rows + r] = a[t * (rows + 1) + r];
            ASSERT_TRUE(std::isnan(a[t * (rows + 1) + rows])) << "wrote y padding at token " << t;
          }
          cpu::linear_rows(weights[i].matrix, 0, rows, x_dense.data(), tokens, want.data());
          const bool bf16 = !(with_fp8 && i == 1);
          const double rel = !bf16 ? 1e-2 : tokens <= cuda::ops::kStackedSplitMaxTokens ? 2e-6 : 1e-4;
          expect_close("same-input y", got, want, {rel, 0}, {tokens, rows}, {"t", "r"},
                       magnitude(x, x_stride, weights[i].dequantized(), cols, tokens, 0, rows));
        }
      }
}

// linear_add: y += W x. GEMV path (BF16, tokens <= 8; scratch null is allowed there) and
// the scratch path (tokens 9; FP8 weight), each bit for bit equal to linear into scratch
// then add_inplace, and vs the CPU (y0 + W x).
TEST(CudaOpsLinear, LinearAddMatchesLinearThenAdd) {
  struct Case {
    WeightFormat format;
    int64_t tokens, rows, cols;
    bool null_scratch;
  };
  const Case cases[] = {{WeightFormat::kBF16, 1, 83, 264, true},
                        {WeightFormat::kBF16, 6, 4097, 1032, true},
                        {WeightFormat::kBF16, 9, 83, 264, false},
                        {WeightFormat::kFP8Block, 3, 83, 264, false}};
  uint64_t seed = 1200;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(weight_format_name(c.format)) + " tokens " + std::to_string(c.tokens) + " W [" +
                 std::to_string(c.rows) + ", " + std::to_string(c.cols) + "]");
    const TestWeight w = make_weight(c.format, c.rows, c.cols, random_normal(c.rows * c.cols, 0.5f, seed++));
    const std::vector<float> x = random_normal(c.tokens * c.cols, 1.0f, seed++);
    const std::vector<float> y0 = random_normal(c.tokens * c.rows, 2.0f, seed++);
    TestLinearContext context(3 * c.tokens * c.cols, c.rows * c.cols);
    context.ctx.split_activations = true;
    DeviceBuffer<float> split_out(static_cast<size_t>(3 * c.tokens * c.rows));
    context.ctx.split_out = split_out.get();
    context.ctx.split_out_capacity = 3 * c.tokens * c.rows;
    DeviceBuffer<float> d_x(x), d_y(y0), d_ref(y0), scratch(static_cast<size_t>(c.tokens * c.rows));
    cuda::ops::linear_add(context.ctx, w.device(), d_x.get(), c.cols, c.tokens, d_y.get(),
                          c.null_scratch ? nullptr : scratch.get());
    linear(context.ctx, w.device(), d_x.get(), c.cols, c.tokens, scratch.get(), c.rows);
    cuda::ops::add_inplace(d_ref.get(), scratch.get(), c.tokens * c.rows, context.stream);
    const std::vector<float> got = d_y.download(), ref = d_ref.download();
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(std::memcmp(&got[i], &ref[i], 4), 0) << "element " << i << ": " << got[i] << " vs " << ref[i];
    std::vector<float> want(c.tokens * c.rows);
    cpu::linear_rows(w.matrix, 0, c.rows, x.data(), c.tokens, want.data());
    std::vector<double> scale = magnitude(x, c.cols, w.dequantized(), c.cols, c.tokens, 0, c.rows);
    for (size_t i = 0; i < want.size(); ++i) {
      want[i] += y0[i];
      scale[i] += std::abs(double(y0[i]));
    }
    const double rel = c.format == WeightFormat::kBF16 ? 2e-6 : 1e-2;
    expect_close("linear_add y", got, want, {rel, 0}, {c.tokens, c.rows}, {"t", "r"}, scale);
  }
  TestLinearContext context(1, 1);
  const TestWeight w = make_weight(WeightFormat::kBF16, 16, 64, random_normal(16 * 64, 0.5f, 1));
  DeviceBuffer<float> d_x(9 * 64), d_y(9 * 16);
  EXPECT_THROW(cuda::ops::linear_add(context.ctx, w.device(), d_x.get(), 64, 9, d_y.get(), nullptr), Error)
      << "off the GEMV path a null scratch must be refused";
}

// small_gemv = false keeps the cuBLAS path (and its activation-scratch check) for the same
// call; tokens 9 (> kSmallGemvMaxTokens) and cols % 8 != 0 never take the GEMV.
TEST(CudaOpsLinear, SmallGemvOffOrOutOfRangeUsesCublas) {
  const TestWeight w = make_weight(WeightFormat::kBF16, 16, 64, random_normal(16 * 64, 0.5f, 51));
  const TestWeight odd = make_weight(WeightFormat::kBF16, 16, 60, random_normal(16 * 60, 0.5f, 52));
  DeviceBuffer<float> d_x(random_normal(9 * 64, 1.0f, 53)), d_y(9 * 16);
  TestLinearContext context(1, 1);
  context.ctx.split_activations = true;
  context.ctx.act_bf16 = nullptr;
  context.ctx.act_capacity = 0;
  EXPECT_NO_THROW(linear(context.ctx, w.device(), d_x.get(), 64, 8, d_y.get(), 16));
  EXPECT_THROW(linear(context.ctx, w.device(), d_x.get(), 64, 9, d_y.get(), 16), Error) << "9 tokens: cuBLAS path";
  EXPECT_THROW(linear(context.ctx, odd.device(), d_x.get(), 64, 2, d_y.get(), 16), Error) << "60 cols: cuBLAS path";
  context.ctx.small_gemv = false;
  EXPECT_THROW(linear(context.ctx, w.device(), d_x.get(), 64, 1, d_y.get(), 16), Error) << "small_gemv off";
  context.sync();
}

TEST(CudaOpsLinear, F32PathMatchesCpu) {
  for (auto [tokens, rows, cols] : {std::tuple<int64_t, int64_t, int64_t>{1, 16, 64}, {5, 37, 200}, {77, 83, 129}}) {
    SCOPED_TRACE("tokens " + std::to_string(tokens) + " W [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    const TestWeight w = make_weight(WeightFormat::kF32, rows, cols, random_normal(rows * cols, 0.5f, 11));
    const std::vector<float> x = random_normal(tokens * cols, 1.0f, 12);
    std::vector<float> want(tokens * rows);
    cpu::linear(w.matrix, x.data(), tokens, want.data());
    TestLinearContext context(1, 1);
    DeviceBuffer<float> d_w(w.dequantized()), d_x(x), d_y(want.size());
    d_y.poison();
    cuda::ops::linear_f32(context.ctx, d_w.get(), rows, cols, d_x.get(), tokens, d_y.get());
    const std::vector<float> got = d_y.download();
    expect_close("linear_f32 y", got, want, {1e-5, 0}, {tokens, rows}, {"t", "r"},
                 magnitude(x, cols, w.dequantized(), cols, tokens, 0, rows));
  }
}

// The row-slice extension of the dequantize kernel, bit for bit against the CPU.
TEST(CudaOpsLinear, DequantizeRowSliceBitExact) {
  for (WeightFormat f : {WeightFormat::kFP8Block, WeightFormat::kMXFP4, WeightFormat::kNVFP4, WeightFormat::kF32}) {
    SCOPED_TRACE(weight_format_name(f));
    constexpr int64_t rows = 300, cols = 64, begin = 131, count = 150;
    const TestWeight w = make_weight(f, rows, cols, random_normal(rows * cols, 0.5f, 21));
    std::vector<float> want(count * cols);
    dequantize_rows(w.matrix, begin, count, want.data());
    DeviceBuffer<uint16_t> out(count * cols + 8);
    out.poison();
    const cuda::DeviceMatrix m = w.device();
    cuda::DequantizeParams p{m.format, rows, cols, m.data, m.scales, m.scale_is_f32, m.scale_cols, m.tensor_scale,
                             out.get(), nullptr};
    p.row_begin = begin;
    p.row_count = count;
    ASSERT_EQ(cuda::dequantize_to_bf16(p), cudaSuccess);
    const std::vector<uint16_t> got = out.download();
    for (int64_t i = 0; i < count * cols; ++i)
      ASSERT_EQ(got[i], float_to_bf16(want[i])) << "slice row " << i / cols << " (matrix row " << begin + i / cols
                                                << ") col " << i % cols;
    for (int64_t i = count * cols; i < count * cols + 8; ++i) ASSERT_EQ(got[i], 0xffff) << "wrote past the slice";
    p.row_count = rows - begin + 1;
    EXPECT_EQ(cuda::dequantize_to_bf16(p), cudaErrorInvalidValue) << "a slice past the last row must be refused";
  }
}

TEST(CudaOpsLinear, RefusesShortScratchAndBadSlices) {
  const TestWeight w = make_weight(WeightFormat::kFP8Block, 83, 64, random_normal(83 * 64, 0.5f, 31));
  DeviceBuffer<float> d_x(random_normal(3 * 64, 1.0f, 32)), d_y(3 * 83);
  {
    TestLinearContext context(3 * 64 - 1, 83 * 64);
    EXPECT_THROW(linear(context.ctx, w.device(), d_x.get(), 64, 3, d_y.get(), 83), Error);
  }
  {
    TestLinearContext context(3 * 64, 83 * 64 - 1);
    EXPECT_THROW(linear(context.ctx, w.device(), d_x.get(), 64, 3, d_y.get(), 83), Error);
  }
  TestLinearContext context(3 * 64, 83 * 64);
  EXPECT_THROW(linear(context.ctx, w.device(), d_x.get(), 64, 3, d_y.get(), 83, 80, 4), Error);  // rows past the end
  EXPECT_THROW(linear(context.ctx, w.device(), d_x.get(), 63, 3, d_y.get(), 83), Error);         // x stride < cols
  EXPECT_THROW(linear(context.ctx, w.device(), d_x.get(), 64, 3, d_y.get(), 82), Error);         // y stride < rows
  try {
    TestLinearContext short_context(10, 83 * 64);
    linear(short_context.ctx, w.device(), d_x.get(), 64, 3, d_y.get(), 83);
    ADD_FAILURE() << "no error for a short activation scratch";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("act_capacity"), std::string::npos) << e.what();
  }
}

// linear (dequantize + conversion + cuBLAS) captured into a CUDA graph gives the same
// bits as the eager call: nothing in it allocates or synchronises.
TEST(CudaOpsLinear, GraphCaptureMatchesEager) {
  constexpr int64_t tokens = 5, rows = 83, cols = 64;
  const TestWeight w = make_weight(WeightFormat::kNVFP4, rows, cols, random_normal(rows * cols, 0.5f, 41));
  TestLinearContext context(tokens * cols, rows * cols);
  DeviceBuffer<float> d_x(random_normal(tokens * cols, 1.0f, 42)), eager(tokens * rows), graphed(tokens * rows);
  eager.poison();
  graphed.poison();
  linear(context.ctx, w.device(), d_x.get(), cols, tokens, eager.get(), rows);
  context.sync();
  cudaGraph_t graph = nullptr;
  OPS_CUDA_OK(cudaStreamBeginCapture(context.stream, cudaStreamCaptureModeThreadLocal));
  linear(context.ctx, w.device(), d_x.get(), cols, tokens, graphed.get(), rows);
  OPS_CUDA_OK(cudaStreamEndCapture(context.stream, &graph));
  cudaGraphExec_t exec = nullptr;
  OPS_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  OPS_CUDA_OK(cudaGraphLaunch(exec, context.stream));
  context.sync();
  const std::vector<float> a = eager.download(), b = graphed.download();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(std::memcmp(&a[i], &b[i], 4), 0) << "element " << i;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

}  // namespace
}  // namespace dsv4::ops_test

#include "cpu/cpu_ops.h"

#include <algorithm>
#include <limits>

#include "dsv4/dtype.h"
#include "dsv4/error.h"

namespace dsv4::cpu {

namespace {
// Output rows dequantized together: big enough to amortise the decode, small enough
// that [rows, in] FP32 stays in L2 for V4-Flash widths (64 x 4096 x 4 B = 1 MiB).
constexpr int64_t kRowBlock = 64;
// Below this many multiply-adds a parallel region costs more than it saves (and
// spinning OpenMP threads on a busy 2-core machine cost far more).
constexpr int64_t kParallelWork = 1 << 18;
}  // namespace

float dot(const float* a, const float* b, int64_t count) {
  // Four partial sums: lets the compiler vectorise without -ffast-math.
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < count; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void linear_rows(const QuantMatrix& weight, int64_t row_begin, int64_t row_count, const float* x, int64_t tokens,
                 float* y) {
  DSV4_CHECK(row_begin >= 0 && row_count >= 0 && row_begin + row_count <= weight.rows,
             "linear {}: rows [{}, {}) outside the matrix's {} rows", weight.name, row_begin, row_begin + row_count,
             weight.rows);
  const int64_t cols = weight.cols;
  const int64_t blocks = (row_count + kRowBlock - 1) / kRowBlock;
#pragma omp parallel if (row_count * cols * tokens >= kParallelWork)
  {
    std::vector<float> dequantized(static_cast<size_t>(kRowBlock * cols));  // [kRowBlock, cols]
#pragma omp for schedule(dynamic)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t first = block * kRowBlock;
      const int64_t count = std::min(kRowBlock, row_count - first);
      dequantize_rows(weight, row_begin + first, count, dequantized.data());
      for (int64_t n = 0; n < tokens; ++n) {
        const float* xn = x + n * cols;
        float* yn = y + n * row_count + first;
        for (int64_t r = 0; r < count; ++r) yn[r] = dot(xn, dequantized.data() + r * cols, cols);
      }
    }
  }
}

void linear(const QuantMatrix& weight, const float* x, int64_t tokens, float* y) {
  linear_rows(weight, 0, weight.rows, x, tokens, y);
}

std::vector<float> linear(const QuantMatrix& weight, std::span<const float> x, int64_t tokens) {
  DSV4_CHECK(static_cast<int64_t>(x.size()) == tokens * weight.cols,
             "linear {}: input has {} values, expected tokens {} x in_features {}", weight.name, x.size(),
             tokens, weight.cols);
  std::vector<float> y(static_cast<size_t>(tokens * weight.rows));
  linear(weight, x.data(), tokens, y.data());
  return y;
}

void rms_norm(float* rows, int64_t count, int64_t width, const float* weight, double eps) {
#pragma omp parallel for if (count * width >= (1 << 16))
  for (int64_t r = 0; r < count; ++r) {
    float* row = rows + r * width;
    const float mean_square = dot(row, row, width) / static_cast<float>(width);
    const float inv = 1.0f / std::sqrt(mean_square + static_cast<float>(eps));
    for (int64_t i = 0; i < width; ++i) row[i] = weight[i] * (row[i] * inv);
  }
}

void rms_norm_unweighted(float* rows, int64_t count, int64_t width, double eps) {
#pragma omp parallel for if (count * width >= (1 << 16))
  for (int64_t r = 0; r < count; ++r) {
    float* row = rows + r * width;
    const float mean_square = dot(row, row, width) / static_cast<float>(width);
    const float inv = 1.0f / std::sqrt(mean_square + static_cast<float>(eps));
    for (int64_t i = 0; i < width; ++i) row[i] *= inv;
  }
}

void softmax(float* values, int64_t count) {
  float max_value = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < count; ++i) max_value = std::max(max_value, values[i]);
  float sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    values[i] = std::exp(values[i] - max_value);
    sum += values[i];
  }
  for (int64_t i = 0; i < count; ++i) values[i] /= sum;
}

void round_to_bf16(float* values, int64_t count) {
  for (int64_t i = 0; i < count; ++i) values[i] = bf16_to_float(float_to_bf16(values[i]));
}

}  // namespace dsv4::cpu

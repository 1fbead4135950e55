// ops::argmax_rows (src/cuda/ops/argmax.h) against dsv4::greedy_token, the host rule:
// random rows of ragged widths, ties (the lowest index wins), -inf, NaN (ignored; a row of
// only NaN gives 0), the maximum in the last column and in a column past 1024 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "cuda/ops/argmax.h"
#include "dsv4/engine.h"
#include "ops_test_util.h"

namespace dsv4 {
namespace {

using ops_test::DeviceBuffer;

std::vector<int32_t> device_argmax(const std::vector<float>& x, int rows, int cols) {
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<int32_t> d_ids(static_cast<size_t>(rows));
  cuda::ops::argmax_rows(d_x.get(), rows, cols, d_ids.get(), nullptr);
  OPS_CUDA_OK(cudaDeviceSynchronize());
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  OPS_CUDA_OK(cudaMemcpy(ids.data(), d_ids.get(), ids.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
  return ids;
}

void expect_matches_host(const std::vector<float>& x, int rows, int cols, const char* what) {
  const std::vector<int32_t> ids = device_argmax(x, rows, cols);
  for (int r = 0; r < rows; ++r) {
    const std::span<const float> row(x.data() + static_cast<size_t>(r) * cols, static_cast<size_t>(cols));
    EXPECT_EQ(ids[r], greedy_token(row)) << what << ": row " << r << " of " << rows << " x " << cols;
  }
}

TEST(ArgmaxRows, RandomRaggedWidths) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int cols : {1, 7, 31, 33, 1000, 1024, 1025, 4097, 129280}) {
    const int rows = cols > 10000 ? 9 : 37;
    std::vector<float> x(static_cast<size_t>(rows) * cols);
    for (auto& v : x) v = normal(rng);
    expect_matches_host(x, rows, cols, "random");
  }
}

TEST(ArgmaxRows, TiesTakeTheLowestIndex) {
  const int rows = 6, cols = 5000;
  std::vector<float> x(static_cast<size_t>(rows) * cols, 1.0f);  // row 0: all equal -> 0
  for (int c : {4999, 1024, 3}) x[1 * cols + c] = 2.0f;             // row 1: three maxima -> 3
  for (int c : {4097, 2049}) x[2 * cols + c] = 2.0f;                // row 2: -> 2049 (other threads)
  x[3 * cols + 4999] = 3.0f;                                        // row 3: last column
  for (int c = 0; c < cols; ++c) x[4 * cols + c] = c == 0 ? -0.0f : (c == 7 ? 0.0f : -1.0f);  // row 4: -0 == +0
  for (int c = 0; c < cols; ++c) x[5 * cols + c] = static_cast<float>(c % 1024);  // maxima 1023, 2047, ...
  expect_matches_host(x, rows, cols, "ties");
  EXPECT_EQ(device_argmax(x, rows, cols), (std::vector<int32_t>{0, 3, 2049, 4999, 0, 1023}));
}

TEST(ArgmaxRows, InfinitiesAndNaN) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const int rows = 5, cols = 3000;
  std::vector<float> x(static_cast<size_t>(rows) * cols, -inf);  // row 0: all -inf -> 0
  for (int c = 0; c < cols; ++c) x[1 * cols + c] = nan;             // row 1: all NaN -> 0
  for (int c = 0; c < cols; ++c) x[2 * cols + c] = c < 2000 ? nan : -inf;  // row 2: -> 2000
  for (int c = 0; c < cols; ++c) x[3 * cols + c] = c == 0 ? nan : static_cast<float>(c % 17);  // NaN first
  x[4 * cols + 1500] = inf;                                            // row 4: +inf among -inf
  x[4 * cols + 2500] = inf;
  expect_matches_host(x, rows, cols, "inf / nan");
  EXPECT_EQ(device_argmax(x, rows, cols), (std::vector<int32_t>{0, 0, 2000, 16, 1500}));
}

TEST(ArgmaxRows, BadArgumentsAreErrors) {
  EXPECT_THROW(cuda::ops::argmax_rows(nullptr, 1, 0, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::ops::argmax_rows(nullptr, 2, 10, nullptr, nullptr), Error);
  EXPECT_NO_THROW(cuda::ops::argmax_rows(nullptr, 0, 10, nullptr, nullptr));  // nothing to do
}

}  // namespace
}  // namespace dsv4

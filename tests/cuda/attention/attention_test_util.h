// Shared by the attention tests: device arrays, NaN poison, deterministic random
// data, F32 QuantMatrix views, token batches, and the comparison that reports the
// worst element with its coordinates and both values.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_types.h"
#include "dsv4/dtype.h"
#include "dsv4/weight_format.h"

namespace dsv4::attention_test {

inline const float kNaN = std::numeric_limits<float>::quiet_NaN();
inline constexpr uint16_t kBf16NaN = 0x7fc0;

// Owns `count` elements of T in device memory.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t count) : count_(count) {
    if (count_ > 0) DSV4_CUDA_CHECK(cudaMalloc(&data_, count_ * sizeof(T)));
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& other) noexcept { *this = std::move(other); }
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    return *this;
  }
  ~DeviceArray() {
    if (data_ != nullptr) cudaFree(data_);
  }
  T* get() const { return data_; }
  size_t size() const { return count_; }
  void upload(const std::vector<T>& host) {
    EXPECT_LE(host.size(), count_);
    if (!host.empty()) DSV4_CUDA_CHECK(cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  void fill(T value) { upload(std::vector<T>(count_, value)); }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_ > 0) DSV4_CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// splitmix64-driven uniform floats in [lo, hi).
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>((next() >> 40) * 0x1.0p-24); }
  std::vector<float> vector(size_t count, float lo, float hi) {
    std::vector<float> out(count);
    for (float& v : out) v = uniform(lo, hi);
    return out;
  }

 private:
  uint64_t state_;
};

// An F32 QuantMatrix view of values [rows, cols] (the caller keeps values alive).
inline QuantMatrix f32_matrix(const std::string& name, const std::vector<float>& values, int64_t rows, int64_t cols) {
  QuantMatrix m;
  m.name = name;
  m.format = WeightFormat::kF32;
  m.rows = rows;
  m.cols = cols;
  m.data = reinterpret_cast<const uint8_t*>(values.data());
  return m;
}

inline float round_bf16(float value) { return bf16_to_float(float_to_bf16(value)); }

// A TokenBatch's host arrays and their device copies.
struct BatchArrays {
  std::vector<int32_t> positions, slots, first_rows;
  DeviceArray<int32_t> d_positions, d_slots, d_first_rows, d_token_ids;
  int tokens() const { return static_cast<int>(positions.size()); }
  // Appends `count` tokens of one sequence (slot) starting at position `start`.
  void add_sequence(int slot, int start, int count) {
    const int first = tokens();
    for (int i = 0; i < count; ++i) {
      positions.push_back(start + i);
      slots.push_back(slot);
      first_rows.push_back(first);
    }
  }
  cuda::TokenBatch upload() {
    d_positions = DeviceArray<int32_t>(positions.size());
    d_slots = DeviceArray<int32_t>(slots.size());
    d_first_rows = DeviceArray<int32_t>(first_rows.size());
    d_token_ids = DeviceArray<int32_t>(positions.size());
    d_positions.upload(positions);
    d_slots.upload(slots);
    d_first_rows.upload(first_rows);
    d_token_ids.fill(0);
    cuda::TokenBatch batch;
    batch.tokens = tokens();
    batch.token_ids = d_token_ids.get();
    batch.positions = d_positions.get();
    batch.slots = d_slots.get();
    batch.first_rows = d_first_rows.get();
    return batch;
  }
};

// Elements of a and b with the same bit pattern (sizes must match: else 0).
inline size_t count_identical_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += std::memcmp(&a[i], &b[i], sizeof(float)) == 0;
  return same;
}

// Elementwise |got - want| <= atol + rtol |want| (NaN in either fails). Reports the
// worst element, located by `where(index)`, and how many elements failed.
inline void expect_close(const std::string& what, const float* got, const float* want, size_t count, double atol,
                         double rtol, const std::function<std::string(size_t)>& where) {
  double worst_excess = 0.0;
  size_t worst = 0, failures = 0;
  for (size_t i = 0; i < count; ++i) {
    const double g = got[i], w = want[i];
    const double bound = atol + rtol * std::fabs(w);
    const double excess = (std::isnan(g) || std::isnan(w)) ? std::numeric_limits<double>::infinity()
                                                           : std::fabs(g - w) - bound;
    if (excess > 0) {
      ++failures;
      if (excess > worst_excess || failures == 1) {
        worst_excess = excess;
        worst = i;
      }
    }
  }
  if (failures > 0)
    ADD_FAILURE() << what << ": " << failures << " of " << count << " elements outside atol " << atol << " + rtol "
                  << rtol << "; worst at " << where(worst) << ": got " << got[worst] << ", want " << want[worst]
                  << " (|diff| " << std::fabs(static_cast<double>(got[worst]) - want[worst]) << ")";
}

// A CSA selection list of top_k entries for one token (picks [top_k]): valid picks
// (distinct, ascending, < visible) at even list positions, junk the kernels must skip
// between (-1, negatives, >= visible, >= max_entries). Returns the valid picks in list order.
inline std::vector<int> fill_selected_with_junk(int visible, int max_entries, int top_k, int32_t* picks) {
  const int junk[] = {-1, -7, visible, max_entries, visible + 3, 1 << 30};
  const int stride = std::max(1, visible / ((top_k + 1) / 2));
  std::vector<int> valid;
  int next = 0;
  for (int i = 0; i < top_k; ++i) {
    if (i % 2 == 0 && next * stride < visible) {
      picks[i] = next++ * stride;
      valid.push_back(picks[i]);
    } else {
      picks[i] = junk[i % 6];
    }
  }
  return valid;
}

}  // namespace dsv4::attention_test

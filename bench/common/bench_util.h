// What every benchmark binary needs (benchmarking.md): CUDA-event timing with the L2
// flushed before each run, the limits measured in the same run (HBM copy bandwidth, a
// cuBLAS BF16 GEMM), a UTC timestamp for the JSON lines, and comma-list flags.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"

namespace dsv4::bench {

// Median milliseconds of fn over `iters` timed runs, after `warmup` untimed ones; a 256 MiB
// write flushes L2 before each timed run (weights and KV are not L2-resident in a model).
class Timer {
 public:
  explicit Timer(int default_warmup) : default_warmup_(default_warmup) {
    DSV4_CUDA_CHECK(cudaEventCreate(&start_));
    DSV4_CUDA_CHECK(cudaEventCreate(&stop_));
    DSV4_CUDA_CHECK(cudaMalloc(&flush_, kFlushBytes));
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaFree(flush_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  double median_ms(const std::function<void()>& fn, int iters, int warmup = -1) {
    for (int i = 0; i < (warmup < 0 ? default_warmup_ : warmup); ++i) fn();
    std::vector<float> times;
    for (int i = 0; i < iters; ++i) {
      DSV4_CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, kFlushBytes));
      DSV4_CUDA_CHECK(cudaEventRecord(start_));
      fn();
      DSV4_CUDA_CHECK(cudaEventRecord(stop_));
      DSV4_CUDA_CHECK(cudaEventSynchronize(stop_));
      float ms = 0;
      DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
      times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }

 private:
  static constexpr size_t kFlushBytes = 256ull << 20;
  int default_warmup_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  void* flush_ = nullptr;
};

// Device-to-device copy of 1 GiB (2 GiB moved: read + write), GB/s.
inline double hbm_copy_gbps(Timer& timer) {
  const size_t bytes = 1ull << 30;
  void *a = nullptr, *b = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&a, bytes));
  DSV4_CUDA_CHECK(cudaMalloc(&b, bytes));
  DSV4_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double ms =
      timer.median_ms([&] { DSV4_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 10);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

// cuBLAS BF16 x BF16 -> FP32 GEMM of n^3 (CUBLAS_GEMM_DEFAULT), median of `iters`, TFLOP/s.
inline double cublas_bf16_tflops(Timer& timer, int n, int iters) {
  cublasHandle_t handle;
  DSV4_CUBLAS_CHECK(cublasCreate(&handle));
  void *a = nullptr, *b = nullptr, *c = nullptr;
  const size_t elems = static_cast<size_t>(n) * n;
  DSV4_CUDA_CHECK(cudaMalloc(&a, elems * 2));
  DSV4_CUDA_CHECK(cudaMalloc(&b, elems * 2));
  DSV4_CUDA_CHECK(cudaMalloc(&c, elems * 4));
  DSV4_CUDA_CHECK(cudaMemset(a, 0x3c, elems * 2));  // BF16 ~0.0115: finite products
  DSV4_CUDA_CHECK(cudaMemset(b, 0x3c, elems * 2));
  const float alpha = 1.0f, beta = 0.0f;
  const double ms = timer.median_ms(
      [&] {
        DSV4_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b,
                                       CUDA_R_16BF, n, &beta, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
      },
      iters);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cublasDestroy(handle);
  return 2.0 * n * n * static_cast<double>(n) / (ms * 1e-3) / 1e12;
}

// "2026-12-01T19:51:18Z".
inline std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

// "1,8,64" -> {1, 8, 64}.
inline std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) v.push_back(std::stoi(item));
  return v;
}

}  // namespace dsv4::bench

// Error checks for CUDA runtime and cuBLAS calls: a failure throws dsv4::Error naming
// the call, the file:line and the CUDA error string. Host code only.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "dsv4/error.h"

#define DSV4_CUDA_CHECK(expr)                                                                       \
  do {                                                                                              \
    const cudaError_t dsv4_status_ = (expr);                                                        \
    if (dsv4_status_ != cudaSuccess)                                                                \
      ::dsv4::fail("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(dsv4_status_),             \
                   cudaGetErrorString(dsv4_status_), #expr, __FILE__, __LINE__);                    \
  } while (0)

#define DSV4_CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                              \
    const cublasStatus_t dsv4_status_ = (expr);                                                     \
    if (dsv4_status_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::dsv4::fail("cuBLAS error {} ({}) in {} at {}:{}", static_cast<int>(dsv4_status_),           \
                   cublasGetStatusString(dsv4_status_), #expr, __FILE__, __LINE__);                 \
  } while (0)

// After a kernel launch: the launch error (bad configuration, missing kernel image).
#define DSV4_CUDA_CHECK_LAUNCH() DSV4_CUDA_CHECK(cudaGetLastError())

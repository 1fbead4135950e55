// TileConfig::kPrefillW4A8Ws (opt-in, MXFP4 only): host-facing part. The kernel is in
// grouped_gemm_w4a8_ws.cu; docs/kernels/moe.md, "Warp-specialised W4A8 kernel".
// Host-includable (no device code): the tests and the bench call launch_w4a8_row_ref.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::moe {

// The per-row weight exponent reference of kPrefillW4A8Ws: row_ref[g][row] = the largest
// MXFP4 kernel scale code (moe_pack's k = e + 254 - e_max) over the row's whole K, from the
// fragment-layout scale bytes. Run once per weight set (W13 and W2 apart); the kernel's
// conversion factor is then 2^(kc - row_ref + 6) per 32-block and 2^(row_ref - 259) moves
// to its epilogue. Pure function of the scale bytes.
struct W4a8RowRefParams {
  const uint8_t* scales = nullptr;  // [groups][n / 16][k / 64][32] (MXFP4 fragment scale bytes)
  int groups = 0, n = 0, k = 0;     // groups = experts + 1; n % 16 == 0, k % 64 == 0
  uint8_t* row_ref = nullptr;       // [groups][n]
  cudaStream_t stream = nullptr;
};
// cudaErrorInvalidValue on a null pointer or a shape that is not a multiple of (16, 64).
cudaError_t launch_w4a8_row_ref(const W4a8RowRefParams& params);

}  // namespace dsv4::cuda::moe

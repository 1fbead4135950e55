// W4A8 (MXFP4 weights x E4M3 activations, FP8 wgmma) grouped GEMMs, L1 and L2
// (grouped_gemm_w4a8.cuh), reached through launch_moe_l1 / launch_moe_l2:
// kPrefillW4A8Serial runs; kPrefillW4A8 (convert / wgmma overlap) is refused with
// cudaErrorNotSupported: on the H200 (2026-12-01 21:08 UTC) it gave garbage under normal
// execution and correct results under compute-sanitizer's serialisation, the signature of
// the next stage's conversion being written into registers an in-flight wgmma still reads
// (the A operands are dead to the compiler after the issuing asm). It needs operand fences
// ("+r" on the A registers after wgmma_wait) and a GPU run before it is enabled again.
#include "cuda/moe/grouped_gemm_w4a8.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {

namespace {
template <bool kL1, bool kOverlap>
cudaError_t launch_w4a8_impl(const GroupedGemmParams& p) {
  auto kernel = moe_grouped_gemm_w4a8_kernel<kL1, kOverlap>;
  static bool configured = false;  // attribute set once per instantiation (idempotent)
  if (!configured) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, W4a8Smem::kBytes);
    if (err != cudaSuccess) return err;
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(p.n / W4a8Tile::BW), static_cast<unsigned>(p.max_tiles));
  kernel<<<grid, W4a8Tile::kThreads, W4a8Smem::kBytes, p.stream>>>(p);
  return cudaGetLastError();
}
}  // namespace

cudaError_t launch_w4a8(const GroupedGemmParams& p, bool l1) {
  // MXFP4 only; x8 / act_scale from launch_act_quant_fp8; n % 128, k % 128.
  if (p.format != ExpertFormat::kMXFP4 || p.act8 == nullptr || p.act_scale == nullptr) return cudaErrorInvalidValue;
  if (p.n % W4a8Tile::BW != 0 || p.k % W4a8Tile::BK != 0 || p.n <= 0 || p.k <= 0) return cudaErrorInvalidValue;
  if (p.max_tiles <= 0) return cudaSuccess;
  if (p.max_tiles > 65535) return cudaErrorInvalidValue;  // grid.y
  if (p.config != TileConfig::kPrefillW4A8Serial) return cudaErrorNotSupported;  // see the header comment
  return l1 ? launch_w4a8_impl<true, false>(p) : launch_w4a8_impl<false, false>(p);
}

}  // namespace dsv4::cuda::moe::detail

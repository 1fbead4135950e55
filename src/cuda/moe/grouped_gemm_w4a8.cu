// W4A8 (MXFP4 weights x E4M3 activations, FP8 wgmma) grouped GEMMs, L1 and L2
// (grouped_gemm_w4a8.cuh), reached through launch_moe_l1 / launch_moe_l2:
// kPrefillW4A8Serial (convert -> wgmma -> wait -> promote) and kPrefillW4A8 (the next
// stage's conversion overlaps the wgmma). kPrefillW4A8 was refused after the H200 run of
// 2026-12-01 (garbage unless serialised by compute-sanitizer): its SASS had the next stage's
// conversion written into R88..R103, the A registers of the in-flight QGMMAs, before their
// WARPGROUP.DEPBAR. Fixed by two explicit register sets (K loop unrolled by 2) and a read of
// the waited set after the wait (wgmma_wait0_keep_a); the SASS now shows no write to a
// QGMMA's A or accumulator registers before its DEPBAR (docs/kernels/moe.md, W4A8).
// kPrefillW4A8Lut: kPrefillW4A8 with the PRMT table conversion (the same E4M3 bytes).
#include "cuda/moe/grouped_gemm_w4a8.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {

namespace {
template <bool kL1, bool kOverlap, bool kLut = false>
cudaError_t launch_w4a8_impl(const GroupedGemmParams& p) {
  auto kernel = moe_grouped_gemm_w4a8_kernel<kL1, kOverlap, kLut>;
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
  if (p.config == TileConfig::kPrefillW4A8)
    return l1 ? launch_w4a8_impl<true, true>(p) : launch_w4a8_impl<false, true>(p);
  if (p.config == TileConfig::kPrefillW4A8Lut)
    return l1 ? launch_w4a8_impl<true, true, true>(p) : launch_w4a8_impl<false, true, true>(p);
  if (p.config == TileConfig::kPrefillW4A8Serial)
    return l1 ? launch_w4a8_impl<true, false>(p) : launch_w4a8_impl<false, false>(p);
  return cudaErrorNotSupported;
}

}  // namespace dsv4::cuda::moe::detail

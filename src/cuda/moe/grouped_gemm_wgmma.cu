// wgmma (Hopper tensor core) instantiations of the grouped GEMMs: TileConfig::kPrefillWgmma,
// both formats, L1 and L2 (grouped_gemm_wgmma.cuh).
#include "cuda/moe/grouped_gemm_wgmma.cuh"

namespace dsv4::cuda::moe::detail {

cudaError_t launch_wgmma(const GroupedGemmParams& p, bool l1) {
  if (p.format == ExpertFormat::kNVFP4)
    return l1 ? launch_grouped_gemm_wgmma<ExpertFormat::kNVFP4, true>(p)
              : launch_grouped_gemm_wgmma<ExpertFormat::kNVFP4, false>(p);
  return l1 ? launch_grouped_gemm_wgmma<ExpertFormat::kMXFP4, true>(p)
            : launch_grouped_gemm_wgmma<ExpertFormat::kMXFP4, false>(p);
}

}  // namespace dsv4::cuda::moe::detail

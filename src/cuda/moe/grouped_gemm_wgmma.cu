// wgmma (Hopper tensor core) instantiations of the grouped GEMMs: TileConfig::kPrefillWgmma,
// both formats, L1 and L2 (grouped_gemm_wgmma.cuh). kPrefillWgmmaPipe lives in
// grouped_gemm_wgmma_pipe.cu (its own translation unit: the two compile in parallel).
#include "cuda/moe/grouped_gemm_wgmma.cuh"
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe::detail {

cudaError_t launch_wgmma_pipe(const GroupedGemmParams& p, bool l1);

cudaError_t launch_wgmma(const GroupedGemmParams& p, bool l1) {
  if (p.config == TileConfig::kPrefillWgmmaPipe) return launch_wgmma_pipe(p, l1);
  if (p.format == ExpertFormat::kNVFP4)
    return l1 ? launch_grouped_gemm_wgmma<ExpertFormat::kNVFP4, true, false>(p)
              : launch_grouped_gemm_wgmma<ExpertFormat::kNVFP4, false, false>(p);
  return l1 ? launch_grouped_gemm_wgmma<ExpertFormat::kMXFP4, true, false>(p)
            : launch_grouped_gemm_wgmma<ExpertFormat::kMXFP4, false, false>(p);
}

}  // namespace dsv4::cuda::moe::detail

// wgmma grouped GEMMs with dequant / wgmma overlap: TileConfig::kPrefillWgmmaPipe, both
// formats, L1 and L2 (grouped_gemm_wgmma.cuh's kernel with kPipe = true, its tile
// wgmma_tile_pipe in grouped_gemm_wgmma_pipe.cuh). Reached through launch_wgmma
// (grouped_gemm_wgmma.cu).
#include "cuda/moe/grouped_gemm_wgmma_pipe.cuh"

namespace dsv4::cuda::moe::detail {

cudaError_t launch_wgmma_pipe(const GroupedGemmParams& p, bool l1) {
  if (p.format == ExpertFormat::kNVFP4)
    return l1 ? launch_grouped_gemm_wgmma<ExpertFormat::kNVFP4, true, true>(p)
              : launch_grouped_gemm_wgmma<ExpertFormat::kNVFP4, false, true>(p);
  return l1 ? launch_grouped_gemm_wgmma<ExpertFormat::kMXFP4, true, true>(p)
            : launch_grouped_gemm_wgmma<ExpertFormat::kMXFP4, false, true>(p);
}

}  // namespace dsv4::cuda::moe::detail
